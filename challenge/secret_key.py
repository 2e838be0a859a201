"""The server's secret key: encrypts the NT hashes of integration passwords at rest.

The key is 32 random bytes kept in ``secret.key`` in the data directory, as 64
hexadecimal characters and a newline (so it can be inspected, backed up or moved
into configuration as text). It is created on first use with mode 0600, and refused
when group or others have any access to it.

Creation is atomic and race-free even when several worker processes start at
once: the key is written and fsynced under a unique temporary name, then
hard-linked to ``secret.key``. ``link`` fails if the name exists, so exactly one
key wins, and no reader ever sees a partly written file.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from config.files import check_key, create_private_once, make_private_dir

SECRET_KEY_FILE = "secret.key"
KEY_BYTES = 32

log = logging.getLogger(__name__)


class SecretKeyError(Exception):
    """The secret key file is unusable (message names the file, never the key)."""


def parse_secret_key(text: str, source: str) -> bytes:
    """Decode the textual (hex) form of a key; ``source`` names it in errors."""
    try:
        key = bytes.fromhex(text.strip())
    except ValueError as exc:
        raise SecretKeyError(f"{source}: not hexadecimal") from exc
    if len(key) != KEY_BYTES:
        raise SecretKeyError(f"{source}: expected {KEY_BYTES} bytes ({2 * KEY_BYTES} hex digits)")
    return key


def _read(path: Path) -> bytes:
    # Refused, not warned about: it decrypts every integration's NT hash (config.files).
    check_key(path)
    return parse_secret_key(path.read_text(encoding="ascii"), str(path))


def load_or_create_secret_key(data_dir: Path) -> bytes:
    """The 32-byte key from ``data_dir/secret.key``, creating the file if it does not exist."""
    path = data_dir / SECRET_KEY_FILE
    make_private_dir(data_dir)
    if not path.exists():
        create_private_once(path, (secrets.token_bytes(KEY_BYTES).hex() + "\n").encode("ascii"))
        log.info("created secret key file %s", path)
    return _read(path)
