"""The verify status API's pure core (scep_ca.pki.status)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from scep_ca.pki.ca import CAIdentity
from scep_ca.pki.records import CertStatus
from scep_ca.pki.status import (
    MAX_PEM_BYTES,
    CertificateParseError,
    VerifyStatus,
    serial_of_pem,
    verify_certificate,
)
from tests.revocation_helpers import NOW, issue_cert, pem, record_for

SERIAL = 0x1234_5678_9ABC_DEF0


@pytest.fixture(scope="module")
def leaf(ca: CAIdentity, device_key: rsa.RSAPrivateKey) -> x509.Certificate:
    return issue_cert(ca, device_key, SERIAL)


def test_trusted(ca: CAIdentity, leaf: x509.Certificate) -> None:
    result = verify_certificate(ca, pem(leaf), record_for(ca, leaf, "intega"), NOW)
    assert result.status is VerifyStatus.TRUSTED and result.trusted
    assert result.integration_id == "intega"
    data = result.to_dict()
    assert data["status"] == "trusted" and data["trusted"] is True
    assert data["integration"] == "intega"
    assert data["serial"] == format(SERIAL, "x") and data["serial_colon"].startswith("12:34:56")
    assert data["subject"] == "CN=device"


def test_revoked_wins_over_expired(ca: CAIdentity, leaf: x509.Certificate) -> None:
    record = dataclasses.replace(
        record_for(ca, leaf), status=CertStatus.REVOKED, revoked_at=NOW, revocation_reason="keyCompromise"
    )
    later = NOW + dt.timedelta(days=400)
    result = verify_certificate(ca, pem(leaf), record, later)
    assert result.status is VerifyStatus.REVOKED and not result.trusted
    assert result.to_dict()["revocation_reason"] == "keyCompromise"
    assert result.to_dict()["revoked_at"] == NOW.isoformat()


def test_expired_and_not_yet_valid(ca: CAIdentity, leaf: x509.Certificate) -> None:
    record = record_for(ca, leaf)
    assert verify_certificate(ca, pem(leaf), record, NOW + dt.timedelta(days=400)).status is VerifyStatus.EXPIRED
    assert verify_certificate(ca, pem(leaf), record, NOW - dt.timedelta(days=2)).status is VerifyStatus.NOT_YET_VALID


def test_forged_with_known_serial_other_key(
    ca: CAIdentity, leaf: x509.Certificate, device_key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey
) -> None:
    """Our issuer name and a serial we issued, signed by someone else's key: never trusted."""
    forged = issue_cert(ca, device_key, SERIAL, signing_key=other_key)
    result = verify_certificate(ca, pem(forged), record_for(ca, leaf), NOW)
    assert result.status is VerifyStatus.UNKNOWN_ISSUER
    assert result.integration_id is None


def test_signed_by_our_key_but_not_the_stored_certificate(
    ca: CAIdentity, leaf: x509.Certificate, other_key: rsa.RSAPrivateKey
) -> None:
    """A valid signature is not enough: the exact DER must be what the store recorded."""
    twin = issue_cert(ca, other_key, SERIAL, cn="someone else")
    assert twin.serial_number == leaf.serial_number
    result = verify_certificate(ca, pem(twin), record_for(ca, leaf), NOW)
    assert result.status is VerifyStatus.NOT_ISSUED_HERE
    assert result.integration_id is None


def test_no_record(ca: CAIdentity, leaf: x509.Certificate) -> None:
    assert verify_certificate(ca, pem(leaf), None, NOW).status is VerifyStatus.NOT_ISSUED_HERE


def test_record_of_another_issuer(ca: CAIdentity, leaf: x509.Certificate) -> None:
    record = dataclasses.replace(record_for(ca, leaf), issuer_fingerprint="ab" * 32)
    assert verify_certificate(ca, pem(leaf), record, NOW).status is VerifyStatus.NOT_ISSUED_HERE


def test_ca_certificate_itself_is_not_issued_here(ca: CAIdentity) -> None:
    # Self-signed, so the signature checks out; it is not a certificate the store issued.
    assert verify_certificate(ca, pem(ca.cert), None, NOW).status is VerifyStatus.NOT_ISSUED_HERE


def test_serial_of_pem(leaf: x509.Certificate) -> None:
    assert serial_of_pem(pem(leaf)) == format(SERIAL, "x")
    assert serial_of_pem(b"some text before\n" + pem(leaf) + b"\nand after") == format(SERIAL, "x")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"hello",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        b"x" * (MAX_PEM_BYTES + 1),
    ],
)
def test_unparseable(ca: CAIdentity, body: bytes) -> None:
    with pytest.raises(CertificateParseError):
        verify_certificate(ca, body, None, NOW)
    with pytest.raises(CertificateParseError):
        serial_of_pem(body)


def test_two_certificates_refused(ca: CAIdentity, leaf: x509.Certificate) -> None:
    with pytest.raises(CertificateParseError, match="exactly one"):
        verify_certificate(ca, pem(leaf) + pem(ca.cert), None, NOW)
