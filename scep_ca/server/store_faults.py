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


class StoreFaults:
    """Turns ``StoreUnavailable`` and ``KeyUnavailable`` into 503 answers; rate-limits their log lines (per app)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, interval: float = LOG_INTERVAL_SECONDS) -> None:
        self._clock = clock
        self._interval = interval
        self._next_log: float | None = None
        self._suppressed = 0

    def middleware(self) -> Middleware:
        @web.middleware
        async def store_faults(request: web.Request, handler: Handler) -> web.StreamResponse:
            try:
                return await handler(request)
            except (StoreUnavailable, KeyUnavailable) as exc:
                self._report(request, exc)
                return unavailable_response()
            except ValidatorBusy as exc:
                # A flood is the likely cause: the log line is rate-limited like a fault's.
                if self._due():
                    log.warning(
                        "validator bounds reached, answering 503 to %s %s: %s%s",
                        request.method,
                        request.path,
                        exc.reason,
                        self._more(),
                    )
                return unavailable_response(exc.retry_after)

        return store_faults

    def _due(self) -> bool:
        """Whether a report may be logged now; counts the ones that may not."""
        now = self._clock()
        if self._next_log is not None and now < self._next_log:
            self._suppressed += 1
            return False
        self._next_log = now + self._interval
        return True

    def _more(self) -> str:
        more = f" ({self._suppressed} more since the last report)" if self._suppressed else ""
        self._suppressed = 0
        return more

    def _report(self, request: web.Request, exc: Unavailable) -> None:
        if not self._due():
            return
        more = self._more()
        log.error(
            "%s unavailable, answering 503 to %s %s: %s: %s%s",
            "store" if isinstance(exc, StoreUnavailable) else "private key",
            request.method,
            request.path,
            fault_class(exc),
            exc,
            more,
        )
