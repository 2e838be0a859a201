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
* write: from the moment the handler returns, the answer must be handed to the kernel
  within ``server.write_timeout_seconds``; and when aiohttp is done with it while bytes
  still wait in the transport's buffer (the client reads nothing), they must be gone
  within that time too. aiohttp itself waits for a full buffer to drain with no
  deadline, so without this a client that pipelines requests and never reads its
  answers holds its connection (and its slot under the cap) for ever;
* idle: after an answer, the next request must start within
  ``server.keepalive_timeout_seconds`` (NTLM's Type 1/2/3 exchange spans two
  requests on one connection, so this is not made short).

A deadline that passes aborts the transport (no answer: the client is not sending a
request we could answer, or not reading the one we sent) and is counted by phase
(``write`` counts stalled writes). The head is known to be complete when the app's
``connection_middleware`` sees the request; the answer is known to be written when
aiohttp's task for the request ends.

Pipelining (RFC 9112 section 9.3.2): a request whose bytes had all arrived before the
previous answer began is pipelined. At most ``server.max_pipelined_requests`` requests
are answered in one such run; the last answer carries ``Connection: close`` and aiohttp
drops the requests queued behind it (a client retries them on a new connection). No
SCEP client pipelines; the cap bounds the work one connection can queue without reading.

Head size: aiohttp caps the request line (``server.max_line_bytes``, 96 KiB for Intune's
GETs), each header field (``server.max_header_field_bytes``) and the number of fields, but
not their sum. The guard counts the bytes of each head, up to the blank line that ends it;
past ``server.max_head_bytes`` it answers 431 itself (RFC 6585 section 5), logs one line,
half-closes and discards what follows until the client goes or the head deadline passes.
So that every head is counted, bytes after a complete head are held back from aiohttp
until the request shows whether they are its body (then they go on at once) or the next
request (then they go on, counted, once the answer is written); reading pauses while more
than ``server.max_head_bytes`` are held. aiohttp would otherwise parse and queue pipelined
requests while one is answered, each up to its own field caps. TLS: asyncio calls ``connection_made`` after the
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
    write_timeout: float
    max_pipelined_requests: int
    max_head_bytes: int


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
        self._head_refusals = RateLimit(clock=clock)

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
                response = await handler(request)
            except ConnectionError:
                if not guard.expired:
                    raise
                # The body deadline cut the connection while the handler read the body:
                # nothing can be sent; this answer only keeps the traceback out of the log.
                return web.Response(status=408, text="request body not received in time\n")
            finally:
                guard.answer_started(sequence)
            if guard.pipeline_full:
                response.force_close()
            return response

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

    def _head_refused(self, peer: str, size: int) -> None:
        if self._head_refusals.ready():
            log.warning(
                "request head from %s over server.max_head_bytes (%d bytes before its end) answered 431 "
                "(%d more in the last second)",
                peer,
                size,
                self._head_refusals.reset(),
            )


class _GuardedProtocol(asyncio.Protocol):
    """One connection: forwards to aiohttp's protocol and enforces the deadlines.

    Phases: ``head`` (waiting for a complete request head, deadline armed), ``request``
    (a request is being handled; the body deadline is armed until its body is in),
    ``write`` (the handler returned; aiohttp writes the answer), ``drain`` (aiohttp is done,
    bytes still wait in the transport's buffer), ``idle`` (after an answer; the keep-alive
    deadline is armed). The first byte of the next request switches ``drain`` and ``idle``
    to ``head``.
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
        # Bytes received so far, and when the last answer began: a request that starts with
        # no byte received since then was pipelined.
        self._received = 0
        self._received_at_answer = -1
        self._run = 0
        # The head being counted: its bytes so far and the last three (its end may straddle reads).
        self._head_open = True
        self._head_bytes = 0
        self._head_tail = b""
        self._refused = False
        # Bytes after a complete head, not yet handed to aiohttp (see the module docstring).
        self._held = bytearray()
        self._holding_paused = False
        self._content: Any = None

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
        if self._inner is None or self._refused:
            return
        self._received += len(data)
        if self._held or self._holds_next_request():
            self._hold(data)
            return
        self._deliver(data)

    def _holds_next_request(self) -> bool:
        """Whether bytes arriving now follow a complete head and are not its body (yet)."""
        if self._phase in ("idle", "drain") or self._head_open:
            return False
        return self._content is None or self._content.is_eof()

    def _hold(self, data: bytes) -> None:
        self._held += data
        transport = self._transport
        if len(self._held) > self._owner.limits.max_head_bytes and isinstance(transport, asyncio.ReadTransport):
            # Re-paused on every read past the cap: aiohttp resumes reading for its own reasons.
            transport.pause_reading()
            self._holding_paused = True

    def _release(self) -> bytes:
        held, self._held = bytes(self._held), bytearray()
        if self._holding_paused and isinstance(self._transport, asyncio.ReadTransport):
            self._holding_paused = False
            self._transport.resume_reading()
        return held

    def _deliver(self, data: bytes) -> None:
        """Hand ``data`` to aiohttp, counting it into the head it starts or continues."""
        assert self._inner is not None
        if self._phase in ("idle", "drain") and data:
            self._arm("head", self._owner.limits.header_timeout)
            self._head_open, self._head_bytes, self._head_tail = True, 0, b""
        if not self._head_open:
            self._inner.data_received(data)
            return
        end = self._count_head(data)
        if self._head_bytes > self._owner.limits.max_head_bytes:
            self._refuse_head()
            return
        if end >= 0:
            self._content = None  # the new request's: known when it starts
        if 0 <= end < len(data):
            self._inner.data_received(data[:end])
            self._hold(data[end:])
            return
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._refused:
            return None  # the client read the 431 and went: close
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
        self._head_open = False
        self._content = request.content
        pipelined = self._received == self._received_at_answer
        self._run = self._run + 1 if pipelined else 1
        content = request.content
        if not content.is_eof():
            self._timer = asyncio.get_running_loop().call_later(
                self._owner.limits.body_timeout, self._body_deadline, content
            )
            if self._held and self._inner is not None:
                self._inner.data_received(self._release())  # its body (and what follows it)
        return self._sequence

    @property
    def pipeline_full(self) -> bool:
        """Whether the current request ends its run of pipelined requests (``Connection: close``)."""
        return self._run >= self._owner.limits.max_pipelined_requests

    def answer_started(self, sequence: int) -> None:
        """The handler returned: the answer must be written within the write deadline."""
        self._received_at_answer = self._received
        if sequence == self._sequence and self._transport is not None:
            self._arm("write", self._owner.limits.write_timeout)

    def request_finished(self, sequence: int) -> None:
        # A later request may already have started (pipelining): then this is stale.
        if sequence != self._sequence or self._transport is None:
            return
        if _unsent(self._transport):
            self._arm("drain", self._owner.limits.write_timeout, self._drain_deadline)
        else:
            self._arm("idle", self._owner.limits.keepalive_timeout)
        if self._held and self._inner is not None:
            self._deliver(self._release())  # the next request, pipelined

    # -- head size -----------------------------------------------------------------------

    def _count_head(self, data: bytes) -> int:
        """Count ``data`` into the head until its blank line; where in ``data`` the head ends, or -1."""
        tail = self._head_tail
        seam = (tail + data[:3]).find(b"\r\n\r\n")
        if seam >= 0:
            end = seam + 4 - len(tail)  # the blank line straddles the previous read and this one
        else:
            found = data.find(b"\r\n\r\n")
            end = found + 4 if found >= 0 else -1
        if end >= 0:
            self._head_bytes += end
            self._head_open = False
        else:
            self._head_bytes += len(data)
            self._head_tail = (self._head_tail + data)[-3:]
        return end

    def _refuse_head(self) -> None:
        transport = self._transport
        assert transport is not None
        self._refused = True
        peer = transport.get_extra_info("peername")
        self._owner._head_refused(str(peer[0]) if isinstance(peer, tuple) and peer else "?", self._head_bytes)
        if not isinstance(transport, asyncio.WriteTransport):
            transport.close()
            return
        transport.write(_HEAD_TOO_LARGE)
        if transport.can_write_eof():
            # Half-close: the client reads the answer; what it still sends is discarded
            # until it closes or the head deadline (still armed) passes.
            transport.write_eof()
        else:
            transport.close()  # TLS: close_notify after the answer

    # -- deadlines ---------------------------------------------------------------------

    def _arm(self, phase: str, seconds: float, callback: Callable[[], None] | None = None) -> None:
        self._cancel()
        self._phase = phase
        if callback is None:
            self._timer = asyncio.get_running_loop().call_later(seconds, self._expire, phase)
        else:
            self._timer = asyncio.get_running_loop().call_later(seconds, callback)

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

    def _drain_deadline(self) -> None:
        self._timer = None
        if self._transport is None:
            return
        if _unsent(self._transport):
            self._expire("write")
        else:
            self._arm("idle", self._owner.limits.keepalive_timeout)


_HEAD_TOO_LARGE_TEXT = b"request head too large\n"
_HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_HEAD_TOO_LARGE_TEXT), _HEAD_TOO_LARGE_TEXT)
)


def _unsent(transport: asyncio.BaseTransport) -> bool:
    """Whether answer bytes still wait in ``transport``'s buffer (the client is not reading them)."""
    return isinstance(transport, asyncio.WriteTransport) and transport.get_write_buffer_size() > 0


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
        """The bound address(es) once listening (the port a ``port: 0`` got), else the configured one."""
        scheme = "https" if self._ssl_context else "http"
        sockets = getattr(self._server, "sockets", None) or ()
        bound = [sock.getsockname()[:2] for sock in sockets] or [(self._host, self._port)]
        return ", ".join(f"{scheme}://{_url_host(str(host))}:{port}" for host, port in bound)

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


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


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
