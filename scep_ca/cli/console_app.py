"""The console's wiring for ``scep-ca serve`` (loaded by ``serve`` alone: it needs aiohttp).

Where the console runs: in the single server process, or in worker 0 under ``--workers N``.
Not in the supervisor: it never opens the store or the keys (a PKCS#11 token must be opened
after the fork), and the console needs both. One process is enough (an operator's page, not
device traffic), its port is not shared with SO_REUSEPORT, and the supervisor restarts
worker 0 like any other. Sessions are in the database, so nothing is lost with it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from audit.factory import audit_log
from challenge.request_client import client_middleware
from challenge.secret_key import load_or_create_secret_key
from config import Config
from config.clients import TrustedProxies
from scep_ca.console.accounts import Accounts, Sessions
from scep_ca.console.app import build_console_app, console_listener
from scep_ca.console.audit import AuditLogReader, AuditLogSink, LogAuditSink
from scep_ca.console.service import ConsoleService
from scep_ca.pki.ca_set import CASet
from scep_ca.pki.pkcs11_keys import Token
from scep_ca.server.app import run_server
from scep_ca.server.safety_net import safety_net_middleware
from scep_ca.server.store_faults import StoreFaults
from scep_ca.services.integrations import IntegrationService
from scep_ca.services.validators.registry import Validators
from scep_ca.services.wiring import enroller_for, revocation_for
from store.factory import open_store


def console_app(config: Config, cas: CASet, token: Token | None) -> web.Application:
    """The console for this process, with its own store connection, validators and audit log
    (``token``: the process's one PKCS#11 Token, see ``scep_ca.cli.ca_cmds``)."""
    store = open_store(config)
    ca = cas.current
    secret_key = load_or_create_secret_key(config.data_dir)
    audit = audit_log(config, store, token=token)
    validators = Validators(
        config.intune, config.webhook, secret_key, ca.cert.subject.rfc4514_string(), limits=config.validators
    )
    revocation = revocation_for(config, store, cas, audit)
    service = ConsoleService(
        config,
        store,
        cas,
        IntegrationService(store, secret_key, config.certificate.validity_days, audit=audit),
        revocation,
        enroller_for(config, store, ca, validators, audit=audit),
        AuditLogSink(audit) if config.audit.enabled else LogAuditSink(),
        AuditLogReader(audit) if config.audit.enabled else None,
        audit_log=audit,
        accounts=Accounts(store),
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


async def serve_with_console(
    app: web.Application,
    console: web.Application | None,
    config: Config,
    *,
    reuse_port: bool,
    ready: Callable[[], None] | None,
) -> None:
    """Serve ``app`` (and ``console`` on ``console.listen`` beside it) until stopped."""
    async with contextlib.AsyncExitStack() as stack:
        if console is not None:
            await stack.enter_async_context(console_listener(console, config))
        await run_server(app, config, reuse_port=reuse_port, ready=ready)
