"""The audit keys: neither is in the database, so a database writer can forge neither.

- ``audit.key`` (0600, beside ``secret.key``): 32 random bytes as 64 hex digits, the
  HMAC-SHA256 key of every record's MAC (``audit.encoding``). Anyone who verifies the MACs
  needs it, so it stays on the CA host and in its backups.
- ``audit-checkpoint.key`` (0600) and ``audit-checkpoint.pub`` (0644): an Ed25519 key pair
  that signs checkpoints (``audit.checkpoint``). Its own key rather than the CA key: the CA
  key signs certificates, CRLs and OCSP answers only (and may sit in a token that will not
  sign arbitrary bytes), and the public half can be handed to whoever checks the shipped
  checkpoints without giving them anything that verifies or forges MACs.

Both are created on first use, race-free across worker processes (``config.files``).
"""

from __future__ import annotations

import contextlib
import hmac
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from config.files import check_key, create_private_once, make_private_dir, write_public

MAC_KEY_FILE = "audit.key"
CHECKPOINT_KEY_FILE = "audit-checkpoint.key"
CHECKPOINT_PUBLIC_FILE = "audit-checkpoint.pub"
_KEY_BYTES = 32


class AuditKeyError(Exception):
    """An audit key file is unusable (the message names the file, never the key)."""


class FileMacKey:
    """HMAC-SHA256 under a key held in memory (read from ``audit.key``)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def mac(self, data: bytes) -> bytes:
        # The one-shot form: OpenSSL's HMAC without a Python HMAC object per record.
        return hmac.digest(self._key, data, "sha256")


def load_mac_key(data_dir: Path, *, create: bool = True) -> FileMacKey:
    path = data_dir / MAC_KEY_FILE
    if not path.exists():
        if not create:
            raise AuditKeyError(f"{path}: no audit key (start the server or run an audited command once)")
        make_private_dir(data_dir)
        create_private_once(path, (secrets.token_bytes(_KEY_BYTES).hex() + "\n").encode("ascii"))
    check_key(path)
    try:
        key = bytes.fromhex(path.read_text(encoding="ascii").strip())
    except ValueError as exc:
        raise AuditKeyError(f"{path}: not hexadecimal") from exc
    if len(key) != _KEY_BYTES:
        raise AuditKeyError(f"{path}: expected {_KEY_BYTES} bytes ({2 * _KEY_BYTES} hex digits)")
    return FileMacKey(key)


def load_checkpoint_key(data_dir: Path) -> Ed25519PrivateKey:
    """The checkpoint signing key, created (with its public file) on first use."""
    path = data_dir / CHECKPOINT_KEY_FILE
    if not path.exists():
        make_private_dir(data_dir)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        create_private_once(path, pem)
    check_key(path)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditKeyError(f"{path}: not an Ed25519 private key")
    public = data_dir / CHECKPOINT_PUBLIC_FILE
    if not public.exists():
        pub_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        # FileExistsError: another process wrote the same public key first.
        with contextlib.suppress(FileExistsError):
            write_public(public, pub_pem)
    return key


def load_checkpoint_public_key(path: Path) -> Ed25519PublicKey | rsa.RSAPublicKey:
    """``audit-checkpoint.pub``: Ed25519 (file key) or RSA (token key)."""
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey | rsa.RSAPublicKey):
        raise AuditKeyError(f"{path}: not an Ed25519 or RSA public key")
    return key
