"""``scep-ca admin ...`` (console accounts) and the console's wiring for ``scep-ca serve``.

Where the console runs: in the single server process, or in worker 0 under ``--workers N``.
Not in the supervisor: it never opens the store or the keys (a PKCS#11 token must be opened
after the fork), and the console needs both. One process is enough (an operator's page, not
device traffic), its port is not shared with SO_REUSEPORT, and the supervisor restarts
worker 0 like any other. Sessions are in the database, so nothing is lost with it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import AsyncIterator

from aiohttp import web

from challenge.request_client import client_middleware
from challenge.secret_key import load_or_create_secret_key
from config import Config
from config.clients import TrustedProxies
from scep_ca.cli.context import CliError, opened_store, print_json, print_table, run_async
from scep_ca.console.accounts import AccountError, Accounts, Sessions
from scep_ca.console.app import build_console_app
from scep_ca.console.audit import ConsoleEvent, LogAuditSink
from scep_ca.console.service import ConsoleService
from scep_ca.pki.ca_set import CASet
from scep_ca.server.app import enroller_for
from scep_ca.server.safety_net import safety_net_middleware
from scep_ca.server.store_faults import StoreFaults
from scep_ca.services.integrations import IntegrationService
from scep_ca.services.revocation import RevocationService
from scep_ca.services.validators.registry import Validators
from store.base import AdminRole, DuplicateAdmin
from store.factory import open_store

# The CLI's actions are recorded as done by this actor from this address.
CLI_ACTOR = "cli"
CLI_ADDRESS = "local"


def console_app(config: Config, cas: CASet) -> web.Application:
    """The console for this process, with its own store connection and validators."""
    store = open_store(config)
    ca = cas.current
    secret_key = load_or_create_secret_key(config.data_dir)
    validators = Validators(config.intune, config.webhook, secret_key, ca.cert.subject.rfc4514_string())
    revocation = RevocationService(
        store,
        cas,
        crl_next_update_hours=config.revocation.crl_next_update_hours,
        ocsp_validity=dt.timedelta(minutes=config.revocation.ocsp_validity_minutes),
    )
    service = ConsoleService(
        config,
        store,
        cas,
        IntegrationService(store, secret_key, config.certificate.validity_days),
        revocation,
        enroller_for(config, store, ca, validators),
        LogAuditSink(),
    )
    middlewares = [
        client_middleware(TrustedProxies.parse(config.server.trusted_proxies)),
        safety_net_middleware,
        StoreFaults().middleware(),
    ]
    app = build_console_app(config, service, Sessions(store, config.console, config.challenge), middlewares)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        await store.open()
        try:
            yield
        finally:
            await validators.close()
            await store.close()

    app.cleanup_ctx.append(resources)
    return app


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
    await LogAuditSink().record(
        CLI_ACTOR, CLI_ADDRESS, ConsoleEvent.ADMIN_CREATE, account.name, {"role": account.role.value}
    )
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
    await LogAuditSink().record(CLI_ACTOR, CLI_ADDRESS, ConsoleEvent.ADMIN_DISABLE, args.name, {})
    print(f"admin {args.name!r} disabled; its sessions ended")
    return 0


async def _reset_password(config: Config, args: argparse.Namespace) -> int:
    async with opened_store(config) as store:
        try:
            password = await Accounts(store).reset_password(args.name, _password(args))
        except AccountError as exc:
            raise CliError(str(exc)) from exc
    await LogAuditSink().record(CLI_ACTOR, CLI_ADDRESS, ConsoleEvent.ADMIN_RESET_PASSWORD, args.name, {})
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
