"""A bound on concurrent expensive work in one process, with a bounded queue in front.

The challenge URL's Basic check is scrypt (``challenge.credentials``: ~0.1 s of CPU and
32 MiB each). The lockout bounds the checks per key, but many keys (addresses, integrations)
at once could still start any number, each on its own thread. ``WorkGate`` lets ``limit``
run at once and ``queue`` more wait; a request beyond that is refused at once (the caller
answers 503 with ``Retry-After``) instead of joining an unbounded queue whose waiters would
time out anyway while holding connections and memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class WorkGate:
    """At most ``limit`` holders of ``slot()`` at once, and at most ``limit + queue`` admitted."""

    def __init__(self, limit: int, queue: int) -> None:
        if limit < 1 or queue < 0:
            raise ValueError("limit must be at least 1 and queue at least 0")
        self._slots = asyncio.Semaphore(limit)
        self._capacity = limit + queue
        self._admitted = 0

    @property
    def admitted(self) -> int:
        return self._admitted

    def admit(self) -> bool:
        """Take a place (running or waiting); False when all are taken. Pair with ``leave``."""
        if self._admitted >= self._capacity:
            return False
        self._admitted += 1
        return True

    def leave(self) -> None:
        self._admitted -= 1

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Run the body as one of the ``limit`` (waits while they are all taken)."""
        async with self._slots:
            yield
