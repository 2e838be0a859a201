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
from json.encoder import encode_basestring
from typing import Protocol

from store.base import AuditRecord

GENESIS = "0" * 64


class MacKey(Protocol):
    """Computes HMAC-SHA256 under the audit key, wherever the key lives (file or token)."""

    def mac(self, data: bytes) -> bytes: ...


def details_json(details: Mapping[str, object]) -> str:
    """The canonical JSON text of an event's details (what ``canonical`` puts under "details")."""
    return json.dumps(details, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _canonical(
    writer: str, seq: int, at: datetime, actor: str, event: str, target: str, details_text: str, prev_mac: str
) -> bytes:
    """The canonical JSON of a record's fields, written out key by key in sorted order with the
    details already encoded: byte for byte ``json.dumps`` of the whole object with sorted keys,
    no whitespace and ``ensure_ascii=False`` (the tests compare the two)."""
    text = (
        f'{{"actor":{_string(actor)},"details":{details_text},"event":{_string(event)},'
        f'"object":{_string(target)},"prev_mac":{_string(prev_mac)},"seq":{int(seq)},'
        f'"time":{_string(at.astimezone(UTC).isoformat(timespec="microseconds"))},"writer":{_string(writer)}}}'
    )
    return text.encode("utf-8")


def _string(value: str) -> str:
    # json.dumps(value, ensure_ascii=False) for a str: the C encoder, without a JSONEncoder per call.
    return encode_basestring(value)


def canonical(record: AuditRecord, seq: int | None = None) -> bytes:
    """The bytes a record's MAC covers: every field but the MAC (under another ``seq`` when given)."""
    return _canonical(
        record.writer,
        record.seq if seq is None else seq,
        record.at,
        record.actor,
        record.event,
        record.target,
        record.details_json if record.details_json is not None else details_json(record.details),
        record.prev_mac,
    )


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
    text = details_json(details)
    mac = key.mac(_canonical(writer, seq, at, actor, event, target, text, prev_mac)).hex()
    # The details' text goes to the store with the record: encoded once, for the MAC and the row.
    return AuditRecord(writer, seq, at, actor, event, target, dict(details), prev_mac, mac, details_json=text)


def mac_of(key: MacKey, record: AuditRecord, *, seq: int | None = None) -> str:
    """The MAC ``record`` should carry (under another ``seq``, to recognise a moved record)."""
    return key.mac(canonical(record, seq)).hex()
