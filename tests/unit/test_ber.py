"""The BER reader's fast and general paths, its errors, and OID lookup by content octets."""

from __future__ import annotations

import pytest

from scep_ca.asn1 import der, oids
from scep_ca.asn1.ber import BERError, children, der_length, encode_tlv, oid_to_dotted, read_tlv


@pytest.mark.parametrize("size", [0, 1, 127, 128, 255, 256, 65535, 65536, 70000])
def test_encode_and_read_round_trip_at_every_length_form(size: int) -> None:
    content = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    encoded = encode_tlv(0x04, content)
    assert encoded[1:].startswith(der_length(size))
    tlv = read_tlv(b"\x00" + encoded, 1)
    assert (tlv.tag_class, tlv.constructed, tlv.tag_number) == (0, False, 4)
    assert tlv.content == content
    assert tlv.end == 1 + len(encoded)


@pytest.mark.parametrize(
    ("size", "length_octets"),
    [(127, b"\x7f"), (128, b"\x81\x80"), (255, b"\x81\xff"), (256, b"\x82\x01\x00"), (65536, b"\x83\x01\x00\x00")],
)
def test_der_length_is_minimal(size: int, length_octets: bytes) -> None:
    assert der_length(size) == length_octets


def test_non_minimal_long_form_lengths_are_read_as_ber_allows() -> None:
    assert read_tlv(b"\x04\x81\x02ab").content == b"ab"
    assert read_tlv(b"\x04\x82\x00\x02ab").content == b"ab"


def test_constructed_context_tag_and_children() -> None:
    inner = encode_tlv(0x02, b"\x01") + encode_tlv(0x05, b"")
    tlv = read_tlv(encode_tlv(0xA3, inner))
    assert (tlv.tag_class, tlv.constructed, tlv.tag_number) == (2, True, 3)
    assert [(c.tag_number, c.content) for c in children(tlv.content)] == [(2, b"\x01"), (5, b"")]


def test_indefinite_length_and_high_tag_number_take_the_general_path() -> None:
    indefinite = read_tlv(b"\x30\x80" + encode_tlv(0x04, b"xy") + b"\x00\x00")
    assert indefinite.content == b"\x04\x02xy" and indefinite.end == 8
    high = read_tlv(b"\x9f\x81\x00\x01z")  # [128] IMPLICIT, primitive
    assert (high.tag_class, high.tag_number, high.content) == (2, 128, b"z")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "no tag"),
        (b"\x04", "no length"),
        (b"\x04\x03ab", "runs past the end"),  # short form
        (b"\x04\x81\x80" + b"a" * 10, "runs past the end"),  # one length octet
        (b"\x04\x82\x01\x00" + b"a" * 10, "runs past the end"),  # two length octets
        (b"\x04\x81", "bad length"),  # length octets missing
        (b"\x04\x82\x01", "bad length"),
        (b"\x04\x85\x01\x00\x00\x00\x00", "bad length"),  # more than four length octets
        (b"\x04\x80ab\x00\x00", "indefinite length on a primitive"),
        (b"\x30\x80\x04\x01a", "missing end-of-contents"),
        (b"\x1f\x81", "truncated tag"),
    ],
)
def test_malformed_input_raises(data: bytes, message: str) -> None:
    with pytest.raises(BERError, match=message):
        read_tlv(data)


def test_nesting_depth_is_capped() -> None:
    data = b"\x00\x00"
    for _ in range(20):
        data = b"\x30\x80" + data + b"\x00\x00"
    with pytest.raises(BERError, match="nesting too deep"):
        read_tlv(data)


def test_oid_lookup_by_content_octets() -> None:
    known = oids.content_table(["2.16.840.1.113733.1.9.7", "1.2.840.113549.1.1.11"])
    transaction_id = der.oid("2.16.840.1.113733.1.9.7")[2:]
    assert oids.dotted(transaction_id, known) == "2.16.840.1.113733.1.9.7"
    other = der.oid("1.3.6.1.4.1.311.20.2.3")[2:]  # not in the table: decoded arc by arc
    assert oids.dotted(other, known) == oid_to_dotted(other) == "1.3.6.1.4.1.311.20.2.3"
    with pytest.raises(BERError, match="malformed OBJECT IDENTIFIER"):
        oids.dotted(b"\x2a\x86", known)  # last octet has the continuation bit
