"""Where a private key lives is known only here and in ``scep_ca.pki.pkcs11_keys`` (design.md section 8).

``PrivateKey`` is exactly the part of cryptography's ``rsa.RSAPrivateKey`` the server uses,
so a key loaded from a file *is* a ``PrivateKey`` without a wrapper, and a key inside a
PKCS#11 token implements the same four members. Everything that signs (certificates,
CRLs, OCSP responses, CertReps) or decrypts (the key transport of a request) takes a
``PrivateKey`` and never asks which kind it holds.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa


class PrivateKey(Protocol):
    """The subset of ``rsa.RSAPrivateKey`` used for signing (PKCS#1 v1.5) and key transport."""

    @property
    def key_size(self) -> int: ...

    def public_key(self) -> rsa.RSAPublicKey: ...

    def sign(self, data: bytes, padding: padding.AsymmetricPadding, algorithm: hashes.HashAlgorithm) -> bytes: ...

    def decrypt(self, ciphertext: bytes, padding: padding.AsymmetricPadding) -> bytes: ...


@runtime_checkable
class HeldKey(Protocol):
    """A key held by a device that can be out of reach (a token): ``check`` raises ``KeyUnavailable`` then."""

    def check(self) -> None: ...

    def describe(self) -> str: ...


class KeyUnavailable(Exception):
    """The key exists but cannot be used right now (token removed, HSM restarted, session lost).

    Deliberately not a ``ValueError``: a decryption failure (``ValueError``) is the
    client's fault (BadMessageCheck), this one is ours and temporary (HTTP 503). The
    message never holds a PIN or key material.
    """


def check_keys(keys: tuple[PrivateKey | None, ...]) -> None:
    """Raise ``KeyUnavailable`` for the first held key that cannot be used now (file keys always can)."""
    for key in keys:
        if isinstance(key, HeldKey):
            key.check()


def describe_key(key: PrivateKey, path: str) -> str:
    """Where a key lives, for ``scep-ca keys list``: a token reference, or the file ``path``."""
    return key.describe() if isinstance(key, HeldKey) else f"file {path}"
