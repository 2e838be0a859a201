"""MD4 (RFC 1320) in pure Python, for the NT hash only.

OpenSSL 3 moved MD4 to its legacy provider, so ``hashlib.new("md4")`` fails on
most current systems. NTLM cannot do without it: the NT hash is MD4 of the
UTF-16LE password. MD4 is broken as a general hash; nothing else here uses it.
Speed does not matter (one hash per credential creation or rotation).
"""

from __future__ import annotations

import struct

_MASK = 0xFFFFFFFF


def _rotl(value: int, shift: int) -> int:
    value &= _MASK
    return ((value << shift) | (value >> (32 - shift))) & _MASK


def _f(x: int, y: int, z: int) -> int:
    return (x & y) | (~x & z)


def _g(x: int, y: int, z: int) -> int:
    return (x & y) | (x & z) | (y & z)


def _h(x: int, y: int, z: int) -> int:
    return x ^ y ^ z


# Round 2 and 3 constants and the message-word orders of RFC 1320 section 3.4.
_R2 = 0x5A827999
_R3 = 0x6ED9EBA1
_ORDER1 = tuple(range(16))
_ORDER2 = (0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15)
_ORDER3 = (0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15)
_SHIFTS1 = (3, 7, 11, 19)
_SHIFTS2 = (3, 5, 9, 13)
_SHIFTS3 = (3, 9, 11, 15)


def _compress(state: tuple[int, int, int, int], block: bytes) -> tuple[int, int, int, int]:
    x = struct.unpack("<16I", block)
    a, b, c, d = state
    for i, k in enumerate(_ORDER1):
        a = _rotl(a + _f(b, c, d) + x[k], _SHIFTS1[i % 4])
        a, b, c, d = d, a, b, c
    for i, k in enumerate(_ORDER2):
        a = _rotl(a + _g(b, c, d) + x[k] + _R2, _SHIFTS2[i % 4])
        a, b, c, d = d, a, b, c
    for i, k in enumerate(_ORDER3):
        a = _rotl(a + _h(b, c, d) + x[k] + _R3, _SHIFTS3[i % 4])
        a, b, c, d = d, a, b, c
    return (
        (state[0] + a) & _MASK,
        (state[1] + b) & _MASK,
        (state[2] + c) & _MASK,
        (state[3] + d) & _MASK,
    )


def md4(data: bytes) -> bytes:
    """The 16-byte MD4 digest of ``data``."""
    bit_length = (len(data) * 8) & 0xFFFFFFFFFFFFFFFF
    # Padding: a 1 bit, zeros up to 56 mod 64 bytes, then the 64-bit little-endian bit length.
    padded = data + b"\x80" + b"\x00" * ((55 - len(data)) % 64) + struct.pack("<Q", bit_length)
    state = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476)
    for offset in range(0, len(padded), 64):
        state = _compress(state, padded[offset : offset + 64])
    return struct.pack("<4I", *state)
