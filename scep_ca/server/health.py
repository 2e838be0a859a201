"""Liveness and readiness probes (``GET /healthz``, ``GET /readyz``) and the graceful drain.

``/healthz`` answers 200 while the process serves HTTP at all (a liveness probe that
restarts the process when it stops answering). ``/readyz`` answers 200 only when this
process can do its work: the CA is loaded and the store answers a cheap query
(``Store.info``) within ``READY_TIMEOUT_SECONDS``; else 503, so that a load balancer
sends traffic elsewhere. It is also 503 from the moment a graceful shutdown starts.

Both answer JSON with the worker index and pid, which tells an operator (and the
tests) which worker answered. A 503 says why in ``reason`` with a phrase that names no
host, path or DSN (``StoreUnavailable.reason``); the details go to the log: a store
error can name hosts or paths that unauthenticated callers need not see.

``Lifecycle`` counts the requests in flight so that a stopping server can wait for
them *before* aiohttp's own shutdown: aiohttp marks every connection closing first and
from then on drops bytes that arrive on it (aio-libs/aiohttp#2298), so a request whose
body was still uploading would hang until the shutdown timeout and then be cut off.
"""

from __future__ import annotations

import asyncio
import logging
import os

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from scep_ca.pki.ca import CAIdentity
from scep_ca.pki.keys import KeyUnavailable, check_keys
from store.base import Store, StoreUnavailable

log = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 2.0
_NO_CACHE = {"Cache-Control": "no-store"}


class Lifecycle:
    """Requests in flight in one app, and whether it is draining (see the module docstring)."""

    def __init__(self) -> None:
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.draining = False

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def middleware(self) -> Middleware:
        """Counts each request while its handler runs; answers ``Connection: close`` while draining."""

        @web.middleware
        async def track(request: web.Request, handler: Handler) -> web.StreamResponse:
            self._in_flight += 1
            self._idle.clear()
            try:
                response = await handler(request)
                if self.draining:
                    # A keep-alive client reconnects, and reaches a worker that is not stopping.
                    response.force_close()
                return response
            finally:
                self._in_flight -= 1
                if self._in_flight == 0:
                    self._idle.set()

        return track

    async def drain(self, timeout: float) -> bool:
        """Mark draining and wait until no request is in flight; False after ``timeout`` seconds."""
        self.draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True


class Probes:
    """The two probe handlers of one app."""

    def __init__(self, store: Store, ca: CAIdentity | None, worker: int, lifecycle: Lifecycle) -> None:
        self._store = store
        self._ca = ca
        self._worker = worker
        self._lifecycle = lifecycle

    def _answer(self, status: int, state: str, **details: str) -> web.Response:
        body = {"status": state, "worker": self._worker, "pid": os.getpid(), **details}
        return web.json_response(body, status=status, headers=_NO_CACHE)

    async def healthz(self, request: web.Request) -> web.Response:
        return self._answer(200, "ok")

    async def readyz(self, request: web.Request) -> web.Response:
        if self._lifecycle.draining:
            return self._answer(503, "draining")
        if self._ca is None:
            return self._answer(503, "unavailable", ca="not loaded")
        try:
            # A token key's session is reopened here too, so readiness returns by itself.
            await asyncio.to_thread(check_keys, self._ca.keys)
        except KeyUnavailable as exc:
            # The reason names the token's label and module path: the log only, not
            # unauthenticated callers.
            log.warning("readyz: %s", exc)
            return self._answer(503, "unavailable", ca="loaded", keys="key unavailable")
        try:
            await asyncio.wait_for(self._store.info(), READY_TIMEOUT_SECONDS)
        except StoreUnavailable as exc:
            # A fault of the environment: one line, no traceback. The answer carries the
            # reason's safe phrase only (no host, path or DSN).
            log.warning("readyz: the store is unavailable: %s", exc)
            return self._unavailable(f"store unavailable: {exc.reason}")
        except TimeoutError:
            log.warning("readyz: the store did not answer within %.0f s", READY_TIMEOUT_SECONDS)
            return self._unavailable(f"store unavailable: no answer within {READY_TIMEOUT_SECONDS:.0f} s")
        except Exception:
            log.warning("readyz: the store did not answer", exc_info=True)
            return self._unavailable("store unavailable: unexpected error (see the server log)")
        return self._answer(200, "ready", ca="loaded", store="ok")

    def _unavailable(self, reason: str) -> web.Response:
        return self._answer(503, "unavailable", ca="loaded", store="unreachable", reason=reason)

    async def on_shutdown(self, app: web.Application) -> None:
        # For apps stopped without Lifecycle.drain (aiohttp's own runners, the tests).
        self._lifecycle.draining = True


def setup_health_routes(
    app: web.Application, store: Store, ca: CAIdentity | None, lifecycle: Lifecycle, worker: int = 0
) -> None:
    """Register ``/healthz`` and ``/readyz`` on ``app``; readiness follows ``lifecycle``."""
    probes = Probes(store, ca, worker, lifecycle)
    app.router.add_get("/healthz", probes.healthz)
    app.router.add_get("/readyz", probes.readyz)
    app.on_shutdown.append(probes.on_shutdown)
