"""One-time challenge passwords: generation and the hash under which they are stored.

NDES hands out uppercase hex passwords of ``PasswordLength`` random bytes; we do the
same with entropy from ``secrets``. Only a SHA-256 hash is stored: with 64 or more
random bits a fast hash is enough, and the store never holds the password itself.
"""

from __future__ import annotations

import hashlib
import secrets


def generate_challenge(length_bytes: int) -> str:
    """A fresh challenge: ``length_bytes`` random bytes as uppercase hex."""
    return secrets.token_hex(length_bytes).upper()


def hash_challenge(password: str) -> str:
    """The stored form of a challenge password (hex SHA-256 of its UTF-8 bytes).

    Devices echo the password exactly as they were given it, so it is hashed as is:
    no case folding (an NDES challenge is case-sensitive too).
    """
    return hashlib.sha256(password.encode("utf-8")).hexdigest()
