"""Files in the data directory: created with explicit modes, checked before they are trusted.

The data directory holds the CA and RA keys, ``secret.key`` and the SQLite database; a
local user who can write to it can swap in their own RA (and so decrypt requests and sign
CertReps) or their own CA. So (threat model: local users on the host get nothing):

- directories this code creates are 0700, keys and the database 0600, certificates 0644,
  set with ``chmod``/``fchmod`` after creation, so the caller's umask does not matter
  (``umask 000`` would otherwise give 0777 and 0666; ``umask 277`` an unwritable file);
- before keys are loaded, a data directory writable by group or others, a key file with
  any group or other permission, or a certificate writable by group or others is refused
  with one line that names the path and the ``chmod`` that fixes it. A directory of mode
  0755 and certificates of mode 0644 (what earlier versions made) are accepted: others may
  read them, and certificates are public. A key must be 0600 or stricter: 0640 (a key
  shared with a service group) is refused too, since the RA key decrypts every request.

Here, in the lowest layer, because the store, the challenge secret and the CA all write
into the data directory.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

DIR_MODE = 0o700
PRIVATE_MODE = 0o600  # keys, secret.key, the SQLite database
PUBLIC_MODE = 0o644  # certificates


class FileModeError(Exception):
    """A file or directory is open to other local users; the message names it and the fix."""


def make_private_dir(path: Path) -> None:
    """Create ``path`` and any missing parents with mode 0700; an existing one is checked, not changed."""
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            continue  # another process made it first: checked below like any existing one
        # mkdir's mode passes through the umask; the mode is set, not left to it.
        os.chmod(directory, DIR_MODE)
    check_dir(path)


def check_dir(path: Path) -> None:
    """Refuse a directory that group or others may write to (they could replace its files)."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise FileModeError(f"directory {path} is writable by group or others (mode {mode:04o}); fix: chmod 700 {path}")


def check_key(path: Path) -> None:
    """Refuse a private key (or other secret) with any permission for group or others."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise FileModeError(
            f"key file {path} is accessible by group or others (mode {mode:04o}); fix: chmod 600 {path}"
        )


def check_not_writable(path: Path, fix_mode: int = PUBLIC_MODE) -> None:
    """Refuse a file (a certificate, the database) that group or others may write to."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise FileModeError(
            f"file {path} is writable by group or others (mode {mode:04o}); fix: chmod {fix_mode:o} {path}"
        )


def write_new(path: Path, data: bytes, mode: int) -> None:
    """Write a file that must not exist yet with exactly ``mode``, flushed to disk.

    O_EXCL: never follows a planted symlink nor overwrites. ``fchmod`` before the first
    byte: the umask cannot widen or narrow the mode, and no reader sees the data under
    another mode. A failed write removes the partial file.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)


def write_private(path: Path, data: bytes) -> None:
    write_new(path, data, PRIVATE_MODE)


def write_public(path: Path, data: bytes) -> None:
    write_new(path, data, PUBLIC_MODE)


def replace_public(path: Path, data: bytes) -> None:
    """Write ``path`` (new or existing) with mode 0644 whatever the umask, atomically.

    For files made for others to read (an exported CRL a web server publishes): the data go
    to a new file beside it (``write_public``: explicit mode, O_EXCL), which then replaces
    ``path`` in one rename, so a reader never sees a partial file.
    """
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.unlink(missing_ok=True)
    write_public(temp, data)
    try:
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def create_private_once(path: Path, data: bytes) -> None:
    """Create the secret ``path`` holding ``data`` unless it exists; race-free across processes.

    Written and fsynced under a unique temporary name, then hard-linked to ``path``: ``link``
    fails if the name exists, so of several processes starting at once exactly one file wins,
    and no reader ever sees a partly written one.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        write_private(tmp, data)
        # FileExistsError: another process created it first, and its content is used.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
