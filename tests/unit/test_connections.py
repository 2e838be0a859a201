"""scep_ca.server.connections' rate-limited accept-error log and scep_ca.server.fdlimit's connection cap."""

from __future__ import annotations

import asyncio
import errno
import logging
from typing import Any

import pytest

from scep_ca.server.connections import AcceptErrorLog, RateLimit
from scep_ca.server.fdlimit import connection_cap, fd_reserve


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_limit_counts_what_it_swallows() -> None:
    clock = Clock()
    limit = RateLimit(1.0, clock)
    assert limit.ready() and limit.reset() == 0
    assert not limit.ready() and not limit.ready()
    clock.now += 0.99
    assert not limit.ready()
    clock.now += 0.01
    assert limit.ready() and limit.reset() == 3


def test_accept_errors_logged_once_a_second_without_traceback(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.new_event_loop()
    try:
        clock = Clock()
        handler = AcceptErrorLog(loop, clock)
        handler.install()
        assert loop.get_exception_handler() is handler
        caplog.set_level(logging.ERROR, "scep_ca.server.connections")
        error = OSError(errno.EMFILE, "Too many open files")
        for _ in range(5000):
            loop.call_exception_handler({"message": "socket.accept() out of system resource", "exception": error})
        clock.now += 1.0
        loop.call_exception_handler({"message": "socket.accept() out of system resource", "exception": error})
        records = [r for r in caplog.records if r.name == "scep_ca.server.connections"]
        assert len(records) == 2
        assert all(r.exc_info is None for r in records)
        assert "Too many open files" in records[0].getMessage()
        assert "(4999 more in the last second)" in records[1].getMessage()
        handler.uninstall()
        assert loop.get_exception_handler() is None
    finally:
        loop.close()


def test_other_loop_errors_go_to_the_previous_handler() -> None:
    loop = asyncio.new_event_loop()
    try:
        seen: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: seen.append(context))
        AcceptErrorLog(loop, Clock()).install()
        other = {"message": "boom", "exception": RuntimeError("x")}
        refused = {"message": "accept", "exception": OSError(errno.ECONNREFUSED, "refused")}
        loop.call_exception_handler(other)
        loop.call_exception_handler(refused)
        assert seen == [other, refused]
    finally:
        loop.close()


@pytest.mark.parametrize(
    ("configured", "fd_limit", "cap"),
    [(0, 1024, 1024 - 192), (0, 1_048_576, 1_048_576 - 192), (0, 64, 32), (0, 1, 1), (500, 64, 500), (10, 1024, 10)],
)
def test_connection_cap(configured: int, fd_limit: int, cap: int) -> None:
    assert connection_cap(configured, fd_limit) == cap
    assert fd_reserve(fd_limit) <= fd_limit // 2
