"""The audit log end to end: what the server and the CLI record, and ``scep-ca audit``
listing, exporting, checkpointing and verifying it (exit 1 naming the first bad record)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from audit.checkpoint import read_checkpoint
from audit.events import Event
from audit.factory import audit_log
from audit.keys import load_checkpoint_public_key
from config import load_config
from scep_ca.pki.ca import CAIdentity
from scep_ca.protocol.enums import PKIStatus
from scep_ca.server.app import build_app
from store.base import AuditFilter, CertificateFilter
from store.schema_sqlite import MIGRATIONS, MIGRATIONS_TABLE
from store.sqlite import SQLiteStore
from tests.integration.conftest import ServerFactory
from tests.integration.test_cli import Cli, cli  # noqa: F401 - the fixture
from tests.integration.test_store_faults import _pkcs_req, _status


def _events(cli: Cli, *filters: str) -> list[dict[str, object]]:  # noqa: F811
    listed = cli.json("audit", "list", *filters)
    assert isinstance(listed, list)
    return listed


def test_cli_actions_are_recorded_with_the_os_user_and_verify(cli: Cli) -> None:  # noqa: F811
    created = cli.json("integration", "create", "fleet")
    assert isinstance(created, dict)
    iid = str(created["id"])
    code, challenge, err = cli("challenge", "new", iid)
    assert code == 0, err
    cli.json("integration", "rotate-password", iid)
    cli.json("integration", "delete", iid, "--yes")
    events = _events(cli, "--integration", iid)
    assert [e["event"] for e in events] == [
        "integration.created",
        "challenge.issued",
        "integration.password_rotated",
        "integration.deleted",
    ]
    assert all(str(e["actor"]).startswith("os:") for e in events)
    assert events[-1]["details"] == {"integration": iid, "revoked": 0}
    # Never the challenge nor the password.
    exported = cli("audit", "export", "--format", "jsonl")[1]
    assert challenge.strip() not in exported and created["password"] not in exported
    assert [json.loads(line)["event"] for line in exported.splitlines()] == ["ca.init"] + [e["event"] for e in events]
    code, out, err = cli("audit", "verify")
    assert code == 0, err
    assert out.strip().endswith("OK: 5 records in 5 chains verify")


def _tamper(cli: Cli, sql: str) -> None:  # noqa: F811
    db = sqlite3.connect(cli.data_dir / "scep-ca.sqlite3")
    try:
        db.executescript(sql)
    finally:
        db.close()


def test_verify_names_a_modified_record_and_a_cut_tail(cli: Cli, tmp_path: Path) -> None:  # noqa: F811
    iid = str(cli.json("integration", "create", "fleet")["id"])  # type: ignore[index]
    for _ in range(3):
        assert cli("challenge", "new", iid)[0] == 0
    out = tmp_path / "cp.json"
    code, _, err = cli("audit", "checkpoint", "--out", str(out))
    assert code == 0, err
    assert json.loads(out.read_text())["type"] == "scep-ca-audit-checkpoint"
    assert cli("audit", "verify", "--checkpoint", str(out))[0] == 0
    # The last challenge event deleted: alone it is invisible (a chain simply ends), against
    # the checkpoint a chain is cut short.
    last = _events(cli, "--event", "challenge.issued")[-1]
    _tamper(cli, f"DELETE FROM audit_events WHERE writer = '{last['writer']}'")
    assert cli("audit", "verify")[0] == 0
    code, _, err = cli("audit", "verify", "--checkpoint", str(out))
    assert code == 1
    assert err.startswith(f"FAILED: chain {last['writer']} seq 1: cut_short:")
    # A field of the first event changed: named as modified against the checkpoint.
    first = _events(cli, "--event", "integration.created")[0]
    _tamper(cli, f"UPDATE audit_events SET actor = 'os:mallory' WHERE writer = '{first['writer']}'")
    code, _, err = cli("audit", "verify", "--json")
    assert code == 1
    code, _, err = cli("audit", "verify")
    assert err.splitlines()[0] == (
        f"FAILED: chain {first['writer']} seq 1: inserted: the MAC does not verify and no record vouches for it "
        "(integration.created)"
    )


def test_verify_refuses_a_checkpoint_with_a_bad_signature(cli: Cli, tmp_path: Path) -> None:  # noqa: F811
    cli.json("integration", "create", "fleet")
    out = tmp_path / "cp.json"
    assert cli("audit", "checkpoint", "--out", str(out))[0] == 0
    body = json.loads(out.read_text())
    body["heads"] = {}
    out.write_text(json.dumps(body))
    code, _, err = cli("audit", "verify", "--checkpoint", str(out))
    assert (code, err) == (
        1,
        f"scep-ca: {out}: the checkpoint's signature does not verify under the checkpoint key\n",
    )


def test_verify_without_the_audit_key_is_one_line(cli: Cli) -> None:  # noqa: F811
    cli.json("integration", "create", "fleet")
    (cli.data_dir / "audit.key").unlink()
    code, out, err = cli("audit", "verify")
    assert code == 1 and out == ""
    assert err.startswith("scep-ca: ") and "no audit key" in err and len(err.splitlines()) == 1
    assert not (cli.data_dir / "audit.key").exists()  # not replaced by a new key


async def test_the_server_records_issuance_refusal_start_and_stop(
    make_server: ServerFactory, device_key: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="scep_ca.server.audit_task")
    server = await make_server()
    challenge = await server.challenge()
    der, signer = _pkcs_req(server.ca, device_key, challenge, "ok-1")
    resp = await server.client.post(f"{server.url()}?operation=PKIOperation", data=der)
    assert _status(await resp.read(), signer, device_key) is PKIStatus.SUCCESS
    bad, bad_signer = _pkcs_req(server.ca, device_key, "WRONG", "bad-1")
    resp = await server.client.post(f"{server.url()}?operation=PKIOperation", data=bad)
    assert _status(await resp.read(), bad_signer, device_key) is PKIStatus.FAILURE
    await server.client.close()  # the server stops: its stop event and a checkpoint

    store = SQLiteStore(server.config.sqlite_path)
    await store.open()
    try:
        rows = await store.list_audit(AuditFilter())
        assert [r.event for r in rows] == [
            "audit.log_started",
            "server.start",
            "scep.issued",
            "scep.refused",
            "server.stop",
            "audit.checkpoint",
        ]
        issued, refused = rows[2], rows[3]
        (cert,) = await store.list_certificates(CertificateFilter())
        # The log alone rebuilds what was issued: the certificate itself.
        assert base64.b64decode(str(issued.details["certificate"])) == cert.der
        assert x509.load_der_x509_certificate(cert.der).serial_number == int(str(issued.details["serial"]), 16)
        assert issued.actor == refused.actor == "scep:127.0.0.1"
        assert issued.details["transaction_id"] == "ok-1" and issued.details["validator"] == "ndes"
        assert refused.details["fail_info"] == "BAD_REQUEST" and refused.details["transaction_id"] == "bad-1"
        assert "challenge" in str(refused.details["reason"])
        assert "WRONG" not in json.dumps([dict(r.details) for r in rows])
        assert (await audit_log(server.config, store).verify()).ok
    finally:
        await store.close()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("audit checkpoint ")]
    assert len(lines) == 1
    assert json.loads(lines[0].removeprefix("audit checkpoint "))["type"] == "scep-ca-audit-checkpoint"


async def test_an_upgraded_data_directory_starts_its_chains_with_log_started(
    tmp_path: Path,
    shared_ca: tuple[Path, CAIdentity],
    aiohttp_client: Callable[..., Awaitable[TestClient]],  # type: ignore[type-arg]
) -> None:
    config = load_config(None, {}, {"data_dir": str(tmp_path)})
    # A database of the release before the audit log: schema 6, no audit_events table.
    config.data_dir.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(config.sqlite_path, isolation_level=None)
    try:
        db.execute(MIGRATIONS_TABLE)
        for migration in MIGRATIONS[:6]:
            for statement in migration.statements:
                db.execute(statement)
            db.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?, 'then')", (migration.version,))
    finally:
        db.close()
    store = SQLiteStore(config.sqlite_path)
    client = await aiohttp_client(build_app(config, shared_ca[1], store))
    events = [r.event for r in await store.list_audit(AuditFilter())]
    assert events == [str(Event.LOG_STARTED), str(Event.SERVER_START)]
    # A restart adds its start, not a second "log started".
    await client.close()
    again = SQLiteStore(config.sqlite_path)
    client = await aiohttp_client(build_app(config, shared_ca[1], again))
    events = [r.event for r in await again.list_audit(AuditFilter())]
    assert events.count(str(Event.LOG_STARTED)) == 1 and events[-1] == str(Event.SERVER_START)
    await client.close()


def test_ca_and_ra_operations_are_recorded_after_they_succeed(cli: Cli) -> None:  # noqa: F811
    for command in (("ca", "rollover"), ("ca", "activate-next"), ("ra", "create", "--pair")):
        code, _, err = cli(*command)
        assert code == 0, err
    events = _events(cli)
    assert [e["event"] for e in events] == ["ca.init", "ca.rollover", "ca.activate_next", "ra.created"]
    assert events[0]["object"] != events[1]["object"] == events[2]["object"]  # the next CA became current
    assert events[2]["details"]["previous"] == str(events[0]["object"]).removeprefix("ca/")  # type: ignore[index]
    assert cli("audit", "verify")[0] == 0


async def test_each_crl_number_is_recorded_with_the_crl(make_server: ServerFactory) -> None:
    server = await make_server()
    assert (await server.client.get("/crl/ca.crl")).status == 200
    (event,) = await server.store.list_audit(AuditFilter(event=str(Event.CRL_ISSUED)))
    assert event.details == {"entries": 0, "number": 1, "shard": None} and event.actor == "system"


async def test_the_server_writes_signed_checkpoints_into_the_checkpoint_dir(
    tmp_path: Path, make_server: ServerFactory
) -> None:
    directory = tmp_path / "checkpoints"
    server = await make_server(**{"audit.checkpoint_dir": str(directory), "audit.checkpoint_interval_seconds": 1})
    for _ in range(100):  # the first one after a second; generous on a loaded machine
        if directory.exists() and any(directory.iterdir()):
            break
        await asyncio.sleep(0.1)
    first = sorted(directory.iterdir())[0]
    public = load_checkpoint_public_key(server.config.data_dir / "audit-checkpoint.pub")
    heads = read_checkpoint(first.read_text(), public)
    assert heads and all(head.seq >= 1 for head in heads.values())
    assert (await audit_log(server.config, server.store).verify(first.read_text())).ok


def test_checkpoint_and_verify_refuse_bad_files_in_one_line(cli: Cli, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "cp.json"
    out.write_text("not json")
    code, stdout, err = cli("audit", "checkpoint", "--out", str(out))
    assert (code, stdout, err) == (1, "", f"scep-ca: {out} exists; checkpoints are never overwritten\n")
    assert out.read_text() == "not json"
    code, _, err = cli("audit", "verify", "--checkpoint", str(out))
    assert code == 1 and err.startswith(f"scep-ca: {out}: not a readable audit checkpoint:")
    assert len(err.splitlines()) == 1


def test_a_key_operation_with_the_store_down_says_it_is_not_recorded(
    cli: Cli,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Port 9 (discard) on loopback: nothing listens, the connection is refused.
    monkeypatch.setenv("SCEP_CA_STORE_DSN", "postgresql://postgres@127.0.0.1:9/none")
    code, out, err = cli("ca", "rollover")
    assert (code, out.startswith("next CA created")) == (3, False)
    assert err == (
        "scep-ca: error: the store is unavailable: done, but not recorded in the audit log: "
        "connection refused by the database server (PostgreSQL at 127.0.0.1:9/none: "
        "ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', 9))\n"
    )
    assert (cli.data_dir / "next" / "ca.pem").exists()  # the rollover itself is done
