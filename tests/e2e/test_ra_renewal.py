"""RA certificates that renew themselves (issue 21, "Must show").

RA certificates of 10 days' validity and ``ra.renew_before_days: 30``: two hosts (two
``scep-ca serve`` processes, two workers each, one data directory) on one real PostgreSQL
start at the same moment. Between them they renew the signing and the encryption RA once;
GetCACert on both serves the new ones; scepclient enrolls; and a request built for the old
encryption RA before the renewal (a client that cached GetCACert) is still answered.
"""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from scep_ca.protocol.client import build_csr, build_request, open_reply, self_signed_signer
from scep_ca.protocol.dn import parse_dn
from scep_ca.protocol.enums import PKIStatus
from tests.e2e import clients
from tests.e2e.clients import run_scepclient
from tests.e2e.conftest import ScepCaServer
from tests.e2e.test_postgres_two_instances import database

__all__ = ["database"]  # the fixture, re-exported for pytest

RENEWED = "event=ra_renewed"


def _get_ca_cert(server: ScepCaServer, integration_id: str) -> list[x509.Certificate]:
    url = f"{server.scep_url(integration_id)}?operation=GetCACert"
    assert server.running, server.log()
    body = urllib.request.urlopen(url, timeout=10).read()
    signed = cms.ContentInfo.load(body)["content"]
    return [x509.load_der_x509_certificate(c.chosen.dump()) for c in signed["certificates"]]


def _pem(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture
def hosts(tmp_path: Path, database: str) -> Iterator[tuple[ScepCaServer, ScepCaServer]]:
    config = {"store": {"dsn": database}, "server": {"workers": 2}}
    first = ScepCaServer(tmp_path / "host-a", {**config, "ra": {"validity_days": 10, "renew_before_days": 5}})
    second = ScepCaServer(tmp_path / "host-b", config)
    second.data_dir = first.data_dir  # the shared volume hosts keep their CA and RA files on
    first.port = clients.free_port()
    first.base_dir.mkdir(parents=True)
    first._write_config()
    try:
        yield first, second
    finally:
        second.stop()
        first.stop()


@pytest.fixture
def hold() -> Iterator[threading.Event]:
    """Set at the end of the test: the threads that started servers live until then, because a
    server dies with the thread that spawned it (PR_SET_PDEATHSIG follows the parent thread)."""
    event = threading.Event()
    yield event
    event.set()


def _start_in_thread(server: ScepCaServer, hold: threading.Event) -> Future[None]:
    started: Future[None] = Future()

    def run() -> None:
        try:
            server.start()
        except BaseException as exc:
            started.set_exception(exc)
            return
        started.set_result(None)
        hold.wait()

    threading.Thread(target=run, daemon=True).start()
    return started


def test_ra_renewed_once_at_start_and_old_ra_requests_still_answered(
    hosts: tuple[ScepCaServer, ScepCaServer], hold: threading.Event, tmp_path: Path
) -> None:
    a, b = hosts
    a.cli("init")
    old_sign, old_enc = _pem(a.ra_pem), _pem(a.encryption_pem)
    assert (old_enc.not_valid_after_utc - old_enc.not_valid_before_utc).days == 10
    integration = a.create_integration("fleet", subject="CN=$USERID$,OU=MDM,O=scep-client,C=US")
    # A device that fetched GetCACert before the renewal builds its request for the old RA.
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signer = self_signed_signer(key)
    csr = build_csr(key, parse_dn("CN=cached-ra,OU=MDM,O=scep-client,C=US"), a.challenge(integration["id"]))
    cached = build_request(csr, signer_cert=signer, signer_key=key, recipient=old_enc, transaction_id="cached-ra")

    # Both hosts start at once with the production window (30 days) and validity (730 days).
    a.extra_config["ra"] = {"renew_before_days": 30}
    for started in [_start_in_thread(a, hold), _start_in_thread(b, hold)]:
        started.result()

    new_sign, new_enc = _pem(a.ra_pem), _pem(a.encryption_pem)
    assert {new_sign.serial_number, new_enc.serial_number}.isdisjoint({old_sign.serial_number, old_enc.serial_number})
    assert (new_enc.not_valid_after_utc - new_enc.not_valid_before_utc).days == 730
    # Renewed once: two certificates (signing, encryption), by one process of the two hosts.
    logs = a.log() + b.log()
    assert logs.count(RENEWED) == 2, logs
    assert sum(RENEWED in server.log() for server in (a, b)) == 1
    assert len(list((a.data_dir / "ra-previous").iterdir())) == 1
    assert len(list((a.data_dir / "retired").iterdir())) == 1

    for server in (a, b):
        served = {c.serial_number for c in _get_ca_cert(server, integration["id"])}
        assert {new_sign.serial_number, new_enc.serial_number} <= served
        assert not served & {old_sign.serial_number, old_enc.serial_number}

    enrolled = run_scepclient(integration["scep_url"], a.challenge(integration["id"]), tmp_path / "sc")
    assert enrolled.ok, enrolled.command

    for server in (b, a):
        post = urllib.request.Request(f"{server.scep_url(integration['id'])}?operation=PKIOperation", data=cached.der)
        reply = open_reply(urllib.request.urlopen(post, timeout=10).read(), signer, key)
        assert reply.status is PKIStatus.SUCCESS, reply.fail_info
        assert reply.certificates[0].public_key().public_numbers() == key.public_key().public_numbers()
        # Signed by the new signing RA, the one GetCACert serves now.
        assert reply.signer_cert_der == new_sign.public_bytes(serialization.Encoding.DER)
    assert len(a.certificates(integration["id"])) == 2


def test_a_failed_renewal_at_start_still_serves_the_current_ra(tmp_path: Path) -> None:
    """The renewal cannot move the old RA (``retired`` is a file): serve starts anyway with the
    current RA, logs why, ``status`` exits 1, nothing changed on disk, and a later ``ra renew`` works."""
    server = ScepCaServer(tmp_path / "srv", {"ra": {"validity_days": 10, "renew_before_days": 5}})
    server.port = clients.free_port()
    server.base_dir.mkdir(parents=True)
    server._write_config()
    server.cli("init")
    old = {p.name: p.read_bytes() for p in server.data_dir.iterdir() if p.name.startswith("ra")}
    (server.data_dir / "retired").write_text("in the way\n")
    server.extra_config["ra"] = {"renew_before_days": 30}
    with server:
        assert "RA renewal at start failed" in server.log()
        assert RENEWED not in server.log()
        integration = server.create_integration("still")
        served = {c.serial_number for c in _get_ca_cert(server, integration["id"])}
        assert {_pem(server.ra_pem).serial_number, _pem(server.encryption_pem).serial_number} <= served
        assert {p.name: p.read_bytes() for p in server.data_dir.iterdir() if p.name.startswith("ra")} == old
        status = server.cli("status", check=False)
        assert status.returncode == 1
        assert "RA certificate expires in 9 days and was not renewed" in status.stdout
        (server.data_dir / "retired").unlink()
        renewed = server.cli("ra", "renew")
        assert "renewed the signing RA" in renewed.stdout and "renewed the encryption RA" in renewed.stdout
