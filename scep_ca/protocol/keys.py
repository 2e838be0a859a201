"""The private-key interface the protocol layer signs and decrypts with.

``PrivateKey`` is exactly the part of cryptography's ``rsa.RSAPrivateKey`` the server uses,
so a key loaded from a file *is* a ``PrivateKey`` without a wrapper, and a key inside a
PKCS#11 token (``scep_ca.pki.pkcs11_keys``) implements the same four members. Everything
that signs (certificates, CRLs, OCSP responses, CertReps) or decrypts (the key transport of
a request) takes a ``PrivateKey`` and never asks which kind it holds; where a key lives is
the business of ``scep_ca.pki.keys``.
"""

from __future__ import annotations

from typing import Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa


class PrivateKey(Protocol):
    """The subset of ``rsa.RSAPrivateKey`` used for signing (PKCS#1 v1.5) and key transport."""

    @property
    def key_size(self) -> int: ...

    def public_key(self) -> rsa.RSAPublicKey: ...

    def sign(self, data: bytes, padding: padding.AsymmetricPadding, algorithm: hashes.HashAlgorithm) -> bytes: ...

    def decrypt(self, ciphertext: bytes, padding: padding.AsymmetricPadding) -> bytes: ...
