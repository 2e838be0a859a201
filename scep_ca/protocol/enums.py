"""SCEP wire values (RFC 8894 section 3.2.1.2 to 3.2.1.4): each enum value is what goes on the wire."""

from __future__ import annotations

import enum


class MessageType(enum.IntEnum):
    """messageType (RFC 8894 section 3.2.1.2), sent as a PrintableString of the decimal value."""

    CERT_REP = 3
    RENEWAL_REQ = 17
    PKCS_REQ = 19
    CERT_POLL = 20  # GetCertInitial in draft-era clients
    GET_CERT = 21
    GET_CRL = 22


class PKIStatus(enum.IntEnum):
    """pkiStatus (RFC 8894 section 3.2.1.3)."""

    SUCCESS = 0
    FAILURE = 2
    PENDING = 3


class FailInfo(enum.IntEnum):
    """failInfo (RFC 8894 section 3.2.1.4)."""

    BAD_ALG = 0
    BAD_MESSAGE_CHECK = 1
    BAD_REQUEST = 2
    BAD_TIME = 3
    BAD_CERT_ID = 4


class DigestAlg(enum.StrEnum):
    """Digests accepted on requests and echoed on replies (asn1crypto algorithm names)."""

    SHA1 = "sha1"
    SHA256 = "sha256"
    SHA512 = "sha512"


class ContentCipher(enum.StrEnum):
    """Content-encryption algorithms of EnvelopedData (asn1crypto names)."""

    DES = "des"
    DES3 = "tripledes_3key"
    AES128 = "aes128_cbc"
    AES192 = "aes192_cbc"
    AES256 = "aes256_cbc"
