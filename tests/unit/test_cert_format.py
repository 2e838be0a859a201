"""Certificate record formatting for the CLI and the status API (scep_ca.pki.cert_format)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from scep_ca.pki.ca import CAIdentity
from scep_ca.pki.cert_format import (
    TABLE_COLUMNS,
    der_to_pem,
    effective_status,
    format_table,
    record_to_dict,
    table_row,
)
from scep_ca.pki.records import CertStatus
from tests.revocation_helpers import NOW, issue_cert, pem, record_for


def test_status_row_and_json(ca: CAIdentity, device_key: rsa.RSAPrivateKey) -> None:
    cert = issue_cert(ca, device_key, 0xABCDEF)
    record = record_for(ca, cert, "intega")
    assert effective_status(record, NOW) == "valid"
    assert effective_status(record, NOW + dt.timedelta(days=400)) == "expired"
    row = table_row(record, NOW)
    assert len(row) == len(TABLE_COLUMNS)
    assert row[:4] == ("abcdef", "intega", "CN=device", "valid") and row[5] == "-"

    revoked = dataclasses.replace(
        record, status=CertStatus.REVOKED, revoked_at=NOW, revocation_reason="cessationOfOperation"
    )
    assert effective_status(revoked, NOW + dt.timedelta(days=400)) == "revoked"
    assert table_row(revoked, NOW)[5] == "2026-11-28 12:00 (cessationOfOperation)"

    data = record_to_dict(revoked, NOW, include_pem=True)
    json.dumps(data)  # JSON-ready
    assert data["serial_colon"] == "ab:cd:ef" and data["revoked"] is True
    assert data["revoked_at"] == NOW.isoformat() and data["status"] == "revoked"
    assert x509.load_pem_x509_certificate(data["pem"].encode()) == cert
    assert "pem" not in record_to_dict(record, NOW)


def test_pem_matches_cryptography(ca: CAIdentity) -> None:
    assert der_to_pem(ca.cert_der).encode() == pem(ca.cert)


def test_table_alignment() -> None:
    text = format_table([("a", "bbbb"), ("cccc", "d")], ("X", "Y"))
    assert text.splitlines() == ["X     Y", "a     bbbb", "cccc  d"]
