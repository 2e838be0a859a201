"""The audit keys in the PKCS#11 token (SoftHSM) when ``keys.pkcs11`` is set: the MAC key is
a sensitive, never-extractable generic secret used with CKM_SHA256_HMAC, checkpoints are
signed by an RSA key in the token, and no audit key is a file of the data directory."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from audit.token_keys import MAC_LABEL
from tests.hsm import SoftHsm, private_key_objects
from tests.integration.conftest import HsmCli


def test_token_audit_keys_seal_verify_and_sign_checkpoints(
    cli: HsmCli,
    hsm: SoftHsm,
    tmp_path: Path,
) -> None:
    created = json.loads(cli("integration", "create", "fleet", "--json"))
    cli("challenge", "new", created["id"])
    out = tmp_path / "cp.json"
    cli("audit", "checkpoint", "--out", str(out))
    assert "OK: 4 records in 4 chains verify" in cli("audit", "verify", "--checkpoint", str(out))
    # One MAC key in the token, sensitive and never extractable; no audit key file.
    objects = private_key_objects(hsm, "secrkey")
    assert objects.count(MAC_LABEL) == 1, objects
    assert "never extractable" in objects.split(MAC_LABEL, 1)[1], objects
    data = cli.data_dir
    assert not (data / "audit.key").exists() and not (data / "audit-checkpoint.key").exists()
    assert (data / "audit-checkpoint.key.pkcs11").read_text().startswith("pkcs11:")
    leaked = [p for p in data.rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()]
    assert not leaked, leaked
    # A record changed in the database fails against the token's key.
    db = sqlite3.connect(data / "scep-ca.sqlite3")
    db.execute("UPDATE audit_events SET actor = 'os:mallory' WHERE event = 'integration.created'")
    db.commit()
    db.close()
    with pytest.raises(AssertionError, match=r"FAILED: chain .* seq 1: modified"):
        cli("audit", "verify", "--checkpoint", str(out))
