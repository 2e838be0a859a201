"""A store or a private key that is unavailable becomes HTTP 503 with Retry-After, on every endpoint.

``store.base.StoreUnavailable`` (disk full, I/O error, the database server down or the
connection lost) and ``scep_ca.pki.keys.KeyUnavailable`` (a PKCS#11 token out of reach; the
token reopens its session on the next operation) say the request can be served later but not now, and that the unit
of work it interrupted wrote nothing. So the answer is 503 Service Unavailable with
``Retry-After`` (RFC 9110 sections 15.6.4 and 10.2.3), never 500 and never a SCEP
FAILURE CertRep: a FAILURE is final for a SCEP client, while certmonger, scepclient
and MDMs retry a request that got no CertRep. The challenge of a PKCSReq that met the
fault is still unused, so the retry succeeds once the store is back.

A validator over its per-integration bounds (``ValidatorBusy``) is answered the same
way, with the Retry-After the bound names: the request called out nothing and wrote
nothing, and a client that retries later gets through.

One log line per fault, with no traceback (the fault is the environment's, not a bug),
and at most one per ``LOG_INTERVAL_SECONDS``: a full disk under load would otherwise
write a line per request, to the same disk.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from scep_ca.pki.keys import KeyUnavailable
from scep_ca.services.validators.base import ValidatorBusy
from store.base import StoreUnavailable

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 30
LOG_INTERVAL_SECONDS = 10.0
UNAVAILABLE_TEXT = "service temporarily unavailable; retry later\n"


def unavailable_response(retry_after: int = RETRY_AFTER_SECONDS) -> web.Response:
    return web.Response(
        status=503,
        text=UNAVAILABLE_TEXT,
        headers={"Retry-After": str(retry_after), "Cache-Control": "no-store"},
    )


Unavailable = StoreUnavailable | KeyUnavailable


def fault_class(exc: Unavailable) -> str:
    """The class of the error underneath, e.g. ``sqlite3.OperationalError``, for the log."""
    cause = exc.__cause__ or exc
    kind = type(cause)
    return f"{kind.__module__}.{kind.__qualname__}"


class _Throttle:
    """At most one log line per ``interval``; counts the ones left out for the next."""

    def __init__(self, clock: Callable[[], float], interval: float) -> None:
        self._clock = clock
        self._interval = interval
        self._next_log: float | None = None
        self._suppressed = 0

    def due(self) -> str | None:
        """None when this line is left out, else the note on those left out before it."""
        now = self._clock()
        if self._next_log is not None and now < self._next_log:
            self._suppressed += 1
            return None
        more = f" ({self._suppressed} more since the last report)" if self._suppressed else ""
        self._next_log = now + self._interval
        self._suppressed = 0
        return more


class StoreFaults:
    """Turns ``StoreUnavailable`` and ``KeyUnavailable`` (and ``ValidatorBusy``) into 503
    answers; rate-limits their log lines (per app), each kind on its own, so that a flood
    refused by the validator bounds never hides a fault's line."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, interval: float = LOG_INTERVAL_SECONDS) -> None:
        self._faults = _Throttle(clock, interval)
        self._busy = _Throttle(clock, interval)

    def middleware(self) -> Middleware:
        @web.middleware
        async def store_faults(request: web.Request, handler: Handler) -> web.StreamResponse:
            try:
                return await handler(request)
            except (StoreUnavailable, KeyUnavailable) as exc:
                self._report(request, exc)
                return unavailable_response()
            except ValidatorBusy as exc:
                more = self._busy.due()
                if more is not None:
                    log.warning(
                        "validator bounds reached, answering 503 to %s %s: %s%s",
                        request.method,
                        request.path,
                        exc.reason,
                        more,
                    )
                return unavailable_response(exc.retry_after)

        return store_faults

    def _report(self, request: web.Request, exc: Unavailable) -> None:
        more = self._faults.due()
        if more is None:
            return
        log.error(
            "%s unavailable, answering 503 to %s %s: %s: %s%s",
            "store" if isinstance(exc, StoreUnavailable) else "private key",
            request.method,
            request.path,
            fault_class(exc),
            exc,
            more,
        )
