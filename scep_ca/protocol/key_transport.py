"""Unwrapping a request's content-encryption key with implicit rejection (RFC 5652 section 6.2.1).

A key that does not unwrap is never reported: it is replaced by a stand-in key of the
expected length, derived from a server secret and the encrypted key (HMAC-SHA256, as the
implicit rejection of draft-irtf-cfrg-rsa-guidance and TLS 1.2's premaster-secret rule, RFC
5246 section 7.4.7.1, do). The request then fails at content decryption, exactly as one
whose key unwrapped but does not fit the content. Because the stand-in is a function of the
request, resending the same request gives the same answer every time: there is no "random
one time in 256" to count, so nothing tells bad padding from good padding with wrong content
(threat model: anyone on the network must not learn which step of decryption failed).

Two kinds of key:

- a file key (cryptography's ``RSAPrivateKey``) decrypts with its padding; OpenSSL already
  answers bad PKCS#1 v1.5 padding with a synthetic message of its own (implicit rejection),
  and a result of the wrong length becomes the stand-in;
- a key that hands out raw RSA (``RawRsaKey``: a PKCS#11 token with CKM_RSA_X_509) makes one
  RSADP call whatever the padding inside turns out to be, and the padding is checked here,
  with the message at its one expected place (RFC 8017 sections 7.2.2 and 7.1.2 step 3, for
  the expected key length only), every byte examined and the result chosen by masking, not
  branching.

CPython gives no constant-time guarantee; the decoders take the same steps for every
ciphertext of a given length, which is what a remote timer can observe.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from scep_ca.protocol.keys import PrivateKey, RawRsaKey

_STAND_IN_LABEL = b"scep-ca stand-in content-encryption key\x00"
# PKCS#1 v1.5: 0x00 0x02, at least 8 non-zero padding octets, 0x00 (RFC 8017 section 7.2.1).
_PKCS1_OVERHEAD = 11


@dataclass(frozen=True)
class KeyTransport:
    """A KeyTransRecipientInfo's keyEncryptionAlgorithm: PKCS#1 v1.5, or OAEP with its two hashes."""

    oaep_hash: type[hashes.HashAlgorithm] | None = None
    mgf1_hash: type[hashes.HashAlgorithm] | None = None

    @property
    def padding(self) -> padding.AsymmetricPadding:
        if self.oaep_hash is None or self.mgf1_hash is None:
            return padding.PKCS1v15()
        return padding.OAEP(mgf=padding.MGF1(self.mgf1_hash()), algorithm=self.oaep_hash(), label=None)


def stand_in_key(secret: bytes, encrypted_key: bytes, size: int) -> bytes:
    """The key used when ``encrypted_key`` does not unwrap: HMAC-SHA256(secret, label || encryptedKey)."""
    return hmac.new(secret, _STAND_IN_LABEL + encrypted_key, hashlib.sha256).digest()[:size]


def unwrap_key(encrypted_key: bytes, transport: KeyTransport, key: PrivateKey, size: int, secret: bytes) -> bytes:
    """The ``size``-octet content-encryption key, or the stand-in key (module docstring); never raises."""
    stand_in = stand_in_key(secret, encrypted_key, size)
    if isinstance(key, rsa.RSAPrivateKey):
        try:
            unwrapped = key.decrypt(encrypted_key, transport.padding)
        except ValueError:
            unwrapped = b""
        return _select(_is_zero(len(unwrapped) ^ size), unwrapped[:size].ljust(size, b"\0"), stand_in)
    if not isinstance(key, RawRsaKey):
        raise TypeError(f"{type(key).__name__} cannot decrypt")
    public = key.public_key().public_numbers()
    k = (public.n.bit_length() + 7) // 8
    # RFC 8017 section 7.2.2 step 1 and RSADP's range check: public facts about the ciphertext.
    if len(encrypted_key) != k or int.from_bytes(encrypted_key, "big") >= public.n:
        return stand_in
    try:
        em = key.raw_decrypt(encrypted_key)
    except ValueError:
        return stand_in
    if transport.oaep_hash is None or transport.mgf1_hash is None:
        return pkcs1v15_decode(em, size, stand_in)
    return oaep_decode(em, size, stand_in, transport.oaep_hash().name, transport.mgf1_hash().name)


def pkcs1v15_decode(em: bytes, size: int, stand_in: bytes) -> bytes:
    """EME-PKCS1-v1_5 decoding (RFC 8017 section 7.2.2 step 3) of a ``size``-octet message, or ``stand_in``."""
    k = len(em)
    if k < size + _PKCS1_OVERHEAD:
        return stand_in
    separator = k - size - 1
    bad = em[0] | (em[1] ^ 2) | em[separator]
    for octet in em[2:separator]:
        bad |= _is_zero(octet)
    return _select(_is_zero(bad), em[separator + 1 :], stand_in)


def oaep_decode(em: bytes, size: int, stand_in: bytes, hash_name: str, mgf1_hash_name: str) -> bytes:
    """EME-OAEP decoding (RFC 8017 section 7.1.2 step 3, empty label) of a ``size``-octet message, or ``stand_in``."""
    k = len(em)
    h_len = hashlib.new(hash_name).digest_size
    if k < 2 * h_len + 2 + size:
        return stand_in
    masked_seed, masked_db = em[1 : 1 + h_len], em[1 + h_len :]
    seed = _xor(masked_seed, _mgf1(masked_db, h_len, mgf1_hash_name))
    db = _xor(masked_db, _mgf1(seed, k - h_len - 1, mgf1_hash_name))
    separator = len(db) - size - 1
    bad = em[0] | (db[separator] ^ 1)
    for got, want in zip(db[:h_len], hashlib.new(hash_name).digest(), strict=True):
        bad |= got ^ want
    for octet in db[h_len:separator]:
        bad |= octet
    return _select(_is_zero(bad), db[separator + 1 :], stand_in)


def _mgf1(seed: bytes, length: int, hash_name: str) -> bytes:
    """MGF1 (RFC 8017 appendix B.2.1)."""
    out = b"".join(
        hashlib.new(hash_name, seed + counter.to_bytes(4, "big")).digest()
        for counter in range(-(-length // hashlib.new(hash_name).digest_size))
    )
    return out[:length]


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _is_zero(value: int) -> int:
    """1 for 0, else 0, for 0 <= value < 2**63, without a comparison."""
    return ((value - 1) >> 63) & 1


def _select(choose_first: int, first: bytes, second: bytes) -> bytes:
    """``first`` if ``choose_first`` is 1, ``second`` if 0 (equal lengths), by masking every octet."""
    mask = -choose_first & 0xFF
    return bytes((a & mask) | (b & ~mask & 0xFF) for a, b in zip(first, second, strict=True))
