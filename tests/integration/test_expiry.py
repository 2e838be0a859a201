"""Expiry metrics, RA renewal in a running app, and the renewal lease (issue 21).

Real app, real SQLite store, real keys; values checked exactly after enrollments,
revocations and an integration delete.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from aiohttp.test_utils import TestClient
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client.parser import text_string_to_metric_families

from challenge.issuer import issue_challenge
from config import load_config
from scep_ca.cli.main import main
from scep_ca.pki.ca import CAIdentity, create_ca, load_ca
from scep_ca.pki.ra_renewal import renew_ra
from scep_ca.pki.records import Integration
from scep_ca.protocol.client import build_csr, build_request, open_reply, self_signed_signer
from scep_ca.protocol.dn import parse_dn
from scep_ca.protocol.enums import PKIStatus
from scep_ca.server.app import RaUpkeep, build_app
from scep_ca.services.ra_renewal import RaRenewer
from scep_ca.services.revocation import RevocationService
from store.factory import open_store
from tests.integration.conftest import Server, _integration
from tests.integration.test_metrics import Samples, enroll, scrape, value
from tests.store.conftest import temporary_database
from tests.tcp_proxy import TcpRelay

WAIT_SECONDS = 15.0


async def scrape_until(server: Server, check: Callable[[Samples], bool]) -> Samples:
    """Scrapes until ``check`` holds: the counts refresh in the background after a scrape finds them stale."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        samples = await scrape(server)
        if check(samples) or time.monotonic() > deadline:
            return samples
        await asyncio.sleep(0.2)


async def test_certificate_counts_after_enrollments_revocations_and_a_delete(
    make_server: Callable[..., Awaitable[Server]], device_key: rsa.RSAPrivateKey
) -> None:
    server = await make_server(**{"metrics.counts_max_age_seconds": 1})
    short = Integration(**{**_integration("shortc").__dict__, "validity_days": 5})
    await server.store.create_integration(short)
    serials = []
    for n in range(3):
        reply = await enroll(server, device_key, await server.challenge(), f"A-{n}")
        assert reply.status is PKIStatus.SUCCESS
        serials.append(f"{reply.certificates[0].serial_number:x}")
    for integration_id, tid in (("integb", "B-0"), ("shortc", "C-0")):
        signer = self_signed_signer(device_key)
        csr = build_csr(device_key, parse_dn("CN=bob,O=Example"), await server.challenge(integration_id))
        req = build_request(
            csr, signer_cert=signer, signer_key=device_key, recipient=server.ca.encryption_cert, transaction_id=tid
        )
        resp = await server.client.post(f"{server.url(integration_id)}?operation=PKIOperation", data=req.der)
        assert open_reply(await resp.read(), signer, device_key).status is PKIStatus.SUCCESS
    revocation = RevocationService(server.store, server.ca)
    assert await revocation.revoke(serials[0], "keyCompromise", base="hex")
    await revocation.delete_integration("integb")

    expected = {
        ("scep_ca_certificates", "intega", "valid"): 2,
        ("scep_ca_certificates", "intega", "revoked"): 1,
        ("scep_ca_certificates", "integb", "valid"): 0,
        ("scep_ca_certificates", "integb", "revoked"): 1,
        ("scep_ca_certificates", "shortc", "valid"): 1,
        ("scep_ca_certificates", "shortc", "revoked"): 0,
        ("scep_ca_certificates_expiring", "intega", "7d"): 0,
        ("scep_ca_certificates_expiring", "intega", "30d"): 0,
        ("scep_ca_certificates_expiring", "shortc", "7d"): 1,
        ("scep_ca_certificates_expiring", "shortc", "30d"): 1,
        ("scep_ca_certificates_expiring", "integb", "7d"): 0,
    }

    def observed(samples: Samples) -> dict[tuple[str, str, str], float]:
        found = {}
        for name, integration, second in expected:
            label = "status" if name == "scep_ca_certificates" else "within"
            found[(name, integration, second)] = value(samples, name, integration=integration, **{label: second})
        return found

    samples = await scrape_until(server, lambda s: observed(s) == expected)
    assert observed(samples) == expected
    ca = server.ca
    assert value(samples, "scep_ca_ca_not_after_timestamp_seconds") == ca.cert.not_valid_after_utc.timestamp()
    assert value(samples, "scep_ca_ra_not_after_timestamp_seconds", usage="signing") == (
        ca.ra_cert.not_valid_after_utc.timestamp()
    )
    assert ca.enc_cert is not None
    assert value(samples, "scep_ca_ra_not_after_timestamp_seconds", usage="encryption") == (
        ca.enc_cert.not_valid_after_utc.timestamp()
    )
    next_update = value(samples, "scep_ca_crl_next_update_timestamp_seconds")
    assert 23 * 3600 < next_update - time.time() <= 24 * 3600


async def test_a_scrape_does_not_wait_for_a_stale_count(
    make_server: Callable[..., Awaitable[Server]], device_key: rsa.RSAPrivateKey
) -> None:
    """After the first count, a stale count is refreshed behind the scrape: the scrape that finds it
    stale answers the old value, a later one the new value."""
    server = await make_server(**{"metrics.counts_max_age_seconds": 1})
    # The app counted at start, in the background; no scrape waits for it.
    first = await scrape_until(server, lambda s: ("scep_ca_store_up", frozenset()) in s)
    assert value(first, "scep_ca_store_up") == 1
    assert value(first, "scep_ca_certificates", integration="intega", status="valid") == 0
    assert (await enroll(server, device_key, await server.challenge(), "late")).status is PKIStatus.SUCCESS
    await asyncio.sleep(1.1)
    stale = await scrape(server)
    assert value(stale, "scep_ca_certificates", integration="intega", status="valid") == 0
    fresh = await scrape_until(
        server, lambda s: value(s, "scep_ca_certificates", integration="intega", status="valid") == 1
    )
    assert value(fresh, "scep_ca_certificates", integration="intega", status="valid") == 1


def _ra_serials(body: bytes) -> set[int]:
    signed = cms.ContentInfo.load(body)["content"]
    return {x509.load_der_x509_certificate(c.chosen.dump()).serial_number for c in signed["certificates"]}


async def test_running_app_switches_to_renewed_ra_and_still_decrypts_for_the_old_one(
    tmp_path: Path,
    aiohttp_client: Callable[..., Awaitable[TestClient]],  # type: ignore[type-arg]
    device_key: rsa.RSAPrivateKey,
) -> None:
    """No restart: another process renews the RA files; the app serves the new RA within its check
    interval, signs with it, and decrypts a request built from the GetCACert it served before."""
    data = tmp_path / "data"
    create_ca(data, subject="CN=Renewal CA", key_size=2048, validity_days=3650, passphrase=None, ra_validity_days=10)
    config = load_config(None, {}, {"data_dir": str(data), "ra.renew_before_days": 30})

    def load() -> CAIdentity:
        return load_ca(data, None)

    def renew_files(identity: CAIdentity, usages: tuple[str, ...]) -> None:
        renew_ra(data, identity, usages, passphrase=None, token=None, validity_days=730, now=dt.datetime.now(dt.UTC))

    old = load()
    store = open_store(config)
    app = build_app(config, old, store, ra_upkeep=RaUpkeep(load, renew_files, check_seconds=0.05))
    client = await aiohttp_client(app)
    integration = _integration("renew")
    await store.create_integration(integration)
    before = await (await client.get("/scep/renew?operation=GetCACert")).read()
    assert old.ra_cert.serial_number in _ra_serials(before)

    # Another process (a CLI `ra renew`, another worker or host) renews, with its own store connection.
    other = open_store(config)
    await other.open()
    try:
        renewed = await RaRenewer(other, load, renew_files, 30).renew_due()
    finally:
        await other.close()
    assert [r.usage for r in renewed] == ["signing", "encryption"]
    new = load()
    deadline = time.monotonic() + WAIT_SECONDS
    while old.ra_cert.serial_number in _ra_serials(await (await client.get("/scep/renew?operation=GetCACert")).read()):
        assert time.monotonic() < deadline, "the app never switched to the renewed RA"
        await asyncio.sleep(0.05)
    served = _ra_serials(await (await client.get("/scep/renew?operation=GetCACert")).read())
    assert new.ra_cert.serial_number in served
    assert new.enc_cert is not None and new.enc_cert.serial_number in served

    assert old.enc_cert is not None
    for recipient, tid in ((old.enc_cert, "cached"), (new.enc_cert, "fresh")):
        challenge = await issue_challenge(store, config.challenge, "renew")
        assert challenge is not None
        signer = self_signed_signer(device_key)
        csr = build_csr(device_key, parse_dn("CN=dev,O=Example"), challenge)
        req = build_request(csr, signer_cert=signer, signer_key=device_key, recipient=recipient, transaction_id=tid)
        resp = await client.post("/scep/renew?operation=PKIOperation", data=req.der)
        reply = open_reply(await resp.read(), signer, device_key)
        assert reply.status is PKIStatus.SUCCESS, (tid, reply.fail_text)
        assert x509.load_der_x509_certificate(reply.signer_cert_der) == new.ra_cert
    samples: Samples = {}
    for family in text_string_to_metric_families(await (await client.get("/metrics")).text()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    assert value(samples, "scep_ca_ra_not_after_timestamp_seconds", usage="encryption") == (
        new.enc_cert.not_valid_after_utc.timestamp()
    )


async def test_nothing_renewed_when_no_ra_is_due(tmp_path: Path) -> None:
    data = tmp_path / "data"
    create_ca(data, subject="CN=Fresh CA", key_size=2048, validity_days=3650, passphrase=None, ra_validity_days=730)
    config = load_config(None, {}, {"data_dir": str(data)})
    store = open_store(config)
    await store.open()
    calls: list[tuple[str, ...]] = []
    try:
        renewed = await RaRenewer(store, lambda: load_ca(data, None), lambda _, u: calls.append(u), 30).renew_due()
    finally:
        await store.close()
    assert renewed == () and calls == []


def test_previous_ra_decrypts_only_until_it_expires(tmp_path: Path) -> None:
    """load_ca keeps a replaced encryption RA while it is valid and leaves an expired one out."""
    now = dt.datetime.now(dt.UTC)
    for name, made, kept in (("valid", now, 1), ("expired", now - dt.timedelta(days=3), 0)):
        data = tmp_path / name
        create_ca(
            data, subject="CN=Old CA", key_size=2048, validity_days=3650, passphrase=None, now=made, ra_validity_days=2
        )
        renew_ra(data, load_ca(data, None), ("encryption",), passphrase=None, token=None, validity_days=730, now=now)
        assert len(load_ca(data, None).previous_decryption) == kept, name


async def test_audit_checkpoint_time_when_a_source_is_wired(
    tmp_path: Path,
    shared_ca: tuple[Path, CAIdentity],
    aiohttp_client: Callable[..., Awaitable[TestClient]],  # type: ignore[type-arg]
) -> None:
    checkpoints: list[float | None] = [None, 1_796_000_000.0]
    config = load_config(None, {}, {"data_dir": str(tmp_path)})
    app = build_app(config, shared_ca[1], open_store(config), audit_checkpoint=lambda: checkpoints[0])
    client = await aiohttp_client(app)
    name = "scep_ca_audit_last_checkpoint_timestamp_seconds"
    assert f"# TYPE {name} gauge" in await (await client.get("/metrics")).text()
    assert f"\n{name} " not in await (await client.get("/metrics")).text()  # no checkpoint yet
    checkpoints.pop(0)
    assert f"\n{name} 1.796e+09" in await (await client.get("/metrics")).text()


def test_init_ra_create_and_rollover_use_ra_validity_days(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "scep-ca.yaml"
    config.write_text("ra:\n  validity_days: 100\n  renew_before_days: 10\n")
    data = tmp_path / "data"

    def run(*args: str) -> None:
        assert main(["--config", str(config), "--data-dir", str(data), *args]) == 0, capsys.readouterr().err

    def days(path: Path) -> int:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        return (cert.not_valid_after_utc - cert.not_valid_before_utc).days

    run("init")
    assert (days(data / "ra.pem"), days(data / "ra-enc.pem"), days(data / "ca.pem")) == (100, 100, 3650)
    run("ra", "create")
    assert days(data / "ra.pem") == 100
    run("ca", "rollover")
    assert (days(data / "next" / "ra.pem"), days(data / "next" / "ra-enc.pem")) == (100, 100)


async def _store_up(client: TestClient) -> float | None:  # type: ignore[type-arg]
    resp = await client.get("/metrics")
    assert resp.status == 200  # /metrics answers while the store is down
    for family in text_string_to_metric_families(await resp.text()):
        for sample in family.samples:
            if sample.name == "scep_ca_store_up":
                return sample.value
    return None


async def _wait_store_up(client: TestClient, expected: float) -> None:  # type: ignore[type-arg]
    deadline = time.monotonic() + WAIT_SECONDS
    while (seen := await _store_up(client)) != expected:
        assert time.monotonic() < deadline, f"scep_ca_store_up stayed {seen}, expected {expected}"
        await asyncio.sleep(0.2)


async def test_store_up_is_0_while_postgresql_is_down(
    tmp_path: Path,
    shared_ca: tuple[Path, CAIdentity],
    aiohttp_client: Callable[..., Awaitable[TestClient]],  # type: ignore[type-arg]
) -> None:
    async with temporary_database() as dsn:
        target = urlsplit(dsn)
        relay = TcpRelay(target.hostname or "127.0.0.1", target.port or 5432)
        await relay.start()
        relayed = target._replace(netloc=f"{target.username}@127.0.0.1:{relay.port}").geturl()
        overrides = {"data_dir": str(tmp_path), "store.dsn": relayed, "metrics.counts_max_age_seconds": 1}
        config = load_config(None, {}, overrides)
        try:
            client = await aiohttp_client(build_app(config, shared_ca[1], open_store(config)))
            await _wait_store_up(client, 1.0)
            await relay.stop()  # PostgreSQL "stops": connections cut, new ones refused
            await _wait_store_up(client, 0.0)
            await relay.start()
            await _wait_store_up(client, 1.0)
        finally:
            await relay.stop()
