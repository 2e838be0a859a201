"""Argument parsing and dispatch; each command group lives in its own module."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import metadata

from audit.keys import AuditKeyError
from challenge.secret_key import SecretKeyError
from config import ConfigError
from config.files import FileModeError
from scep_ca.cli import (
    audit_cmds,
    backup_cmds,
    ca_cmds,
    cert_cmds,
    console_cmds,
    db_cmds,
    integration_cmds,
    key_cmds,
    request_cmds,
    status_cmds,
)
from scep_ca.cli.context import CliError, UsageError, terminal_output
from scep_ca.pki.ca import CAError
from scep_ca.pki.keys import KeyUnavailable
from store.base import StoreError, StoreUnavailable

# Exit statuses: 1 an operator error (bad argument, config, CA or store state), 2 a usage
# error (argparse), 3 the store is unavailable (retrying later may work).
EXIT_USAGE = 2
EXIT_STORE_UNAVAILABLE = 3


def installed_version() -> str:
    """The version pyproject.toml gave the installed distribution: one number for ``--version``,
    the container image's label and the Debian package (scripts/build-image.sh, build-deb.sh)."""
    try:
        return metadata.version("scep-ca")
    except metadata.PackageNotFoundError:  # run from a tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    # SUPPRESS keeps a sub-command's default from hiding the same option given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help="YAML config file")
    common.add_argument("--data-dir", default=argparse.SUPPRESS, help="data directory (default ./scep-ca-data)")
    parser = argparse.ArgumentParser(prog="scep-ca", description="A SCEP (RFC 8894) certificate authority.")
    parser.add_argument("--version", action="version", version=f"scep-ca {installed_version()}")
    parser.add_argument("--config", help="YAML config file")
    parser.add_argument("--data-dir", help="data directory (default ./scep-ca-data)")
    sub = parser.add_subparsers(dest="command", required=True)
    ca_cmds.register(sub, common)
    integration_sub = integration_cmds.register(sub, common)
    cert_cmds.register(sub, integration_sub, common)
    request_cmds.register(sub, common)
    db_cmds.register(sub, common)
    key_cmds.register(sub, common)
    audit_cmds.register(sub, common)
    status_cmds.register(sub, common)
    console_cmds.register(sub, common)
    backup_cmds.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with terminal_output():
        try:
            return int(args.func(args))
        except UsageError as exc:
            print(f"scep-ca: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except StoreUnavailable as exc:
            # A fault of the environment (disk full, database down): worth a retry, not a traceback.
            print(f"scep-ca: error: the store is unavailable: {exc}", file=sys.stderr)
            return EXIT_STORE_UNAVAILABLE
        except (
            CliError,
            ConfigError,
            CAError,
            StoreError,
            FileModeError,
            SecretKeyError,
            KeyUnavailable,
            AuditKeyError,
        ) as exc:
            print(f"scep-ca: {exc}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
