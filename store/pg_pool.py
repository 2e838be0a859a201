"""The PostgreSQL store's connection pool, and how its faults are reported.

``ConnectionPool`` is a small pool of asyncpg connections rather than ``asyncpg.Pool``: measured
per ``SELECT 1`` on this project's machines, asyncpg's pool costs 134 us of client CPU (its
release sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``, an extra round
trip), 90-125 us with a no-op reset (shielded release task, proxy objects), against 35 us for a
bare connection and 35-39 us through ``ConnectionPool``. Nothing in ``store.postgres`` leaves
session state on a connection (no SET, LISTEN, cursors or session-level advisory locks;
``set_config(..., true)`` is transaction-local), so a released connection needs no reset.

Faults of the environment (the server down or restarting, a lost connection, a full disk or
another resource exhausted on the server, a timeout) surface as ``StoreUnavailable`` from every
pool call (``_UNAVAILABLE``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from store.base import StoreError, StoreUnavailable

# Names the sessions in pg_stat_activity, for a DBA sharing the server.
APPLICATION_NAME = "scep-ca"


def safe_dsn(dsn: str) -> str:
    """``host:port/database`` of a DSN, for messages: never the password it may carry."""
    parts = urlsplit(dsn)
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or "localhost"
    return f"{host}:{port or 5432}{parts.path or '/'}"


# Faults of the environment, each with a phrase that names no host, path or secret (the
# server's own message can name a data file). Order matters: the first match wins.
_UNAVAILABLE: tuple[tuple[type[BaseException], str], ...] = (
    (asyncpg.ConnectionDoesNotExistError, "the connection to the database server was lost"),
    # SQLSTATE class 08 (connection exception).
    (asyncpg.PostgresConnectionError, "cannot connect to the database server"),
    # Class 53: disk full, out of memory, too many connections.
    (asyncpg.InsufficientResourcesError, "the database server is out of resources (disk, memory or connections)"),
    # Class 57: shut down, restarting, not yet accepting connections, statement cancelled.
    (asyncpg.OperatorInterventionError, "the database server is shutting down, restarting or cancelled the statement"),
    # Class 58: I/O error on the server.
    (asyncpg.PostgresSystemError, "the database server reported a system error"),
    # A read-only standby after a failover.
    (asyncpg.ReadOnlySQLTransactionError, "the database is read-only"),
    (ConnectionRefusedError, "connection refused by the database server"),
    (TimeoutError, "the database server did not answer in time"),
    # Reset, unreachable, DNS (asyncpg's "Multiple exceptions" when every address failed).
    (OSError, "cannot connect to the database server"),
)


def unavailable(exc: BaseException, dsn: str) -> StoreUnavailable | None:
    """``exc`` as ``StoreUnavailable`` when it is a fault of the environment, else None."""
    for kind, reason in _UNAVAILABLE:
        if isinstance(exc, kind):
            return StoreUnavailable(reason, f"PostgreSQL at {safe_dsn(dsn)}: {type(exc).__name__}: {exc}")
    return None


@contextmanager
def _faults(dsn: str) -> Iterator[None]:
    """Re-raise faults of the environment as ``StoreUnavailable``; anything else unchanged."""
    try:
        yield
    except Exception as exc:
        fault = unavailable(exc, dsn)
        if fault is None:
            raise
        raise fault from exc


class ConnectionPool:
    """At most ``max_size`` asyncpg connections, handed out LIFO, for one event loop.

    The fast path (an idle connection exists) allocates nothing and never yields to the event
    loop before the query itself. A connection is dropped instead of reused when the call using
    it failed in any way other than a PostgreSQL error reported by the server (cancellation,
    timeout, a lost connection, a protocol error): after those its protocol state is unknown.
    A server-reported error ends the implicit transaction and leaves the connection usable.
    """

    def __init__(self, dsn: str, min_size: int, max_size: int) -> None:
        if max_size < 1 or not 0 <= min_size <= max_size:
            raise ValueError(f"pool sizes must satisfy 0 <= min ({min_size}) <= max ({max_size}), max >= 1")
        self._dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._idle: deque[Any] = deque()
        # Futures of callers waiting for a connection: woken with a connection, or with None
        # meaning "a slot is free, connect yourself".
        self._waiters: deque[asyncio.Future[Any]] = deque()
        self._size = 0  # open connections plus connections being opened
        self._closed = False

    async def open(self) -> None:
        """Open ``min_size`` connections now, so that a bad DSN fails at startup."""
        with _faults(self._dsn):
            for _ in range(self._min_size):
                self._size += 1
                self._idle.append(await self._connect())

    async def _connect(self) -> Any:
        """Open one connection for a slot already counted in ``_size``."""
        try:
            return await asyncpg.connect(self._dsn, server_settings={"application_name": APPLICATION_NAME})
        except BaseException:
            self._size -= 1
            self._free_slot()
            raise

    def _free_slot(self) -> None:
        """A slot became free: let the first live waiter open a connection in it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._size += 1
                waiter.set_result(None)
                return

    async def _acquire_slow(self) -> Any:
        if self._closed:
            raise StoreError("the store is closed")
        if self._size < self._max_size:
            self._size += 1
            return await self._connect()
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            conn = await waiter
        except asyncio.CancelledError:
            # Cancelled after being handed a connection or a slot: pass it on, do not leak it.
            if waiter.done() and not waiter.cancelled():
                handed = waiter.result()
                if handed is None:
                    self._size -= 1
                    self._free_slot()
                else:
                    self._release(handed, reusable=True)
            raise
        return await self._connect() if conn is None else conn

    def _take(self) -> Any:
        """An idle connection that is still open, or None."""
        while self._idle:
            conn = self._idle.pop()
            if not conn.is_closed():
                return conn
            self._size -= 1  # closed while idle (server restart, idle timeout)
        return None

    def _release(self, conn: Any, *, reusable: bool) -> None:
        if self._closed or not reusable or conn.is_closed() or conn.is_in_transaction():
            conn.terminate()
            self._size -= 1
            if not self._closed:
                self._free_slot()
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    async def _run(self, method: str, sql: str, args: tuple[Any, ...]) -> Any:
        """The one path of a single statement: take a connection, run ``conn.<method>``,
        release it (reusable unless the failure leaves its protocol state unknown), and report
        faults of the environment as ``StoreUnavailable``."""
        with _faults(self._dsn):
            conn = self._take() or await self._acquire_slow()
            reusable = False
            try:
                result = await getattr(conn, method)(sql, *args)
                reusable = True
                return result
            except asyncpg.PostgresError:
                reusable = True
                raise
            finally:
                self._release(conn, reusable=reusable)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._run("fetchval", sql, args)

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        return await self._run("fetchrow", sql, args)

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        rows: list[Any] = await self._run("fetch", sql, args)
        return rows

    async def execute(self, sql: str, *args: Any) -> str:
        status: str = await self._run("execute", sql, args)
        return status

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """A connection for several statements (explicit transactions, migrations)."""
        with _faults(self._dsn):
            conn = self._take() or await self._acquire_slow()
            reusable = False
            try:
                yield conn
                reusable = True
            except (asyncpg.PostgresError, StoreError):
                # Raised after the server answered (asyncpg's transaction block has rolled back
                # by the time the error reaches here); _release still drops the connection if a
                # transaction were somehow left open.
                reusable = True
                raise
            finally:
                self._release(conn, reusable=reusable)

    async def close(self, timeout: float) -> None:
        """Close idle connections now (a graceful Terminate), and those in use when released.
        Callers still waiting for a connection get StoreError."""
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(StoreError("the store is closed"))
        idle, self._idle = list(self._idle), deque()
        self._size -= len(idle)
        for conn in idle:
            try:
                async with asyncio.timeout(timeout):
                    await conn.close()
            except (TimeoutError, OSError, asyncpg.InterfaceError):
                conn.terminate()

    @property
    def size(self) -> int:
        """Open connections, idle or in use (for tests and ``info``)."""
        return self._size
