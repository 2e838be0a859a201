"""Connection deadlines and the per-worker connection cap, around aiohttp's protocol.

aiohttp 3.14's ``RequestHandler`` has one timer, ``keepalive_timeout``, re-armed by
each request and checked only while it waits for a request; a client that trickles a
header byte every few seconds, or a body, is never cut off. So every connection is
wrapped in a ``_GuardedProtocol`` (``GuardedSite`` passes it to ``create_server``)
that keeps TOTAL deadlines, whatever arrives meanwhile:

* head: from the connection's start, or from the first byte after a keep-alive
  pause, the request line and headers must be complete within
  ``server.header_timeout_seconds`` (an idle new connection is cut off by it too);
* body: from the end of the head, the body must be complete within
  ``server.body_timeout_seconds``;
* idle: after an answer, the next request must start within
  ``server.keepalive_timeout_seconds`` (NTLM's Type 1/2/3 exchange spans two
  requests on one connection, so this is not made short).

A deadline that passes aborts the transport (no answer: the client is not sending a
request we could answer) and is counted. The head is known to be complete when the
app's ``connection_middleware`` sees the request; the answer is known to be written when
aiohttp's task for the request ends. TLS: asyncio calls ``connection_made`` after the
handshake, so the handshake is bounded by ``ssl_handshake_timeout`` (the header timeout)
and the connection cap counts connections from then on.

The cap (``server.max_connections``): a connection beyond it is aborted at once and
counted, logged at most once a second. Accept errors (EMFILE and friends, which asyncio
reports through the loop's exception handler with a traceback each, thousands a
second) are logged at most once a second, without traceback (``AcceptErrorLog``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Middleware

log = logging.getLogger(__name__)

# Resource exhaustion while accepting (asyncio retries the accept after a second).
_ACCEPT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float
    body_timeout: float
    keepalive_timeout: float
    max_connections: int


class ConnectionEvents(Protocol):
    """Where the counts go (``scep_ca.server.metrics.Metrics``)."""

    def connection_rejected(self) -> None: ...

    def connection_timed_out(self, phase: str) -> None: ...

    def connections_open(self, count: int) -> None: ...


class RateLimit:
    """At most one event a ``interval`` seconds; counts the ones it swallowed in between."""

    def __init__(self, interval: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._clock = clock
        self._next = float("-inf")
        self.suppressed = 0

    def ready(self) -> bool:
        """True when this event should be logged (then ``suppressed`` is the count since the last)."""
        now = self._clock()
        if now < self._next:
            self.suppressed += 1
            return False
        self._next = now + self._interval
        return True

    def reset(self) -> int:
        suppressed, self.suppressed = self.suppressed, 0
        return suppressed


class Connections:
    """The open connections of one server (one worker) and their deadlines."""

    def __init__(
        self,
        limits: ConnectionLimits,
        events: ConnectionEvents | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self._events = events
        # aiohttp's protocol of each open connection -> its guard (request.protocol is the key).
        self._open: dict[object, _GuardedProtocol] = {}
        self._rejections = RateLimit(clock=clock)

    def set_max_connections(self, count: int) -> None:
        """The cap once the file-descriptor limit is known (``run_server``)."""
        self.limits = dataclasses.replace(self.limits, max_connections=count)

    def protocol_factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A ``create_server`` factory that wraps each of ``inner``'s protocols in a guard."""
        return lambda: _GuardedProtocol(self, inner)

    def middleware(self) -> Middleware:
        """Marks the head of each request complete and arms its body deadline (innermost middleware)."""

        @web.middleware
        async def middleware(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            guard = self._open.get(request.protocol)
            if guard is None:  # not served through GuardedSite (the tests' TestServer)
                return await handler(request)
            sequence = guard.request_started(request)
            task = asyncio.current_task()
            if task is not None:
                # aiohttp writes the answer in this same task after the handler returns.
                task.add_done_callback(lambda _: guard.request_finished(sequence))
            try:
                return await handler(request)
            except ConnectionError:
                if not guard.expired:
                    raise
                # The body deadline cut the connection while the handler read the body:
                # nothing can be sent; this answer only keeps the traceback out of the log.
                return web.Response(status=408, text="request body not received in time\n")

        return middleware

    # -- used by the guards ----------------------------------------------------------

    def _admit(self, guard: _GuardedProtocol) -> bool:
        if len(self._open) >= self.limits.max_connections:
            if self._events is not None:
                self._events.connection_rejected()
            if self._rejections.ready():
                log.warning(
                    "connection limit reached (%d open, server.max_connections): closing new connections "
                    "(%d more closed in the last second)",
                    len(self._open),
                    self._rejections.reset(),
                )
            return False
        return True

    def _opened(self, inner: object, guard: _GuardedProtocol) -> None:
        self._open[inner] = guard
        if self._events is not None:
            self._events.connections_open(len(self._open))

    def _closed(self, inner: object) -> None:
        if self._open.pop(inner, None) is not None and self._events is not None:
            self._events.connections_open(len(self._open))

    def _timed_out(self, phase: str) -> None:
        if self._events is not None:
            self._events.connection_timed_out(phase)
        log.debug("connection closed: %s deadline passed", phase)


class _GuardedProtocol(asyncio.Protocol):
    """One connection: forwards to aiohttp's protocol and enforces the deadlines.

    Phases: ``head`` (waiting for a complete request head, deadline armed), ``request``
    (a request is being handled; the body deadline is armed until its body is in),
    ``idle`` (after an answer; the keep-alive deadline is armed, and the first byte of
    the next request switches to ``head``).
    """

    def __init__(self, owner: Connections, factory: Callable[[], asyncio.Protocol]) -> None:
        self._owner = owner
        self._factory = factory
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.BaseTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._phase = "head"
        self._sequence = 0
        self.expired = False

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._owner._admit(self):
            _abort(transport)
            return
        self._transport = transport
        inner = self._factory()
        self._inner = inner
        self._owner._opened(inner, self)
        self._arm("head", self._owner.limits.header_timeout)
        inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return
        if self._phase == "idle" and data:
            self._arm("head", self._owner.limits.header_timeout)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        self._transport = None
        inner, self._inner = self._inner, None
        if inner is not None:
            self._owner._closed(inner)
            inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    # -- from the middleware -----------------------------------------------------------

    def request_started(self, request: web.BaseRequest) -> int:
        self._sequence += 1
        self._cancel()
        self._phase = "request"
        content = request.content
        if not content.is_eof():
            self._timer = asyncio.get_running_loop().call_later(
                self._owner.limits.body_timeout, self._body_deadline, content
            )
        return self._sequence

    def request_finished(self, sequence: int) -> None:
        # A later request may already have started (pipelining): then this is stale.
        if sequence != self._sequence or self._transport is None:
            return
        self._arm("idle", self._owner.limits.keepalive_timeout)

    # -- deadlines ---------------------------------------------------------------------

    def _arm(self, phase: str, seconds: float) -> None:
        self._cancel()
        self._phase = phase
        self._timer = asyncio.get_running_loop().call_later(seconds, self._expire, phase)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self, phase: str) -> None:
        self._timer = None
        if self._transport is None:
            return
        self.expired = True
        self._owner._timed_out(phase)
        _abort(self._transport)

    def _body_deadline(self, content: Any) -> None:
        self._timer = None
        if not content.is_eof():
            self._expire("body")


def _abort(transport: asyncio.BaseTransport) -> None:
    if isinstance(transport, asyncio.WriteTransport):
        transport.abort()
    else:
        transport.close()


class GuardedSite(web.BaseSite):
    """A TCP site like aiohttp's ``TCPSite`` whose connections go through ``Connections``."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        connections: Connections,
        *,
        ssl_context: ssl.SSLContext | None = None,
        reuse_port: bool | None = None,
        backlog: int = 128,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._host = host
        self._port = port
        self._connections = connections
        self._reuse_port = reuse_port

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._connections.protocol_factory(server),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_port=self._reuse_port,
            ssl_handshake_timeout=self._connections.limits.header_timeout if self._ssl_context else None,
        )


class AcceptErrorLog:
    """A loop exception handler that logs accept failures at most once a second, without traceback.

    Everything else goes to the handler that was installed before (or asyncio's default).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, clock: Callable[[], float] = time.monotonic) -> None:
        self._loop = loop
        self._previous = loop.get_exception_handler()
        self._limit = RateLimit(clock=clock)

    def install(self) -> None:
        self._loop.set_exception_handler(self)

    def uninstall(self) -> None:
        self._loop.set_exception_handler(self._previous)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _ACCEPT_ERRNOS:
            if self._limit.ready():
                log.error(
                    "cannot accept connections: %s (%d more in the last second); raise the open-file "
                    "limit or lower server.max_connections",
                    os.strerror(exc.errno or 0),
                    self._limit.reset(),
                )
            return
        if self._previous is not None:
            self._previous(loop, context)
        else:
            loop.default_exception_handler(context)
