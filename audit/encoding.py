"""The canonical encoding of an audit record and its MAC.

A record's MAC is HMAC-SHA256, under the audit key (``audit.keys``), of the canonical JSON
(RFC 8785 style for the values used here: sorted keys, no whitespace, UTF-8) of the object
``{writer, seq, time, actor, event, object, details, prev_mac}``. ``prev_mac`` is the MAC of
the writer's previous record (``GENESIS`` for seq 1), so a record cannot be changed, removed,
inserted or moved without breaking a MAC only the key holder can recompute: unlike a plain
hash chain, whoever can write the table cannot rewrite it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Protocol

from store.base import AuditRecord

GENESIS = "0" * 64


class MacKey(Protocol):
    """Computes HMAC-SHA256 under the audit key, wherever the key lives (file or token)."""

    def mac(self, data: bytes) -> bytes: ...


def canonical(record: AuditRecord, seq: int | None = None) -> bytes:
    """The bytes a record's MAC covers: every field but the MAC (under another ``seq`` when given)."""
    body = {
        "writer": record.writer,
        "seq": record.seq if seq is None else seq,
        "time": record.at.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor": record.actor,
        "event": record.event,
        "object": record.target,
        "details": record.details,
        "prev_mac": record.prev_mac,
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
    unsealed = AuditRecord(writer, seq, at.astimezone(UTC), actor, event, target, dict(details), prev_mac, "")
    return dataclasses.replace(unsealed, mac=key.mac(canonical(unsealed)).hex())


def mac_of(key: MacKey, record: AuditRecord, *, seq: int | None = None) -> str:
    """The MAC ``record`` should carry (under another ``seq``, to recognise a moved record)."""
    return key.mac(canonical(record, seq)).hex()
