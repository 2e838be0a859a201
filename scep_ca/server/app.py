"""Building and running the aiohttp application.

``build_app`` wires the store, the CA and every route group; the store's lifetime
is tied to the app through ``cleanup_ctx``. Request-line and body limits are set
explicitly: certmonger's GET PKIOperation queries run to 5.4 kB for RSA-4096.

``run_server`` serves one app in this process until SIGTERM or SIGINT, then drains.
Several processes on one port (``server.workers``) are ``scep_ca.server.workers``' business:
each worker builds its own app (store connection, caches, metrics) and calls
``run_server`` with ``reuse_port=True``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from aiohttp import web

from audit.factory import audit_log
from audit.service import AuditSink
from challenge.request_client import client_middleware
from challenge.secret_key import load_or_create_secret_key
from challenge.service import ChallengeService
from challenge.tls_binding import end_point_application_data
from challenge.web import setup_challenge_routes
from config.clients import TrustedProxies, is_loopback_host
from config.model import Config
from config.tls import harden
from scep_ca.pki.ca import CAIdentity
from scep_ca.pki.ca_set import CASet
from scep_ca.pki.pkcs11_keys import Token
from scep_ca.pki.ra_renewal import Renewed
from scep_ca.server.audit_task import LastCheckpoint, audit_context
from scep_ca.server.connections import AcceptErrorLog, ConnectionLimits, Connections, GuardedSite
from scep_ca.server.expiry_metrics import CheckpointSource, ExpiryCollector
from scep_ca.server.fdlimit import connection_cap, fd_reserve, raise_fd_limit
from scep_ca.server.health import Lifecycle, setup_health_routes
from scep_ca.server.logsetup import log_context_middleware
from scep_ca.server.metrics import Metrics, metrics_middleware, setup_metrics_routes
from scep_ca.server.ra_reload import CHECK_SECONDS, RaWatch
from scep_ca.server.revocation_web import setup_revocation_routes
from scep_ca.server.safety_net import safety_net_middleware
from scep_ca.server.scep_web import setup_scep_routes
from scep_ca.server.store_faults import StoreFaults
from scep_ca.services.expiry import CountsCache
from scep_ca.services.notify import DailyNotices, Notifier, NotifyingRenewalEvents
from scep_ca.services.ra_renewal import LoadIdentity, RaRenewer, RenewalEvents, RenewFiles
from scep_ca.services.scep import ScepService
from scep_ca.services.validators.registry import Validators
from scep_ca.services.wiring import enroller_for, revocation_for
from store.base import Store, StoreUnavailable

log = logging.getLogger(__name__)

STORE: web.AppKey[Store] = web.AppKey("store", Store)
CONFIG: web.AppKey[Config] = web.AppKey("config", Config)
CA: web.AppKey[CAIdentity] = web.AppKey("ca", CAIdentity)
METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
LIFECYCLE: web.AppKey[Lifecycle] = web.AppKey("lifecycle", Lifecycle)
CONNECTIONS: web.AppKey[Connections] = web.AppKey("connections", Connections)

# How long a stopping server waits for in-flight requests before closing connections.
DRAIN_SECONDS = 30.0
# aiohttp's own shutdown afterwards: for requests that arrived on a keep-alive connection
# during the drain (each is answered with Connection: close).
_FINAL_SHUTDOWN_SECONDS = 5.0


def build_app(
    config: Config,
    cas: CAIdentity | CASet,
    store: Store,
    *,
    worker: int = 0,
    token: Token | None = None,
    ra_upkeep: RaUpkeep | None = None,
    notifier: Notifier | None = None,
    audit_checkpoint: CheckpointSource | None = None,
) -> web.Application:
    """The whole server: SCEP, challenge URL, CRL/OCSP/status, metrics and probes.

    ``cas`` is the current CA, or the whole set (next CA for GetNextCACert, previous CAs
    whose CRLs and OCSP answers are still served). The store opens on startup. ``worker``
    is this process's worker index (metrics and probes report it). ``token``: the PKCS#11
    token of ``keys.pkcs11``, which then holds the audit keys too. With ``ra_upkeep``
    the RA certificates are renewed daily and renewed ones served without a restart;
    ``notifier`` sends the expiry notifications; ``audit_checkpoint`` gives the time of the
    last audit checkpoint for ``/metrics``.
    """
    ca_set = cas if isinstance(cas, CASet) else CASet(current=cas)
    ca = ca_set.current
    metrics = Metrics(worker)
    lifecycle = Lifecycle()
    server = config.server
    connections = Connections(
        ConnectionLimits(
            header_timeout=server.header_timeout_seconds,
            body_timeout=server.body_timeout_seconds,
            keepalive_timeout=server.keepalive_timeout_seconds,
            max_connections=server.max_connections or 1_000_000,  # run_server sets the real cap
            write_timeout=server.write_timeout_seconds,
            max_pipelined_requests=server.max_pipelined_requests,
            max_head_bytes=server.max_head_bytes,
        ),
        metrics,
    )
    app = web.Application(
        client_max_size=config.server.max_body_bytes,
        # The client is resolved first: every later middleware and handler reads it. Log
        # fields outside the metrics layer, so that whatever it logs carries them too. The
        # safety net, the store faults and the connection deadlines inside the metrics layer, so
        # that metrics count the safety net's 500s, the 503 a store fault becomes and a request cut
        # off by a deadline, and the safety net's log line carries the fields. Store faults inside
        # the safety net: they are typed answers, not unexpected errors.
        middlewares=[
            client_middleware(TrustedProxies.parse(server.trusted_proxies)),
            lifecycle.middleware(),
            log_context_middleware,
            metrics_middleware(metrics),
            safety_net_middleware,
            StoreFaults().middleware(),
            connections.middleware(),
        ],
    )
    app[CONNECTIONS] = connections
    app[LIFECYCLE] = lifecycle
    app[CONFIG] = config
    app[METRICS] = metrics
    app[CA] = ca
    app[STORE] = store

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        await store.open()
        yield
        await store.close()

    app.cleanup_ctx.append(store_ctx)
    audit = audit_log(config, store, token=token)
    last_checkpoint = LastCheckpoint()
    app.cleanup_ctx.append(audit_context(audit, config, worker, last_checkpoint))
    tls = ssl_context(config) is not None
    secret_key = load_or_create_secret_key(config.data_dir)
    validators = Validators(
        config.intune, config.webhook, secret_key, ca.cert.subject.rfc4514_string(), limits=config.validators
    )

    async def validators_ctx(app: web.Application) -> AsyncIterator[None]:
        yield
        await validators.close()

    app.cleanup_ctx.append(validators_ctx)
    challenges = ChallengeService(
        store,
        config.challenge,
        ca.fingerprint_md5,
        secret_key,
        tls=tls,
        public_url=config.server.public_url,
        # The certificate NTLM clients bind to (MsvAvChannelBindings): hashed once here.
        tls_end_point=end_point_application_data(config.tls.cert.read_bytes()) if tls and config.tls.cert else None,
        audit=audit,
    )
    setup_challenge_routes(app, challenges)
    revocation = revocation_for(config, store, ca_set, audit)
    setup_revocation_routes(app, revocation, config.server.api_token)
    enroller = enroller_for(config, store, ca, validators, audit=audit)

    async def holds_ctx(app: web.Application) -> AsyncIterator[None]:
        # After store_ctx opened the store: certificates a killed worker left on hold.
        try:
            ended = await enroller.end_stale_holds()
        except StoreUnavailable as exc:
            log.warning("certificates on hold not checked at start, the store is unavailable: %s", exc)
        else:
            if ended:
                log.warning("revoked %d certificate(s) left on hold unconfirmed by a stopped worker", ended)
        yield

    app.cleanup_ctx.append(holds_ctx)
    scep = ScepService(
        store,
        ca,
        config.scep,
        enroller,
        crl_source=revocation.current_crl,
        events=metrics,
        next_ca=ca_set.next,
        stand_in_secret=secret_key,
        audit=audit,
    )
    setup_scep_routes(app, scep)
    counts = CountsCache(store, config.metrics.counts_max_age_seconds)
    expiry = ExpiryCollector(ca, counts, audit_checkpoint or (last_checkpoint if config.audit.enabled else None))
    metrics.add_scrape_collector(expiry)

    async def counts_ctx(app: web.Application) -> AsyncIterator[None]:
        counts.start()  # the store is open (store_ctx comes first): the first count begins now
        yield
        await counts.close()

    app.cleanup_ctx.append(counts_ctx)
    if notifier is not None:

        async def notifier_ctx(app: web.Application) -> AsyncIterator[None]:
            yield
            await notifier.close()

        app.cleanup_ctx.append(notifier_ctx)
    if ra_upkeep is not None:
        _add_ra_watch(app, config, ra_upkeep, store, [scep.use_ca, expiry.use_ca], worker == 0, notifier, audit)
    setup_metrics_routes(app, metrics, crl_source=revocation.current_crl, token=config.server.metrics_token)
    setup_health_routes(app, store, ca, lifecycle, worker)
    return app


@dataclass(frozen=True)
class RaUpkeep:
    """How a worker reloads its CA identity and renews the RA files (``scep-ca serve`` provides them)."""

    load: LoadIdentity
    renew_files: RenewFiles
    events: RenewalEvents | None = None
    # How often the worker looks for RA files renewed by another process.
    check_seconds: float = CHECK_SECONDS
    # What ``serve`` renewed at start, before forking (worker 0 sends the notifications).
    renewed_at_start: tuple[Renewed, ...] = ()


def _add_ra_watch(
    app: web.Application,
    config: Config,
    upkeep: RaUpkeep,
    store: Store,
    users: list[Callable[[CAIdentity], None]],
    announce: bool,
    notifier: Notifier | None,
    audit: AuditSink,
) -> None:
    events = upkeep.events
    jobs = []
    if notifier is not None:
        events = events or NotifyingRenewalEvents(notifier)
        if announce:
            jobs.append(DailyNotices(notifier, store, upkeep.load).run)
    renewer = RaRenewer(store, upkeep.load, upkeep.renew_files, config.ra.renew_before_days, events, audit=audit)

    def apply(identity: CAIdentity) -> None:
        for use in users:
            use(identity)

    watch = RaWatch(
        config.data_dir,
        upkeep.load,
        apply,
        renewer,
        config.ra.renew_before_days,
        announce=announce,
        check_seconds=upkeep.check_seconds,
        jobs=jobs,
    )

    async def watch_ctx(app: web.Application) -> AsyncIterator[None]:
        if notifier is not None and announce:
            # Renewed by the supervisor before the workers started: told by worker 0, once it runs.
            for renewed in upkeep.renewed_at_start:
                notifier.ra_renewed(renewed)
        task = asyncio.create_task(watch.run())
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    app.cleanup_ctx.append(watch_ctx)


def ssl_context(config: Config) -> ssl.SSLContext | None:
    if not config.tls.cert or not config.tls.key:
        return None
    ctx = harden(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))
    ctx.load_cert_chain(str(config.tls.cert), str(config.tls.key))
    return ctx


async def run_server(
    app: web.Application, config: Config, *, reuse_port: bool = False, ready: Callable[[], None] | None = None
) -> None:
    """Serve until SIGTERM or SIGINT (or cancellation), then drain and return.

    Draining: the listening socket closes first (with SO_REUSEPORT the kernel sends new
    connections to the other workers), then requests in flight, including those whose
    body is still arriving, get up to ``DRAIN_SECONDS`` to finish (``health.Lifecycle``),
    then aiohttp closes the connections and only then does the store close.
    ``ready`` is called once the socket listens (the supervisor's readiness signal).
    """
    tls = ssl_context(config)
    server = config.server
    if tls is None and not is_loopback_host(server.host):
        log.warning(
            "serving plain HTTP on non-loopback address %s: the challenge URL and status API "
            "carry credentials; terminate TLS here (tls.cert/tls.key) or in a proxy",
            server.host,
        )
    if is_loopback_host(server.host) and not server.trusted_proxies:
        log.warning(
            "listening on loopback %s with no server.trusted_proxies: if a reverse proxy on this host "
            "forwards to scep-ca, list it there, or the clients it forwards may be treated as local",
            server.host,
        )
    connections = app.get(CONNECTIONS)
    fd_limit = raise_fd_limit()
    cap = connection_cap(server.max_connections, fd_limit)
    log.info("open-file limit %d; at most %d connections", fd_limit, cap)
    if cap > fd_limit - fd_reserve(fd_limit):
        log.warning(
            "server.max_connections %d exceeds what the open-file limit %d leaves for connections", cap, fd_limit
        )
    runner = web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=_FINAL_SHUTDOWN_SECONDS,
        max_line_size=server.max_line_bytes,
        max_field_size=server.max_header_field_bytes,
        # connections.py enforces the keep-alive deadline; aiohttp's own timer stays as a backstop.
        keepalive_timeout=server.keepalive_timeout_seconds,
    )
    stop = asyncio.Event()
    handled = _on_stop_signals(stop.set)
    accept_errors = AcceptErrorLog(asyncio.get_running_loop())
    accept_errors.install()
    try:
        await runner.setup()
        site: web.BaseSite
        if connections is not None:
            connections.set_max_connections(cap)
            site = GuardedSite(
                runner, server.host, server.port, connections, ssl_context=tls, reuse_port=reuse_port or None
            )
        else:
            site = web.TCPSite(runner, server.host, server.port, ssl_context=tls, reuse_port=reuse_port or None)
        await site.start()
        # The bind address is what a firewall and a port scan see; the public URL may be a proxy's.
        log.info("scep-ca listening on %s (public URL %s)", site.name, config.base_url)
        if ready:
            ready()
        await stop.wait()
        for running in list(runner.sites):
            await running.stop()
        lifecycle = app.get(LIFECYCLE)
        if lifecycle is not None:
            log.info(
                "stopping: no new connections; draining %d requests in flight (up to %.0f s)",
                lifecycle.in_flight,
                DRAIN_SECONDS,
            )
            if not await lifecycle.drain(DRAIN_SECONDS):
                log.warning(
                    "%d requests still in flight after %.0f s: cutting them off", lifecycle.in_flight, DRAIN_SECONDS
                )
    finally:
        await runner.cleanup()
        accept_errors.uninstall()
        loop = asyncio.get_running_loop()
        for sig in handled:
            loop.remove_signal_handler(sig)


def _on_stop_signals(callback: Callable[[], None]) -> list[signal.Signals]:
    """Call ``callback`` on SIGTERM and SIGINT; the signals that could be hooked.

    Only the main thread may install signal handlers; elsewhere (an embedding program)
    the caller stops the server by cancelling it.
    """
    loop = asyncio.get_running_loop()
    handled = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, callback)
        except (NotImplementedError, RuntimeError, ValueError):
            continue
        handled.append(sig)
    return handled
