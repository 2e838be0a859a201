"""Certificate serial numbers: operator input and display.

The store keys certificates by lowercase hex without leading zeros (``store.base``).
Operators paste serials from many tools: ``openssl x509 -serial`` (``3B4F...``),
``openssl x509 -text`` (``3b:4f:...``), Windows certutil (``3b 4f ...``), or a
decimal integer from a library. The rule that tells them apart:

* a ``0x`` prefix, a colon or space separator, or any letter a-f: hexadecimal only;
* only decimal digits: ambiguous, so both readings are returned (hex first) and the
  caller looks both up. Our serials are 159-bit random numbers (40 hex digits), so a
  digits-only hex serial is rare (about 1 in 10^8) and a 48-digit decimal read as hex
  would exceed 159 bits; a caller that finds both must refuse and ask for a hint
  (``base="hex"`` or ``base="dec"``).
"""

from __future__ import annotations

import re
from typing import Literal

# RFC 5280 §4.1.2.2 caps serials at 20 octets; the margin is for foreign certificates
# while still failing closed on junk.
MAX_SERIAL_OCTETS = 32

_HEX = re.compile(r"^[0-9a-f]+$")
_DEC = re.compile(r"^[0-9]+$")
_SEPARATORS = re.compile(r"[:\s]")

Base = Literal["auto", "hex", "dec"]


class SerialError(ValueError):
    """The text is not a certificate serial number."""


def from_int(value: int) -> str:
    """The store's form: lowercase hex, no leading zeros."""
    if value < 0:
        raise SerialError("serial numbers are positive (RFC 5280 §4.1.2.2)")
    return format(value, "x")


def _checked(value: int) -> str:
    if value.bit_length() > MAX_SERIAL_OCTETS * 8:
        raise SerialError(f"serial longer than {MAX_SERIAL_OCTETS} octets")
    return from_int(value)


def _parse_hex(text: str) -> str:
    body = text[2:] if text[:2] == "0x" else text
    body = _SEPARATORS.sub("", body)
    if not body or not _HEX.match(body):
        raise SerialError(f"not a hexadecimal serial: {text!r}")
    return _checked(int(body, 16))


def _parse_dec(text: str) -> str:
    if not _DEC.match(text):
        raise SerialError(f"not a decimal serial: {text!r}")
    return _checked(int(text, 10))


def candidates(text: str, *, base: Base = "auto") -> list[str]:
    """The store forms ``text`` may denote, most likely first (see the module docstring)."""
    cleaned = text.strip().lower()
    if not cleaned:
        raise SerialError("empty serial")
    if len(cleaned) > 4 * MAX_SERIAL_OCTETS:
        raise SerialError("serial too long")
    if base == "hex":
        return [_parse_hex(cleaned)]
    if base == "dec":
        return [_parse_dec(cleaned)]
    if not _DEC.match(cleaned):
        return [_parse_hex(cleaned)]
    forms = [_parse_hex(cleaned), _parse_dec(cleaned)]
    # "0".."9" read the same in both bases.
    return forms[:1] if forms[0] == forms[1] else forms


def to_int(serial_hex: str) -> int:
    """The integer value of a store-form serial."""
    return int(serial_hex, 16)


def colon_hex(serial: str | int) -> str:
    """``openssl x509 -text`` style: lowercase byte pairs joined by colons."""
    value = serial if isinstance(serial, int) else to_int(serial)
    digits = from_int(value)
    if len(digits) % 2:
        digits = "0" + digits
    return ":".join(digits[i : i + 2] for i in range(0, len(digits), 2))
