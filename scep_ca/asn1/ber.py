"""The one BER/DER reader: the request path decodes every pkiMessage with it.

It reads raw TLVs, which is both faster than building asn1crypto objects and more
lenient where clients need it: scepclient (and old routers) send EnvelopedData whose
``encryptedContent`` (``[0] IMPLICIT OCTET STRING``) is BER constructed, possibly with
indefinite lengths, which asn1crypto refuses under an implicit primitive tag. It also
takes fields out of certificates byte for byte (``issuer_and_serial``, ``subject_der``).
Every read is bounds-checked: malformed input raises ``BERError``, never reads past the
buffer, and recursion depth is capped.
"""

from __future__ import annotations

from typing import NamedTuple

_MAX_DEPTH = 16

# Tag classes (X.690 section 8.1.2.2).
UNIVERSAL = 0
CONTEXT = 2
# The universal tag numbers the readers test (X.680 section 8.6).
INTEGER = 2
OCTET_STRING = 4
OID = 6
SEQUENCE = 16
SET = 17
UTF8_STRING = 12
PRINTABLE_STRING = 19
T61_STRING = 20
IA5_STRING = 22
BMP_STRING = 30


class BERError(ValueError):
    """The bytes are not well-formed BER."""


class TLV(NamedTuple):
    """One decoded TLV. A NamedTuple: thousands are made per second on the request path."""

    tag_class: int  # 0 universal, 1 application, 2 context, 3 private
    constructed: bool
    tag_number: int
    # Content octets; for an indefinite-length value, the octets between header and end-of-contents.
    content: bytes
    end: int  # offset just past this TLV (including any end-of-contents octets)

    def is_universal(self, number: int) -> bool:
        """A universal tag: ``SEQUENCE``, ``SET``, ``OCTET_STRING``, ..."""
        return self.tag_class == UNIVERSAL and self.tag_number == number

    def is_context(self, number: int) -> bool:
        """The context-specific tag ``[number]``."""
        return self.tag_class == CONTEXT and self.tag_number == number


def read_tlv(data: bytes, offset: int = 0, depth: int = 0) -> TLV:
    if depth > _MAX_DEPTH:
        raise BERError("nesting too deep")
    size = len(data)
    if offset + 2 <= size:
        first = data[offset]
        length_byte = data[offset + 1]
        # The common cases on the request path: a one-byte tag and a definite length of one to
        # three octets (values up to 64 KiB, the request size cap).
        if first & 0x1F != 0x1F:
            if length_byte < 0x80:
                start, length = offset + 2, length_byte
            elif length_byte == 0x81 and offset + 3 <= size:
                start, length = offset + 3, data[offset + 2]
            elif length_byte == 0x82 and offset + 4 <= size:
                start, length = offset + 4, (data[offset + 2] << 8) | data[offset + 3]
            else:
                return _read_tlv_general(data, offset, depth)
            end = start + length
            if end > size:
                raise BERError("truncated: value runs past the end")
            return TLV(first >> 6, bool(first & 0x20), first & 0x1F, data[start:end], end)
    return _read_tlv_general(data, offset, depth)


def _read_tlv_general(data: bytes, offset: int, depth: int) -> TLV:
    if offset >= len(data):
        raise BERError("truncated: no tag")
    first = data[offset]
    tag_class, constructed, tag_number = first >> 6, bool(first & 0x20), first & 0x1F
    pos = offset + 1
    if tag_number == 0x1F:
        tag_number = 0
        while True:
            if pos >= len(data):
                raise BERError("truncated tag")
            b = data[pos]
            pos += 1
            tag_number = (tag_number << 7) | (b & 0x7F)
            if not b & 0x80:
                break
            if tag_number > 1 << 28:
                raise BERError("tag number too large")
    if pos >= len(data):
        raise BERError("truncated: no length")
    length_byte = data[pos]
    pos += 1
    if length_byte == 0x80:
        if not constructed:
            raise BERError("indefinite length on a primitive value")
        start = cursor = pos
        while True:
            if cursor + 2 > len(data):
                raise BERError("truncated: missing end-of-contents")
            if data[cursor] == 0 and data[cursor + 1] == 0:
                return TLV(tag_class, constructed, tag_number, data[start:cursor], cursor + 2)
            cursor = read_tlv(data, cursor, depth + 1).end
    if length_byte & 0x80:
        n = length_byte & 0x7F
        if n > 4 or pos + n > len(data):
            raise BERError("bad length")
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    else:
        length = length_byte
    if pos + length > len(data):
        raise BERError("truncated: value runs past the end")
    return TLV(tag_class, constructed, tag_number, data[pos : pos + length], pos + length)


def children(content: bytes, depth: int = 0) -> list[TLV]:
    """The TLVs that make up a constructed value's content."""
    out, pos = [], 0
    while pos < len(content):
        tlv = read_tlv(content, pos, depth + 1)
        out.append(tlv)
        pos = tlv.end
    return out


def octet_string_value(tlv: TLV, depth: int = 0) -> bytes:
    """The octets of an OCTET STRING, primitive or constructed (segments joined, X.690 8.7)."""
    if not tlv.constructed:
        return tlv.content
    if depth > _MAX_DEPTH:
        raise BERError("nesting too deep")
    parts = []
    for child in children(tlv.content, depth):
        if child.tag_class != 0 or child.tag_number != 4:
            raise BERError("constructed OCTET STRING holds a non-OCTET STRING segment")
        parts.append(octet_string_value(child, depth + 1))
    return b"".join(parts)


def der_length(n: int) -> bytes:
    """A DER length field (X.690 8.1.3, definite form)."""
    if n < 0x80:
        return bytes((n,))
    if n < 0x100:
        return bytes((0x81, n))
    if n < 0x10000:
        return bytes((0x82, n >> 8, n & 0xFF))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def encode_tlv(tag: int, content: bytes) -> bytes:
    """One DER TLV with a single-byte tag."""
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    return bytes((tag,)) + der_length(n) + content


def oid_to_dotted(content: bytes) -> str:
    """The dotted form of an OBJECT IDENTIFIER's content octets (X.690 8.19)."""
    if not content or content[-1] & 0x80:
        raise BERError("malformed OBJECT IDENTIFIER")
    arcs: list[int] = []
    value = 0
    for b in content:
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])


def issuer_and_serial(cert_der: bytes) -> bytes:
    """IssuerAndSerialNumber (RFC 5652 section 10.2.4) taken byte for byte from a certificate."""
    tbs = read_tlv(read_tlv(cert_der).content).content
    # tbsCertificate: [0] version (optional), serialNumber, signature, issuer, ...: read just those.
    first = read_tlv(tbs)
    serial = read_tlv(tbs, first.end) if first.tag_class == 2 and first.tag_number == 0 else first
    issuer = read_tlv(tbs, read_tlv(tbs, serial.end).end)
    return encode_tlv(0x30, encode_tlv(0x30, issuer.content) + encode_tlv(0x02, serial.content))


def _tbs_field(cert_der: bytes, index: int) -> bytes:
    """Field ``index`` of a TBSCertificate, counted after the optional [0] version
    (0 serialNumber, 1 signature, 2 issuer, 3 validity, 4 subject, 5 subjectPublicKeyInfo),
    as its complete TLV octets (RFC 5280 section 4.1)."""
    tbs = read_tlv(read_tlv(cert_der).content).content
    first = read_tlv(tbs)
    start = first.end if first.tag_class == 2 and first.tag_number == 0 else 0
    for _ in range(index):
        start = read_tlv(tbs, start).end
    return tbs[start : read_tlv(tbs, start).end]


def subject_der(cert_der: bytes) -> bytes:
    """A certificate's subject Name exactly as encoded in its TBSCertificate.

    Re-encoding through cryptography's ``Name`` can change string types, and the consumers
    (the issuer of the certificates and CRLs a CA signs, RFC 5280 section 7.1 name chaining;
    OCSP's issuerNameHash, RFC 6960 section 4.1.1; GetCert's issuer) compare octets.
    """
    return _tbs_field(cert_der, 4)


def subject_public_key_info(cert_der: bytes) -> bytes:
    """A certificate's SubjectPublicKeyInfo exactly as encoded in its TBSCertificate."""
    return _tbs_field(cert_der, 5)
