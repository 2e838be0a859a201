"""The hand-encoded certificate is byte for byte what cryptography's CertificateBuilder makes."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from scep_ca.pki.ca import CAIdentity
from scep_ca.pki.crl_shards import shard_of
from scep_ca.pki.issue import BACKDATE, Issuer, Profile, random_serial


def _reference(
    ca: CAIdentity,
    subject: x509.Name,
    key: rsa.RSAPublicKey,
    sans: list[x509.GeneralName],
    profile: Profile,
    serial: int,
    now: dt.datetime,
) -> x509.Certificate:
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(key)
        .serial_number(serial)
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + dt.timedelta(days=profile.validity_days), ca.cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
    )
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if profile.crl_url:
        dp = x509.DistributionPoint([x509.UniformResourceIdentifier(profile.crl_url)], None, None, None)
        b = b.add_extension(x509.CRLDistributionPoints([dp]), critical=False)
    ads = []
    if profile.ocsp_url:
        ads.append(
            x509.AccessDescription(AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(profile.ocsp_url))
        )
    if profile.ca_issuers_url:
        ads.append(
            x509.AccessDescription(
                AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(profile.ca_issuers_url)
            )
        )
    if ads:
        b = b.add_extension(x509.AuthorityInformationAccess(ads), critical=False)
    return b.sign(ca.key, hashes.SHA256())


@pytest.mark.parametrize(
    ("profile", "sans"),
    [
        (Profile(365), []),
        (Profile(30, crl_url="https://x.example/crl/abc.crl", ocsp_url="https://x.example/ocsp"), []),
        (
            Profile(
                30,
                crl_url="https://x.example/crl/abc.crl",
                ocsp_url="https://x.example/ocsp",
                ca_issuers_url="https://x.example/ca/abc.crt",
            ),
            [],
        ),
        (Profile(30, ca_issuers_url="https://x.example/ca/abc.crt"), []),
        (Profile(365, crl_url="http://x/c.crl"), [x509.RFC822Name("a@b.example"), x509.DNSName("d.example")]),
        (Profile(40000), []),  # capped at the CA's notAfter
    ],
)
def test_same_bytes_as_certificate_builder(
    ca: CAIdentity, device_key: rsa.RSAPrivateKey, profile: Profile, sans: list[x509.GeneralName]
) -> None:
    now = dt.datetime(2026, 11, 28, 12, 0, 0, tzinfo=dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"), x509.NameAttribute(NameOID.COMMON_NAME, "ü")])
    serial = random_serial()
    ours = Issuer(ca, profile).issue(
        subject=subject, public_key=device_key.public_key(), sans=sans, serial=serial, now=now
    )
    cert = x509.load_der_x509_certificate(ours.der)
    reference = _reference(ca, subject, device_key.public_key(), sans, profile, serial, now)
    assert cert.tbs_certificate_bytes == reference.tbs_certificate_bytes
    cert.verify_directly_issued_by(ca.cert)
    assert (cert.not_valid_before_utc, cert.not_valid_after_utc) == (ours.not_before, ours.not_after)


def test_generalized_time_from_2050(device_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    """RFC 5280 4.1.2.5: dates in 2050 or later are GeneralizedTime; the CA must outlive the cert."""
    from scep_ca.pki.ca import create_ca

    now = dt.datetime(2049, 12, 1, tzinfo=dt.UTC)
    long_ca = create_ca(
        Path(__import__("tempfile").mkdtemp()),
        subject="CN=Long",
        key_size=2048,
        validity_days=36500,
        passphrase=None,
        now=now,
    )
    ours = Issuer(long_ca, Profile(365)).issue(
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]),
        public_key=device_key.public_key(),
        sans=[],
        serial=5,
        now=now,
    )
    cert = x509.load_der_x509_certificate(ours.der)
    assert cert.not_valid_after_utc.year == 2050
    assert cert.tbs_certificate_bytes.count(b"\x18\x0f2050") == 1


def test_openssl_reads_it(ca: CAIdentity, device_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    ours = Issuer(ca, Profile(10)).issue(
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "o")]),
        public_key=device_key.public_key(),
        sans=[],
        serial=random_serial(),
        now=dt.datetime.now(dt.UTC),
    )
    (tmp_path / "c.der").write_bytes(ours.der)
    (tmp_path / "ca.pem").write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    pem = subprocess.run(
        ["openssl", "x509", "-inform", "DER", "-in", str(tmp_path / "c.der")], capture_output=True, check=True
    ).stdout
    (tmp_path / "c.pem").write_bytes(pem)
    result = subprocess.run(
        ["openssl", "verify", "-CAfile", str(tmp_path / "ca.pem"), str(tmp_path / "c.pem")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_a_certificate_names_its_own_crl_shard(ca: CAIdentity, device_key: rsa.RSAPrivateKey) -> None:
    """``crl_url`` replaces the profile's CDP for this certificate; the profile's stays the default."""
    issuer = Issuer(ca, Profile(30, crl_url="https://x.example/crl/abc.crl"))

    def cdp(crl_url: str | None) -> list[str]:
        issued = issuer.issue(
            subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "s")]),
            public_key=device_key.public_key(),
            sans=[],
            serial=random_serial(),
            now=dt.datetime.now(dt.UTC),
            crl_url=crl_url,
        )
        points = x509.load_der_x509_certificate(issued.der).extensions.get_extension_for_class(
            x509.CRLDistributionPoints
        )
        return [name.value for point in points.value for name in point.full_name or []]

    assert cdp("https://x.example/crl/abc/5.crl") == ["https://x.example/crl/abc/5.crl"]
    assert cdp("https://x.example/crl/abc/6.crl") == ["https://x.example/crl/abc/6.crl"]
    assert cdp(None) == ["https://x.example/crl/abc.crl"]


def test_shard_of_spreads_serials_and_turns_off_at_zero() -> None:
    assert shard_of(7, 0) is None
    assert [shard_of(s, 4) for s in (0, 1, 5, 4095)] == [0, 1, 1, 3]
    counts = [0] * 8
    for _ in range(8000):
        shard = shard_of(random_serial(), 8)
        assert shard is not None
        counts[shard] += 1
    # Random 159-bit serials: each shard gets about 1,000 (binomial sd ~30; 250 is > 8 sd).
    assert all(750 < n < 1250 for n in counts), counts
