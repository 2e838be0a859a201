"""What every command needs: the config, the CA, the store, and printing.

Printing: values in the store came from clients (a subject, a transactionID, a User-Agent) and
an operator's terminal acts on control characters. Every text the CLI prints passes through
``scep_ca.protocol.text.escape_text``: field and table values with line breaks escaped too
(``print_fields``, ``print_table``, ``scep_ca.pki.cert_format.format_table``), and whatever else
is written to stdout or stderr through ``terminal_output``, which keeps only the line breaks the
commands write themselves. JSON output stays JSON (``json.dumps`` escapes it already).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TextIO, cast

from config import Config, load_config
from config.files import check_key
from scep_ca.pki.ca import CAIdentity, load_ca
from scep_ca.pki.cert_format import colon_fingerprint as colon_fingerprint
from scep_ca.pki.pkcs11_keys import Token, TokenSettings
from scep_ca.pki.public_url import PUBLIC_URL_FILE, PublicUrlError, with_public_url
from scep_ca.pki.records import Integration
from scep_ca.protocol.text import escape_text
from store.base import IntegrationStore, Store
from store.factory import open_store


class CliError(Exception):
    """An operator error: printed as one line to stderr, exit code 1."""


class NoLiveIntegration(CliError):
    """No live integration with this id (never created, or deleted)."""

    def __init__(self, integration_id: str) -> None:
        super().__init__(f"no live integration {integration_id!r}")


class UsageError(CliError):
    """A bad command-line argument found after parsing: one line to stderr, exit code 2 like argparse's."""


def config_from_args(args: argparse.Namespace) -> Config:
    overrides: dict[str, object] = {}
    for attr, key in (
        ("data_dir", "data_dir"),
        ("host", "server.host"),
        ("port", "server.port"),
        ("workers", "server.workers"),
    ):
        value = getattr(args, attr, None)
        if value is not None:
            overrides[key] = value
    config_path = getattr(args, "config", None)
    config = load_config(Path(config_path) if config_path else None, os.environ, overrides)
    try:
        # Printed URLs and certificates use the public URL that `init` stored, unless configured.
        return with_public_url(config)
    except PublicUrlError as exc:
        raise CliError(f"{config.data_dir / PUBLIC_URL_FILE}: {exc}") from exc


def ca_passphrase(config: Config) -> bytes | None:
    if not config.ca.passphrase_env:
        return None
    value = os.environ.get(config.ca.passphrase_env)
    if not value:
        raise CliError(f"ca.passphrase_env names {config.ca.passphrase_env}, which is not set")
    return value.encode()


def key_token(config: Config) -> Token | None:
    """The PKCS#11 token of ``keys.pkcs11`` with its PIN resolved, or None for file keys. Opens nothing."""
    p11 = config.keys.pkcs11
    if p11.module is None or p11.token_label is None:
        return None
    if p11.pin_env is not None:
        pin = os.environ.get(p11.pin_env)
        if not pin:
            raise CliError(f"keys.pkcs11.pin_env names {p11.pin_env}, which is not set")
    else:
        assert p11.pin_file is not None  # config.validate: one of the two
        try:
            # The PIN unlocks every key in the token: held to the same modes as a key file.
            check_key(p11.pin_file)
            pin = p11.pin_file.read_text().strip()
        except OSError as exc:
            raise CliError(f"cannot read keys.pkcs11.pin_file {p11.pin_file}: {exc.strerror}") from None
    return Token(TokenSettings(str(p11.module), p11.token_label, pin, p11.reinit_interval_seconds, p11.ra_keys))


def load_identity(config: Config) -> CAIdentity:
    return load_ca(config.data_dir, ca_passphrase(config), key_token(config))


async def live_integration(store: IntegrationStore, integration_id: str) -> Integration:
    """The live integration ``integration_id``, or NoLiveIntegration."""
    integration = await store.get_integration(integration_id)
    if integration is None:
        raise NoLiveIntegration(integration_id)
    return integration


@asynccontextmanager
async def opened_store(config: Config) -> AsyncIterator[Store]:
    store = open_store(config)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def print_json(value: object) -> None:
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(h) for h in headers]] + [["" if c is None else escape_text(str(c)) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def print_fields(fields: Mapping[str, object], width: int) -> None:
    """``key:   value`` lines, one per field; a value's own line breaks are escaped."""
    for key, value in fields.items():
        print(f"{key + ':':{width}}{'' if value is None else escape_text(str(value))}")


class _TerminalText:
    """A text stream that writes every non-printable character but the line break as an escape."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(escape_text(text, keep="\n"))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        # flush, isatty, fileno, encoding and ``buffer`` (binary output such as a DER CRL).
        return getattr(self._stream, name)


@contextmanager
def terminal_output() -> Iterator[None]:
    """While a command runs, stdout and stderr escape whatever a printer did not."""
    saved = sys.stdout, sys.stderr
    # cast: it implements what print, json.dump and ``.buffer`` use, and delegates the rest.
    sys.stdout = cast(TextIO, _TerminalText(sys.stdout))
    sys.stderr = cast(TextIO, _TerminalText(sys.stderr))
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def run_async(
    handler: Callable[[Config, argparse.Namespace], Coroutine[Any, Any, int]],
) -> Callable[[argparse.Namespace], int]:
    """Adapt an async command ``handler(config, args)`` to argparse's ``func(args)``."""

    def run(args: argparse.Namespace) -> int:
        return int(asyncio.run(handler(config_from_args(args), args)))

    return run
