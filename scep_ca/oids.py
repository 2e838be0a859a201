"""Object identifiers written by the DER builders (RFC 5652, RFC 8894 section 3.2.1, RFC 3370, RFC 3565)."""

from __future__ import annotations

from scep_ca import der
from scep_ca.ber import oid_to_dotted
from scep_ca.enums import ContentCipher, DigestAlg

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

# Content octets -> dotted form for the OIDs every request carries, so the request path
# does not rebuild these strings arc by arc (X.690 8.19) on each message.
_KNOWN_DOTTED = {
    der.oid(dotted_form)[2:]: dotted_form
    for dotted_form in (
        "1.2.840.113549.1.7.1",
        "1.2.840.113549.1.7.2",
        "1.2.840.113549.1.7.3",
        "1.2.840.113549.1.9.3",
        "1.2.840.113549.1.9.4",
        "1.2.840.113549.1.9.5",
        "1.2.840.113549.1.1.1",
        "1.2.840.113549.1.1.5",
        "1.2.840.113549.1.1.7",
        "1.2.840.113549.1.1.11",
        "1.2.840.113549.1.1.12",
        "1.2.840.113549.1.1.13",
        "2.16.840.1.113733.1.9.2",
        "2.16.840.1.113733.1.9.3",
        "2.16.840.1.113733.1.9.4",
        "2.16.840.1.113733.1.9.5",
        "2.16.840.1.113733.1.9.6",
        "2.16.840.1.113733.1.9.7",
        "1.3.6.1.5.5.7.24.1",
        "1.3.14.3.2.26",
        "2.16.840.1.101.3.4.2.1",
        "2.16.840.1.101.3.4.2.2",
        "2.16.840.1.101.3.4.2.3",
        *CIPHER_OIDS.values(),
    )
}


def dotted(content: bytes) -> str:
    """The dotted form of an OBJECT IDENTIFIER's content octets; ``BERError`` when malformed."""
    known = _KNOWN_DOTTED.get(content)
    return known if known is not None else oid_to_dotted(content)
