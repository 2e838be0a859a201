"""Per-writer chains without a lock: a process hands each audited transaction a free lane.

A lane is one chain (writer id ``<host>:<pid>:<nonce>/<n>``) with its head (last seq and MAC)
in memory. A transaction takes a free lane, seals its rows as seq+1, seq+2 ... on that head,
and gives the lane back when it commits; concurrent transactions of one process take
different lanes, so none waits for another (EJBCA's per-node sequence, one level finer).
A lane whose transaction failed after sealing is retired, never reused: whether its rows
committed is not certain (a connection lost during COMMIT), and a chain that simply stops
verifies, while a reused head could leave a gap or a fork. Taking and giving back lanes
never awaits, so the pool needs no lock on one event loop.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass

from audit.encoding import GENESIS


@dataclass
class Lane:
    writer: str
    seq: int = 0
    mac: str = GENESIS


class Lanes:
    def __init__(self, prefix: str | None = None) -> None:
        self._prefix = prefix or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._free: list[Lane] = []
        self._made = 0

    def take(self) -> Lane:
        if self._free:
            return self._free.pop()
        self._made += 1
        return Lane(f"{self._prefix}/{self._made}")

    def give_back(self, lane: Lane) -> None:
        self._free.append(lane)

    def heads(self) -> list[Lane]:
        """The free lanes' heads (those in use are mid-transaction)."""
        return list(self._free)
