"""Building the console's aiohttp application and serving it on ``console.listen``.

The CLI composes it (``scep-ca serve``): it passes the services and the outer middlewares
(client resolution, the safety net, store faults as 503) that the server layer owns, since
the console and the server are sibling layers that do not import each other.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware

from config.model import Config
from config.tls import harden
from scep_ca.console.accounts import Sessions
from scep_ca.console.service import ConsoleService
from scep_ca.console.web import setup_console_routes

log = logging.getLogger(__name__)

# Forms are small: a subject template, a few URLs. 64 KiB leaves room for all of them.
MAX_BODY_BYTES = 64 * 1024


def build_console_app(
    config: Config, service: ConsoleService, sessions: Sessions, middlewares: Sequence[Middleware]
) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=list(middlewares))
    setup_console_routes(app, service, sessions, secure=config.console.tls.cert is not None)
    return app


def console_ssl_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    if cert is None or key is None:
        return None
    ctx = harden(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


@contextlib.asynccontextmanager
async def console_listener(app: web.Application, config: Config) -> AsyncIterator[None]:
    """Serve ``app`` on ``console.listen`` while the block runs (config validation has
    already refused a non-loopback address without ``console.tls``)."""
    console = config.console
    tls = console_ssl_context(console.tls.cert, console.tls.key)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, console.host, console.port, ssl_context=tls)
        await site.start()
        scheme = "https" if tls else "http"
        host = f"[{console.host}]" if ":" in console.host else console.host
        log.info("console listening on %s://%s:%d/console/", scheme, host, console.port)
        yield
    finally:
        await runner.cleanup()
