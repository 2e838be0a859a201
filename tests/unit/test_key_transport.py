"""The key-transport decoders with implicit rejection (scep_ca.protocol.key_transport).

The encryption blocks are made by cryptography (``public.encrypt``) or by hand, and opened
with raw RSA computed from the private numbers, so the decoders are checked against an
independent implementation for good blocks and against RFC 8017's rules for bad ones.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from scep_ca.protocol.key_transport import KeyTransport, oaep_decode, pkcs1v15_decode, stand_in_key, unwrap_key

STAND_IN = b"S" * 16


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _open(key: rsa.RSAPrivateKey, ciphertext: bytes) -> bytes:
    numbers = key.private_numbers()
    return pow(int.from_bytes(ciphertext, "big"), numbers.d, numbers.public_numbers.n).to_bytes(256, "big")


def _seal(key: rsa.RSAPrivateKey, block: bytes) -> bytes:
    public = key.public_key().public_numbers()
    return pow(int.from_bytes(block, "big"), public.e, public.n).to_bytes(256, "big")


class RawKey:
    """A ``RawRsaKey`` computed in Python, as a token would answer CKM_RSA_X_509."""

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self.key, self.calls = key, 0

    @property
    def key_size(self) -> int:
        return self.key.key_size

    def public_key(self) -> rsa.RSAPublicKey:
        return self.key.public_key()

    def sign(self, data: bytes, padding: padding.AsymmetricPadding, algorithm: hashes.HashAlgorithm) -> bytes:
        raise AssertionError("not used")

    def raw_decrypt(self, ciphertext: bytes) -> bytes:
        self.calls += 1
        return _open(self.key, ciphertext)


def test_pkcs1v15_good_block(key: rsa.RSAPrivateKey) -> None:
    cek = bytes(range(16))
    em = _open(key, key.public_key().encrypt(cek, padding.PKCS1v15()))
    assert pkcs1v15_decode(em, 16, STAND_IN) == cek


@pytest.mark.parametrize(
    "block",
    [
        b"\x00\x01" + b"\xff" * 237 + b"\x00" + bytes(16),  # signature padding
        b"\x01\x02" + b"\xff" * 237 + b"\x00" + bytes(16),  # first octet not 0
        b"\x00\x02" + b"\xff" * 237 + b"\x01" + bytes(16),  # no separator where the key must start
        b"\x00\x02" + b"\xff" * 100 + b"\x00" + b"\xff" * 136 + b"\x00" + bytes(16),  # a zero in the padding
        b"\x00\x02" + b"\xff" * 236 + b"\x00" + bytes(17),  # a 17-octet key where 16 are expected
    ],
    ids=["signature-padding", "first-octet", "no-separator", "zero-in-padding", "wrong-length"],
)
def test_pkcs1v15_bad_blocks_give_the_stand_in(block: bytes) -> None:
    assert len(block) == 256
    assert pkcs1v15_decode(block, 16, STAND_IN) == STAND_IN


@pytest.mark.parametrize("hash_name,mgf_name", [("sha1", "sha1"), ("sha256", "sha256"), ("sha512", "sha1")])
def test_oaep_good_block_and_tampered_ones(key: rsa.RSAPrivateKey, hash_name: str, mgf_name: str) -> None:
    algorithms = {"sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha512": hashes.SHA512}
    pad = padding.OAEP(mgf=padding.MGF1(algorithms[mgf_name]()), algorithm=algorithms[hash_name](), label=None)
    cek = bytes(range(16))
    em = _open(key, key.public_key().encrypt(cek, pad))
    assert oaep_decode(em, 16, STAND_IN, hash_name, mgf_name) == cek
    assert oaep_decode(em, 24, STAND_IN[:8] * 3, hash_name, mgf_name) == STAND_IN[:8] * 3, "another length"
    for index in (0, 1, 40, 255):
        tampered = bytearray(em)
        tampered[index] ^= 0x01
        assert oaep_decode(bytes(tampered), 16, STAND_IN, hash_name, mgf_name) == STAND_IN, index


def test_stand_in_depends_on_secret_and_encrypted_key_only() -> None:
    assert stand_in_key(b"a", b"ek", 16) == stand_in_key(b"a", b"ek", 16)
    assert len({stand_in_key(b"a", b"ek", 16), stand_in_key(b"b", b"ek", 16), stand_in_key(b"a", b"ek2", 16)}) == 3
    assert stand_in_key(b"a", b"ek", 24)[:16] == stand_in_key(b"a", b"ek", 16)


def test_raw_key_unwraps_once_per_ciphertext_in_range(key: rsa.RSAPrivateKey) -> None:
    raw = RawKey(key)
    cek = bytes(range(24))
    good = key.public_key().encrypt(cek, padding.PKCS1v15())
    assert unwrap_key(good, KeyTransport(), raw, 24, b"s") == cek
    bad = _seal(key, b"\x00\x01" + b"\xff" * 229 + b"\x00" + cek)
    assert unwrap_key(bad, KeyTransport(), raw, 24, b"s") == stand_in_key(b"s", bad, 24)
    assert raw.calls == 2
    # Out of range or of the wrong length: public facts, answered without the key.
    modulus = key.public_key().public_numbers().n.to_bytes(256, "big")
    for ciphertext in (good[1:], good + b"\x00", modulus):
        assert unwrap_key(ciphertext, KeyTransport(), raw, 24, b"s") == stand_in_key(b"s", ciphertext, 24)
    assert raw.calls == 2


def test_file_key_gives_the_stand_in_for_bad_oaep_and_a_wrong_length(key: rsa.RSAPrivateKey) -> None:
    transport = KeyTransport(hashes.SHA256, hashes.SHA256)
    cek = bytes(range(16))
    good = key.public_key().encrypt(cek, transport.padding)
    assert unwrap_key(good, transport, key, 16, b"s") == cek
    assert unwrap_key(good, transport, key, 32, b"s") == stand_in_key(b"s", good, 32)
    tampered = bytes([good[0] ^ 1]) + good[1:]
    assert unwrap_key(tampered, transport, key, 16, b"s") == stand_in_key(b"s", tampered, 16)
