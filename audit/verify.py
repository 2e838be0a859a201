"""Verifying the chains: pure, no I/O (``AuditLog.verify`` reads the rows and the key).

Each writer's chain must run seq 1, 2, 3 ... without a gap, every record's MAC must recompute
under the audit key, and every record's ``prev_mac`` must be the MAC of the record before it
(``GENESIS`` for seq 1). Against a checkpoint, each chain it names must reach at least the
checkpointed head, with the same MAC there. The first failing record of each chain is named,
with what happened to it:

- ``missing``: a seq number is absent (a record deleted);
- ``modified``: the MAC does not recompute, and the next record (or the checkpoint) still
  vouches for the stored MAC (a field changed in place);
- ``reordered``: the record is authentic but stands at another position (its MAC recomputes
  under another seq, or its predecessor is not the record it was chained to);
- ``inserted``: the MAC does not recompute and no record vouches for it (a forged record; a
  changed last record looks the same, which the next checkpoint tells apart);
- ``cut_short``: a chain ends before the head a checkpoint recorded (its tail deleted).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from audit.encoding import GENESIS, MacKey, mac_of
from store.base import AuditRecord


@dataclass(frozen=True)
class Head:
    seq: int
    mac: str


@dataclass(frozen=True)
class Problem:
    writer: str
    seq: int
    kind: str  # missing, modified, reordered, inserted, cut_short
    text: str

    def __str__(self) -> str:
        return f"chain {self.writer} seq {self.seq}: {self.kind}: {self.text}"


@dataclass(frozen=True)
class VerifyReport:
    chains: Mapping[str, int]  # records per writer
    problems: Sequence[Problem] = field(default_factory=tuple)  # the first of each failing chain

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def records(self) -> int:
        return sum(self.chains.values())


class Verifier:
    """Checks records fed in (writer, seq) order with constant memory per chain: a log of
    millions of records is read page by page (``AuditLog.verify``)."""

    def __init__(self, key: MacKey, checkpoint: Mapping[str, Head] | None = None) -> None:
        self._key = key
        self._checkpoint = checkpoint or {}
        self._chains: dict[str, int] = {}
        self._problems: list[Problem] = []
        self._chain: _Chain | None = None

    def add(self, record: AuditRecord) -> None:
        if self._chain is None or self._chain.writer != record.writer:
            self._end_chain()
            self._chain = _Chain(record.writer, self._checkpoint.get(record.writer))
        self._chain.add(record, self._key)

    def report(self) -> VerifyReport:
        self._end_chain()
        for writer, head in sorted(self._checkpoint.items()):
            if writer not in self._chains:
                self._problems.append(
                    Problem(writer, 1, "cut_short", f"the chain is gone; the checkpoint has seq {head.seq}")
                )
        return VerifyReport(dict(self._chains), tuple(self._problems))

    def _end_chain(self) -> None:
        if self._chain is not None:
            self._chains[self._chain.writer] = self._chain.count
            problem = self._chain.finish(self._key)
            if problem is not None:
                self._problems.append(problem)
            self._chain = None


class _Chain:
    def __init__(self, writer: str, head: Head | None) -> None:
        self.writer = writer
        self.count = 0
        self._head = head
        self._expected, self._prev = 1, GENESIS
        self._problem: Problem | None = None
        self._bad: AuditRecord | None = None  # the first record whose MAC fails, classified at the end
        self._after_bad: str | None = None  # the prev_mac of the record after it
        self._last_seq = 0
        self._head_mac: str | None = None

    def add(self, record: AuditRecord, key: MacKey) -> None:
        self.count += 1
        if self._bad is not None and self._after_bad is None:
            self._after_bad = record.prev_mac
        if record.seq == (self._head.seq if self._head else None):
            self._head_mac = record.mac
        self._last_seq = record.seq
        if self._problem is not None or self._bad is not None:
            return
        if record.seq != self._expected:
            self._problem = Problem(
                self.writer, self._expected, "missing", f"the chain jumps from seq {self._expected - 1} to {record.seq}"
            )
        elif mac_of(key, record) != record.mac:
            self._bad = record
        elif record.prev_mac != self._prev:
            self._problem = Problem(
                self.writer, record.seq, "reordered", "authentic, but not chained to the record before it"
            )
        self._expected, self._prev = record.seq + 1, record.mac

    def finish(self, key: MacKey) -> Problem | None:
        if self._bad is not None:
            return self._classify(self._bad, key)
        if self._problem is not None or self._head is None:
            return self._problem
        if self._last_seq < self._head.seq:
            return Problem(
                self.writer,
                self._last_seq + 1,
                "cut_short",
                f"the chain ends at seq {self._last_seq}; the checkpoint has {self._head.seq}",
            )
        if self._head_mac != self._head.mac:
            return Problem(self.writer, self._head.seq, "modified", "the MAC differs from the checkpoint's")
        return None

    def _classify(self, record: AuditRecord, key: MacKey) -> Problem:
        # Moved: its MAC verifies under another position of the chain (one HMAC per position,
        # for the first failing record only).
        for seq in range(1, max(self._last_seq, record.seq) + 1):
            if seq != record.seq and mac_of(key, record, seq=seq) == record.mac:
                return Problem(self.writer, record.seq, "reordered", f"the record written as seq {seq} stands here")
        # A MAC the next record (or the checkpoint) was chained to was once genuine.
        if record.mac in (self._after_bad, self._head.mac if self._head else None):
            return Problem(self.writer, record.seq, "modified", f"the MAC does not match its content ({record.event})")
        return Problem(
            self.writer,
            record.seq,
            "inserted",
            f"the MAC does not verify and no record vouches for it ({record.event})",
        )
