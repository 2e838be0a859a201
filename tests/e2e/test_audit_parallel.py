"""The audit log under parallel writers: two ``scep-ca serve`` instances (two hosts) with two
worker processes each, on one PostgreSQL database, enrolling at once. Every chain verifies
(``scep-ca audit verify``) and there is exactly one "issued" event per certificate."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from scep_ca.protocol.client import build_csr, build_request, open_reply, self_signed_signer
from scep_ca.protocol.dn import parse_dn
from scep_ca.protocol.enums import PKIStatus
from tests.e2e.conftest import ScepCaServer
from tests.e2e.test_postgres_two_instances import database, started_hosts  # noqa: F401

PER_HOST = 8


@pytest.fixture
def two_hosts_two_workers(tmp_path: Path, database: str) -> Iterator[tuple[ScepCaServer, ScepCaServer]]:  # noqa: F811
    config = {"store": {"dsn": database}, "server": {"workers": 2}, "challenge": {"max_unused": 100}}
    with started_hosts(tmp_path, config) as hosts:
        yield hosts


def test_parallel_enrollments_on_two_hosts_with_two_workers_each_keep_every_chain_whole(
    two_hosts_two_workers: tuple[ScepCaServer, ScepCaServer],
) -> None:
    a, b = two_hosts_two_workers
    integration = a.create_integration("parallel", subject="CN=$USERID$")
    ra = x509.load_pem_x509_certificate(a.encryption_pem.read_bytes())
    requests = []
    for n in range(2 * PER_HOST):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        signer = self_signed_signer(key)
        csr = build_csr(key, parse_dn(f"CN=p{n}"), a.challenge(integration["id"]))
        der = build_request(csr, signer_cert=signer, signer_key=key, recipient=ra, transaction_id=f"p{n}").der
        requests.append((a if n % 2 else b, der, signer, key))

    async def enroll_all() -> list[PKIStatus]:
        # Several connections per host, so both worker processes of each take requests.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:

            async def one(host: ScepCaServer, der: bytes) -> bytes:
                async with session.post(f"{host.scep_url(integration['id'])}?operation=PKIOperation", data=der) as r:
                    assert r.status == 200, await r.text()
                    return await r.read()

            replies = await asyncio.gather(*(one(host, der) for host, der, _, _ in requests))
        return [open_reply(body, s, k).status for body, (_, _, s, k) in zip(replies, requests, strict=True)]

    assert asyncio.run(enroll_all()) == [PKIStatus.SUCCESS] * len(requests)
    certificates = b.certificates(integration["id"])
    assert len(certificates) == len(requests)

    verified = json.loads(b.cli("audit", "verify", "--json").stdout)
    assert verified["ok"] is True and verified["problems"] == []
    issued = json.loads(a.cli("audit", "list", "--event", "scep.issued", "--json").stdout)
    assert sorted(e["details"]["serial"] for e in issued) == sorted(c["serial"] for c in certificates)
    # The events came from more than one process: chains of several writers, each whole.
    writers = {e["writer"].rsplit("/", 1)[0] for e in issued}
    assert len(writers) >= 2, writers
