"""Liveness and readiness probes: ``GET /healthz`` and ``GET /readyz``.

``/healthz`` answers 200 while the process serves HTTP at all (a liveness probe that
restarts the process when it stops answering). ``/readyz`` answers 200 only when this
process can do its work: the CA is loaded and the store answers a cheap query
(``Store.info``) within ``READY_TIMEOUT_SECONDS``; else 503, so that a load balancer
sends traffic elsewhere. It is also 503 from the moment a graceful shutdown starts.

Both answer JSON with the worker index and pid, which tells an operator (and the
tests) which worker answered. Failure details go to the log, not to the response:
a store error can name hosts or paths that unauthenticated callers need not see.
"""

from __future__ import annotations

import asyncio
import logging
import os

from aiohttp import web

from scep_ca.ca import CAIdentity
from store.base import Store

log = logging.getLogger("scep_ca.health")

READY_TIMEOUT_SECONDS = 2.0
_NO_CACHE = {"Cache-Control": "no-store"}


class Probes:
    """The two probe handlers of one app."""

    def __init__(self, store: Store, ca: CAIdentity | None, worker: int) -> None:
        self._store = store
        self._ca = ca
        self._worker = worker
        self._draining = False

    def _answer(self, status: int, state: str, **details: str) -> web.Response:
        body = {"status": state, "worker": self._worker, "pid": os.getpid(), **details}
        return web.json_response(body, status=status, headers=_NO_CACHE)

    async def healthz(self, request: web.Request) -> web.Response:
        return self._answer(200, "ok")

    async def readyz(self, request: web.Request) -> web.Response:
        if self._draining:
            return self._answer(503, "draining")
        if self._ca is None:
            return self._answer(503, "unavailable", ca="not loaded")
        try:
            await asyncio.wait_for(self._store.info(), READY_TIMEOUT_SECONDS)
        except Exception:
            log.warning("readyz: the store did not answer", exc_info=True)
            return self._answer(503, "unavailable", ca="loaded", store="unreachable")
        return self._answer(200, "ready", ca="loaded", store="ok")

    async def on_shutdown(self, app: web.Application) -> None:
        # aiohttp calls this after the listening sockets closed, while in-flight requests
        # drain; keep-alive clients probing meanwhile learn to go elsewhere.
        self._draining = True


def setup_health_routes(app: web.Application, store: Store, ca: CAIdentity | None, worker: int = 0) -> None:
    """Register ``/healthz`` and ``/readyz`` on ``app``."""
    probes = Probes(store, ca, worker)
    app.router.add_get("/healthz", probes.healthz)
    app.router.add_get("/readyz", probes.readyz)
    app.on_shutdown.append(probes.on_shutdown)
