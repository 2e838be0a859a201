"""Building and running the aiohttp application.

``build_app`` wires the store, the CA and every route group; the store's lifetime
is tied to the app through ``cleanup_ctx``. Request-line and body limits are set
explicitly: certmonger's GET PKIOperation queries run to 5.4 kB for RSA-4096.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import ssl
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from challenge.secret_key import load_or_create_secret_key
from challenge.service import ChallengeService
from challenge.web import setup_challenge_routes
from config.model import Config
from scep_ca.ca import CAIdentity
from scep_ca.revocation import RevocationService
from scep_ca.revocation_web import setup_revocation_routes
from scep_ca.service import ScepService
from scep_ca.web import setup_scep_routes
from store.base import Store

log = logging.getLogger("scep_ca.app")

STORE: web.AppKey[Store] = web.AppKey("store", Store)
CONFIG: web.AppKey[Config] = web.AppKey("config", Config)
CA: web.AppKey[CAIdentity] = web.AppKey("ca", CAIdentity)


def build_app(config: Config, ca: CAIdentity, store: Store) -> web.Application:
    """The whole server: SCEP, challenge URL, CRL/OCSP/status. The store opens on startup."""
    app = web.Application(client_max_size=config.server.max_body_bytes)
    app[CONFIG] = config
    app[CA] = ca
    app[STORE] = store

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        await store.open()
        yield
        await store.close()

    app.cleanup_ctx.append(store_ctx)
    challenges = ChallengeService(
        store,
        config.challenge,
        ca.fingerprint_md5,
        load_or_create_secret_key(config.data_dir),
        tls=ssl_context(config) is not None,
    )
    setup_challenge_routes(app, challenges)
    revocation = RevocationService(
        store,
        ca,
        crl_next_update_hours=config.revocation.crl_next_update_hours,
        ocsp_validity=dt.timedelta(minutes=config.revocation.ocsp_validity_minutes),
    )
    setup_revocation_routes(app, revocation, config.server.api_token)
    setup_scep_routes(app, ScepService(store, ca, config, crl_source=revocation.current_crl))
    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ssl_context(config: Config) -> ssl.SSLContext | None:
    if not config.tls.cert or not config.tls.key:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(config.tls.cert), str(config.tls.key))
    return ctx


async def run_server(
    app: web.Application, config: Config, *, reuse_port: bool = False, ready: Callable[[], None] | None = None
) -> None:
    """Serve until cancelled (SIGINT/SIGTERM), draining in-flight requests on the way out."""
    tls = ssl_context(config)
    if tls is None and not is_loopback(config.server.host):
        log.warning(
            "serving plain HTTP on non-loopback address %s: the challenge URL and status API "
            "carry credentials; terminate TLS here (tls.cert/tls.key) or in a proxy",
            config.server.host,
        )
    runner = web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=30.0,
        max_line_size=config.server.max_line_bytes,
        max_field_size=config.server.max_line_bytes,
    )
    await runner.setup()
    site = web.TCPSite(runner, config.server.host, config.server.port, ssl_context=tls, reuse_port=reuse_port or None)
    await site.start()
    log.info("scep-ca listening on %s", config.base_url)
    if ready:
        ready()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
