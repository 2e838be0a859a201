"""MD4 against the RFC 1320 test suite (appendix A.5) and the MS-NLMP NT hash example."""

from __future__ import annotations

import pytest

from challenge.md4 import md4

RFC1320_VECTORS = [
    (b"", "31d6cfe0d16ae931b73c59d7e0c089c0"),
    (b"a", "bde52cb31de33e46245e05fbdbd6fb24"),
    (b"abc", "a448017aaf21d8525fc10ae87aa6729d"),
    (b"message digest", "d9130a8164549fe818874806e1c7014b"),
    (b"abcdefghijklmnopqrstuvwxyz", "d79e1c308aa5bbcdeea8ed63df412da9"),
    (
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
        "043f8582f241db351ce627e153e7f0e4",
    ),
    (b"1234567890" * 8, "e33b4ddc9c38f2199c3e7b164fcc0536"),
]


@pytest.mark.parametrize(("message", "digest"), RFC1320_VECTORS)
def test_rfc1320_vectors(message: bytes, digest: str) -> None:
    assert md4(message).hex() == digest


def test_nt_hash_of_ms_nlmp_password() -> None:
    # MS-NLMP 4.2.2.1.2: NTOWFv1("Password") = MD4(UTF-16LE("Password")).
    assert md4("Password".encode("utf-16-le")).hex() == "a4f49c406510bdcab6824ee7c30fd852"


@pytest.mark.parametrize("length", [55, 56, 57, 63, 64, 65, 119, 120, 128, 1000])
def test_padding_boundaries_match_reference(length: int) -> None:
    # pyspnego ships its own MD4; both must agree across the padding edge cases.
    from spnego._ntlm_raw.md4 import md4 as reference

    data = bytes(range(256)) * 4
    assert md4(data[:length]) == reference(data[:length])
