"""The server's secret key: encrypts the NT hashes of integration passwords at rest.

The key is 32 random bytes kept in ``secret.key`` in the data directory, as 64
hexadecimal characters and a newline (so it can be inspected, backed up or moved
into configuration as text). It is created on first use with mode 0600.

Creation is atomic and race-free even when several worker processes start at
once: the key is written and fsynced under a unique temporary name, then
hard-linked to ``secret.key``. ``link`` fails if the name exists, so exactly one
key wins, and no reader ever sees a partly written file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
from pathlib import Path

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
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        # Warn rather than refuse: some deployments share files with a service group on purpose.
        log.warning("secret key file %s is accessible by group or others (mode %o)", path, mode & 0o777)
    return parse_secret_key(path.read_text(encoding="ascii"), str(path))


def _create(path: Path) -> None:
    key_text = secrets.token_bytes(KEY_BYTES).hex() + "\n"
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(key_text)
            fh.flush()
            os.fsync(fh.fileno())
        # FileExistsError: another process created it first, and its key is used.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_or_create_secret_key(data_dir: Path) -> bytes:
    """The 32-byte key from ``data_dir/secret.key``, creating the file if it does not exist."""
    path = data_dir / SECRET_KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        _create(path)
        log.info("created secret key file %s", path)
    return _read(path)
