"""``scep-ca audit``: list, export, verify and checkpoint the audit log (the audit package).

No command here deletes or changes an event: the log only grows.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from audit.checkpoint import CheckpointError
from audit.events import Event
from audit.factory import audit_log, mac_key
from audit.keys import load_checkpoint_public_key
from audit.service import AuditLog, AuditQuery, Draft, os_actor
from config.files import write_public
from config.model import Config
from scep_ca.cli.context import CliError, key_token, opened_store, print_json, print_table, run_async
from store.base import AuditRecord, Store, StoreUnavailable


def cli_audit_log(config: Config, store: Store, *, create_keys: bool = True) -> AuditLog:
    """The audit log of a CLI command: its keys in the token when ``keys.pkcs11`` is set."""
    return audit_log(config, store, create_keys=create_keys, token=key_token(config))


def record(config: Config, event: Event, target: str, details: dict[str, object]) -> None:
    """Record an operator's key or CA operation, done on files (no database transaction to
    share): right after it succeeded. If the store is down the command then exits 3 saying the
    operation was done but is not in the audit log."""

    async def append() -> None:
        async with opened_store(config) as store:
            await cli_audit_log(config, store).append(Draft(event, target, details, actor=os_actor()))

    try:
        _run_blocking(append)
    except StoreUnavailable as exc:
        raise StoreUnavailable(f"done, but not recorded in the audit log: {exc}") from exc


def _run_blocking(coroutine: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run to completion from synchronous code, also when the caller already runs an event
    loop (a program embedding these commands): then on a thread of its own, since a loop
    cannot be re-entered."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coroutine())
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, coroutine()).result()


def _when(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _as_dict(record: AuditRecord) -> dict[str, Any]:
    return {
        "writer": record.writer,
        "seq": record.seq,
        "time": record.at.isoformat(),
        "actor": record.actor,
        "event": record.event,
        "object": record.target,
        "details": record.details,
        "prev_mac": record.prev_mac,
        "mac": record.mac,
    }


def _query(args: argparse.Namespace) -> AuditQuery:
    return AuditQuery(
        since=args.since,
        until=args.until,
        event=args.event,
        actor=args.actor,
        integration=args.integration,
        serial=args.serial,
        limit=args.limit,
    )


async def _list(config: Config, args: argparse.Namespace) -> int:
    async with opened_store(config) as store:
        records = await cli_audit_log(config, store).list(_query(args))
    if args.json:
        print_json([_as_dict(r) for r in records])
        return 0
    print_table(
        ["TIME", "EVENT", "ACTOR", "OBJECT", "CHAIN/SEQ"],
        [[r.at.isoformat(timespec="seconds"), r.event, r.actor, r.target, f"{r.writer}#{r.seq}"] for r in records],
    )
    return 0


async def _export(config: Config, args: argparse.Namespace) -> int:
    async with opened_store(config) as store:
        records = await cli_audit_log(config, store).list(_query(args))
    out = sys.stdout if args.out is None else args.out.open("x", encoding="utf-8")
    try:
        for record in records:
            out.write(json.dumps(_as_dict(record), sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


async def _verify(config: Config, args: argparse.Namespace) -> int:
    checkpoint = None if args.checkpoint is None else args.checkpoint.read_text(encoding="utf-8")
    public = None if args.public_key is None else load_checkpoint_public_key(args.public_key)
    async with opened_store(config) as store:
        log = cli_audit_log(config, store, create_keys=False)
        try:
            report = await log.verify(checkpoint, public)
        except CheckpointError as exc:
            raise CliError(f"{args.checkpoint}: {exc}") from exc
        await log.append(
            Draft(
                Event.VERIFIED,
                "audit",
                {
                    "ok": report.ok,
                    "records": report.records,
                    "chains": len(report.chains),
                    "checkpoint": checkpoint is not None,
                },
                actor=os_actor(),
            )
        )
    if args.json:
        print_json(
            {
                "ok": report.ok,
                "chains": dict(report.chains),
                "problems": [
                    {"writer": p.writer, "seq": p.seq, "kind": p.kind, "text": p.text} for p in report.problems
                ],
            }
        )
    elif report.ok:
        for writer, count in sorted(report.chains.items()):
            print(f"{writer}: {count} records")
        print(f"OK: {report.records} records in {len(report.chains)} chains verify")
    else:
        print(f"FAILED: {report.problems[0]}", file=sys.stderr)
        for problem in report.problems[1:]:
            print(f"  also: {problem}", file=sys.stderr)
    return 0 if report.ok else 1


async def _checkpoint(config: Config, args: argparse.Namespace) -> int:
    async with opened_store(config) as store:
        log = cli_audit_log(config, store)
        checkpoint = await log.checkpoint()
        text = json.dumps(checkpoint, sort_keys=True, separators=(",", ":")) + "\n"
        if args.out is not None:
            try:
                write_public(args.out, text.encode("utf-8"))
            except FileExistsError as exc:
                raise CliError(f"{args.out} exists; checkpoints are never overwritten") from exc
        await log.append(
            Draft(
                Event.CHECKPOINT, "audit", {"chains": len(checkpoint["heads"]), "file": str(args.out)}, actor=os_actor()
            )
        )
    if args.out is None:
        sys.stdout.write(text)
    else:
        print(f"checkpoint of {len(checkpoint['heads'])} chains written to {args.out}")
    return 0


async def _replay(config: Config, args: argparse.Namespace) -> int:
    # Lazy: the backup service is only needed here.
    from scep_ca.services.backup import replay
    from scep_ca.services.backup.crypt import BackupError

    try:
        lines = args.file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {args.file}: {getattr(exc, 'strerror', None) or exc}") from None
    async with opened_store(config) as store:
        token = key_token(config)
        try:
            records = replay.parse_export(lines)
            heads = {w: (s, m) for w, s, m in await store.audit_heads()}
            fresh = replay.check_events(mac_key(config, create_keys=False, token=token), records, heads)
            result = await replay.replay(store, fresh, replay.ca_certificates(config.data_dir))
        except BackupError as exc:
            raise CliError(f"{args.file}: {exc}") from None
        await cli_audit_log(config, store, create_keys=False).append(
            Draft(
                Event.AUDIT_REPLAYED,
                "audit",
                {"file": str(args.file), **dataclasses.asdict(result)},
                actor=os_actor(),
            )
        )
    print(
        f"replayed {result.events} events ({len(records) - len(fresh)} already"
        f" in the log): {result.certificates} certificates, {result.revocations} revocations restored"
    )
    if result.not_restorable:
        print(f"{result.not_restorable} certificates belong to integrations this store does not have: not restored")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("audit", help="the tamper-evident audit log")
    asub = p.add_subparsers(dest="audit_cmd", required=True)
    filters = argparse.ArgumentParser(add_help=False)
    filters.add_argument("--since", type=_when, help="ISO 8601 time (UTC when no offset)")
    filters.add_argument("--until", type=_when)
    filters.add_argument("--event", choices=[e.value for e in Event])
    filters.add_argument("--actor", help="e.g. os:alice, scep:192.0.2.7, system")
    filters.add_argument("--integration")
    filters.add_argument("--serial", help="hexadecimal serial")
    filters.add_argument("--limit", type=int)
    c = asub.add_parser("list", parents=[common, filters], help="list events, oldest first")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=run_async(_list))
    c = asub.add_parser("export", parents=[common, filters], help="every event with its MAC, one JSON object a line")
    c.add_argument("--format", choices=["jsonl"], default="jsonl")
    c.add_argument("--out", type=Path, help="a new file (default: standard output)")
    c.set_defaults(func=run_async(_export))
    c = asub.add_parser("verify", parents=[common], help="check every chain (exit 1 naming the first bad record)")
    c.add_argument("--checkpoint", type=Path, help="a checkpoint file: each chain must reach its heads")
    c.add_argument(
        "--public-key", type=Path, help="the checkpoint public key (default: the data directory's audit-checkpoint.pub)"
    )
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=run_async(_verify))
    c = asub.add_parser(
        "replay", parents=[common], help="after a restore: put back certificates and revocations from exported events"
    )
    c.add_argument("file", type=Path, help="`audit export` lines of the old host")
    c.set_defaults(func=run_async(_replay))
    c = asub.add_parser("checkpoint", parents=[common], help="sign the head of every chain now")
    c.add_argument("--out", type=Path, help="a new file (default: standard output)")
    c.set_defaults(func=run_async(_checkpoint))
