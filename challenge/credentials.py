"""Integration credentials for the challenge URL: generation, hashing, NT-hash encryption.

Username scheme: ``scep-<integration id>`` (see ``username_for``). The prefix makes
the value recognisable in an MDM's form and logs, and the id keeps it unique.
The integration id also appears in the challenge URL; the service looks the
integration up by that id and then requires the presented user name to be this
integration's, so one integration's credentials never open another's.

The password is 160 random bits as 32 base32 characters (``A-Z``, ``2-7``): no
symbols or lower case for MDM forms, shell quoting or ``user:password`` URLs to
mangle. It is shown once and stored in two forms, replaced together on rotation:

* ``password_scrypt``: scrypt hash, for HTTP Basic.
* ``nt_hash_encrypted``: the NT hash (MD4 of the UTF-16LE password), AES-256-GCM
  encrypted with the server's secret key (``secret.key``). NTLM needs the NT hash
  itself, and the NT hash is password-equivalent for NTLM: whoever holds it can
  authenticate. Encrypting it means a copy of the database alone (a backup, a
  PostgreSQL replica) does not reveal it; the key file and the database together
  do. That is the trade-off of supporting NTLM at all, as with any NTLM server.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from challenge.md4 import md4

USERNAME_PREFIX = "scep-"
PASSWORD_BYTES = 20  # 160 bits, 32 base32 characters without padding

# scrypt cost: N=2^15, r=8, p=1 needs 32 MiB and tens of milliseconds, OWASP's minimum
# class. Basic logins are rare (one per challenge fetch) and run off the event loop.
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_SALT_BYTES = 16
SCRYPT_DKLEN = 32
# Upper bounds for parameters read back from the store, so a corrupt row cannot make
# one login allocate gigabytes.
_SCRYPT_MAX_N = 2**20
_SCRYPT_MAX_R = 32
_SCRYPT_MAX_P = 16

NT_HASH_BYTES = 16
_GCM_NONCE_BYTES = 12
_GCM_TAG_BYTES = 16
# Associated data: domain separation, so a blob encrypted with this key for another
# purpose can never be mistaken for an NT hash.
_NT_AAD = b"scep-ca/nt-hash/v1"


class CredentialError(Exception):
    """Stored credential material cannot be used (wrong key, corrupt value)."""


class Credentials(NamedTuple):
    """Fresh credentials; ``password`` is to be shown once and then forgotten."""

    username: str
    password: str
    password_scrypt: str
    nt_hash_encrypted: bytes


def username_for(integration_id: str) -> str:
    """The user name of an integration's challenge-URL credentials."""
    return USERNAME_PREFIX + integration_id


def generate_password() -> str:
    """A new integration password: 160 random bits as 32 upper-case base32 characters."""
    return base64.b32encode(secrets.token_bytes(PASSWORD_BYTES)).decode("ascii").rstrip("=")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# Checked against when the presented user name has no scrypt hash (not a live integration's,
# or one without credentials), so that its answer costs what a wrong password's costs: the
# same parameters as scrypt_hash. No password derives an all-zero key (odds 2**-256), and the
# caller refuses the login whatever the comparison says.
UNUSABLE_SCRYPT_HASH = (
    f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(bytes(SCRYPT_SALT_BYTES))}${_b64(bytes(SCRYPT_DKLEN))}"
)


def scrypt_hash(password: str) -> str:
    """``scrypt$N$r$p$salt_b64$hash_b64`` of the UTF-8 password, with a fresh salt."""
    salt = secrets.token_bytes(SCRYPT_SALT_BYTES)
    derived = _scrypt(password.encode("utf-8"), salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_DKLEN)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(derived)}"


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    # hashlib's default maxmem (32 MiB) is just below what N=2^15, r=8 needs.
    maxmem = 128 * r * (n + p + 2) + 1024 * 1024
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=maxmem)


def scrypt_verify(password: str, stored: str) -> bool:
    """Whether ``password`` matches a ``scrypt_hash`` string; False for malformed strings."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return False
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt = base64.b64decode(parts[4], validate=True)
        expected = base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error):
        return False
    if not (1 < n <= _SCRYPT_MAX_N and n & (n - 1) == 0 and 0 < r <= _SCRYPT_MAX_R and 0 < p <= _SCRYPT_MAX_P):
        return False
    if not expected or len(expected) > 64:
        return False
    derived = _scrypt(password.encode("utf-8"), salt, n, r, p, len(expected))
    return hmac.compare_digest(derived, expected)


def nt_hash(password: str) -> bytes:
    """The NT hash: MD4 of the UTF-16LE password (MS-NLMP NTOWFv1)."""
    return md4(password.encode("utf-16-le"))


def encrypt_nt_hash(key: bytes, nt: bytes) -> bytes:
    """AES-256-GCM encryption of an NT hash: ``nonce (12) || ciphertext || tag (16)``."""
    if len(nt) != NT_HASH_BYTES:
        raise ValueError("an NT hash is 16 bytes")
    nonce = secrets.token_bytes(_GCM_NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, nt, _NT_AAD)


def decrypt_nt_hash(key: bytes, blob: bytes) -> bytes:
    """Reverse ``encrypt_nt_hash``; CredentialError when the key is wrong or the blob corrupt."""
    if len(blob) != _GCM_NONCE_BYTES + NT_HASH_BYTES + _GCM_TAG_BYTES:
        raise CredentialError("encrypted NT hash has the wrong length")
    try:
        return AESGCM(key).decrypt(blob[:_GCM_NONCE_BYTES], blob[_GCM_NONCE_BYTES:], _NT_AAD)
    except InvalidTag as exc:
        raise CredentialError("encrypted NT hash does not decrypt with this secret key") from exc


def make_credentials(secret_key: bytes, integration_id: str) -> Credentials:
    """New credentials for an integration (creation and ``rotate-password``).

    The result unpacks as ``username, password, password_scrypt, nt_hash_encrypted``;
    pass the last three to ``Store.update_credentials`` (or the new Integration).
    """
    password = generate_password()
    return Credentials(
        username=username_for(integration_id),
        password=password,
        password_scrypt=scrypt_hash(password),
        nt_hash_encrypted=encrypt_nt_hash(secret_key, nt_hash(password)),
    )


def bare_username(presented: str) -> str:
    """The user name alone from ``user``, ``DOMAIN\\user`` or ``user@domain``.

    The domain is dropped on purpose: clients send whatever domain they like (Go's
    go-ntlmssp sends the server's own name when the user typed none).
    """
    name = presented.rsplit("\\", 1)[-1]
    return name.split("@", 1)[0]


def username_matches(presented: str, expected: str) -> bool:
    """Whether a presented user name (any of the three forms) names ``expected``.

    Case-insensitive in ASCII only: Unicode case folding would let look-alikes such as
    the Kelvin sign or the long s match an ASCII name.
    """
    name = bare_username(presented)
    if not name.isascii() or not expected.isascii():
        return False
    return hmac.compare_digest(name.lower().encode("ascii"), expected.lower().encode("ascii"))
