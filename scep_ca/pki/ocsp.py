"""OCSP (RFC 6960): parse a request, answer for one certificate, sign as the CA.

Pure: the caller looks the certificate up in the store between ``parse_ocsp_request``
and ``build_ocsp_response``. Every failure becomes an OCSP response, never an exception
that reaches the client as HTTP 500:

* a request that does not parse, carries several CertIDs (cryptography answers one per
  response; RFC 5019 §2.1.1 clients send one), a nonce over 32 octets
  (RFC 8954 §2.1) or a negative serial (RFC 5280 §4.1.2.2) → ``malformedRequest``;
* a CertID for another issuer, or hashed with an algorithm we cannot compute →
  ``unauthorized``: RFC 6960 §2.3 defines it for a server "not capable of responding
  authoritatively" (after RFC 5019 §2.2.3). §2.2 would also allow a signed ``unknown``,
  which is what ``openssl ocsp`` as a responder answers (checked with OpenSSL 3.0.19);
  we prefer the unsigned error because it tells a client it asked the wrong responder
  and gives it nothing signed by us to cache about a certificate we know nothing of;
* a CertID of this CA whose serial we never issued → ``unknown`` (RFC 6960 §2.2).

The CA signs responses itself (RFC 6960 §4.2.2.2, no delegated responder), the
responderID is byKey (§4.2.2.3, the SHA-1 of the CA's public key), the CA certificate
rides along in ``certs``, the request's nonce is echoed (§4.4.1), and
thisUpdate/nextUpdate bound how long a client may cache.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import enum
import hashlib
import urllib.parse
from dataclasses import dataclass
from types import MappingProxyType

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp

from config.clock import utc_now
from scep_ca.asn1 import der, oids
from scep_ca.asn1.ber import children, read_tlv, subject_der, subject_public_key_info
from scep_ca.pki.ca import CAIdentity
from scep_ca.pki.reasons import from_stored
from scep_ca.pki.records import CertificateRecord, CertStatus

# An OCSPRequest for one certificate is about 100 octets (with a signature and chain a
# few kB); anything larger is not a request we answer.
MAX_REQUEST_BYTES = 16 * 1024
# RFC 8954 §2.1: nonces are 1 to 32 octets.
MAX_NONCE_BYTES = 32

# hashlib names of the CertID hash algorithms cryptography can parse (RFC 6960 §4.1.1).
_HASH_NAMES = frozenset({"sha1", "sha224", "sha256", "sha384", "sha512"})


class OcspRequestError(ValueError):
    """The request cannot be answered with a certificate status; ``status`` says which error."""

    def __init__(self, status: ocsp.OCSPResponseStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class OcspQuery:
    """The one CertID (RFC 6960 §4.1.1) of a request, plus its nonce."""

    hash_algorithm: hashes.HashAlgorithm
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    serial_number: int
    nonce: bytes | None

    @property
    def serial_hex(self) -> str:
        """The store's key for this serial (lowercase hex, no leading zeros)."""
        return format(self.serial_number, "x")


class OcspStatus(enum.StrEnum):
    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class CertStatusInfo:
    """What ``SingleResponse.certStatus`` says (RFC 6960 §4.2.1)."""

    status: OcspStatus
    revoked_at: dt.datetime | None = None
    reason: x509.ReasonFlags | None = None


def _malformed(message: str) -> OcspRequestError:
    return OcspRequestError(ocsp.OCSPResponseStatus.MALFORMED_REQUEST, message)


def decode_get_path(encoded: str) -> bytes:
    """The DER request from the GET form (RFC 6960 Appendix A.1).

    The path segment is the URL-encoding of base64; clients differ in whether they
    percent-encode ``+``, ``/`` and ``=``, so the text is percent-decoded (a ``+`` in a
    path is a plus, not a space), whitespace dropped, base64url accepted, and missing
    padding restored.
    """
    if len(encoded) > MAX_REQUEST_BYTES * 2:
        raise _malformed("GET request too long")
    text = "".join(urllib.parse.unquote(encoded).split())
    text = text.replace("-", "+").replace("_", "/").rstrip("=")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _malformed("GET path is not base64") from None


def parse_ocsp_request(der: bytes) -> OcspQuery:
    """Parse an OCSPRequest (RFC 6960 §4.1.1); raises ``OcspRequestError`` (malformedRequest)."""
    if not der or len(der) > MAX_REQUEST_BYTES:
        raise _malformed("empty or oversized request")
    try:
        request = ocsp.load_der_ocsp_request(der)
        serial = request.serial_number
        name_hash = request.issuer_name_hash
        key_hash = request.issuer_key_hash
        extensions = request.extensions
    except NotImplementedError:
        # cryptography refuses requests with more than one CertID.
        raise _malformed("more than one certificate in the request") from None
    except ValueError:
        raise _malformed("not an OCSP request") from None
    try:
        algorithm = request.hash_algorithm
    except UnsupportedAlgorithm:
        raise OcspRequestError(ocsp.OCSPResponseStatus.UNAUTHORIZED, "CertID hash algorithm not supported") from None
    nonce: bytes | None = None
    with contextlib.suppress(x509.ExtensionNotFound):
        nonce = extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    if nonce is not None and not 1 <= len(nonce) <= MAX_NONCE_BYTES:
        raise _malformed("nonce length outside 1..32 octets")
    if serial < 0:
        # RFC 5280 §4.1.2.2: serials are positive, so no certificate has this one; and the
        # response cannot echo it (cryptography refuses to encode a negative serial).
        raise _malformed("negative serial number")
    return OcspQuery(algorithm, name_hash, key_hash, serial, nonce)


@dataclass(frozen=True)
class OcspIssuer:
    """The octets a CertID hashes (RFC 6960 §4.1.1), extracted once per CA.

    issuerNameHash is the hash of the DER issuer name (the CA subject as encoded in its
    certificate); issuerKeyHash the hash of the subjectPublicKey BIT STRING value,
    without tag, length and unused-bits octet. Parsing the CA certificate for them costs
    0.16 ms, a third of an answer, so the service keeps one of these.
    """

    name_der: bytes
    key_bits: bytes

    @classmethod
    def of(cls, ca: CAIdentity) -> OcspIssuer:
        spki = children(read_tlv(subject_public_key_info(ca.cert_der)).content)
        # The subjectPublicKey BIT STRING's content without its unused-bits octet.
        return cls(subject_der(ca.cert_der), spki[1].content[1:])

    def matches(self, query: OcspQuery) -> bool:
        """Whether the CertID names this CA as issuer (both hashes must match)."""
        name = query.hash_algorithm.name
        if name not in _HASH_NAMES:
            return False
        return (
            hashlib.new(name, self.name_der).digest() == query.issuer_name_hash
            and hashlib.new(name, self.key_bits).digest() == query.issuer_key_hash
        )


def is_for_issuer(ca: CAIdentity | OcspIssuer, query: OcspQuery) -> bool:
    """Whether the CertID names this CA as issuer (pass an ``OcspIssuer`` on hot paths)."""
    issuer = ca if isinstance(ca, OcspIssuer) else OcspIssuer.of(ca)
    return issuer.matches(query)


def status_from_record(ca: CAIdentity, record: CertificateRecord | None) -> CertStatusInfo:
    """The certStatus for the store's record of the queried serial.

    ``good`` means "not revoked" (RFC 6960 §2.2), so an expired certificate of ours is
    still good. A record of another issuer (a previous CA) is ``unknown`` for this one.
    """
    if record is None or record.issuer_fingerprint != ca.fingerprint_sha256:
        return CertStatusInfo(OcspStatus.UNKNOWN)
    if record.status == CertStatus.REVOKED:
        reason = from_stored(record.revocation_reason)
        return CertStatusInfo(
            OcspStatus.REVOKED,
            revoked_at=record.revoked_at or record.created_at or record.not_before,
            reason=reason.flag if reason is not None else None,
        )
    return CertStatusInfo(OcspStatus.GOOD)


_CERT_STATUS = MappingProxyType(
    {
        OcspStatus.GOOD: ocsp.OCSPCertStatus.GOOD,
        OcspStatus.REVOKED: ocsp.OCSPCertStatus.REVOKED,
        OcspStatus.UNKNOWN: ocsp.OCSPCertStatus.UNKNOWN,
    }
)


def build_ocsp_response(
    ca: CAIdentity,
    query: OcspQuery,
    status: CertStatusInfo,
    now: dt.datetime,
    validity: dt.timedelta,
) -> bytes:
    """A successful, CA-signed BasicOCSPResponse (RFC 6960 §4.2.1) for one CertID.

    The CertID is echoed as the client sent it (same hash algorithm), so clients that
    match responses byte for byte find theirs. ``validity`` is nextUpdate − thisUpdate.
    """
    this_update = now.replace(microsecond=0)
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response_by_hash(
            issuer_name_hash=query.issuer_name_hash,
            issuer_key_hash=query.issuer_key_hash,
            serial_number=query.serial_number,
            algorithm=query.hash_algorithm,
            cert_status=_CERT_STATUS[status.status],
            this_update=this_update,
            next_update=this_update + validity,
            revocation_time=status.revoked_at.replace(microsecond=0) if status.revoked_at else None,
            revocation_reason=status.reason,
        )
        # RFC 6960 §4.2.1 ``certs``: OpenSSL's OCSP_basic_verify looks for the signer
        # only there (or in certificates the client passes by hand), so without it
        # ``openssl ocsp -CAfile ca.pem`` fails with "signer certificate not found".
        .certificates([ca.cert])
    )
    if query.nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(query.nonce), critical=False)
    if isinstance(ca.key, rsa.RSAPrivateKey):
        builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, ca.cert)
        return builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    return _sign_with(builder, ca)


def _sign_with(builder: ocsp.OCSPResponseBuilder, ca: CAIdentity) -> bytes:
    """The response signed by a key cryptography does not hold (a token's): RFC 6960 section 4.2.1 by hand.

    tbsResponseData names the responder by the CA certificate's key hash, not by the
    signing key, so the builder signed with a throwaway P-256 key (microseconds) gives
    the very octets to sign (after the responderID swap below); BasicOCSPResponse and
    OCSPResponse around them are short.
    """
    scratch = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([])
    now = utc_now()
    scratch_cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(scratch.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(minutes=1))
        .sign(scratch, hashes.SHA256())
    )
    builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, scratch_cert)
    tbs = builder.sign(scratch, hashes.SHA256()).tbs_response_bytes
    # The builder insists that the responder certificate matches the signing key: it named the
    # scratch key (byKey, SHA-1 of its key bits, §4.2.2.3); put the CA's 20 octets in its place.
    scratch_hash = x509.SubjectKeyIdentifier.from_public_key(scratch.public_key()).digest
    ca_hash = x509.SubjectKeyIdentifier.from_public_key(ca.public_key).digest
    tbs = tbs.replace(der.octet_string(scratch_hash), der.octet_string(ca_hash), 1)
    signature = ca.key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())
    basic = der.seq(
        tbs,
        oids.SHA256_WITH_RSA,
        der.bit_string(signature),
        der.explicit(0, der.seq(ca.cert_der)),
    )
    # responseStatus successful (0), responseBytes [0] EXPLICIT { id-pkix-ocsp-basic, OCTET STRING }.
    return der.seq(der.enumerated(0), der.explicit(0, der.seq(oids.OCSP_BASIC, der.octet_string(basic))))


def error_response(status: ocsp.OCSPResponseStatus) -> bytes:
    """An unsigned OCSPResponse with only a responseStatus (RFC 6960 §4.2.1, §2.3)."""
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(serialization.Encoding.DER)


def answer(
    ca: CAIdentity,
    query: OcspQuery,
    record: CertificateRecord | None,
    now: dt.datetime,
    validity: dt.timedelta,
    issuer: OcspIssuer | None = None,
) -> bytes:
    """The response for a parsed query and the store's record of its serial (None if absent)."""
    if not is_for_issuer(issuer or ca, query):
        return error_response(ocsp.OCSPResponseStatus.UNAUTHORIZED)
    return build_ocsp_response(ca, query, status_from_record(ca, record), now, validity)
