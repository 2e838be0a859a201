"""``scep-ca request list|approve|reject``: the manual-approval queue (RFC 8894 PENDING)."""

from __future__ import annotations

import argparse

from audit.service import os_actor
from config import Config
from scep_ca.cli.audit_cmds import cli_audit_log
from scep_ca.cli.context import CliError, load_identity, opened_store, print_json, print_table, run_async
from scep_ca.pki.records import TransactionStatus
from scep_ca.protocol.errors import ScepFailure
from scep_ca.services.wiring import enroller_for


def _request_id(integration_id: str, transaction_id: str) -> str:
    return f"{integration_id}:{transaction_id}"


def _split(request_id: str) -> tuple[str, str]:
    integration_id, sep, transaction_id = request_id.partition(":")
    if not sep or not integration_id or not transaction_id:
        raise CliError(f"request ids look like INTEGRATION:TRANSACTION, got {request_id!r}")
    return integration_id, transaction_id


async def _list(config: Config, args: argparse.Namespace) -> int:
    async with opened_store(config) as store:
        status = None if args.all else TransactionStatus.PENDING
        txns = await store.list_transactions(status, args.integration)
    rows = [
        {
            "id": _request_id(t.integration_id, t.transaction_id),
            "integration": t.integration_id,
            "transaction_id": t.transaction_id,
            "status": t.status.value,
            "created_at": t.created_at.isoformat(),
        }
        for t in txns
        if args.all or t.status is TransactionStatus.PENDING
    ]
    if args.json:
        print_json(rows)
    else:
        print_table(["ID", "STATUS", "CREATED"], [[r["id"], r["status"], r["created_at"][:19]] for r in rows])
    return 0


async def _resolve(config: Config, args: argparse.Namespace, approve: bool) -> int:
    integration_id, transaction_id = _split(args.id)
    ca = load_identity(config)
    async with opened_store(config) as store:
        # Offline: only the store-backed ndes validator is usable (no secret key, no HTTP calls).
        # Imported here: the registry brings the validators' HTTP client (aiohttp) along.
        from scep_ca.services.validators.registry import Validators

        validators = Validators(config.intune, config.webhook, None, ca.cert.subject.rfc4514_string())
        enroller = enroller_for(config, store, ca, validators, audit=cli_audit_log(config, store))
        try:
            if approve:
                record = await enroller.approve(integration_id, transaction_id, actor=os_actor())
            else:
                await enroller.reject(integration_id, transaction_id, actor=os_actor())
        except ScepFailure as exc:
            raise CliError(exc.text) from exc
    if approve:
        print(f"approved {args.id}: issued {record.serial} ({record.subject}); the client gets it on its next poll")
    else:
        print(f"rejected {args.id}; the client's next poll gets FAILURE")
    return 0


async def _approve(config: Config, args: argparse.Namespace) -> int:
    return await _resolve(config, args, approve=True)


async def _reject(config: Config, args: argparse.Namespace) -> int:
    return await _resolve(config, args, approve=False)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("request", help="requests waiting for approval")
    rsub = p.add_subparsers(dest="request_cmd", required=True)
    c = rsub.add_parser("list", parents=[common], help="list pending requests")
    c.add_argument("--integration")
    c.add_argument("--all", action="store_true", help="also issued and rejected ones")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=run_async(_list))
    c = rsub.add_parser("approve", parents=[common], help="issue a pending request")
    c.add_argument("id", help="INTEGRATION:TRANSACTION as `request list` prints it")
    c.set_defaults(func=run_async(_approve))
    c = rsub.add_parser("reject", parents=[common], help="reject a pending request")
    c.add_argument("id", help="INTEGRATION:TRANSACTION as `request list` prints it")
    c.set_defaults(func=run_async(_reject))
