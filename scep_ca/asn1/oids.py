"""Every object identifier the project reads or writes, in one table.

The dotted forms (``ID_*``) are what the readers match against; the encoded forms below
them are the TLVs the DER builders write (X.690 8.19). Which enum an OID stands for is
protocol knowledge and lives there (``scep_ca.protocol.algorithms``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from scep_ca.asn1 import der
from scep_ca.asn1.ber import oid_to_dotted

# CMS content types and signed attributes (RFC 5652 sections 4 to 6, 11).
ID_DATA = "1.2.840.113549.1.7.1"
ID_SIGNED_DATA = "1.2.840.113549.1.7.2"
ID_ENVELOPED_DATA = "1.2.840.113549.1.7.3"
ID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
ID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
ID_SIGNING_TIME = "1.2.840.113549.1.9.5"

# SCEP attributes (RFC 8894 section 3.2.1); id-scep ::= { id-pkix 24 }, id-scep-failInfoText ::= { id-scep 1 }.
ID_MESSAGE_TYPE = "2.16.840.1.113733.1.9.2"
ID_PKI_STATUS = "2.16.840.1.113733.1.9.3"
ID_FAIL_INFO = "2.16.840.1.113733.1.9.4"
ID_SENDER_NONCE = "2.16.840.1.113733.1.9.5"
ID_RECIPIENT_NONCE = "2.16.840.1.113733.1.9.6"
ID_TRANSACTION_ID = "2.16.840.1.113733.1.9.7"
ID_FAIL_INFO_TEXT = "1.3.6.1.5.5.7.24.1"

# RSA (RFC 8017 appendix C, RFC 4055).
ID_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
ID_SHA1_WITH_RSA = "1.2.840.113549.1.1.5"
ID_RSAES_OAEP = "1.2.840.113549.1.1.7"
ID_MGF1 = "1.2.840.113549.1.1.8"
ID_SHA256_WITH_RSA = "1.2.840.113549.1.1.11"
ID_SHA384_WITH_RSA = "1.2.840.113549.1.1.12"
ID_SHA512_WITH_RSA = "1.2.840.113549.1.1.13"

# Digests (RFC 3370 section 2, RFC 5754 section 2).
ID_SHA1 = "1.3.14.3.2.26"
ID_SHA256 = "2.16.840.1.101.3.4.2.1"
ID_SHA384 = "2.16.840.1.101.3.4.2.2"
ID_SHA512 = "2.16.840.1.101.3.4.2.3"

# Content-encryption algorithms (RFC 3370 section 5, RFC 3565 section 4).
ID_DES_CBC = "1.3.14.3.2.7"
ID_DES_EDE3_CBC = "1.2.840.113549.3.7"
ID_AES128_CBC = "2.16.840.1.101.3.4.1.2"
ID_AES192_CBC = "2.16.840.1.101.3.4.1.22"
ID_AES256_CBC = "2.16.840.1.101.3.4.1.42"

# Certificate and CRL extensions (RFC 5280 sections 4.2.1 and 5.2, 5.3).
ID_CE_SUBJECT_KEY_IDENTIFIER = "2.5.29.14"
ID_CE_CRL_NUMBER = "2.5.29.20"
ID_CE_CRL_REASONS = "2.5.29.21"
ID_CE_ISSUING_DISTRIBUTION_POINT = "2.5.29.28"
ID_CE_AUTHORITY_KEY_IDENTIFIER = "2.5.29.35"

# Microsoft User Principal Name otherName (the SAN form MDMs put a UPN in).
ID_MS_UPN = "1.3.6.1.4.1.311.20.2.3"
# id-pkix-ocsp-basic (RFC 6960 section 4.2.1).
ID_OCSP_BASIC = "1.3.6.1.5.5.7.48.1.1"

# The encoded forms the DER builders write.
DATA = der.oid(ID_DATA)
SIGNED_DATA = der.oid(ID_SIGNED_DATA)
ENVELOPED_DATA = der.oid(ID_ENVELOPED_DATA)
CONTENT_TYPE = der.oid(ID_CONTENT_TYPE)
MESSAGE_DIGEST = der.oid(ID_MESSAGE_DIGEST)
SIGNING_TIME = der.oid(ID_SIGNING_TIME)
MESSAGE_TYPE = der.oid(ID_MESSAGE_TYPE)
PKI_STATUS = der.oid(ID_PKI_STATUS)
FAIL_INFO = der.oid(ID_FAIL_INFO)
SENDER_NONCE = der.oid(ID_SENDER_NONCE)
RECIPIENT_NONCE = der.oid(ID_RECIPIENT_NONCE)
TRANSACTION_ID = der.oid(ID_TRANSACTION_ID)
FAIL_INFO_TEXT = der.oid(ID_FAIL_INFO_TEXT)
SUBJECT_KEY_IDENTIFIER = der.oid(ID_CE_SUBJECT_KEY_IDENTIFIER)
CRL_NUMBER = der.oid(ID_CE_CRL_NUMBER)
CRL_REASONS = der.oid(ID_CE_CRL_REASONS)
ISSUING_DISTRIBUTION_POINT = der.oid(ID_CE_ISSUING_DISTRIBUTION_POINT)
AUTHORITY_KEY_IDENTIFIER = der.oid(ID_CE_AUTHORITY_KEY_IDENTIFIER)
OCSP_BASIC = der.oid(ID_OCSP_BASIC)
# AlgorithmIdentifiers with NULL parameters, as RFC 4055 section 5 requires for PKCS#1 v1.5.
RSA_ENCRYPTION = der.algorithm(ID_RSA_ENCRYPTION)
SHA256_WITH_RSA = der.algorithm(ID_SHA256_WITH_RSA)


def content_table(dotted_forms: Iterable[str]) -> dict[bytes, str]:
    """Content octets -> dotted form of known OIDs: the request path matches an OID read off the
    wire by its octets instead of rebuilding its dotted string arc by arc (X.690 8.19)."""
    return {der.oid(form)[2:]: form for form in dotted_forms}


def dotted(content: bytes, known: Mapping[bytes, str]) -> str:
    """The dotted form of an OBJECT IDENTIFIER's content octets; ``BERError`` when malformed."""
    form = known.get(content)
    return form if form is not None else oid_to_dotted(content)
