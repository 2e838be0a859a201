"""Issuing a user certificate from a checked CSR (the certificate profile of design.md section 3).

v3, 159-bit random positive serial, notBefore now - 5 min, notAfter now + validity,
BasicConstraints CA:false (critical), KeyUsage digitalSignature+keyEncipherment
(critical), EKU clientAuth, SKI, AKI, CDP and OCSP AIA when a public URL is
configured, sha256WithRSAEncryption (never RSASSA-PSS: Apple rejects PSS chains).
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from scep_ca.ca import CAIdentity

BACKDATE = dt.timedelta(minutes=5)


def random_serial() -> int:
    """A positive 159-bit serial: fits the 20-octet limit of RFC 5280 section 4.1.2.2 with its sign bit."""
    return secrets.randbits(159) | (1 << 158)


@dataclass(frozen=True)
class Profile:
    validity_days: int
    crl_url: str | None = None
    ocsp_url: str | None = None


def issue_certificate(
    ca: CAIdentity,
    *,
    subject: x509.Name,
    public_key: rsa.RSAPublicKey,
    sans: Sequence[x509.GeneralName],
    profile: Profile,
    serial: int,
    now: dt.datetime,
) -> x509.Certificate:
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + dt.timedelta(days=profile.validity_days), ca.cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    if profile.crl_url:
        builder = builder.add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        full_name=[x509.UniformResourceIdentifier(profile.crl_url)],
                        relative_name=None,
                        reasons=None,
                        crl_issuer=None,
                    )
                ]
            ),
            critical=False,
        )
    if profile.ocsp_url:
        builder = builder.add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(profile.ocsp_url)
                    )
                ]
            ),
            critical=False,
        )
    return builder.sign(ca.key, hashes.SHA256())
