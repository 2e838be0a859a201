"""Expiry thresholds and RA due dates (pure: certificates and times only)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from scep_ca.pki.ca import CAIdentity, create_ca
from scep_ca.pki.ra_renewal import due
from scep_ca.services.expiry import ca_warning, ca_warning_level, days_left, ra_warnings
from scep_ca.services.status_report import CrlFacts, crl_facts

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("left_days", "level"),
    [(400, None), (180, None), (179.9, 180), (90, 180), (89.5, 90), (30, 90), (29, 30), (1, 30), (-3, 30)],
)
def test_ca_warning_levels(left_days: float, level: int | None) -> None:
    assert ca_warning_level(NOW + dt.timedelta(days=left_days), NOW) == level


def test_days_left_counts_whole_days() -> None:
    assert days_left(NOW + dt.timedelta(days=29, hours=23), NOW) == 29
    assert days_left(NOW - dt.timedelta(hours=1), NOW) == -1


def test_ca_warning_says_how_to_roll_over(tmp_path: Path) -> None:
    ca = create_ca(tmp_path / "ca", subject="CN=W", key_size=2048, validity_days=60, passphrase=None, now=NOW)
    warning = ca_warning(ca, NOW)
    assert warning is not None
    assert "within 90 days" in warning and "scep-ca ca rollover" in warning and "activate-next" in warning


def test_due_ras_and_ras_that_end_with_the_ca(tmp_path: Path) -> None:
    ca = create_ca(
        tmp_path / "a", subject="CN=D", key_size=2048, validity_days=3650, passphrase=None, now=NOW, ra_validity_days=20
    )
    assert [ra.usage for ra in due(ca, NOW, 30)] == ["signing", "encryption"]
    assert due(ca, NOW, 10) == ()
    short = create_ca(tmp_path / "b", subject="CN=S", key_size=2048, validity_days=20, passphrase=None, now=NOW)
    # Capped at the CA's notAfter: renewing cannot help, so nothing is due and the warning says why.
    assert due(short, NOW, 30) == ()
    assert all("expires with the CA certificate" in w for w in ra_warnings(short, NOW, 30))
    assert len(ra_warnings(short, NOW, 30)) == 2


def _crl(ca: CAIdentity, number: int) -> bytes:
    assert isinstance(ca.key, rsa.RSAPrivateKey)
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(NOW)
        .next_update(NOW + dt.timedelta(hours=12))
        .add_extension(x509.CRLNumber(number), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return crl.public_bytes(serialization.Encoding.DER)


def test_crl_facts_only_from_a_crl_the_ca_signed(tmp_path: Path) -> None:
    ours = create_ca(tmp_path / "ours", subject="CN=Ours", key_size=2048, validity_days=10, passphrase=None)
    theirs = create_ca(tmp_path / "theirs", subject="CN=Ours", key_size=2048, validity_days=10, passphrase=None)
    assert crl_facts(_crl(ours, 7), NOW, ours.cert) == CrlFacts(7, (NOW + dt.timedelta(hours=12)).isoformat(), 0.5)
    assert crl_facts(_crl(theirs, 7), NOW, ours.cert) == CrlFacts(
        error="the CRL the server serves is not signed by the current CA"
    )
