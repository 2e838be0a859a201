"""Is this PEM certificate one we issued, and is it still good? (the verify status API)

Pure: the caller parses the serial with ``serial_of_pem``, fetches the store record,
then calls ``verify_certificate``. Order of checks, first failing one wins:

1. the signature verifies with our CA key and the issuer name is our subject
   (RFC 5280 §6.1.3 (a)(1) and (a)(4)), else ``unknown-issuer``;
2. the store holds a record for this serial, of this CA, whose DER is byte for byte
   the presented certificate, else ``not-issued-here``: a certificate with a known
   serial but other contents is not ours even if it claims so. (A valid signature
   without a matching record means our key signed something the store does not know:
   that is reported, never trusted);
3. the record is revoked → ``revoked`` (takes precedence over expiry: it is the more
   important fact for a relying party);
4. outside notBefore..notAfter (RFC 5280 §4.1.2.5) → ``expired`` / ``not-yet-valid``;
5. otherwise ``trusted``.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, replace
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from scep_ca.pki.ca import CAIdentity
from scep_ca.pki.records import CertificateRecord, CertStatus
from scep_ca.pki.serials import colon_hex

# One certificate in PEM is 1-3 kB; a size cap keeps a hostile body from being parsed.
MAX_PEM_BYTES = 64 * 1024


class CertificateParseError(ValueError):
    """The input is not exactly one PEM certificate."""


class VerifyStatus(enum.StrEnum):
    TRUSTED = "trusted"
    REVOKED = "revoked"
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    UNKNOWN_ISSUER = "unknown-issuer"
    NOT_ISSUED_HERE = "not-issued-here"


@dataclass(frozen=True)
class VerifyResult:
    status: VerifyStatus
    serial: str  # lowercase hex, the store's form
    subject: str
    not_before: dt.datetime
    not_after: dt.datetime
    integration_id: str | None = None
    revoked_at: dt.datetime | None = None
    revocation_reason: str | None = None

    @property
    def trusted(self) -> bool:
        return self.status is VerifyStatus.TRUSTED

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (ISO 8601 times); ``integration`` is only given for our own records."""
        return {
            "status": str(self.status),
            "trusted": self.trusted,
            "serial": self.serial,
            "serial_colon": colon_hex(self.serial),
            "subject": self.subject,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "integration": self.integration_id,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "revocation_reason": self.revocation_reason,
        }


def load_pem_certificate(pem: bytes) -> x509.Certificate:
    """Exactly one PEM certificate; text around the PEM block is ignored (OpenSSL does the same)."""
    if len(pem) > MAX_PEM_BYTES:
        raise CertificateParseError("certificate too large")
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except (ValueError, x509.InvalidVersion):
        raise CertificateParseError("not a PEM certificate") from None
    if len(certs) != 1:
        raise CertificateParseError("expected exactly one certificate")
    cert = certs[0]
    try:
        # Decoded on first use: a malformed name or time must fail here, not halfway through.
        cert.subject.rfc4514_string()
        cert.not_valid_before_utc  # noqa: B018
        cert.not_valid_after_utc  # noqa: B018
    except (ValueError, TypeError):  # TypeError: cryptography's Name refuses some attribute types
        raise CertificateParseError("not a well-formed certificate") from None
    return cert


def serial_of_pem(pem: bytes) -> str:
    """The store key of the PEM certificate's serial (to fetch its record)."""
    serial = load_pem_certificate(pem).serial_number
    if serial < 0:
        # Negative serials are not conforming (RFC 5280 §4.1.2.2) and never ours.
        raise CertificateParseError("negative serial number")
    return format(serial, "x")


def _signed_by(ca: CAIdentity, cert: x509.Certificate) -> bool:
    try:
        # Checks the issuer name against our subject, then the signature with the
        # certificate's own signature hash (PKCS#1 v1.5 for everything we issue).
        cert.verify_directly_issued_by(ca.cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def verify_certificate(ca: CAIdentity, pem: bytes, record: CertificateRecord | None, now: dt.datetime) -> VerifyResult:
    """Classify the certificate (see the module docstring); raises CertificateParseError."""
    cert = load_pem_certificate(pem)
    serial = format(cert.serial_number, "x") if cert.serial_number >= 0 else "0"
    result = VerifyResult(
        status=VerifyStatus.UNKNOWN_ISSUER,
        serial=serial,
        subject=cert.subject.rfc4514_string(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )
    if not _signed_by(ca, cert):
        return result
    ours = (
        record is not None
        and record.serial == serial
        and record.issuer_fingerprint == ca.fingerprint_sha256
        and record.der == cert.public_bytes(serialization.Encoding.DER)
    )
    if not ours or record is None:
        return _with(result, VerifyStatus.NOT_ISSUED_HERE)
    result = _with(result, VerifyStatus.TRUSTED, integration_id=record.integration_id)
    if record.status == CertStatus.REVOKED:
        return _with(
            result,
            VerifyStatus.REVOKED,
            revoked_at=record.revoked_at,
            revocation_reason=record.revocation_reason,
        )
    if now > result.not_after:
        return _with(result, VerifyStatus.EXPIRED)
    if now < result.not_before:
        return _with(result, VerifyStatus.NOT_YET_VALID)
    return result


def _with(result: VerifyResult, status: VerifyStatus, **changes: Any) -> VerifyResult:
    return replace(result, status=status, **changes)
