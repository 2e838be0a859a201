"""The canonical encoding of audit records (audit.encoding) and the details text it hands the stores."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from audit.encoding import GENESIS, canonical, details_json, mac_of, seal
from audit.keys import FileMacKey

KEY = FileMacKey(bytes(range(32)))
AT = datetime(2026, 12, 7, 4, 5, 6, 789012, tzinfo=timezone(timedelta(hours=2)))
# Whatever a client can put in a field: quotes, backslashes, control characters, non-ASCII,
# a lone surrogate's neighbours, nesting, every JSON scalar.
DETAILS: list[dict[str, object]] = [
    {},
    {"certificate": "MIIB" * 400, "serial": "7f" * 20, "on_hold": False, "old_serial": None, "message_type": 19},
    {"user_agent": 'a "quoted" \\ back\nslash\t\x00\x1f\x7f', "subject": "CN=Zoë,O=Ünïcode 漢字 🎉"},
    {"z": [1, "two", {"b": None, "a": True}], "a": {"y": 2, "x": [3.5, -1]}, "m": "\u2028\u2029"},
]


def _reference(writer: str, seq: int, actor: str, event: str, target: str, details: object, prev: str) -> bytes:
    """The encoding as the log's format defines it: json.dumps of the whole object."""
    body = {
        "writer": writer,
        "seq": seq,
        "time": AT.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor": actor,
        "event": event,
        "object": target,
        "details": details,
        "prev_mac": prev,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize("details", DETAILS)
@pytest.mark.parametrize("actor", ["scep:192.0.2.1", 'os:"root"\n', "é\\"])
def test_the_mac_covers_exactly_the_json_of_the_whole_record(details: dict[str, object], actor: str) -> None:
    record = seal(KEY, "host:1:ab/2", 7, AT, actor, "scep.issued", 'certificate/"x"', details, GENESIS)
    expected = _reference("host:1:ab/2", 7, actor, "scep.issued", 'certificate/"x"', details, GENESIS)
    assert canonical(record) == expected
    assert record.mac == hmac.new(bytes(range(32)), expected, hashlib.sha256).hexdigest()
    assert record.details_json is not None and json.loads(record.details_json) == details == record.details


@pytest.mark.parametrize("details", DETAILS)
def test_a_record_read_back_without_the_sealers_text_verifies(details: dict[str, object]) -> None:
    # As a store or a backup returns it: the details parsed from the stored text, no details_json.
    record = seal(KEY, "w/1", 3, AT, "cli", "challenge.issued", "integration/i", details, "ab" * 32)
    assert record.details_json is not None
    stored = dataclasses.replace(record, details=json.loads(record.details_json), details_json=None)
    assert stored == record  # the text is not part of the record's value
    assert mac_of(KEY, stored) == record.mac
    moved = _reference("w/1", 4, "cli", "challenge.issued", "integration/i", details, "ab" * 32)
    assert canonical(stored, seq=4) == moved


def test_the_details_text_is_canonical() -> None:
    assert details_json({"b": 1, "a": "ü"}) == '{"a":"ü","b":1}'
