"""The challenge URL's lockout under concurrency, unknown user names, the scrypt gate and
what the log shows of a user name (security findings 2 and 8), on a real SQLite store.

Checks are counted from the log: every credential check that runs ends in exactly one
``login failed`` line or a page, so the number of such lines is the number of checks.
CPU time is read with ``time.process_time`` (all threads of this process, so scrypt in the
service's worker threads counts).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import sqlite3
import time
from pathlib import Path

import aiohttp
import pytest

from challenge.credentials import scrypt_hash, scrypt_verify
from challenge.service import ChallengeRequest, ChallengeResponse
from config.model import ChallengeConfig
from tests.integration import test_challenge_web as web_tests
from tests.integration.test_challenge_web import Env, EnvFactory, basic_request, ntlm_request

# The challenge-URL fixtures of test_challenge_web (a service on a real SQLite store behind
# aiohttp's test server), shared rather than copied.
ca = web_tests.ca
credentials = web_tests.credentials
make_env = web_tests.make_env
env = web_tests.env

LOOPBACK = "127.0.0.1"


class Conn:
    """Stands in for a TCP connection (Basic needs none; NTLM's table holds it weakly)."""


def basic_token(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


async def basic(env: Env, user: str, password: str, address: str = LOOPBACK) -> ChallengeResponse:
    request = ChallengeRequest(env.a.id, basic_token(user, password), Conn(), address, client_local=address == LOOPBACK)
    return await env.service.handle(request)


def checks_logged(caplog: pytest.LogCaptureFixture) -> int:
    return sum("login failed" in r.getMessage() for r in caplog.records if r.name == "challenge.service")


def throttle_rows(env_path: Path) -> int:
    conn = sqlite3.connect(env_path)
    try:
        (rows,) = conn.execute("SELECT count(*) FROM auth_throttle").fetchone()
    finally:
        conn.close()
    return int(rows)


async def store_path(env: Env) -> Path:
    return Path((await env.store.info()).extra["path"])


# -- the budget holds under concurrency -----------------------------------------------------


async def test_parallel_wrong_basic_logins_check_at_most_lockout_failures(
    make_env: EnvFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """40 wrong Basic logins at once over 40 connections: at most lockout_failures scrypt checks."""
    caplog.set_level(logging.INFO, logger="challenge.service")
    cfg = ChallengeConfig(lockout_failures=4, basic_check_queue=64)  # the gate admits all 40
    env = await make_env(cfg)
    url = env.client.make_url(env.url())
    headers = {"Authorization": basic_token(env.a.username, "wrong")}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True)) as session:

        async def one() -> int:
            async with session.get(url, headers=headers) as resp:
                await resp.read()
                return resp.status

        statuses = await asyncio.gather(*(one() for _ in range(40)))
    assert checks_logged(caplog) == 4, [r.getMessage() for r in caplog.records]
    assert statuses.count(401) == 4 and set(statuses) == {401, 429}, statuses
    # The window's checks are used up: the next attempt, even with the right password, locks.
    locked = await basic_request(env.client, env.url(), env.a.username, env.a_password)
    assert (locked.status, locked.headers["Retry-After"]) == (429, str(cfg.lockout_seconds))
    assert await env.unused() == 0


async def test_cancelled_check_still_counts(make_env: EnvFactory) -> None:
    """A request cancelled during its check gives its reservation back as a failure, not lost."""
    cfg = ChallengeConfig(lockout_failures=1, lockout_seconds=120)
    env = await make_env(cfg)
    task = asyncio.create_task(basic(env, env.a.username, "wrong"))
    await asyncio.sleep(0.02)  # inside scrypt by now
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Counted as the window's one failure: the next attempt trips the lock (not "busy", 1 s).
    locked = await basic(env, env.a.username, env.a_password)
    assert locked.status == 429, "the second address of the /64 spent the same budget"
    assert dict(locked.headers)["Retry-After"] == "120"


# -- the scrypt gate --------------------------------------------------------------------------


async def test_basic_beyond_the_gate_gets_503_and_counts_nothing(make_env: EnvFactory) -> None:
    cfg = ChallengeConfig(lockout_failures=2, lockout_seconds=120, basic_check_concurrency=1, basic_check_queue=0)
    env = await make_env(cfg)
    # The first takes the one place and runs scrypt in a thread; the second finds no place.
    first, second = await asyncio.gather(basic(env, env.a.username, "wrong"), basic(env, env.a.username, "wrong"))
    assert first.status == 401
    assert (second.status, dict(second.headers)["Retry-After"], second.body) == (
        503,
        "1",
        b"503 Service Unavailable\n",
    )
    # The 503 reserved nothing: one failure so far, so one more check is allowed.
    assert (await basic(env, env.a.username, "wrong")).status == 401
    assert (await basic(env, env.a.username, env.a_password)).status == 429
    assert await env.unused() == 0


# -- unknown user names --------------------------------------------------------------------


def _cpu_of(seconds_before: float) -> float:
    return time.process_time() - seconds_before


async def test_unknown_user_costs_a_scrypt_check(env: Env) -> None:
    """Basic with an unknown user name takes the same work as a wrong password (no timing oracle)."""
    stored = scrypt_hash("x")
    start = time.process_time()
    scrypt_verify("y", stored)
    one_check = _cpu_of(start)
    start = time.process_time()
    assert (await basic(env, "no-such-user", "wrong")).status == 401
    unknown = _cpu_of(start)
    start = time.process_time()
    assert (await basic(env, env.a.username, "wrong")).status == 401
    known = _cpu_of(start)
    assert unknown >= 0.6 * one_check and unknown >= 0.6 * known, (unknown, known, one_check)


async def test_random_user_names_share_one_row_per_address(
    make_env: EnvFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """1,000 random user names from one address: lockout_failures checks, one throttle row, and
    the real user from that address is not locked by them."""
    caplog.set_level(logging.INFO, logger="challenge.service")
    env = await make_env(ChallengeConfig(lockout_failures=3, lockout_seconds=120), a_basic=True)
    statuses = [(await basic(env, secrets.token_hex(8), "pw", "192.0.2.9")).status for _ in range(1000)]
    assert statuses[:3] == [401] * 3 and set(statuses[3:]) == {429}
    assert checks_logged(caplog) == 3
    assert throttle_rows(await store_path(env)) == 1
    assert (await basic(env, env.a.username, env.a_password, "192.0.2.9")).status == 200
    assert (await basic(env, "one-more", "pw", LOOPBACK)).status == 401, "another address has its own budget"
    assert throttle_rows(await store_path(env)) == 2


async def test_ipv6_addresses_in_one_64_share_a_budget(make_env: EnvFactory) -> None:
    """Two addresses of one /64 spend one budget, for the integration's user and for unknown
    names; an address in the next /64 has its own."""
    env = await make_env(ChallengeConfig(lockout_failures=2, lockout_seconds=120), a_basic=True)
    first, second, other = "2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:fffe", "2001:db8:1:3::1"
    assert (await basic(env, env.a.username, "wrong", first)).status == 401
    assert (await basic(env, env.a.username, "wrong", second)).status == 401
    locked = await basic(env, env.a.username, env.a_password, first)
    assert locked.status == 429, "the second address of the /64 spent the same budget"
    assert dict(locked.headers)["Retry-After"] == "120"
    assert (await basic(env, env.a.username, env.a_password, second)).status == 429
    assert (await basic(env, env.a.username, env.a_password, other)).status == 200
    rows = throttle_rows(await store_path(env))
    for address in (first, second):
        assert (await basic(env, "nobody", "pw", address)).status == 401
    assert (await basic(env, "somebody", "pw", "2001:db8:1:2::77")).status == 429
    assert throttle_rows(await store_path(env)) == rows + 1, "one row for the /64's unknown names"


async def test_unknown_user_names_over_ntlm_share_the_address_budget(make_env: EnvFactory) -> None:
    env = await make_env(ChallengeConfig(lockout_failures=2, lockout_seconds=120))
    for name in ("nobody", "NoBody2"):
        assert (await ntlm_request(env.client, env.url(), name, "pw")).status == 401
    tripped = await ntlm_request(env.client, env.url(), "someone-else", "pw")
    assert (tripped.status, tripped.headers["Retry-After"]) == (429, "120")
    # Basic with yet another unknown name from the same address: the same key, locked.
    assert (await basic_request(env.client, env.url(), "third", "pw")).status == 429
    assert (await ntlm_request(env.client, env.url(), env.a.username, env.a_password)).status == 200


# -- what the log shows of a user name ------------------------------------------------------


async def test_a_password_typed_as_user_name_is_not_logged(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    typed = "Tr0ub4dor&3-correct-horse"
    assert (await basic_request(env.client, env.url(), typed, "x")).status == 401
    assert (await basic_request(env.client, env.url(), "EXAMPLE\\" + typed, "x")).status == 401
    assert (await ntlm_request(env.client, env.url(), typed, "x")).status == 401
    assert (await basic_request(env.client, env.url(), env.a.username, "wrong")).status == 401
    text = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("spnego"))
    assert typed not in text and typed.lower() not in text and typed.upper() not in text
    shown = [
        r.getMessage()
        for r in caplog.records
        if r.name == "challenge.service" and f"len={len(typed)} " in r.getMessage()
    ]
    assert len(shown) == 3 and len({m.split("hmac:")[1][:8] for m in shown}) == 1, shown
    assert f"user={env.a.username} " in text  # ours are logged as they are
