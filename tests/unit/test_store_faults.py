"""The 503 answer to a store fault and the rate limit on its log lines."""

from __future__ import annotations

import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from scep_ca.server.store_faults import RETRY_AFTER_SECONDS, StoreFaults
from scep_ca.services.validators.base import ValidatorBusy
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


async def test_validator_bounds_are_503_with_their_retry_after_and_their_own_log_budget(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def busy(request: web.Request) -> web.StreamResponse:
        raise ValidatorBusy("client address over its rate", 7)

    clock = Clock()
    middleware = StoreFaults(clock, interval=10.0).middleware()
    caplog.set_level(logging.INFO, logger="scep_ca.server.store_faults")
    for _ in range(3):
        resp = await middleware(make_mocked_request("POST", "/scep/x"), busy)
        assert (resp.status, resp.headers["Retry-After"]) == (503, "7")
    # A flood's lines do not use up the budget of a store fault's line.
    resp = await middleware(make_mocked_request("POST", "/scep/x"), _down)
    assert resp.status == 503
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "validator bounds reached, answering 503 to POST /scep/x: client address over its rate",
        "store unavailable, answering 503 to POST /scep/x: builtins.OSError: database or disk is full",
    ]
