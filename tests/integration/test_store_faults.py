"""Store faults become 503 + Retry-After on every endpoint, with one log line and no change.

A full disk is SQLite's own ``SQLITE_FULL`` ("database or disk is full"): the test caps the
database at its current size (``PRAGMA max_page_count``) on a file with 512-byte pages, so
that the certificate row of an issuance cannot fit without a new page. A stopped PostgreSQL
is a relay between the store and the shared server that the test stops (``tests.tcp_proxy``).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509 import ocsp

from challenge.credentials import make_credentials
from challenge.issuer import issue_challenge
from challenge.secret_key import load_or_create_secret_key
from config import load_config
from scep_ca.pki.ca import CAIdentity
from scep_ca.pki.ca_set import ca_id
from scep_ca.pki.records import Integration
from scep_ca.protocol.client import Reply, build_csr, build_request, open_reply, self_signed_signer
from scep_ca.protocol.dn import parse_dn
from scep_ca.protocol.enums import MessageType, PKIStatus
from scep_ca.server.app import build_app
from scep_ca.server.store_faults import RETRY_AFTER_SECONDS, UNAVAILABLE_TEXT
from store.postgres import PostgresStore
from store.sqlite import SQLiteStore
from tests.integration.conftest import ServerFactory
from tests.revocation_helpers import issue_cert
from tests.store.conftest import temporary_database
from tests.tcp_proxy import TcpRelay

NO_LIMIT = 1_073_741_823  # SQLite's default max_page_count


@dataclass
class Relayed:
    client: TestClient  # type: ignore[type-arg]
    relay: TcpRelay
    dsn: str  # straight to PostgreSQL, for the test's own checks
    relayed_dsn: str
    ca: CAIdentity
    data_dir: Path


def _pkcs_req(
    server_ca: CAIdentity, key: rsa.RSAPrivateKey, challenge: str, tid: str
) -> tuple[bytes, x509.Certificate]:
    signer = self_signed_signer(key)
    csr = build_csr(key, parse_dn("CN=alice,O=Example"), challenge)
    return build_request(
        csr,
        signer_cert=signer,
        signer_key=key,
        recipient=server_ca.encryption_cert,
        transaction_id=tid,
        message_type=MessageType.PKCS_REQ,
    ).der, signer


def _status(body: bytes, signer: x509.Certificate, key: rsa.RSAPrivateKey) -> PKIStatus:
    reply: Reply = open_reply(body, signer, key)
    return reply.status


async def _assert_503(resp: ClientResponse) -> None:
    assert resp.status == 503, await resp.text()
    assert resp.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert await resp.text() == UNAVAILABLE_TEXT


def _small_pages(data_dir: Path) -> None:
    """An empty SQLite database with 512-byte pages: a certificate row then needs overflow pages."""
    path = data_dir / "scep-ca.sqlite3"
    db = sqlite3.connect(path)
    db.execute("PRAGMA page_size = 512")
    db.execute("CREATE TABLE init (a)")
    db.execute("DROP TABLE init")
    db.close()
    path.chmod(0o600)


def _fill_disk(store: object) -> None:
    assert isinstance(store, SQLiteStore)
    conn = store._conn  # the store's own connection: max_page_count is per connection
    assert conn is not None
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    conn.execute(f"PRAGMA max_page_count = {pages}")


def _free_disk(store: object) -> None:
    assert isinstance(store, SQLiteStore) and store._conn is not None
    store._conn.execute(f"PRAGMA max_page_count = {NO_LIMIT}")


async def test_pkcsreq_on_a_full_sqlite_disk_is_503_and_consumes_nothing(
    tmp_path: Path, make_server: ServerFactory, device_key: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    _small_pages(tmp_path)
    server = await make_server()
    challenge = await server.challenge()
    der, signer = _pkcs_req(server.ca, device_key, challenge, "full-1")
    now = dt.datetime.now(dt.UTC)
    _fill_disk(server.store)
    caplog.set_level(logging.INFO)
    for _ in range(2):
        await _assert_503(await server.client.post(f"{server.url()}?operation=PKIOperation", data=der))
    _free_disk(server.store)

    # One line for both faults (rate-limited), naming the fault class, without a traceback.
    faults = [r for r in caplog.records if r.name == "scep_ca.server.store_faults"]
    assert len(faults) == 1 and faults[0].exc_info is None
    assert "sqlite3.OperationalError: database or disk is full" in faults[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info], "no traceback anywhere"
    # Nothing half-written: the challenge is still unused, no certificate, no transaction.
    assert await server.store.count_unused_challenges(server.integration.id, now) == 1
    assert await server.cert_count() == 0
    assert await server.store.get_transaction(server.integration.id, "full-1") is None
    # The client's retry succeeds once there is room again.
    resp = await server.client.post(f"{server.url()}?operation=PKIOperation", data=der)
    assert resp.status == 200
    assert _status(await resp.read(), signer, device_key) is PKIStatus.SUCCESS
    assert await server.cert_count() == 1


# Run in a private mount namespace (``unshare``), so that the tiny file system exists for
# this script only. The background reader stands for a running server that holds the
# database open (and so its -wal and -shm files exist already): the CLI's write then hits
# SQLite's "database or disk is full" when it appends to the WAL.
_FULL_DISK_SCRIPT = r"""
set -eu
mount -t tmpfs -o size=2m tmpfs "$DISK"
"$SCEP_CA" --data-dir "$DISK/data" init > /dev/null
"$SCEP_CA" --data-dir "$DISK/data" integration create before > /dev/null
"$PYTHON" -c 'import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1])
db.execute("SELECT count(*) FROM integrations").fetchall()
print("open", flush=True)
time.sleep(60)' "$DISK/data/scep-ca.sqlite3" > "$OUT/holder" &
holder=$!
trap 'kill $holder 2> /dev/null' EXIT
while [ ! -s "$OUT/holder" ]; do sleep 0.05; done
dd if=/dev/zero of="$DISK/fill" bs=4k 2> /dev/null || true
set +e
"$SCEP_CA" --data-dir "$DISK/data" integration create after > "$OUT/stdout" 2> "$OUT/stderr"
echo $? > "$OUT/rc"
"$SCEP_CA" --data-dir "$DISK/data" integration list --json > "$OUT/list"
"""


def test_cli_on_a_full_sqlite_disk_prints_one_line_and_exits_3(tmp_path: Path) -> None:
    disk, out = tmp_path / "disk", tmp_path / "out"
    disk.mkdir()
    out.mkdir()
    env = {
        **os.environ,
        "DISK": str(disk),
        "OUT": str(out),
        "SCEP_CA": str(Path(sys.executable).with_name("scep-ca")),
        "PYTHON": sys.executable,
    }
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", _FULL_DISK_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    stderr = (out / "stderr").read_text()
    assert stderr == "scep-ca: error: the store is unavailable: database or disk is full\n"
    assert (out / "rc").read_text().strip() == "3"
    assert (out / "stdout").read_text() == ""
    # Nothing half-written: the integration that met the full disk does not exist.
    assert [i["name"] for i in json.loads((out / "list").read_text())] == ["before"]


@pytest.fixture
async def pg_server(
    tmp_path: Path,
    shared_ca: tuple[Path, CAIdentity],
    aiohttp_client: Callable[..., Awaitable[TestClient]],  # type: ignore[type-arg]
) -> AsyncIterator[Relayed]:
    """The app on a PostgreSQL store reached through a relay; the direct DSN checks the database."""
    async with temporary_database() as dsn:
        target = urlsplit(dsn)
        relay = TcpRelay(target.hostname or "127.0.0.1", target.port or 5432)
        await relay.start()
        relayed = target._replace(netloc=f"{target.username}@127.0.0.1:{relay.port}").geturl()
        config = load_config(None, {}, {"data_dir": str(tmp_path), "store.dsn": relayed})
        client = await aiohttp_client(build_app(config, shared_ca[1], PostgresStore(relayed, 1, 4)))
        try:
            yield Relayed(client, relay, dsn, relayed, shared_ca[1], config.data_dir)
        finally:
            await relay.stop()


async def test_every_endpoint_is_503_while_postgresql_is_down(
    pg_server: Relayed, device_key: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    client, relay, ca = pg_server.client, pg_server.relay, pg_server.ca
    direct = PostgresStore(pg_server.dsn, 1, 2)
    await direct.open()
    try:
        creds = make_credentials(load_or_create_secret_key(pg_server.data_dir), "pg")
        await direct.create_integration(
            Integration(
                id="pg",
                name="pg",
                subject_template="CN=$USERID$,O=Example",
                created_at=dt.datetime.now(dt.UTC),
                validity_days=365,
                username=creds.username,
                password_scrypt=creds.password_scrypt,
                nt_hash_encrypted=creds.nt_hash_encrypted,
            )
        )
        challenge = await issue_challenge(direct, load_config(None, {}, {}).challenge, "pg")
        assert challenge is not None
        der, signer = _pkcs_req(ca, device_key, challenge, "pg-down-1")
        assert (await client.get("/readyz")).status == 200
        leaf = issue_cert(ca, device_key, 0x1234)
        ocsp_der = (ocsp.OCSPRequestBuilder().add_certificate(leaf, ca.cert, hashes.SHA256()).build()).public_bytes(
            serialization.Encoding.DER
        )
        basic = "Basic " + base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()

        await relay.stop()  # PostgreSQL "stops": connections cut, new ones refused
        caplog.set_level(logging.INFO)
        answers = [
            await client.post("/scep/pg?operation=PKIOperation", data=der),
            await client.get("/scep/pg?operation=GetCACaps"),
            await client.get("/challenge/pg/certsrv/mscep_admin/", headers={"Authorization": basic}),
            await client.get(f"/crl/{ca_id(ca)}.crl"),
            await client.post("/ocsp", data=ocsp_der, headers={"Content-Type": "application/ocsp-request"}),
            await client.get("/api/v1/certificates/1234"),
        ]
        for resp in answers:
            await _assert_503(resp)
        ready = await client.get("/readyz")
        assert ready.status == 503
        body = await ready.json()
        assert body["reason"] == "store unavailable: connection refused by the database server"
        assert str(relay.port) not in await ready.text()
        faults = [r for r in caplog.records if r.name == "scep_ca.server.store_faults"]
        assert len(faults) == 1 and "ConnectionRefusedError" in faults[0].getMessage()
        assert not [r for r in caplog.records if r.exc_info], "no traceback anywhere"

        # Nothing was written, and the same request succeeds once PostgreSQL is back.
        now = dt.datetime.now(dt.UTC)
        assert await direct.count_unused_challenges("pg", now) == 1
        assert await direct.count_certificates() == 0
        await relay.start()
        assert (await client.get("/readyz")).status == 200
        resp = await client.post("/scep/pg?operation=PKIOperation", data=der)
        assert resp.status == 200
        assert _status(await resp.read(), signer, device_key) is PKIStatus.SUCCESS
        assert await direct.count_certificates() == 1
    finally:
        await direct.close()
