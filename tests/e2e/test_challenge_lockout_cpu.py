"""Security finding 2 end to end: 40 wrong Basic logins at once to one integration of a real
``scep-ca serve`` cost the server at most about ``lockout_failures`` scrypt checks of CPU.

The server's CPU time is read from /proc (utime + stime of every process in the server's
session: the main process and its workers, every thread included) around the burst, less
the CPU of a second burst of 40 that does the same HTTP and store work without any check (the
key is locked by then), and compared with the CPU time of one scrypt check measured here with
the server's own ``scrypt_verify`` and parameters. Before the attempt was reserved in the store ahead of the
check, all 40 were checked (about 40 checks of CPU). Basic over plain HTTP is allowed for
loopback clients by default, and the test talks to 127.0.0.1.

Two deployments: SQLite with one process, and PostgreSQL with two worker processes (the
budget is shared through the database, so two workers do not double it).
"""

from __future__ import annotations

import asyncio
import base64
import os
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from challenge.credentials import scrypt_hash, scrypt_verify
from tests.e2e import test_postgres_two_instances as pg_tests
from tests.e2e.conftest import ScepCaServer

LOCKOUT_FAILURES = 10
PARALLEL = 40
MARGIN_CHECKS = 3

database = pg_tests.database  # a fresh PostgreSQL database for the test (fixture)


def session_cpu_seconds(session_id: int) -> float:
    """utime + stime of every live process in the session (the server and its workers)."""
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # Fields after the command name, which is in parentheses and may hold spaces.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == session_id:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def check_cpu_samples(rounds: int = 3) -> list[float]:
    """CPU seconds of one scrypt check, as the server runs them: two at once on two threads
    (``basic_check_concurrency``'s default), which costs a little more each than one alone."""
    stored = scrypt_hash("reference")
    samples = []
    for _ in range(rounds):
        threads = [threading.Thread(target=scrypt_verify, args=("wrong", stored)) for _ in range(2)]
        start = time.process_time()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        samples.append((time.process_time() - start) / 2)
    return samples


async def burst(url: str, user: str, password: str) -> list[int]:
    headers = {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")}
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def one() -> int:
            async with session.get(url, headers=headers) as resp:
                await resp.read()
                return resp.status

        return await asyncio.gather(*(one() for _ in range(PARALLEL)))


def check_burst(server: ScepCaServer) -> None:
    integration = server.create_integration("burst")
    url = integration["challenge_url"]
    samples = check_cpu_samples()
    # Warm-up: as many requests at once to an unknown integration (404 after one store read)
    # open the store connections a burst needs, which costs CPU once per connection.
    warm = asyncio.run(burst(url.replace(f"/{integration['id']}/", "/nosuchintegration/"), "x", "y"))
    assert set(warm) == {404}, warm
    time.sleep(0.5)  # let the server settle after start-up and the CLI's writes
    start = session_cpu_seconds(server.pid)
    statuses = asyncio.run(burst(url, integration["username"], "wrong-password"))
    middle = session_cpu_seconds(server.pid)
    # The window's checks are used up: the right password now gets 429 too. This second burst
    # does the same HTTP and store work without a single check: its CPU is the overhead.
    locked = asyncio.run(burst(url, integration["username"], integration["password"]))
    end = session_cpu_seconds(server.pid)
    # Sampled before and after the bursts: the machine's load drifts.
    one_check = statistics.median(samples + check_cpu_samples())
    assert set(statuses) <= {401, 429, 503} and 0 < statuses.count(401) <= LOCKOUT_FAILURES, statuses
    assert set(locked) <= {429, 503} and 429 in locked, locked
    spent, overhead = middle - start, end - middle
    budget = (LOCKOUT_FAILURES + MARGIN_CHECKS) * one_check
    assert spent - overhead <= budget, (
        f"server CPU {spent:.2f} s for {PARALLEL} wrong logins, {overhead:.2f} s for {PARALLEL} locked ones; "
        f"one scrypt check {one_check:.3f} s, allowed {budget:.2f} s ({LOCKOUT_FAILURES} + {MARGIN_CHECKS} checks); "
        f"statuses {statuses}"
    )


@pytest.fixture
def challenge_settings() -> dict[str, object]:
    return {"challenge": {"lockout_failures": LOCKOUT_FAILURES, "lockout_seconds": 900}}


def test_parallel_wrong_basic_logins_sqlite(tmp_path: Path, challenge_settings: dict[str, object]) -> None:
    with ScepCaServer(tmp_path / "server", challenge_settings) as server:
        check_burst(server)


@pytest.fixture
def postgres_two_workers(
    tmp_path: Path, database: str, challenge_settings: dict[str, object]
) -> Iterator[ScepCaServer]:
    config = {**challenge_settings, "store": {"dsn": database}, "server": {"workers": 2}}
    server = ScepCaServer(tmp_path / "server", config).start()
    try:
        yield server
    finally:
        server.stop()


def test_parallel_wrong_basic_logins_postgres_two_workers(postgres_two_workers: ScepCaServer) -> None:
    check_burst(postgres_two_workers)
