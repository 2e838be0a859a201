"""The hand-encoded CRL (scep_ca.pki.crl) against cryptography's parser, its builder, and openssl."""

from __future__ import annotations

import datetime as dt
import secrets
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from scep_ca.pki.ca import CAIdentity
from scep_ca.pki.crl import CRLError, build_crl, encode_time
from scep_ca.pki.records import RevokedEntry
from tests.revocation_helpers import NOW, issue_cert, openssl, write_pem

REVOKED_AT = NOW - dt.timedelta(hours=2)


def _entries() -> list[RevokedEntry]:
    return [
        RevokedEntry("1a2b", REVOKED_AT, "keyCompromise"),
        RevokedEntry("80", REVOKED_AT, "cessationOfOperation"),  # top bit set: needs a 00 octet
        RevokedEntry(format((1 << 158) | 7, "x"), REVOKED_AT + dt.timedelta(seconds=1), "unspecified"),
        RevokedEntry("ff00", REVOKED_AT, None),
    ]


def test_parses_and_verifies(ca: CAIdentity) -> None:
    crl = x509.load_der_x509_crl(build_crl(ca, _entries(), 42, NOW, 24))
    assert crl.is_signature_valid(ca.public_key)
    assert crl.issuer == ca.cert.subject
    assert crl.signature_hash_algorithm is not None and crl.signature_hash_algorithm.name == "sha256"
    assert crl.last_update_utc == NOW
    assert crl.next_update_utc == NOW + dt.timedelta(hours=24)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 42
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert len(crl) == 4


def test_entries_carry_serial_date_and_reason(ca: CAIdentity) -> None:
    crl = x509.load_der_x509_crl(build_crl(ca, _entries(), 1, NOW, 24))
    by_serial = {r.serial_number: r for r in crl}
    assert set(by_serial) == {0x1A2B, 0x80, (1 << 158) | 7, 0xFF00}
    key = by_serial[0x1A2B]
    assert key.revocation_date_utc == REVOKED_AT
    assert key.extensions.get_extension_for_class(x509.CRLReason).value.reason is x509.ReasonFlags.key_compromise
    assert (
        by_serial[0x80].extensions.get_extension_for_class(x509.CRLReason).value.reason
        is x509.ReasonFlags.cessation_of_operation
    )
    # RFC 5280 §5.3.1: no reasonCode rather than unspecified; none for an absent reason either.
    assert len(by_serial[(1 << 158) | 7].extensions) == 0
    assert len(by_serial[0xFF00].extensions) == 0


def test_same_bytes_as_cryptography_builder(ca: CAIdentity) -> None:
    """The TBSCertList is byte-identical to what cryptography's builder encodes."""
    ours = x509.load_der_x509_crl(build_crl(ca, _entries(), 9, NOW, 24))
    ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(NOW)
        .next_update(NOW + dt.timedelta(hours=24))
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .add_extension(x509.CRLNumber(9), critical=False)
    )
    for entry in _entries():
        revoked = (
            x509.RevokedCertificateBuilder().serial_number(int(entry.serial, 16)).revocation_date(entry.revoked_at)
        )
        if entry.reason in ("keyCompromise", "cessationOfOperation"):
            revoked = revoked.add_extension(x509.CRLReason(x509.ReasonFlags(entry.reason)), critical=False)
        builder = builder.add_revoked_certificate(revoked.build())
    theirs = builder.sign(ca.key, hashes.SHA256())
    assert ours.tbs_certlist_bytes == theirs.tbs_certlist_bytes


def test_empty_crl_omits_the_list(ca: CAIdentity, tmp_path: Path) -> None:
    der = build_crl(ca, [], 1, NOW, 24)
    crl = x509.load_der_x509_crl(der)
    assert len(crl) == 0 and crl.is_signature_valid(ca.public_key)
    path = tmp_path / "empty.crl"
    path.write_bytes(der)
    assert "No Revoked Certificates." in openssl("crl", "-inform", "DER", "-in", path, "-text", "-noout").stdout


def test_openssl_reads_it(ca: CAIdentity, tmp_path: Path) -> None:
    path = tmp_path / "ca.crl"
    path.write_bytes(build_crl(ca, _entries(), 77, NOW, 24))
    text = openssl("crl", "-inform", "DER", "-in", path, "-text", "-noout").stdout
    assert "Version 2 (0x1)" in text
    assert "sha256WithRSAEncryption" in text
    assert "X509v3 CRL Number: \n                77" in text
    assert "X509v3 Authority Key Identifier" in text
    assert "Serial Number: 1A2B" in text and "Key Compromise" in text
    assert "Serial Number: 80" in text and "Cessation Of Operation" in text
    ca_pem = write_pem(tmp_path / "ca.pem", ca.cert)
    assert "verify OK" in openssl("crl", "-inform", "DER", "-in", path, "-CAfile", ca_pem, "-noout").stderr


def test_openssl_verify_crl_check(ca: CAIdentity, device_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)  # openssl checks against the real clock
    revoked = issue_cert(ca, device_key, secrets.randbits(159), cn="revoked", not_before=now - dt.timedelta(hours=1))
    good = issue_cert(ca, device_key, secrets.randbits(159), cn="good", not_before=now - dt.timedelta(hours=1))
    entries = [RevokedEntry(format(revoked.serial_number, "x"), now - dt.timedelta(minutes=1), "keyCompromise")]
    der_path = tmp_path / "ca.crl"
    der_path.write_bytes(build_crl(ca, entries, 3, now, 24))
    crl_pem = tmp_path / "ca.crl.pem"
    openssl("crl", "-inform", "DER", "-in", der_path, "-out", crl_pem)
    ca_pem = write_pem(tmp_path / "ca.pem", ca.cert)

    bad = openssl(
        "verify",
        "-crl_check",
        "-CAfile",
        ca_pem,
        "-CRLfile",
        crl_pem,
        write_pem(tmp_path / "r.pem", revoked),
        check=False,
    )
    assert bad.returncode != 0
    assert "certificate revoked" in bad.stdout + bad.stderr

    ok = openssl("verify", "-crl_check", "-CAfile", ca_pem, "-CRLfile", crl_pem, write_pem(tmp_path / "g.pem", good))
    assert ok.stdout.strip().endswith(": OK")


def test_times_switch_to_generalized_in_2050() -> None:
    # RFC 5280 §5.1.2.4: UTCTime through 2049, GeneralizedTime from 2050.
    assert encode_time(dt.datetime(2049, 12, 31, 23, 59, 59, tzinfo=dt.UTC)) == b"\x17\x0d491231235959Z"
    assert encode_time(dt.datetime(2050, 1, 1, tzinfo=dt.UTC)) == b"\x18\x0f20500101000000Z"
    # Other zones are converted to UTC; fractions are dropped.
    plus2 = dt.timezone(dt.timedelta(hours=2))
    assert encode_time(dt.datetime(2026, 1, 1, 2, 0, 0, 999, tzinfo=plus2)) == b"\x17\x0d260101000000Z"


def test_next_update_past_2049(ca: CAIdentity) -> None:
    now = dt.datetime(2049, 12, 31, 12, 0, tzinfo=dt.UTC)
    crl = x509.load_der_x509_crl(build_crl(ca, [RevokedEntry("5", now, None)], 1, now, 24))
    assert crl.next_update_utc == dt.datetime(2050, 1, 1, 12, 0, tzinfo=dt.UTC)
    assert crl.is_signature_valid(ca.public_key)


def test_bad_inputs(ca: CAIdentity) -> None:
    with pytest.raises(CRLError):
        build_crl(ca, [], 1, dt.datetime(2026, 1, 1), 24)  # naive
    with pytest.raises(CRLError):
        build_crl(ca, [], -1, NOW, 24)
    with pytest.raises(CRLError):
        build_crl(ca, [], 1 << 160, NOW, 24)
    with pytest.raises(CRLError):
        build_crl(ca, [], 1, NOW, 0)
    with pytest.raises(CRLError):
        build_crl(ca, [RevokedEntry("zz", NOW, None)], 1, NOW, 24)


def test_unknown_stored_reason_is_listed_without_reason(ca: CAIdentity) -> None:
    crl = x509.load_der_x509_crl(build_crl(ca, [RevokedEntry("5", NOW, "made-up")], 1, NOW, 24))
    assert len(crl) == 1 and len(next(iter(crl)).extensions) == 0


def test_100k_entries_well_under_5_seconds(ca: CAIdentity) -> None:
    entries = [RevokedEntry(format(secrets.randbits(159), "x"), NOW, "cessationOfOperation") for _ in range(100_000)]
    start = time.perf_counter()
    der = build_crl(ca, entries, 1, NOW, 24)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.5, elapsed
    crl = x509.load_der_x509_crl(der)
    assert len(crl) == 100_000 and crl.is_signature_valid(ca.public_key)


def test_a_shard_carries_a_critical_issuing_distribution_point(ca: CAIdentity, tmp_path: Path) -> None:
    """RFC 5280 §5.2.5: the shard names the URL its certificates' CDP names; the full CRL has none."""
    url = "http://ca.example/crl/0123456789abcdef/7.crl"
    crl = x509.load_der_x509_crl(build_crl(ca, _entries(), 3, NOW, 24, distribution_point=url))
    assert crl.is_signature_valid(ca.public_key)
    idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint)
    assert idp.critical
    assert idp.value == x509.IssuingDistributionPoint(
        full_name=[x509.UniformResourceIdentifier(url)],
        relative_name=None,
        only_contains_user_certs=True,
        only_contains_ca_certs=False,
        only_some_reasons=None,
        indirect_crl=False,
        only_contains_attribute_certs=False,
    )
    assert len(crl) == 4
    path = tmp_path / "shard.crl"
    path.write_bytes(crl.public_bytes(serialization.Encoding.DER))
    text = openssl("crl", "-inform", "DER", "-in", path, "-text", "-noout").stdout
    assert "X509v3 Issuing Distribution Point: critical" in text and url in text
    full = x509.load_der_x509_crl(build_crl(ca, _entries(), 4, NOW, 24))
    with pytest.raises(x509.ExtensionNotFound):
        full.extensions.get_extension_for_class(x509.IssuingDistributionPoint)
