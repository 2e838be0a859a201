"""The CLI escapes non-printable characters in everything it prints as text.

A certificate's subject, transactionID and User-Agent come from clients. Stored values with
ESC, NUL, a bidi override or a newline (written directly into the store here, as a store from
before the subject check or another writer could hold them) must reach the operator's
terminal as visible escapes, never as raw control characters or forged lines; JSON output
carries them JSON-escaped and exact.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import pytest

from scep_ca.cli.main import main
from scep_ca.pki.records import CertificateRecord
from store.base import IssuanceRequest
from store.sqlite import SQLiteStore

HOSTILE_SUBJECT = "CN=evil\x1b[2J\x00\u202eexe.txt,O=Example"
HOSTILE_TID = "tid\nstatus:              valid"
HOSTILE_AGENT = "\x1b]0;owned\x07agent\x9b31m"
RAW = ("\x1b", "\x00", "\u202e", "\x07", "\x9b")


def _run(capsys: pytest.CaptureFixture[str], data_dir: Path, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["--data-dir", str(data_dir), *args])
    out, err = capsys.readouterr()
    return code, out, err


async def _insert(db: Path, integration_id: str) -> str:
    store = SQLiteStore(db)
    await store.open()
    now = dt.datetime.now(dt.UTC)
    record = CertificateRecord(
        serial="1bad",
        integration_id=integration_id,
        issuer_fingerprint="0" * 64,
        subject=HOSTILE_SUBJECT,
        not_before=now,
        not_after=now + dt.timedelta(days=1),
        der=b"\x30\x00",
        transaction_id=HOSTILE_TID,
        pubkey_sha256="f" * 64,
        message_type=19,
        requester_address="192.0.2.1",
        user_agent=HOSTILE_AGENT,
        created_at=now,
    )
    try:
        await store.record_issuance(IssuanceRequest(record, None, now))
    finally:
        await store.close()
    return record.serial


@pytest.fixture
def hostile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, str]:
    data_dir = tmp_path / "data"
    assert _run(capsys, data_dir, "init")[0] == 0
    code, out, err = _run(capsys, data_dir, "integration", "create", "Fleet", "--json")
    assert code == 0, err
    serial = asyncio.run(_insert(data_dir / "scep-ca.sqlite3", json.loads(out)["id"]))
    return data_dir, serial


def _assert_no_raw_controls(text: str) -> None:
    assert not [c for c in RAW if c in text], repr(text)


def test_cert_list_escapes_a_stored_hostile_subject(
    hostile: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(capsys, hostile[0], "cert", "list")
    assert code == 0, err
    _assert_no_raw_controls(out)
    header, row = out.rstrip("\n").split("\n")
    assert header.startswith("SERIAL")
    assert "CN=evil\\x1b[2J\\x00\\u202eexe.txt,O=Example" in row


def test_cert_show_escapes_every_field_and_forges_no_line(
    hostile: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir, serial = hostile
    code, out, err = _run(capsys, data_dir, "cert", "show", serial)
    assert code == 0, err
    _assert_no_raw_controls(out)
    lines = out.rstrip("\n").split("\n")
    fields = dict(line.split(":", 1) for line in lines)
    assert len(lines) == len(fields), "one line per field"
    assert [line for line in lines if line.startswith("status:")] == ["status:               valid"]
    assert fields["subject"].strip() == "CN=evil\\x1b[2J\\x00\\u202eexe.txt,O=Example"
    assert fields["transaction_id"].strip() == "tid\\nstatus:              valid"
    assert fields["user_agent"].strip() == "\\x1b]0;owned\\x07agent\\x9b31m"


@pytest.mark.parametrize("command", [("cert", "list", "--json"), ("cert", "show", "1bad", "--json")])
def test_json_output_carries_the_exact_values(
    hostile: tuple[Path, str], capsys: pytest.CaptureFixture[str], command: tuple[str, ...]
) -> None:
    code, out, err = _run(capsys, hostile[0], *command)
    assert code == 0, err
    _assert_no_raw_controls(out)
    data = json.loads(out)
    record = data[0] if isinstance(data, list) else data
    assert (record["subject"], record["transaction_id"], record["user_agent"]) == (
        HOSTILE_SUBJECT,
        HOSTILE_TID,
        HOSTILE_AGENT,
    )


def test_an_error_message_is_escaped_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Errors go to stderr through the same escaping (here a data directory named with ESC)."""
    data_dir = tmp_path / "no\x1b[31mdir"
    code, out, err = _run(capsys, data_dir, "cert", "show", "1bad")
    assert code == 1 and out == ""
    assert err == f"scep-ca: no CA in {tmp_path}/no\\x1b[31mdir: run `scep-ca init` first\n"
