"""Prometheus metrics of one server process, served at ``/metrics``.

Every ``Metrics`` object owns its own ``CollectorRegistry``: nothing is registered in
prometheus-client's global default registry, so two apps in one process (the tests)
never share a counter, and nothing here is module-level mutable state.

One registry per worker process. With ``server.workers`` > 1 the workers share one
port, so a scrape is answered by whichever worker accepted the scraper's connection
(Prometheus keeps that connection alive, so it is usually the same worker for a while),
and shows that worker's share of the traffic only. Every process-local series carries a
``worker`` label (the worker's index, kept across restarts) so that answers from
different workers never look like counter resets of one series. prometheus-client's
multiprocess mode would sum the workers, but it is switched on by an environment
variable read when prometheus_client is first imported (a process-wide switch), keeps
per-pid files that must be cleaned on every restart, and cannot serve the scrape-time
values below; for whole-server totals run one worker per process or container and
scrape each as its own target.

Scrape-time values, read from the store through the revocation service, are the same
whichever worker answers: ``scep_ca_revocations_total`` (entries of the current CA's CRL:
revocations are never undone, so it only grows, and revocations made by the CLI in another
process count too; a CA rollover starts a new CRL, which Prometheus sees as a counter
reset) and ``scep_ca_crl_age_seconds`` (age of the current CA's CRL as this worker serves
it, rebuilt first when it is stale, exactly as a relying party's fetch would), with
``scep_ca_crl_next_update_timestamp_seconds`` (its nextUpdate). The expiry metrics (CA, RA,
certificate counts) are ``scep_ca.server.expiry_metrics``, added with ``add_scrape_collector``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from types import MappingProxyType
from typing import Protocol

from aiohttp import web
from aiohttp.typedefs import Middleware
from cryptography import x509
from multidict import CIMultiDict, CIMultiDictProxy, MultiMapping
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from scep_ca.protocol.enums import FailInfo, MessageType, PKIStatus
from scep_ca.server.access import BEARER_CHALLENGE, Access, check_access
from scep_ca.server.query import raw_query_param
from store.base import StoreUnavailable

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
# Not timed: probes and scrapes would drown the SCEP traffic in the histogram.
_UNMEASURED = frozenset({METRICS_PATH, "/healthz", "/readyz"})

# Label values are always drawn from these tables, never from client input, so a
# hostile client cannot create series.
_SCEP_OPERATIONS = MappingProxyType(
    {
        "getcacaps": "GetCACaps",
        "getcacert": "GetCACert",
        "getnextcacert": "GetNextCACert",
        "pkioperation": "PKIOperation",
    }
)
_MESSAGE_TYPES = MappingProxyType(
    {
        int(MessageType.PKCS_REQ): "PKCSReq",
        int(MessageType.RENEWAL_REQ): "RenewalReq",
        int(MessageType.CERT_POLL): "CertPoll",
        int(MessageType.GET_CERT): "GetCert",
        int(MessageType.GET_CRL): "GetCRL",
        int(MessageType.CERT_REP): "CertRep",
    }
)
_FAIL_INFO = MappingProxyType(
    {
        FailInfo.BAD_ALG: "badAlg",
        FailInfo.BAD_MESSAGE_CHECK: "badMessageCheck",
        FailInfo.BAD_REQUEST: "badRequest",
        FailInfo.BAD_TIME: "badTime",
        FailInfo.BAD_CERT_ID: "badCertId",
    }
)
CONNECTION_PHASES = ("head", "body", "write", "idle")
CHALLENGE_RESULTS = ("page", "ntlm_challenge", "unauthorized", "locked_out", "not_found", "error")
_NO_HEADERS: MultiMapping[str] = CIMultiDictProxy(CIMultiDict())
# nginx's "client closed request": the handler was cancelled before it answered.
CLIENT_CLOSED = 499

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CrlSource = Callable[[], Awaitable[bytes]]


def operation_of(request: web.Request) -> str | None:
    """The ``operation`` label of a request, or None for requests that are not measured."""
    path = request.path
    if path in _UNMEASURED:
        return None
    if path.startswith("/scep/"):
        op = raw_query_param(request.rel_url.raw_query_string, "operation") or ""
        return _SCEP_OPERATIONS.get(op.strip().lower(), "scep_other")
    if path.startswith("/challenge/"):
        return "challenge"
    if path.startswith("/crl/"):
        return "crl"
    if path == "/ocsp" or path.startswith("/ocsp/"):
        return "ocsp"
    if path.startswith("/api/"):
        return "status_api"
    return "other"


def challenge_result(status: int, headers: MultiMapping[str]) -> str:
    """Classify a challenge URL answer (see ``challenge.service`` for when each is sent).

    A 401 that carries an NTLM Type 2 (``WWW-Authenticate: NTLM <token>``) is a normal
    step of the handshake, not a refusal, so it is counted apart from failed logins.
    """
    if status == 200:
        return "page"  # a challenge, or NDES's cache-full / no-permission page
    if status == 401:
        offers = headers.getall("WWW-Authenticate", [])
        if any(" " in offer.strip() and not offer.lower().startswith("basic ") for offer in offers):
            return "ntlm_challenge"
        return "unauthorized"
    if status == 429:
        return "locked_out"
    if status == 404:
        return "not_found"
    return "error"


class _CrlCollector(Collector):
    """``scep_ca_crl_age_seconds`` and ``scep_ca_revocations_total`` from the served CRL.

    ``refresh`` (async, before each scrape) fetches the current CRL; ``collect`` (sync,
    called by prometheus-client) reports from what ``refresh`` saw. The CRL is parsed
    only when the service hands out a new one (it returns its cached bytes otherwise).
    """

    def __init__(self, worker: str, clock: Callable[[], float]) -> None:
        self._worker = worker
        self._clock = clock
        self._der: bytes | None = None
        self._this_update: float | None = None
        self._next_update: float | None = None
        self._entries = 0

    async def refresh(self, source: CrlSource) -> None:
        try:
            der = await source()
        except StoreUnavailable as exc:
            log.warning("metrics: could not get the current CRL: the store is unavailable: %s", exc)
            return
        except Exception:
            # The age of the last CRL we had keeps growing, which is what should alert.
            log.warning("metrics: could not get the current CRL", exc_info=True)
            return
        if der is not self._der:
            crl = x509.load_der_x509_crl(der)
            self._this_update = crl.last_update_utc.timestamp()
            next_update = crl.next_update_utc
            self._next_update = None if next_update is None else next_update.timestamp()
            self._entries = len(crl)
            self._der = der

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        return list(self._families(with_samples=True))

    def _families(self, with_samples: bool = False) -> Iterable[Metric]:
        age = GaugeMetricFamily(
            "scep_ca_crl_age_seconds",
            "Seconds since thisUpdate of the CRL this worker serves",
            labels=["worker"],
        )
        revocations = CounterMetricFamily(
            "scep_ca_revocations", "Revoked certificates of the current CA (entries of its CRL)"
        )
        next_update = GaugeMetricFamily(
            "scep_ca_crl_next_update_timestamp_seconds", "nextUpdate of the current CA's CRL (Unix time)"
        )
        if with_samples and self._this_update is not None:
            age.add_metric([self._worker], max(0.0, self._clock() - self._this_update))
            revocations.add_metric([], self._entries)
            if self._next_update is not None:
                next_update.add_metric([], self._next_update)
        yield age
        yield revocations
        yield next_update


class ScrapeCollector(Collector, Protocol):
    """A collector whose values are brought up to date (asynchronously) before each scrape."""

    async def refresh(self) -> None: ...


class Metrics:
    """The metrics of one server process; also the ``ScepService`` events sink."""

    def __init__(self, worker: int = 0, clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry()
        self._worker = str(worker)
        self._pki = Counter(
            "scep_ca_pki_operations",
            "Answered PKIOperation requests by messageType, pkiStatus and failInfo",
            ["worker", "message_type", "status", "fail_info"],
            registry=self.registry,
        )
        self._challenge = Counter(
            "scep_ca_challenge_pages",
            "Challenge URL answers by result",
            ["worker", "result"],
            registry=self.registry,
        )
        self._seconds = Histogram(
            "scep_ca_request_seconds",
            "Time to answer a request, by operation",
            ["worker", "operation"],
            registry=self.registry,
        )
        self._responses = Counter(
            "scep_ca_http_responses",
            "HTTP responses by operation and status code",
            ["worker", "operation", "code"],
            registry=self.registry,
        )
        self._rejected = Counter(
            "scep_ca_connections_rejected",
            "Connections closed at once because server.max_connections were open",
            ["worker"],
            registry=self.registry,
        )
        self._timed_out = Counter(
            "scep_ca_connections_timed_out",
            "Connections closed because a deadline passed: head (request line and headers), body, "
            "write (the client did not read its answer: stalled writes), idle (keep-alive)",
            ["worker", "phase"],
            registry=self.registry,
        )
        self._open = Gauge(
            "scep_ca_connections_open", "Open client connections of this worker", ["worker"], registry=self.registry
        )
        # Present from the start, so rate() and absent-alerts work before the first login.
        for result in CHALLENGE_RESULTS:
            self._challenge.labels(self._worker, result)
        for phase in CONNECTION_PHASES:
            self._timed_out.labels(self._worker, phase)
        self._rejected.labels(self._worker)
        self._open.labels(self._worker).set(0)
        self._crl = _CrlCollector(self._worker, clock)
        self.registry.register(self._crl)
        self._scrape_collectors: list[ScrapeCollector] = []

    def add_scrape_collector(self, collector: ScrapeCollector) -> None:
        self.registry.register(collector)
        self._scrape_collectors.append(collector)

    # ScepEvents (scep_ca.services.scep): called once per answered PKIOperation.
    def pki_operation(self, message_type: int, status: PKIStatus, fail_info: FailInfo | None) -> None:
        self._pki.labels(
            self._worker,
            _MESSAGE_TYPES.get(int(message_type), "other"),
            status.name,
            "none" if fail_info is None else _FAIL_INFO.get(fail_info, "other"),
        ).inc()

    # ConnectionEvents (scep_ca.server.connections).
    def connection_rejected(self) -> None:
        self._rejected.labels(self._worker).inc()

    def connection_timed_out(self, phase: str) -> None:
        self._timed_out.labels(self._worker, phase if phase in CONNECTION_PHASES else "other").inc()

    def connections_open(self, count: int) -> None:
        self._open.labels(self._worker).set(count)

    def observe(self, operation: str, status: int, seconds: float, headers: MultiMapping[str]) -> None:
        """Record one answered HTTP request."""
        self._seconds.labels(self._worker, operation).observe(seconds)
        self._responses.labels(self._worker, operation, str(status)).inc()
        if operation == "challenge":
            self._challenge.labels(self._worker, challenge_result(status, headers)).inc()

    async def exposition(self, crl_source: CrlSource | None, accept: str = "") -> tuple[bytes, str]:
        """(body, Content-Type) for a scrape, after refreshing the scrape-time values.

        The format follows the scraper's Accept header (OpenMetrics for Prometheus,
        the classic text format 0.0.4 otherwise), as prometheus-client's own servers do.
        """
        if crl_source is not None:
            await self._crl.refresh(crl_source)
        for collector in self._scrape_collectors:
            await collector.refresh()
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type


def metrics_middleware(metrics: Metrics) -> Middleware:
    """Times every measured request and counts its answer (status code, challenge result)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        operation = operation_of(request)
        if operation is None:
            return await handler(request)
        started = time.perf_counter()
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # raised answers (404, 413, ...) are answers too
            metrics.observe(operation, exc.status, time.perf_counter() - started, exc.headers)
            raise
        except asyncio.CancelledError:
            metrics.observe(operation, CLIENT_CLOSED, time.perf_counter() - started, _NO_HEADERS)
            raise
        except Exception:
            metrics.observe(operation, 500, time.perf_counter() - started, _NO_HEADERS)
            raise
        metrics.observe(operation, response.status, time.perf_counter() - started, response.headers)
        return response

    return middleware


def setup_metrics_routes(
    app: web.Application, metrics: Metrics, crl_source: CrlSource | None, token: str | None = None
) -> None:
    """``GET /metrics`` in the Prometheus text or OpenMetrics format.

    With ``token`` (``server.metrics_token``), scrapes need ``Authorization: Bearer``
    (Prometheus' ``authorization`` setting); without, only local clients are served, like
    the status API (``scep_ca.server.access``): the counters describe the CA's traffic.
    """
    secret = token.encode("utf-8") if token else None

    async def handle(request: web.Request) -> web.Response:
        access = check_access(request, secret)
        if access is Access.BAD_TOKEN:
            return web.Response(
                status=401, text="a valid bearer token is required\n", headers={"WWW-Authenticate": BEARER_CHALLENGE}
            )
        if access is Access.NOT_LOCAL:
            return web.Response(status=403, text="served to loopback clients only unless metrics_token is set\n")
        body, content_type = await metrics.exposition(crl_source, request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    app.router.add_get(METRICS_PATH, handle)
