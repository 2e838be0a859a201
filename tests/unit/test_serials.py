"""Operator serial input and display (scep_ca.pki.serials)."""

from __future__ import annotations

import pytest

from scep_ca.pki.serials import SerialError, candidates, colon_hex, from_int, to_int


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3B4F", ["3b4f"]),  # openssl x509 -serial
        ("3b:4f:0a", ["3b4f0a"]),  # openssl x509 -text
        ("  3b:4f  ", ["3b4f"]),
        ("0x3b4f", ["3b4f"]),
        ("0X3B4F", ["3b4f"]),
        ("0x1234", ["1234"]),  # 0x forces hex even for digits only
        ("00:ab", ["ab"]),  # leading zeros dropped: the store's form
        ("3b 4f 0a", ["3b4f0a"]),  # Windows certutil
        ("12:34", ["1234"]),  # a separator forces hex
        ("abcdef", ["abcdef"]),
    ],
)
def test_hex_forms(text: str, expected: list[str]) -> None:
    assert candidates(text) == expected


def test_digits_only_is_ambiguous_hex_first() -> None:
    assert candidates("1234") == ["1234", format(1234, "x")]


def test_single_digit_has_one_reading() -> None:
    assert candidates("7") == ["7"]
    assert candidates("0") == ["0"]


def test_base_hints() -> None:
    assert candidates("1234", base="hex") == ["1234"]
    assert candidates("1234", base="dec") == ["4d2"]
    with pytest.raises(SerialError):
        candidates("ab", base="dec")


@pytest.mark.parametrize("text", ["", "   ", "0x", "xyz", "-5", "12g4", "3b::zz", "1" * 200])
def test_rejected(text: str) -> None:
    with pytest.raises(SerialError):
        candidates(text)


def test_longer_than_32_octets_rejected() -> None:
    with pytest.raises(SerialError):
        candidates("0x" + "f" * 65)
    assert candidates("0x" + "f" * 64) == ["f" * 64]


def test_colon_hex() -> None:
    assert colon_hex("3b4f0a") == "3b:4f:0a"
    assert colon_hex("abc") == "0a:bc"  # padded to whole octets as openssl prints
    assert colon_hex(255) == "ff"
    assert colon_hex("0") == "00"


def test_int_round_trip() -> None:
    value = (1 << 158) | 12345
    assert to_int(from_int(value)) == value
    assert from_int(0) == "0"
    with pytest.raises(SerialError):
        from_int(-1)
