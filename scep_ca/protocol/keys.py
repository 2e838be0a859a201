"""The private-key interfaces the protocol layer signs and decrypts with.

``PrivateKey`` is the part of cryptography's ``rsa.RSAPrivateKey`` the server signs with, so
a key loaded from a file *is* a ``PrivateKey`` without a wrapper, and a key inside a PKCS#11
token (``scep_ca.pki.pkcs11_keys``) implements the same three members. Everything that signs
(certificates, CRLs, OCSP responses, CertReps) takes a ``PrivateKey`` and never asks which
kind it holds; where a key lives is the business of ``scep_ca.pki.keys``.

Decryption (the key transport of a request) is either cryptography's own (a file key) or a
``RawRsaKey``'s RSADP with the padding checked by ``scep_ca.protocol.key_transport``, so that
a token key takes the same steps for good and bad padding.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa


class PrivateKey(Protocol):
    """The subset of ``rsa.RSAPrivateKey`` used for signing (PKCS#1 v1.5)."""

    @property
    def key_size(self) -> int: ...

    def public_key(self) -> rsa.RSAPublicKey: ...

    def sign(self, data: bytes, padding: padding.AsymmetricPadding, algorithm: hashes.HashAlgorithm) -> bytes: ...


@runtime_checkable
class RawRsaKey(Protocol):
    """A key that decrypts with raw RSA and leaves the padding to the caller."""

    def public_key(self) -> rsa.RSAPublicKey: ...

    def raw_decrypt(self, ciphertext: bytes) -> bytes:
        """RSADP (RFC 8017 section 5.1.2): ciphertext^d mod n as k octets; ``ValueError`` when out of range."""
        ...
