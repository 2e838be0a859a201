"""Two ``scep-ca serve`` instances (standing in for two hosts) on one real PostgreSQL database.

- The same challenge submitted concurrently through both instances, N times: exactly one
  certificate each time, the other request FAILURE badRequest, no duplicate serials.
- An integration deleted through one host is honoured by the other on its next request.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from scep_ca.protocol.client import build_csr, build_request, open_reply, self_signed_signer
from scep_ca.protocol.dn import parse_dn
from scep_ca.protocol.enums import FailInfo, PKIStatus
from tests.e2e.conftest import ScepCaServer
from tests.store.conftest import PG_ADMIN_DSN

ROUNDS = 12
SHARED_FILES = ("ca.pem", "ca.key", "ra.pem", "ra.key", "ra-enc.pem", "ra-enc.key", "secret.key")
# One audit log over one database: every host seals with the same MAC key and signs
# checkpoints with the same key, so any host verifies every chain.
AUDIT_FILES = ("audit.key", "audit-checkpoint.key", "audit-checkpoint.pub")


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh database for this test (a missing server makes the test fail, never skip)."""
    name = f"scep_ca_e2e_{secrets.token_hex(4)}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def two_hosts(tmp_path: Path, database: str) -> Iterator[tuple[ScepCaServer, ScepCaServer]]:
    with started_hosts(tmp_path, {"store": {"dsn": database}, "server": {"workers": 1}}) as hosts:
        yield hosts


@contextmanager
def started_hosts(tmp_path: Path, config: dict[str, Any]) -> Iterator[tuple[ScepCaServer, ScepCaServer]]:
    """Two instances on one database, as two hosts: host B gets host A's keys."""
    first = ScepCaServer(tmp_path / "host-a", config).start()
    second = ScepCaServer(tmp_path / "host-b", config)
    # The second host gets the same CA, RA and secret key, as a deployment copies them.
    second.data_dir.mkdir(parents=True)
    for name in SHARED_FILES + AUDIT_FILES:
        shutil.copy2(first.data_dir / name, second.data_dir / name)
    try:
        second.start()
        yield first, second
    finally:
        second.stop()
        first.stop()


async def _post(session: aiohttp.ClientSession, url: str, body: bytes) -> bytes:
    async with session.post(f"{url}?operation=PKIOperation", data=body) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.read()


def test_same_challenge_through_two_hosts_yields_one_certificate(
    two_hosts: tuple[ScepCaServer, ScepCaServer],
) -> None:
    a, b = two_hosts
    integration = a.create_integration("race", subject="CN=$USERID$")
    ra = x509.load_pem_x509_certificate(a.encryption_pem.read_bytes())
    keys = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2)]
    signers = [self_signed_signer(k) for k in keys]

    async def round_trip(challenge: str, n: int) -> list[PKIStatus]:
        bodies = []
        for i, key in enumerate(keys):
            csr = build_csr(key, parse_dn(f"CN=race-{n}-{i}"), challenge)
            req = build_request(csr, signer_cert=signers[i], signer_key=key, recipient=ra, transaction_id=f"r{n}-{i}")
            bodies.append(req.der)
        async with aiohttp.ClientSession() as session:
            replies = await asyncio.gather(
                _post(session, a.scep_url(integration["id"]), bodies[0]),
                _post(session, b.scep_url(integration["id"]), bodies[1]),
            )
        opened = [open_reply(r, signers[i], keys[i]) for i, r in enumerate(replies)]
        for reply in opened:
            if reply.status is PKIStatus.FAILURE:
                assert reply.fail_info is FailInfo.BAD_REQUEST
        return [reply.status for reply in opened]

    for n in range(ROUNDS):
        statuses = asyncio.run(round_trip(a.challenge(integration["id"]), n))
        assert sorted(statuses) == [PKIStatus.SUCCESS, PKIStatus.FAILURE], f"round {n}: {statuses}"
    certificates = b.certificates(integration["id"])
    assert len(certificates) == ROUNDS
    assert len({c["serial"] for c in certificates}) == ROUNDS
    # Each host's chains verify on the other, with one "issued" event per certificate.
    assert json.loads(a.cli("audit", "verify", "--json").stdout)["ok"] is True
    issued = json.loads(b.cli("audit", "list", "--event", "scep.issued", "--json").stdout)
    assert sorted(e["details"]["serial"] for e in issued) == sorted(c["serial"] for c in certificates)


def test_delete_on_one_host_is_honoured_by_the_other(two_hosts: tuple[ScepCaServer, ScepCaServer]) -> None:
    a, b = two_hosts
    integration = a.create_integration("doomed", subject="CN=$USERID$")
    caps = urllib.request.urlopen(f"{b.scep_url(integration['id'])}?operation=GetCACaps", timeout=10).read()
    assert b"SCEPStandard" in caps
    leftover = b.challenge(integration["id"])
    deleted = a.cli("integration", "delete", integration["id"], "--yes", "--json")
    assert '"revoked": 0' in deleted.stdout
    # Host B's very next requests: GetCACaps 404, and a PKIOperation with a challenge issued before: FAILURE.
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{b.scep_url(integration['id'])}?operation=GetCACaps", timeout=10)
    assert caught.value.code == 404
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signer = self_signed_signer(key)
    ra = x509.load_pem_x509_certificate(b.encryption_pem.read_bytes())
    req = build_request(
        build_csr(key, parse_dn("CN=late"), leftover),
        signer_cert=signer,
        signer_key=key,
        recipient=ra,
        transaction_id="late",
    )
    post = urllib.request.Request(f"{b.scep_url(integration['id'])}?operation=PKIOperation", data=req.der)
    reply = open_reply(urllib.request.urlopen(post, timeout=10).read(), signer, key)
    assert (reply.status, reply.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST)
    assert b.certificates(integration["id"]) == []
