"""``scep-ca admin ...``: the console's accounts (the console itself: ``console_app``)."""

from __future__ import annotations

import argparse
import sys

from audit.service import Draft, os_actor
from config import Config
from scep_ca.cli.audit_cmds import cli_audit_log
from scep_ca.cli.context import CliError, opened_store, print_json, print_table, run_async
from scep_ca.console.accounts import AccountError, Accounts
from scep_ca.console.audit import ConsoleEvent
from store.base import AdminRole, DuplicateAdmin


# The CLI's actions are recorded as done by this actor from this address.
async def _record(config: Config, event: ConsoleEvent, name: str, details: dict[str, object]) -> None:
    """An account change in the audit log, as the operator who ran the command (right after
    it, as the CLI's key operations: the accounts' store writes take no audit seal)."""
    async with opened_store(config) as store:
        await cli_audit_log(config, store).append(Draft(event.value, f"admin/{name}", details, actor=os_actor()))


async def first_admin_hint(config: Config) -> str | None:
    """What ``serve`` prints when the console is on and no enabled admin exists."""
    if not config.console.enabled:
        return None
    async with opened_store(config) as store:
        if await Accounts(store).any_enabled():
            return None
    return (
        f"the console ({config.console.listen}) has no admin yet; create the first one with:\n"
        f"  scep-ca admin create NAME --role admin"
    )


def _role(text: str) -> AdminRole:
    try:
        return AdminRole(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"one of {', '.join(r.value for r in AdminRole)}") from None


def _password(args: argparse.Namespace) -> str | None:
    if not args.password_stdin:
        return None
    return sys.stdin.readline().rstrip("\r\n")


async def _create(config: Config, args: argparse.Namespace) -> int:
    async with opened_store(config) as store:
        try:
            account, password = await Accounts(store).create(args.name, args.role, _password(args))
        except (AccountError, DuplicateAdmin) as exc:
            raise CliError(str(exc)) from exc
    await _record(config, ConsoleEvent.ADMIN_CREATE, account.name, {"role": account.role.value})
    print(f"admin {account.name!r} created ({account.role.value})")
    if not args.password_stdin:
        print(f"password (shown only now): {password}")
    return 0


async def _list(config: Config, args: argparse.Namespace) -> int:
    async with opened_store(config) as store:
        accounts = await store.list_admins()
    rows = [
        {
            "name": a.name,
            "role": a.role.value,
            "created_at": a.created_at.isoformat(),
            "disabled_at": a.disabled_at.isoformat() if a.disabled_at else None,
        }
        for a in accounts
    ]
    if args.json:
        print_json(rows)
    else:
        print_table(
            ["NAME", "ROLE", "CREATED", "STATUS"],
            [
                [r["name"], r["role"], str(r["created_at"])[:16], "disabled" if r["disabled_at"] else "enabled"]
                for r in rows
            ],
        )
    return 0


async def _disable(config: Config, args: argparse.Namespace) -> int:
    async with opened_store(config) as store:
        try:
            await Accounts(store).disable(args.name)
        except AccountError as exc:
            raise CliError(str(exc)) from exc
    await _record(config, ConsoleEvent.ADMIN_DISABLE, args.name, {})
    print(f"admin {args.name!r} disabled; its sessions ended")
    return 0


async def _reset_password(config: Config, args: argparse.Namespace) -> int:
    async with opened_store(config) as store:
        try:
            password = await Accounts(store).reset_password(args.name, _password(args))
        except AccountError as exc:
            raise CliError(str(exc)) from exc
    await _record(config, ConsoleEvent.ADMIN_RESET_PASSWORD, args.name, {})
    print(f"password of {args.name!r} replaced; its sessions ended")
    if not args.password_stdin:
        print(f"password (shown only now): {password}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("admin", help="accounts of the web console")
    asub = p.add_subparsers(dest="admin_cmd", required=True)
    c = asub.add_parser("create", parents=[common], help="create a console account")
    c.add_argument("name")
    c.add_argument("--role", type=_role, required=True, help="admin, operator or auditor")
    c.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    c.set_defaults(func=run_async(_create))
    c = asub.add_parser("list", parents=[common], help="list console accounts")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=run_async(_list))
    c = asub.add_parser("disable", parents=[common], help="disable an account and end its sessions")
    c.add_argument("name")
    c.set_defaults(func=run_async(_disable))
    c = asub.add_parser("reset-password", parents=[common], help="replace an account's password")
    c.add_argument("name")
    c.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    c.set_defaults(func=run_async(_reset_password))
