"""Building and signing a full CRL or a shard (RFC 5280 §5) by encoding its DER directly.

Why not ``cryptography.x509.CertificateRevocationListBuilder``: each
``add_revoked_certificate`` copies the builder's list, so 100,000 entries take 10 to
21 s on this project's 2-core machine, against about 0.2 s here (asn1crypto's
TbsCertList: 45 to 58 s; ``bench/revoke.py`` prints the comparison in one run),
while deleting an integration with 100,000 certificates must be visible in the CRL
within seconds (README "Revocation"). A CertificateList is a small fixed structure, so the
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

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from scep_ca.asn1 import der, oids
from scep_ca.asn1.ber import subject_der
from scep_ca.pki.ca import CAIdentity
from scep_ca.pki.reasons import Reason, from_stored
from scep_ca.pki.records import RevokedEntry

_VERSION_V2 = der.integer(1)  # RFC 5280 §5.1.2.1: v2 when extensions are present

# RFC 5280 §5.2.3: CRL numbers are at most 20 octets.
_MAX_CRL_NUMBER = (1 << 159) - 1


class CRLError(ValueError):
    """The inputs cannot form a valid CRL (the message names the bad value)."""


def _serial_integer(serial_hex: str) -> bytes:
    try:
        value = int(serial_hex, 16)
    except ValueError:
        raise CRLError(f"serial is not hexadecimal: {serial_hex!r}") from None
    if value < 0:
        raise CRLError("negative INTEGER")
    return der.integer(value)


def encode_time(when: dt.datetime) -> bytes:
    """RFC 5280 §5.1.2.4/§4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050, seconds, Z."""
    if when.tzinfo is None:
        raise CRLError("naive datetime: CRL times must be timezone-aware")
    return der.x509_time(when)


def _reason_extensions(reason: Reason | None) -> bytes:
    # RFC 5280 §5.3.1: "the reason code CRL entry extension SHOULD be absent instead of
    # using the unspecified (0) reasonCode value".
    if reason is None or reason is Reason.UNSPECIFIED:
        return b""
    return der.seq(der.extension(oids.CRL_REASONS, der.enumerated(int(reason))))


def _authority_key_identifier(ca: CAIdentity) -> bytes:
    # RFC 5280 §5.2.1: conforming CRL issuers MUST include the AKI, keyIdentifier form;
    # it must equal the issuer certificate's SKI so that path building finds the CA.
    try:
        ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key)
    return aki.public_bytes()


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
        append(der.seq(_serial_integer(entry.serial), when, ext))
    return der.seq(*parts)


def issuing_distribution_point(url: str) -> bytes:
    """The critical issuingDistributionPoint extension naming ``url`` (RFC 5280 §5.2.5).

    A shard is a partitioned CRL: it covers only the certificates whose CRL distribution
    point names ``url``, and a relying party must be able to tell it from a full CRL, so the
    extension is critical and names the same URI as the certificates' CDP (§5.2.5: the
    names are compared). onlyContainsUserCerts: this CA issues end-entity certificates only.
    """
    value = x509.IssuingDistributionPoint(
        full_name=[x509.UniformResourceIdentifier(url)],
        relative_name=None,
        only_contains_user_certs=True,
        only_contains_ca_certs=False,
        only_some_reasons=None,
        indirect_crl=False,
        only_contains_attribute_certs=False,
    ).public_bytes()
    return der.extension(oids.ISSUING_DISTRIBUTION_POINT, value, critical=True)


def build_crl(
    ca: CAIdentity,
    entries: Sequence[RevokedEntry],
    crl_number: int,
    now: dt.datetime,
    next_update_hours: float,
    *,
    distribution_point: str | None = None,
) -> bytes:
    """A DER CertificateList (RFC 5280 §5.1) signed with sha256WithRSAEncryption.

    ``entries`` are the revoked certificates in this CRL's scope; an entry whose reason is
    None or ``unspecified`` carries no reasonCode (§5.3.1). The CRL carries the AKI (§5.2.1)
    and the CRL number (§5.2.3). ``now`` becomes thisUpdate (truncated to seconds). With
    ``distribution_point`` the CRL is a shard and carries the issuingDistributionPoint
    naming that URL (§5.2.5); without it, the full CRL of the CA.
    """
    if not 0 <= crl_number <= _MAX_CRL_NUMBER:
        raise CRLError(f"CRL number out of range: {crl_number}")
    if next_update_hours <= 0:
        raise CRLError("next_update_hours must be positive")
    this_update = now.replace(microsecond=0)
    next_update = this_update + dt.timedelta(hours=next_update_hours)
    extensions = der.seq(
        der.extension(oids.AUTHORITY_KEY_IDENTIFIER, _authority_key_identifier(ca)),
        der.extension(oids.CRL_NUMBER, der.integer(crl_number)),
        issuing_distribution_point(distribution_point) if distribution_point is not None else b"",
    )
    # The TBSCertList (RFC 5280 §5.1.2).
    tbs = der.seq(
        _VERSION_V2,
        oids.SHA256_WITH_RSA,
        # The CA subject exactly as encoded in its certificate (RFC 5280 §5.1.2.3: verifiers
        # compare the CRL issuer with the certificate's, octet for octet).
        subject_der(ca.cert_der),
        encode_time(this_update),
        # nextUpdate is OPTIONAL in the ASN.1, but RFC 5280 §5.1.2.5 says CRL issuers MUST include it.
        encode_time(next_update),
        encode_revoked(entries),
        der.explicit(0, extensions),
    )
    signature = ca.key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())
    return der.signed(tbs, oids.SHA256_WITH_RSA, signature)
