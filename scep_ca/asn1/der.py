"""The one DER writer: every structure the project emits is built from these helpers.

Building a CertRep with asn1crypto objects costs about 1.5 ms of Python per reply,
several times the RSA signature it carries, and cryptography's builders cost as much
for certificates and far more for large CRLs. The structures emitted (CertReps, RFC 8894
sections 3.3 and 3.4; certificates, CRLs and OCSP answers, RFC 5280 and RFC 6960) are few
and fixed, so they are written here as byte strings, with definite lengths and SET OF
sorted as DER requires (X.690 11.6).
"""

from __future__ import annotations

import datetime as dt

from scep_ca.asn1.ber import der_length, encode_tlv

TAG_INTEGER = 0x02
TAG_BIT_STRING = 0x03
TAG_OCTET_STRING = 0x04
TAG_NULL = 0x05
TAG_OID = 0x06
TAG_ENUMERATED = 0x0A
TAG_UTF8_STRING = 0x0C
TAG_PRINTABLE_STRING = 0x13
TAG_UTC_TIME = 0x17
TAG_GENERALIZED_TIME = 0x18
TAG_SEQUENCE = 0x30
TAG_SET = 0x31


def oid(dotted: str) -> bytes:
    """An OBJECT IDENTIFIER TLV (X.690 8.19)."""
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return encode_tlv(TAG_OID, bytes(body))


def integer(value: int) -> bytes:
    """An INTEGER TLV, minimal two's complement (X.690 8.3)."""
    length = value.bit_length() // 8 + 1
    return encode_tlv(TAG_INTEGER, value.to_bytes(length, "big", signed=True))


def seq(*parts: bytes) -> bytes:
    return encode_tlv(TAG_SEQUENCE, b"".join(parts))


def set_of(*parts: bytes) -> bytes:
    # DER orders SET OF elements by their encodings.
    return encode_tlv(TAG_SET, b"".join(sorted(parts)))


def octet_string(value: bytes) -> bytes:
    return encode_tlv(TAG_OCTET_STRING, value)


def printable_string(value: str) -> bytes:
    return encode_tlv(TAG_PRINTABLE_STRING, value.encode("ascii"))


def utf8_string(value: str) -> bytes:
    return encode_tlv(TAG_UTF8_STRING, value.encode("utf-8"))


def utc_time(value: dt.datetime) -> bytes:
    """UTCTime YYMMDDHHMMSSZ (X.690 11.8); formatted by hand, strftime costs several times more."""
    if value.tzinfo is not dt.UTC:
        value = value.astimezone(dt.UTC)
    text = (
        f"{value.year % 100:02d}{value.month:02d}{value.day:02d}{value.hour:02d}{value.minute:02d}{value.second:02d}Z"
    )
    return bytes((TAG_UTC_TIME, 13)) + text.encode("ascii")


def x509_time(value: dt.datetime) -> bytes:
    """Time ::= CHOICE { utcTime, generalTime } (RFC 5280 sections 4.1.2.5 and 5.1.2.4).

    UTCTime for the years 1950 through 2049, GeneralizedTime otherwise; whole seconds, Z.
    ``value`` must be timezone-aware (``ValueError`` otherwise): a naive time has no meaning here.
    """
    if value.tzinfo is None:
        raise ValueError("naive datetime: X.509 times must be timezone-aware")
    if value.tzinfo is not dt.UTC:
        value = value.astimezone(dt.UTC)
    if 1950 <= value.year <= 2049:
        return utc_time(value)
    text = f"{value.year:04d}{value.month:02d}{value.day:02d}{value.hour:02d}{value.minute:02d}{value.second:02d}Z"
    return bytes((TAG_GENERALIZED_TIME, 15)) + text.encode("ascii")


def bit_string(octets: bytes) -> bytes:
    """A BIT STRING of whole octets (the leading 0x00 says zero unused bits, X.690 8.6.2)."""
    return encode_tlv(TAG_BIT_STRING, b"\x00" + octets)


def enumerated(value: int) -> bytes:
    """An ENUMERATED TLV (X.690 8.4: encoded as an INTEGER)."""
    return encode_tlv(TAG_ENUMERATED, integer(value)[2:])


def extension(oid_tlv: bytes, value_der: bytes, critical: bool = False) -> bytes:
    """Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING } (RFC 5280 4.1).

    DER omits a BOOLEAN equal to its DEFAULT (X.690 11.5), so ``critical`` is written only when true.
    """
    flag = b"\x01\x01\xff" if critical else b""
    return seq(oid_tlv, flag, octet_string(value_der))


def signed(tbs: bytes, algorithm_der: bytes, signature: bytes) -> bytes:
    """SEQUENCE { tbs, signatureAlgorithm, signature BIT STRING }: a Certificate, CertificateList
    or BasicOCSPResponse without certs (RFC 5280 sections 4.1 and 5.1, RFC 6960 section 4.2.1)."""
    return seq(tbs, algorithm_der, bit_string(signature))


def explicit(number: int, content: bytes) -> bytes:
    """A context-specific constructed tag [number] around already-encoded content."""
    return encode_tlv(0xA0 | number, content)


def implicit_primitive(number: int, content: bytes) -> bytes:
    return encode_tlv(0x80 | number, content)


def algorithm(dotted: str, params: bytes | None = b"\x05\x00") -> bytes:
    """An AlgorithmIdentifier; NULL parameters by default, as most SCEP peers emit for RSA and digests."""
    return seq(oid(dotted), params or b"")


NULL = bytes([TAG_NULL, 0])

__all__ = ["NULL", "der_length", "encode_tlv"]
