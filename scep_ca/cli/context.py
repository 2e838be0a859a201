"""What every command needs: the config, the CA, the store, and printing."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from config import Config, load_config
from scep_ca.pki.ca import CAIdentity, load_ca
from scep_ca.pki.cert_format import colon_fingerprint as colon_fingerprint
from scep_ca.pki.pkcs11_keys import Token, TokenSettings
from scep_ca.pki.public_url import PUBLIC_URL_FILE, PublicUrlError, with_public_url
from store.base import Store
from store.factory import open_store


class CliError(Exception):
    """An operator error: printed as one line to stderr, exit code 1."""


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
            pin = p11.pin_file.read_text().strip()
        except OSError as exc:
            raise CliError(f"cannot read keys.pkcs11.pin_file {p11.pin_file}: {exc.strerror}") from None
    return Token(TokenSettings(str(p11.module), p11.token_label, pin))


def load_identity(config: Config) -> CAIdentity:
    return load_ca(config.data_dir, ca_passphrase(config), key_token(config))


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
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def run_async(
    handler: Callable[[Config, argparse.Namespace], Coroutine[Any, Any, int]],
) -> Callable[[argparse.Namespace], int]:
    """Adapt an async command ``handler(config, args)`` to argparse's ``func(args)``."""

    def run(args: argparse.Namespace) -> int:
        return int(asyncio.run(handler(config_from_args(args), args)))

    return run
