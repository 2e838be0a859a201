"""Building and signing a full CRL (RFC 5280 §5) by encoding its DER directly.

Why not ``cryptography.x509.CertificateRevocationListBuilder``: each
``add_revoked_certificate`` copies the builder's list, so 100,000 entries take 10 to
21 s on this project's 2-core machine, against about 0.2 s here (asn1crypto's
TbsCertList: 45 to 58 s; ``bench/revoke.py`` prints the comparison in one run),
while deleting an integration with 100,000 certificates must be visible in the CRL
within seconds (design §5). A CertificateList is a small fixed structure, so the
TBSCertList is encoded here and signed with the CA key (sha256WithRSAEncryption).
Entries that share a revocation time or reason (an integration deletion revokes
everything at one time with cessationOfOperation) reuse one encoding.

CertificateList  ::= SEQUENCE { tbsCertList, signatureAlgorithm, signatureValue }
TBSCertList      ::= SEQUENCE { version v2, signature, issuer, thisUpdate, nextUpdate,
                                revokedCertificates SEQUENCE OF SEQUENCE {
                                    userCertificate, revocationDate, crlEntryExtensions }
                                  OPTIONAL,
                                crlExtensions [0] EXPLICIT Extensions }
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from scep_ca.pki.ca import CAIdentity
from scep_ca.pki.reasons import Reason, from_stored
from scep_ca.pki.records import RevokedEntry

# AlgorithmIdentifier sha256WithRSAEncryption (1.2.840.113549.1.1.11) with NULL
# parameters, as RFC 4055 §5 requires for the PKCS#1 v1.5 signature algorithms.
_SHA256_WITH_RSA = bytes.fromhex("300d06092a864886f70d01010b0500")
_VERSION_V2 = bytes.fromhex("020101")  # INTEGER 1 (RFC 5280 §5.1.2.1: v2 when extensions are present)
_OID_CRL_REASON = bytes.fromhex("0603551d15")  # id-ce-cRLReasons 2.5.29.21
_OID_CRL_NUMBER = bytes.fromhex("0603551d14")  # id-ce-cRLNumber 2.5.29.20
_OID_AKI = bytes.fromhex("0603551d23")  # id-ce-authorityKeyIdentifier 2.5.29.35

# RFC 5280 §5.2.3: CRL numbers are at most 20 octets.
_MAX_CRL_NUMBER = (1 << 159) - 1


class CRLError(ValueError):
    """The inputs cannot form a valid CRL (the message names the bad value)."""


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + _length(len(content)) + content


def _integer(value: int) -> bytes:
    # DER INTEGER of a non-negative value: minimal octets plus a leading zero octet
    # when the top bit is set (X.690 §8.3).
    if value < 0:
        raise CRLError("negative INTEGER")
    return _tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _serial_integer(serial_hex: str) -> bytes:
    try:
        value = int(serial_hex, 16)
    except ValueError:
        raise CRLError(f"serial is not hexadecimal: {serial_hex!r}") from None
    return _integer(value)


def encode_time(when: dt.datetime) -> bytes:
    """RFC 5280 §5.1.2.4/§4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050, seconds, Z."""
    if when.tzinfo is None:
        raise CRLError("naive datetime: CRL times must be timezone-aware")
    utc = when.astimezone(dt.UTC)
    if 1950 <= utc.year <= 2049:
        return _tlv(0x17, utc.strftime("%y%m%d%H%M%SZ").encode("ascii"))
    return _tlv(0x18, f"{utc.year:04d}{utc.strftime('%m%d%H%M%S')}Z".encode("ascii"))


def _extension(oid: bytes, value_der: bytes, critical: bool = False) -> bytes:
    crit = b"\x01\x01\xff" if critical else b""  # DER omits the DEFAULT FALSE
    return _tlv(0x30, oid + crit + _tlv(0x04, value_der))


def _reason_extensions(reason: Reason | None) -> bytes:
    # RFC 5280 §5.3.1: "the reason code CRL entry extension SHOULD be absent instead of
    # using the unspecified (0) reasonCode value".
    if reason is None or reason is Reason.UNSPECIFIED:
        return b""
    return _tlv(0x30, _extension(_OID_CRL_REASON, _tlv(0x0A, bytes((int(reason),)))))


def _authority_key_identifier(ca: CAIdentity) -> bytes:
    # RFC 5280 §5.2.1: conforming CRL issuers MUST include the AKI, keyIdentifier form;
    # it must equal the issuer certificate's SKI so that path building finds the CA.
    try:
        ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key)
    return aki.public_bytes()


def issuer_name_der(ca: CAIdentity) -> bytes:
    """The CA subject exactly as encoded in its certificate (RFC 5280 §5.1.2.3 matching).

    Re-encoding through cryptography's ``Name`` could change string types; verifiers
    compare the CRL issuer with the certificate's issuer, so the original octets are used.
    """
    subject: bytes = asn1_x509.Certificate.load(ca.cert_der)["tbs_certificate"]["subject"].dump()
    return subject


def encode_revoked(entries: Sequence[RevokedEntry]) -> bytes:
    """The ``revokedCertificates`` SEQUENCE OF, or b"" when there are none.

    RFC 5280 §5.1.2.6: "When there are no revoked certificates, the revoked certificates
    list MUST be absent." Entries keep the caller's order.
    """
    if not entries:
        return b""
    times: dict[dt.datetime, bytes] = {}
    reasons: dict[str | None, bytes] = {}
    parts: list[bytes] = []
    append = parts.append
    for entry in entries:
        when = times.get(entry.revoked_at)
        if when is None:
            when = times[entry.revoked_at] = encode_time(entry.revoked_at)
        ext = reasons.get(entry.reason)
        if ext is None:
            ext = reasons[entry.reason] = _reason_extensions(from_stored(entry.reason))
        append(_tlv(0x30, _serial_integer(entry.serial) + when + ext))
    return _tlv(0x30, b"".join(parts))


def build_tbs_cert_list(
    ca: CAIdentity,
    entries: Sequence[RevokedEntry],
    crl_number: int,
    now: dt.datetime,
    next_update_hours: float,
) -> bytes:
    """The DER TBSCertList (RFC 5280 §5.1.2) that ``build_crl`` signs."""
    if not 0 <= crl_number <= _MAX_CRL_NUMBER:
        raise CRLError(f"CRL number out of range: {crl_number}")
    if next_update_hours <= 0:
        raise CRLError("next_update_hours must be positive")
    this_update = now.replace(microsecond=0)
    next_update = this_update + dt.timedelta(hours=next_update_hours)
    extensions = _tlv(
        0x30,
        _extension(_OID_AKI, _authority_key_identifier(ca)) + _extension(_OID_CRL_NUMBER, _integer(crl_number)),
    )
    return _tlv(
        0x30,
        _VERSION_V2
        + _SHA256_WITH_RSA
        + issuer_name_der(ca)
        + encode_time(this_update)
        # nextUpdate is OPTIONAL in the ASN.1, but RFC 5280 §5.1.2.5 says CRL issuers MUST include it.
        + encode_time(next_update)
        + encode_revoked(entries)
        + _tlv(0xA0, extensions),
    )


def build_crl(
    ca: CAIdentity,
    entries: Sequence[RevokedEntry],
    crl_number: int,
    now: dt.datetime,
    next_update_hours: float,
) -> bytes:
    """A complete DER CertificateList (RFC 5280 §5.1) signed with sha256WithRSAEncryption.

    ``entries`` are the revoked certificates of this CA; an entry whose reason is None or
    ``unspecified`` carries no reasonCode (§5.3.1). The CRL carries the AKI (§5.2.1) and
    the CRL number (§5.2.3). ``now`` becomes thisUpdate (truncated to seconds).
    """
    tbs = build_tbs_cert_list(ca, entries, crl_number, now, next_update_hours)
    signature = ca.key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())
    # BIT STRING with zero unused bits (the leading 0x00 octet).
    return _tlv(0x30, tbs + _SHA256_WITH_RSA + _tlv(0x03, b"\x00" + signature))
