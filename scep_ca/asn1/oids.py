"""Object identifiers written by the DER builders (RFC 5652, RFC 8894 section 3.2.1, RFC 3370, RFC 3565)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from scep_ca.asn1 import der
from scep_ca.asn1.ber import oid_to_dotted
from scep_ca.protocol.enums import ContentCipher, DigestAlg

DATA = der.oid("1.2.840.113549.1.7.1")
SIGNED_DATA = der.oid("1.2.840.113549.1.7.2")
ENVELOPED_DATA = der.oid("1.2.840.113549.1.7.3")
CONTENT_TYPE = der.oid("1.2.840.113549.1.9.3")
MESSAGE_DIGEST = der.oid("1.2.840.113549.1.9.4")
SIGNING_TIME = der.oid("1.2.840.113549.1.9.5")
RSA_ENCRYPTION = der.algorithm("1.2.840.113549.1.1.1")

MESSAGE_TYPE = der.oid("2.16.840.1.113733.1.9.2")
PKI_STATUS = der.oid("2.16.840.1.113733.1.9.3")
FAIL_INFO = der.oid("2.16.840.1.113733.1.9.4")
SENDER_NONCE = der.oid("2.16.840.1.113733.1.9.5")
RECIPIENT_NONCE = der.oid("2.16.840.1.113733.1.9.6")
TRANSACTION_ID = der.oid("2.16.840.1.113733.1.9.7")
# RFC 8894: id-scep ::= { id-pkix 24 }, id-scep-failInfoText ::= { id-scep 1 }.
FAIL_INFO_TEXT = der.oid("1.3.6.1.5.5.7.24.1")

DIGEST_ALGORITHMS = {
    DigestAlg.SHA1: der.algorithm("1.3.14.3.2.26"),
    DigestAlg.SHA256: der.algorithm("2.16.840.1.101.3.4.2.1"),
    DigestAlg.SHA512: der.algorithm("2.16.840.1.101.3.4.2.3"),
}

CIPHER_OIDS = {
    ContentCipher.DES: "1.3.14.3.2.7",
    ContentCipher.DES3: "1.2.840.113549.3.7",
    ContentCipher.AES128: "2.16.840.1.101.3.4.1.2",
    ContentCipher.AES192: "2.16.840.1.101.3.4.1.22",
    ContentCipher.AES256: "2.16.840.1.101.3.4.1.42",
}


def content_table(dotted_forms: Iterable[str]) -> dict[bytes, str]:
    """Content octets -> dotted form of known OIDs: the request path matches an OID read off the
    wire by its octets instead of rebuilding its dotted string arc by arc (X.690 8.19)."""
    return {der.oid(form)[2:]: form for form in dotted_forms}


def dotted(content: bytes, known: Mapping[bytes, str]) -> str:
    """The dotted form of an OBJECT IDENTIFIER's content octets; ``BERError`` when malformed."""
    form = known.get(content)
    return form if form is not None else oid_to_dotted(content)
