"""``scep-ca backup``, ``scep-ca backup verify`` and ``scep-ca restore`` (``scep_ca.services.backup``)."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from audit.events import Event
from audit.service import Draft, os_actor
from config.clock import utc_now
from config.model import Config
from scep_ca.cli.audit_cmds import cli_audit_log
from scep_ca.cli.context import CliError, key_token, opened_store, run_async
from scep_ca.services.backup import service
from scep_ca.services.backup.crypt import BackupError, Opening, Sealing, recipients_from_text


def _env_secret(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise CliError(f"--passphrase-env names {name}, which is not set")
    return value


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read the {what} {path}: {getattr(exc, 'strerror', None) or exc}") from None


def _sealing(args: argparse.Namespace) -> Sealing:
    recipients = tuple(args.recipient or ())
    if args.recipients_file is not None:
        recipients += tuple(recipients_from_text(_read(args.recipients_file, "recipients file")))
    passphrase = None if args.passphrase_env is None else _env_secret(args.passphrase_env)
    try:
        return Sealing(recipients, passphrase, args.insecure_plaintext)
    except BackupError as exc:
        raise CliError(str(exc)) from None


def _opening(args: argparse.Namespace) -> Opening:
    identities = () if args.identity is None else tuple(_read(args.identity, "identity file").splitlines())
    passphrase = None if args.passphrase_env is None else _env_secret(args.passphrase_env)
    return Opening(identities, passphrase)


async def _backup(config: Config, args: argparse.Namespace) -> int:
    sealing = _sealing(args)
    if (args.out is None) == (args.dir is None):
        raise CliError("give --out FILE or --dir DIR (exactly one)")
    if args.keep is not None and (args.dir is None or args.keep < 1):
        raise CliError("--keep N needs --dir and N >= 1")
    made = utc_now()
    out = args.out if args.dir is None else service.next_backup_path(args.dir, made, not sealing.plaintext)
    config_file = Path(args.config) if args.include_config and getattr(args, "config", None) else None
    if args.include_config and config_file is None:
        raise CliError("--include-config needs --config FILE")
    try:
        result = await service.create_backup(config, out, sealing, utc_now, config_file=config_file)
    except BackupError as exc:
        raise CliError(str(exc)) from None
    async with opened_store(config) as store:
        await cli_audit_log(config, store).append(
            Draft(
                Event.BACKUP_CREATED,
                f"backup/{result.manifest['id']}",
                {"file": str(out), "encrypted": not sealing.plaintext, "database": result.manifest["database"]},
                actor=os_actor(),
            )
        )
    db = result.manifest["database"]
    print(
        f"backup {result.manifest['id']} written to {out}: {db['certificates']} certificates "
        f"({db['revoked']} revoked), {db['integrations']} integrations, {len(result.manifest['members'])} files"
    )
    if sealing.plaintext:
        print("WARNING: this backup is NOT encrypted (--insecure-plaintext): it holds the CA key in the clear")
    if args.keep is not None:
        for removed in service.rotate(args.dir, args.keep):
            print(f"removed old backup {removed}")
    return 0


async def _verify(config: Config, args: argparse.Namespace) -> int:
    try:
        result = await service.verify_backup(args.file, _opening(args), utc_now)
    except BackupError as exc:
        raise CliError(f"{args.file}: {exc}") from None
    m = result.manifest
    chains = "audit chains not checked (the audit key is in the token: run `audit verify` after a restore)"
    if result.audit_records is not None:
        chains = f"{result.audit_records} audit records verify"
    plain = "" if result.encrypted else " (NOT encrypted)"
    print(f"OK: backup {m['id']} made at {m['created_at']}{plain}: {len(m['members'])} members match; {chains}")
    return 0


async def _restore(config: Config, args: argparse.Namespace) -> int:
    if args.database_url is not None:
        config = dataclasses.replace(config, store=dataclasses.replace(config.store, dsn=args.database_url))
    try:
        result = await service.restore(args.file, _opening(args), config, utc_now, token=key_token(config))
    except BackupError as exc:
        raise CliError(f"{args.file}: {exc}") from None
    print(f"restored {len(result.files)} files into {config.data_dir}")
    for note in service.after_restore_notes(result):
        print(note)
    for ref in result.unchecked_keys:
        print(f"key reference {ref}: not checked (no keys.pkcs11 token configured); serve needs that key in the token")
    if result.missing_keys:
        for ref in result.missing_keys:
            print(f"MISSING in the token: {ref}")
        return 1
    return 0


def _opening_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--identity", type=Path, help="an age identity file (AGE-SECRET-KEY-...)")
    p.add_argument("--passphrase-env", metavar="VAR", help="the environment variable holding the passphrase")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("backup", parents=[common], help="an encrypted, consistent backup while the server runs")
    p.add_argument("--out", type=Path, help="the new backup file")
    p.add_argument("--dir", type=Path, help="write scep-ca-backup-<UTC time>.tar.age into this directory")
    p.add_argument("--keep", type=int, help="with --dir: keep the newest N backups, delete older ones")
    p.add_argument("--recipient", action="append", help="an age recipient (age1...); repeatable")
    p.add_argument("--recipients-file", type=Path, help="a file of age recipients, one a line")
    p.add_argument("--passphrase-env", metavar="VAR", help="encrypt under the passphrase in this variable")
    p.add_argument("--insecure-plaintext", action="store_true", help="do not encrypt (the CA key in the clear)")
    p.add_argument("--include-config", action="store_true", help="also the --config file")
    p.set_defaults(func=run_async(_backup))
    bsub = p.add_subparsers(dest="backup_cmd")
    v = bsub.add_parser("verify", parents=[common], help="decrypt, check every hash and the audit chains")
    v.add_argument("file", type=Path)
    _opening_options(v)
    v.set_defaults(func=run_async(_verify))
    r = sub.add_parser("restore", parents=[common], help="restore a backup onto a new data directory / database")
    r.add_argument("file", type=Path)
    r.add_argument("--database-url", help="an empty PostgreSQL database (a PostgreSQL backup)")
    _opening_options(r)
    r.set_defaults(func=run_async(_restore))
