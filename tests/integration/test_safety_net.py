"""The catch-all middleware (scep_ca.server.safety_net): an unhandled exception is a bare 500, logged by type."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from config import load_config
from scep_ca.pki.ca import CAIdentity
from scep_ca.server.app import build_app
from store.factory import open_store

FORGED = "client text\n2026-12-01 00:00:00 INFO forged line"


async def _boom(request: web.Request) -> web.Response:
    raise RuntimeError(FORGED)


async def _not_found(request: web.Request) -> web.Response:
    raise web.HTTPNotFound(text="deliberate\n")


async def test_unhandled_exception_is_a_bare_500_logged_by_type(
    tmp_path: Path,
    shared_ca: tuple[Path, CAIdentity],
    aiohttp_client: Callable[..., Awaitable[TestClient]],  # type: ignore[type-arg]
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = load_config(None, {}, {"data_dir": str(tmp_path)})
    app = build_app(config, shared_ca[1], open_store(config))
    app.router.add_get("/test/boom/{anything}", _boom)
    app.router.add_get("/test/deliberate", _not_found)
    client = await aiohttp_client(app)
    caplog.set_level("DEBUG")

    resp = await client.get("/test/boom/attacker-path")
    assert resp.status == 500
    assert await resp.text() == "internal server error\n"
    assert not [r for r in caplog.records if r.exc_info], "a traceback reached the log"
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    assert errors[0].startswith("unhandled RuntimeError at ")
    assert "test_safety_net.py" in errors[0] and "GET /test/boom/{anything}" in errors[0]
    assert "forged" not in errors[0] and "attacker-path" not in errors[0]

    # Deliberate HTTP answers pass through untouched.
    resp = await client.get("/test/deliberate")
    assert (resp.status, await resp.text()) == (404, "deliberate\n")
