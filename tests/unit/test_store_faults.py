"""The 503 answer to a store fault and the rate limit on its log lines."""

from __future__ import annotations

import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from scep_ca.server.store_faults import RETRY_AFTER_SECONDS, StoreFaults
from store.base import StoreUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def _down(request: web.Request) -> web.StreamResponse:
    try:
        raise OSError("disk gone")
    except OSError as exc:
        raise StoreUnavailable("database or disk is full") from exc


async def test_faults_are_503_and_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    middleware = StoreFaults(clock, interval=10.0).middleware()
    caplog.set_level(logging.INFO, logger="scep_ca.server.store_faults")
    for at in (0.0, 1.0, 9.9, 10.0, 10.5):
        clock.now = 100.0 + at
        resp = await middleware(make_mocked_request("POST", "/scep/x"), _down)
        assert resp.status == 503 and resp.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "store unavailable, answering 503 to POST /scep/x: builtins.OSError: database or disk is full",
        "store unavailable, answering 503 to POST /scep/x: builtins.OSError: database or disk is full"
        " (2 more since the last report)",
    ]
    assert all(r.exc_info is None for r in caplog.records)


async def test_other_errors_pass_through() -> None:
    async def broken(request: web.Request) -> web.StreamResponse:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        await StoreFaults().middleware()(make_mocked_request("GET", "/crl/x.crl"), broken)
