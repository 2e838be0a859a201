"""Backups of a serving CA, and the disaster drill of issue 19, on both stores, with real clients against real servers.

Enroll A and B with micromdm's scepclient, revoke A, back up (age, to a recipient made by
age-keygen), enroll C and revoke B on the old host (which also serves CRLs meanwhile), ship its
audit events off (``audit export``), destroy it (data directory and database); restore onto a
fresh directory (and a fresh PostgreSQL database), replay the shipped events, serve: OCSP and
the CRL say A and B revoked and C known, a new enrollment gets a new serial, the first CRL
number is above every number the old host used, and ``audit verify`` passes.

And a backup taken while two server workers enroll is one point in time: every certificate in
it has its issue event and the reverse, and every chain verifies.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from scep_ca.protocol.client import build_csr, build_request, open_reply, self_signed_signer
from scep_ca.protocol.dn import parse_dn
from scep_ca.protocol.enums import PKIStatus
from tests.e2e.clients import free_port, run_scepclient
from tests.e2e.conftest import ScepCaServer
from tests.e2e.test_revocation_real_clients import fetch_crl, ocsp_status, serial_of
from tests.store.conftest import sql_sync, temporary_database_sync

pytestmark = pytest.mark.e2e


@pytest.fixture
def databases() -> Iterator[list[str]]:
    """Two fresh databases: the old host's and the new host's."""
    with temporary_database_sync() as old, temporary_database_sync() as new:
        yield [old, new]


def _crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_disaster_drill(backend: str, tmp_path: Path, databases: list[str]) -> None:
    old_db, new_db = databases
    store = {"store": {"dsn": old_db}} if backend == "postgresql" else {}
    key = tmp_path / "backup-key.txt"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    recipient = subprocess.run(["age-keygen", "-y", str(key)], check=True, capture_output=True, text=True).stdout
    certs: dict[str, Path] = {}
    crl_numbers: list[int] = []

    old = ScepCaServer(tmp_path / "old", store).start()
    try:
        fleet = old.create_integration("Fleet")

        def enroll(server: ScepCaServer, name: str) -> Path:
            result = run_scepclient(
                fleet["scep_url"].replace(old.base_url, server.base_url),
                server.challenge(fleet["id"]),
                tmp_path / name,
                subject_cn=name,
            )
            assert result.issued, result.describe()
            assert result.cert_path is not None
            return result.cert_path

        certs["a"], certs["b"] = enroll(old, "a"), enroll(old, "b")
        old.cli("cert", "revoke", format(serial_of(certs["a"]), "x"), "--reason", "keyCompromise")
        crl_numbers.append(_crl_number(fetch_crl(old, tmp_path / "crl-old-1")[1]))
        backup = tmp_path / "offsite" / "backup.tar.age"
        backup.parent.mkdir()
        old.cli("backup", "--out", str(backup), "--recipient", recipient.strip())
        # After the backup: only the shipped audit events know about these.
        certs["c"] = enroll(old, "c")
        old.cli("cert", "revoke", format(serial_of(certs["b"]), "x"), "--reason", "superseded")
        for i in range(3):
            crl_numbers.append(_crl_number(fetch_crl(old, tmp_path / f"crl-old-{i + 2}")[1]))
        shipped = tmp_path / "offsite" / "events.jsonl"
        old.cli("audit", "export", "--format", "jsonl", "--out", str(shipped))
    finally:
        old.stop()
    shutil.rmtree(old.data_dir)
    if backend == "postgresql":
        sql_sync(f'DROP DATABASE "{old_db.rsplit("/", 1)[1]}" WITH (FORCE)')

    new = ScepCaServer(tmp_path / "new", {"store": {"dsn": new_db}} if backend == "postgresql" else {})
    new.base_dir.mkdir()
    new.port = free_port()
    new._write_config()  # the CLI calls before the first start share the server's config
    restore = ["restore", str(backup), "--identity", str(key)]
    if backend == "postgresql":
        restore += ["--database-url", new_db]
    restored = new.cli(*restore)
    assert "audit replay" in restored.stdout
    replayed = new.cli("audit", "replay", str(shipped))
    assert "1 certificates, 1 revocations restored" in replayed.stdout, replayed.stdout
    new.start()
    try:
        ocsp_url = f"{new.base_url}/ocsp"
        assert ocsp_status(new, certs["a"], url=ocsp_url).status == "revoked"
        assert ocsp_status(new, certs["b"], url=ocsp_url).status == "revoked"
        assert ocsp_status(new, certs["c"], url=ocsp_url).status == "good"
        _, crl = fetch_crl(new, tmp_path / "crl-new")
        for name in ("a", "b"):
            assert crl.get_revoked_certificate_by_serial_number(serial_of(certs[name])) is not None, name
        assert crl.get_revoked_certificate_by_serial_number(serial_of(certs["c"])) is None
        assert _crl_number(crl) > max(crl_numbers), (crl_numbers, _crl_number(crl))
        d = run_scepclient(new.scep_url(fleet["id"]), new.challenge(fleet["id"]), tmp_path / "d", subject_cn="d")
        assert d.issued, d.describe()
        assert d.cert_path is not None
        assert serial_of(d.cert_path) not in {serial_of(p) for p in certs.values()}
        verified = new.cli("audit", "verify")
        assert verified.stdout.strip().splitlines()[-1].startswith("OK:"), verified.stdout
    finally:
        new.stop()


def _enroll_until(server: ScepCaServer, integration_id: str, name: str, stop: threading.Event) -> int:
    """Enroll with the in-tree client until ``stop`` is set, then three more times; the count."""
    ra = x509.load_pem_x509_certificate(server.encryption_pem.read_bytes())
    done = after = 0
    while after < 3:
        if stop.is_set():
            after += 1
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        signer = self_signed_signer(key)
        csr = build_csr(key, parse_dn(f"CN={name}-{done}"), server.challenge(integration_id))
        req = build_request(csr, signer_cert=signer, signer_key=key, recipient=ra, transaction_id=f"{name}-{done}")
        post = urllib.request.Request(f"{server.scep_url(integration_id)}?operation=PKIOperation", data=req.der)
        reply = open_reply(urllib.request.urlopen(post, timeout=30).read(), signer, key)
        assert reply.status is PKIStatus.SUCCESS, reply
        done += 1
    return done


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_backup_while_two_workers_enroll_is_consistent(backend: str, tmp_path: Path, databases: list[str]) -> None:
    config: dict[str, Any] = {"server": {"workers": 2}, "challenge": {"max_unused": 50}}
    if backend == "postgresql":
        config["store"] = {"dsn": databases[0]}
    server = ScepCaServer(tmp_path / "live", config).start()
    try:
        integration = server.create_integration("load", subject="CN=$USERID$")
        stop = threading.Event()
        with ThreadPoolExecutor(max_workers=2) as pool:
            loads = [pool.submit(_enroll_until, server, integration["id"], f"w{i}", stop) for i in range(2)]
            while server.certificate_count() < 4:
                time.sleep(0.2)
            backup = tmp_path / "backup.tar"
            try:
                server.cli("backup", "--out", str(backup), "--insecure-plaintext")
            finally:
                stop.set()
            total = sum(f.result() for f in loads)
        verified = server.cli("backup", "verify", str(backup))
        assert verified.stdout.startswith("OK: backup"), verified.stdout
    finally:
        server.stop()
    restored = ScepCaServer(tmp_path / "restored", {"store": {"dsn": databases[1]}} if backend == "postgresql" else {})
    restored.base_dir.mkdir()
    restored.port = free_port()
    restored._write_config()
    argv = ["restore", str(backup)] + (["--database-url", databases[1]] if backend == "postgresql" else [])
    restored.cli(*argv)
    serials = {c["serial"] for c in restored.certificates()}
    issued = json.loads(restored.cli("audit", "list", "--event", "scep.issued", "--json").stdout)
    # Every certificate has its issue event and every issue event its certificate.
    assert serials == {e["details"]["serial"] for e in issued}
    assert 4 <= len(serials) < total, (len(serials), total)
    assert json.loads(restored.cli("audit", "verify", "--json").stdout)["ok"] is True
