"""The canonical encoding of an audit record and its MAC.

A record's MAC is HMAC-SHA256, under the audit key (``audit.keys``), of the canonical JSON
(RFC 8785 style for the values used here: sorted keys, no whitespace, UTF-8) of the object
``{writer, seq, time, actor, event, object, details, prev_mac}``. ``prev_mac`` is the MAC of
the writer's previous record (``GENESIS`` for seq 1), so a record cannot be changed, removed,
inserted or moved without breaking a MAC only the key holder can recompute: unlike a plain
hash chain, whoever can write the table cannot rewrite it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Protocol

from store.base import AuditRecord

GENESIS = "0" * 64


class MacKey(Protocol):
    """Computes HMAC-SHA256 under the audit key, wherever the key lives (file or token)."""

    def mac(self, data: bytes) -> bytes: ...


def canonical(
    writer: str,
    seq: int,
    at: datetime,
    actor: str,
    event: str,
    target: str,
    details: Mapping[str, object],
    prev_mac: str,
) -> bytes:
    body = {
        "writer": writer,
        "seq": seq,
        "time": at.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor": actor,
        "event": event,
        "object": target,
        "details": details,
        "prev_mac": prev_mac,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def seal(
    key: MacKey,
    writer: str,
    seq: int,
    at: datetime,
    actor: str,
    event: str,
    target: str,
    details: Mapping[str, object],
    prev_mac: str,
) -> AuditRecord:
    # UTC to the microsecond, what both stores keep exactly: the MAC recomputes from a stored row.
    at = at.astimezone(UTC)
    mac = key.mac(canonical(writer, seq, at, actor, event, target, details, prev_mac)).hex()
    return AuditRecord(writer, seq, at, actor, event, target, dict(details), prev_mac, mac)


def mac_of(key: MacKey, record: AuditRecord, *, seq: int | None = None) -> str:
    """The MAC ``record`` should carry (under another ``seq``, to recognise a moved record)."""
    data = canonical(
        record.writer,
        record.seq if seq is None else seq,
        record.at,
        record.actor,
        record.event,
        record.target,
        record.details,
        record.prev_mac,
    )
    return key.mac(data).hex()
