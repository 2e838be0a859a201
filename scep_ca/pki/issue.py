"""Issuing a user certificate from a checked CSR (the certificate profile, RFC 5280 section 4).

v3, 159-bit random positive serial, notBefore now - 5 min, notAfter now + validity,
BasicConstraints CA:false (critical), KeyUsage digitalSignature+keyEncipherment
(critical), EKU clientAuth, SKI, AKI, the CRL distribution point and the AIA (OCSP and
caIssuers) under the public URL (scep_ca.pki.public_url), sha256WithRSAEncryption (never
RSASSA-PSS: Apple rejects PSS chains).

The TBSCertificate (RFC 5280 section 4.1) is written here with the DER helpers and
signed once: cryptography's CertificateBuilder spends about 100 us of Python per
certificate on objects this profile never changes. The extensions that are the same for
every certificate of a CA and profile are encoded once (``Issuer``); the tests check the
result byte for byte against CertificateBuilder's.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from scep_ca.asn1 import der, oids
from scep_ca.asn1.ber import children, read_tlv, subject_der
from scep_ca.pki.ca import CAIdentity, key_usage

BACKDATE = dt.timedelta(minutes=5)


def random_serial() -> int:
    """A positive 159-bit serial: fits the 20-octet limit of RFC 5280 section 4.1.2.2 with its sign bit."""
    return secrets.randbits(159) | (1 << 158)


@dataclass(frozen=True)
class Profile:
    validity_days: int
    crl_url: str | None = None
    ocsp_url: str | None = None
    ca_issuers_url: str | None = None


@dataclass(frozen=True)
class Issued:
    der: bytes
    not_before: dt.datetime
    not_after: dt.datetime


def _extension(ext: x509.ExtensionType, critical: bool) -> bytes:
    """One of cryptography's extension values as an Extension (RFC 5280 section 4.1)."""
    return der.extension(der.oid(ext.oid.dotted_string), ext.public_bytes(), critical)


def _subject_key_identifier(spki_der: bytes) -> bytes:
    """The SKI extension, RFC 5280 section 4.2.1.2 method (1): SHA-1 of the subjectPublicKey bits.

    Hashed straight from the SubjectPublicKeyInfo octets (the BIT STRING without its
    unused-bits octet): what ``SubjectKeyIdentifier.from_public_key`` computes, without
    its Python-level re-parse of the key.
    """
    bits = children(read_tlv(spki_der).content)[1].content[1:]
    return der.extension(oids.SUBJECT_KEY_IDENTIFIER, der.octet_string(hashlib.sha1(bits).digest()))


class Issuer:
    """Issues certificates of one CA under one profile; encodes the constant parts once."""

    def __init__(self, ca: CAIdentity, profile: Profile) -> None:
        self._ca = ca
        self._profile = profile
        # The CA subject as encoded in its certificate: name chaining compares octets (RFC 5280 section 7.1).
        self._issuer_name = subject_der(ca.cert_der)
        ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        self._head = [
            _extension(x509.BasicConstraints(ca=False, path_length=None), True),
            _extension(key_usage(signing=True, encipherment=True, ca=False), True),
            _extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False),
        ]
        self._aki = _extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), False)
        # One CRL distribution point extension per URL (a CA's shards): encoded once each.
        self._cdps: dict[str, bytes] = {}
        self._aia = b""
        access = [
            x509.AccessDescription(method, x509.UniformResourceIdentifier(url))
            for method, url in (
                (AuthorityInformationAccessOID.OCSP, profile.ocsp_url),
                (AuthorityInformationAccessOID.CA_ISSUERS, profile.ca_issuers_url),
            )
            if url
        ]
        if access:
            self._aia = _extension(x509.AuthorityInformationAccess(access), False)

    def _cdp(self, url: str | None) -> bytes:
        if not url:
            return b""
        encoded = self._cdps.get(url)
        if encoded is None:
            point = x509.DistributionPoint(
                full_name=[x509.UniformResourceIdentifier(url)], relative_name=None, reasons=None, crl_issuer=None
            )
            encoded = self._cdps[url] = _extension(x509.CRLDistributionPoints([point]), False)
        return encoded

    def issue(
        self,
        *,
        subject: x509.Name,
        public_key: rsa.RSAPublicKey,
        sans: Sequence[x509.GeneralName],
        serial: int,
        now: dt.datetime,
        spki_der: bytes | None = None,
        crl_url: str | None = None,
    ) -> Issued:
        """One certificate; ``spki_der`` is ``public_key``'s SubjectPublicKeyInfo when the caller has it.

        ``crl_url``: this certificate's CRL distribution point (its CRL shard) instead of the
        profile's ``crl_url``.
        """
        now = now.replace(microsecond=0)
        not_before = now - BACKDATE
        not_after = min(now + dt.timedelta(days=self._profile.validity_days), self._ca.cert.not_valid_after_utc)
        if spki_der is None:
            spki_der = public_key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        extensions = [*self._head, _subject_key_identifier(spki_der), self._aki]
        if sans:
            extensions.append(_extension(x509.SubjectAlternativeName(list(sans)), False))
        for tail in (self._cdp(crl_url or self._profile.crl_url), self._aia):
            if tail:
                extensions.append(tail)
        tbs = der.seq(
            der.explicit(0, der.integer(2)),
            der.integer(serial),
            oids.SHA256_WITH_RSA,
            self._issuer_name,
            der.seq(der.x509_time(not_before), der.x509_time(not_after)),
            subject.public_bytes(),
            spki_der,
            der.explicit(3, der.seq(*extensions)),
        )
        signature = self._ca.key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())
        cert = der.signed(tbs, oids.SHA256_WITH_RSA, signature)
        return Issued(cert, not_before, not_after)
