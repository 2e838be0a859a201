"""The age encryption of backups (https://age-encryption.org/v1, PyPI ``pyrage``).

A backup holds the CA key and ``secret.key``, so it is encrypted unless the operator asks for
plaintext: to X25519 recipients (``age1...``, Debian's ``age -d -i key.txt`` opens it) or
under a passphrase (age's scrypt recipient). With recipients the archive is streamed through
the encryption, never written in the clear; a passphrase needs the archive in memory (pyrage
encrypts passphrase files from bytes only).
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pyrage

AGE_MAGIC = b"age-encryption.org/v1\n"


class BackupError(Exception):
    """A backup cannot be made, read or restored: one line, never a secret."""


@dataclass(frozen=True)
class Sealing:
    """How a new backup is protected: recipients, a passphrase, or (insecure) nothing."""

    recipients: tuple[str, ...] = ()
    passphrase: str | None = None
    plaintext: bool = False

    def __post_init__(self) -> None:
        chosen = sum((bool(self.recipients), self.passphrase is not None, self.plaintext))
        if chosen != 1:
            raise BackupError("give recipients, a passphrase, or --insecure-plaintext (exactly one)")


@dataclass(frozen=True)
class Opening:
    """What opens a backup: age identities (the lines of an identity file) or a passphrase."""

    identities: tuple[str, ...] = ()
    passphrase: str | None = None


def recipients_from_text(text: str) -> tuple[str, ...]:
    """The recipients of an age recipients file: one a line, ``#`` comments and blank lines skipped."""
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))


def _recipients(texts: tuple[str, ...]) -> list[Any]:
    parsed = []
    for text in texts:
        try:
            if text.startswith("age1"):
                parsed.append(pyrage.x25519.Recipient.from_str(text))
            else:
                parsed.append(pyrage.ssh.Recipient.from_str(text))
        except pyrage.RecipientError as exc:
            raise BackupError(f"not an age recipient: {text[:16]}...") from exc
    return parsed


def _identities(lines: tuple[str, ...]) -> list[Any]:
    keys = [line.strip() for line in lines if line.strip().startswith("AGE-SECRET-KEY-")]
    if not keys:
        raise BackupError("the identity file holds no AGE-SECRET-KEY line")
    try:
        return [pyrage.x25519.Identity.from_str(k) for k in keys]
    except pyrage.IdentityError as exc:
        raise BackupError("the identity file holds a malformed AGE-SECRET-KEY line") from exc


def write_sealed(sealing: Sealing, out: IO[bytes], produce: Callable[[IO[bytes]], None]) -> None:
    """Write what ``produce`` writes to a stream into ``out``, sealed as ``sealing`` says."""
    if sealing.plaintext:
        produce(out)
        return
    if sealing.passphrase is not None:
        buffer = io.BytesIO()
        produce(buffer)
        out.write(pyrage.passphrase.encrypt(buffer.getvalue(), sealing.passphrase))
        return
    recipients = _recipients(sealing.recipients)
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def producer() -> None:
        with os.fdopen(write_fd, "wb") as pipe:
            try:
                produce(pipe)
            except BaseException as exc:  # handed to the caller's thread below
                failure.append(exc)

    thread = threading.Thread(target=producer, name="backup-archive")
    thread.start()
    with os.fdopen(read_fd, "rb") as source:
        try:
            pyrage.encrypt_io(source, out, recipients)
        finally:
            # Drain so the producer never blocks on a full pipe after a failed encryption.
            while source.read(1 << 16):
                pass
            thread.join()
    if failure:
        raise failure[0]


def open_sealed(opening: Opening, sealed: Path, out: IO[bytes]) -> bool:
    """Decrypt ``sealed`` into ``out``; False when it was a plaintext backup (copied as is)."""
    with sealed.open("rb") as src:
        head = src.read(len(AGE_MAGIC))
        src.seek(0)
        if head != AGE_MAGIC:
            # Not age: a plaintext archive, or junk that the archive reader then names.
            while chunk := src.read(1 << 20):
                out.write(chunk)
            return False
        try:
            if opening.passphrase is not None:
                out.write(pyrage.passphrase.decrypt(src.read(), opening.passphrase))
            elif opening.identities:
                pyrage.decrypt_io(src, out, _identities(opening.identities))
            else:
                raise BackupError("the backup is encrypted: give --identity FILE or --passphrase-env VAR")
        except pyrage.DecryptError as exc:
            raise BackupError(f"cannot decrypt: {_age_reason(str(exc), opening.passphrase is not None)}") from exc
        except OSError as exc:
            # decrypt_io reports a failed payload chunk (a changed or cut-off body) as an I/O error.
            raise BackupError(f"cannot decrypt: corrupt or truncated file ({exc})") from exc
    return True


def _age_reason(text: str, passphrase: bool) -> str:
    if "No matching keys" in text:
        return "wrong identity or passphrase"
    if passphrase and text == "Decryption failed":
        # age cannot tell a wrong passphrase from a changed header under scrypt.
        return "wrong identity or passphrase (or a corrupt header)"
    return f"corrupt or truncated file ({text})"
