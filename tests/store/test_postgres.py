"""PostgreSQL-specific behaviour: cross-connection races, lock ordering, migrations, timings.

Two ``PostgresStore`` objects on one database, each with its own pool, stand in for two server
processes or hosts: their sessions share nothing but the database. Every test creates and drops
its own database (``tests/store/conftest.py``); an unreachable server fails them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from config.model import Config, StoreConfig
from scep_ca.cli import db_cmds
from scep_ca.cli.context import CliError
from scep_ca.pki.records import CertificateRecord, CertStatus
from store import schema_sqlite
from store.base import HOLD, CertificateFilter, ChallengeAdd, ChallengeRejected, IntegrationNotFound, StoreError
from store.columns import CERTIFICATES, RowMapper
from store.factory import open_store
from store.pg_pool import ConnectionPool
from store.postgres import CERTIFICATE_COLUMNS, PostgresConverters, PostgresStore
from store.postgres_console import _day as postgres_console_day
from store.schema_postgres import LATEST_VERSION, LOCK_CLASS_INTEGRATION, MIGRATIONS, MIGRATIONS_TABLE, upgrade
from tests.store.conftest import PostgresHarness, temporary_database
from tests.store.test_contract import ISSUER, NOW, add, certificate, integration, issuance, pending

pytestmark = pytest.mark.postgres


@pytest.fixture
async def dsn() -> AsyncIterator[str]:
    """An empty database (no migrations applied yet)."""
    async with temporary_database() as value:
        yield value


async def opened(dsn: str, pool_min: int = 1, pool_max: int = 10) -> PostgresStore:
    store = PostgresStore(dsn, pool_min, pool_max)
    await store.open()
    return store


async def raw(dsn: str) -> Any:
    return await asyncpg.connect(dsn)


# -- migrations ------------------------------------------------------------------------


async def test_concurrent_opens_apply_each_migration_once(dsn: str) -> None:
    stores = [PostgresStore(dsn, 1, 2) for _ in range(6)]
    try:
        await asyncio.gather(*(s.open() for s in stores), upgrade(dsn), upgrade(dsn))
        conn = await raw(dsn)
        try:
            rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        finally:
            await conn.close()
        assert [r[0] for r in rows] == [m.version for m in MIGRATIONS]
        for store in stores:
            assert (await store.info()).schema_version == LATEST_VERSION
    finally:
        for store in stores:
            await store.close()


async def test_upgrade_reports_applied_versions(dsn: str) -> None:
    assert await upgrade(dsn) == [m.version for m in MIGRATIONS]
    assert await upgrade(dsn) == []
    store = await opened(dsn)
    try:
        info = await store.info()
        assert (info.backend, info.schema_version) == ("postgresql", LATEST_VERSION)
        assert info.extra["database"] == urlsplit(dsn).path.lstrip("/")
        assert "password" not in repr(info) and dsn not in repr(info)
    finally:
        await store.close()


async def test_newer_schema_is_refused(dsn: str) -> None:
    await upgrade(dsn)
    conn = await raw(dsn)
    try:
        await conn.execute("INSERT INTO schema_migrations (version) VALUES (99)")
    finally:
        await conn.close()
    with pytest.raises(StoreError, match="newer"):
        await PostgresStore(dsn, 1, 2).open()
    with pytest.raises(StoreError, match="newer"):
        await upgrade(dsn)


async def test_use_before_open_is_an_error(dsn: str) -> None:
    with pytest.raises(StoreError, match="not open"):
        await PostgresStore(dsn, 1, 2).revocation_epoch()


async def test_naive_times_are_refused_everywhere(dsn: str) -> None:
    store = await opened(dsn)
    naive = NOW.replace(tzinfo=None)
    try:
        with pytest.raises(ValueError):
            await store.create_integration(integration(created_at=naive))
        await store.create_integration(integration())
        with pytest.raises(ValueError):
            await add(store, "c1", now=naive)
        with pytest.raises(ValueError):
            await store.delete_integration("int1", naive)
        with pytest.raises(ValueError):
            await store.record_issuance(issuance(certificate("01", not_after=naive), None))
        assert await store.get_integration("int1") is not None
        assert await store.count_certificates() == 0
    finally:
        await store.close()


def test_factory_builds_postgres_store_for_a_dsn(tmp_path: Any) -> None:
    config = Config(data_dir=tmp_path / "unused", store=StoreConfig(dsn="postgresql://h/db", pool_min=2, pool_max=7))
    store = open_store(config)
    assert isinstance(store, PostgresStore)
    assert (store._dsn, store._pool_min, store._pool_max) == ("postgresql://h/db", 2, 7)
    assert not (tmp_path / "unused").exists()  # no SQLite data directory for a PostgreSQL store


# -- challenge consumption across "processes" -------------------------------------------


async def test_two_stores_race_on_one_challenge(dsn: str) -> None:
    """50 tasks on each of two stores (20 sessions in all) present the same challenge,
    round after round: exactly one issuance per round, every other one ChallengeRejected."""
    first, second = await opened(dsn), await opened(dsn)
    rounds, per_store = 10, 50
    try:
        await first.create_integration(integration("int1"))
        for r in range(rounds):
            assert await add(first, f"round-{r}")

            async def attempt(store: PostgresStore, n: int, r: int = r) -> bool:
                try:
                    await store.record_issuance(issuance(certificate(f"{(r << 12) | (n + 1):x}"), f"round-{r}"))
                except ChallengeRejected:
                    return False
                return True

            results = await asyncio.gather(
                *(attempt(first, n) for n in range(per_store)),
                *(attempt(second, per_store + n) for n in range(per_store)),
            )
            assert results.count(True) == 1, f"round {r}"
        assert await second.count_certificates() == rounds
        assert await first.count_unused_challenges("int1", NOW) == 0
    finally:
        await first.close()
        await second.close()


async def test_challenge_lock_waits_and_follows_the_holders_outcome(dsn: str) -> None:
    """Deterministic version of the race: a session holding the challenge row's lock makes
    record_issuance wait; if the holder rolls back, the waiter consumes the challenge, if the
    holder consumed it and commits, the waiter is rejected (no SKIP LOCKED false rejection)."""
    store = await opened(dsn)
    holder = await raw(dsn)
    lock = "SELECT id FROM challenges WHERE challenge_hash = $1 FOR UPDATE"
    try:
        await store.create_integration(integration("int1"))
        await add(store, "c1")
        await add(store, "c2")

        tx = holder.transaction()
        await tx.start()
        await holder.execute(lock, "c1")
        waiter = asyncio.create_task(store.record_issuance(issuance(certificate("01"), "c1")))
        await asyncio.sleep(0.3)
        assert not waiter.done()  # blocked on the row lock
        await tx.rollback()
        await waiter  # the row was still unused: ours
        assert await store.challenge_usable("int1", "c1", NOW) is False

        tx = holder.transaction()
        await tx.start()
        await holder.execute(lock, "c2")
        await holder.execute("UPDATE challenges SET used_at = $1 WHERE challenge_hash = 'c2'", NOW)
        waiter = asyncio.create_task(store.record_issuance(issuance(certificate("02"), "c2")))
        await asyncio.sleep(0.3)
        assert not waiter.done()
        await tx.commit()
        with pytest.raises(ChallengeRejected):
            await waiter  # re-checked the committed row: used
        assert await store.get_certificate("02") is None
    finally:
        await holder.close()
        await store.close()


# -- issuance versus deletion ----------------------------------------------------------

# What the store's writers take first (see store/postgres.py), for raw sessions that play an
# in-flight issuance or delete stopped before its commit.
SHARED = f"SELECT pg_advisory_xact_lock_shared({LOCK_CLASS_INTEGRATION}, hashtext($1))"
EXCLUSIVE = f"SELECT pg_advisory_xact_lock({LOCK_CLASS_INTEGRATION}, hashtext($1))"
BLOCKED_S = 0.3  # long enough for an unblocked call to finish on a loaded machine
DEADLINE_S = 60  # a regression fails the test instead of hanging the suite


async def test_delete_waits_for_an_in_flight_issuance_and_revokes_it(dsn: str) -> None:
    store = await opened(dsn)
    issuer = await raw(dsn)
    try:
        await store.create_integration(integration("int1"))
        # What scep_record_issuance does, stopped before its commit.
        tx = issuer.transaction()
        await tx.start()
        await issuer.execute(SHARED, "int1")
        await issuer.execute(
            "INSERT INTO certificates (serial, integration_id, issuer_fingerprint, subject, not_before, not_after, "
            "der, transaction_id, pubkey_sha256, message_type, status, created_at) "
            "VALUES ('aa', 'int1', $1, 'CN=x', $2, $2, '\\x30'::bytea, 'T', 'p', 19, 'issued', $2)",
            "a" * 64,
            NOW,
        )
        deleting = asyncio.create_task(store.delete_integration("int1", NOW))
        await asyncio.sleep(BLOCKED_S)
        assert not deleting.done()  # the shared lock holds the delete off
        await tx.commit()
        result = await asyncio.wait_for(deleting, DEADLINE_S)
        assert result.revoked == 1  # the delete's revoke saw the certificate committed before it
        cert = await store.get_certificate("aa")
        assert cert is not None and cert.status is CertStatus.REVOKED
    finally:
        await issuer.close()
        await store.close()


async def test_issuance_queued_behind_a_delete_sees_the_deletion(dsn: str) -> None:
    store = await opened(dsn)
    deleter = await raw(dsn)
    try:
        await store.create_integration(integration("int1"))
        await add(store, "c1")
        tx = deleter.transaction()
        await tx.start()
        await deleter.execute(EXCLUSIVE, "int1")
        await deleter.execute("UPDATE integrations SET deleted_at = $1 WHERE id = 'int1'", NOW)
        issuing = asyncio.create_task(store.record_issuance(issuance(certificate("01"), "c1")))
        adding = asyncio.create_task(add(store, "c2"))
        queued = asyncio.create_task(store.record_pending(pending(), None, NOW))
        await asyncio.sleep(BLOCKED_S)
        assert not issuing.done() and not adding.done() and not queued.done()
        await tx.commit()
        for task in (issuing, adding, queued):
            with pytest.raises(IntegrationNotFound):
                await asyncio.wait_for(task, DEADLINE_S)
        assert await store.count_certificates() == 0
    finally:
        await deleter.close()
        await store.close()


async def test_a_waiting_delete_is_not_starved_by_new_issuances(dsn: str) -> None:
    """New issuances queue behind a waiting delete instead of overtaking it: the delete waits
    only for the issuances that were in flight when it arrived. (With FOR SHARE row locks a
    new share lock is granted past the waiting UPDATE, and steady traffic starves it.)"""
    store = await opened(dsn)
    issuer = await raw(dsn)
    try:
        await store.create_integration(integration("int1"))
        tx = issuer.transaction()
        await tx.start()
        await issuer.execute(SHARED, "int1")  # an issuance in flight
        deleting = asyncio.create_task(store.delete_integration("int1", NOW))
        await asyncio.sleep(BLOCKED_S)
        late = asyncio.create_task(store.record_issuance(issuance(certificate("01"), None)))
        await asyncio.sleep(BLOCKED_S)
        assert not deleting.done() and not late.done()  # the late one did not overtake the delete
        await tx.commit()
        assert (await asyncio.wait_for(deleting, DEADLINE_S)).revoked == 0
        with pytest.raises(IntegrationNotFound):
            await asyncio.wait_for(late, DEADLINE_S)
    finally:
        await issuer.close()
        await store.close()


async def test_issuance_racing_delete_keeps_the_invariant(dsn: str) -> None:
    """Issuers on two stores hammer an integration (with and without challenges, adding
    challenges as they go) while the second store deletes it. Once the delete returns, every
    certificate of the integration is revoked, none is added later, no challenge survives."""
    first, second = await opened(dsn), await opened(dsn)
    conn = await raw(dsn)
    try:
        for trial in range(5):
            iid = f"race{trial}"
            await first.create_integration(integration(iid))
            deleted = asyncio.Event()
            late_successes: list[str] = []

            async def issuer(
                store: PostgresStore,
                worker: int,
                iid: str = iid,
                base: int = (trial + 1) << 24,
                deleted: asyncio.Event = deleted,
                late_successes: list[str] = late_successes,
            ) -> None:
                for n in range(1 << 14):
                    serial = f"{base | (worker << 14) | n:x}"
                    began_after_delete = deleted.is_set()
                    challenge = f"{serial}-c" if n % 2 else None
                    try:
                        if challenge is not None:
                            await store.add_challenge(uncapped_challenge(iid, challenge))
                        await store.record_issuance(issuance(certificate(serial, iid), challenge))
                    except IntegrationNotFound:
                        return
                    if began_after_delete:
                        late_successes.append(serial)
                raise AssertionError("the delete never took effect")

            workers = [asyncio.create_task(issuer((first, second)[w % 2], w)) for w in range(16)]
            await asyncio.sleep(0.2 + 0.1 * trial)
            started = time.perf_counter()
            result = await asyncio.wait_for(second.delete_integration(iid, NOW), DEADLINE_S)
            elapsed = time.perf_counter() - started
            deleted.set()
            # Checked before the issuers stop: nothing issued is left unrevoked at this instant.
            assert await first.list_certificates(CertificateFilter(integration_id=iid, status=CertStatus.ISSUED)) == []
            await asyncio.wait_for(asyncio.gather(*workers), DEADLINE_S)
            issued = await first.count_certificates(iid)
            print(f"\ntrial {trial}: {issued} issued before the delete; delete took {elapsed * 1000:.1f} ms under load")
            assert late_successes == []
            assert issued > 0
            assert result.revoked == issued
            assert await first.list_certificates(CertificateFilter(integration_id=iid, status=CertStatus.ISSUED)) == []
            assert await conn.fetchval("SELECT count(*) FROM challenges WHERE integration_id = $1", iid) == 0
    finally:
        await conn.close()
        await first.close()
        await second.close()


def uncapped_challenge(integration_id: str, challenge: str) -> ChallengeAdd:
    return ChallengeAdd(
        integration_id=integration_id,
        challenge_hash=challenge,
        now=NOW,
        expires_at=NOW + timedelta(minutes=60),
        max_unused=1_000_000,
    )


async def test_delete_100k_does_not_stall_other_integrations(dsn: str) -> None:
    """Deleting a 100,000-certificate integration locks only that integration's rows: issuance
    for another integration carries on while the delete runs."""
    harness = PostgresHarness(dsn)
    await harness.store.open()
    store = harness.store
    try:
        await store.create_integration(integration("big"))
        await store.create_integration(integration("other"))
        count = 100_000
        await harness.bulk_insert_certificates(
            [certificate(f"{n + 0x100000:x}", "big", transaction_id=f"T{n}") for n in range(count)]
        )
        done = asyncio.Event()
        completions: list[float] = []

        async def other_issuer() -> None:
            n = 0
            while not done.is_set():
                n += 1
                await store.record_issuance(issuance(certificate(f"{0xF000000 + n:x}", "other"), None))
                completions.append(time.perf_counter())

        background = asyncio.create_task(other_issuer())
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        result = await store.delete_integration("big", NOW)
        finished = time.perf_counter()
        done.set()
        await background
        during = [t for t in completions if started < t < finished]
        print(
            f"\ndelete_integration revoked {result.revoked} certificates in {finished - started:.3f} s; "
            f"{len(during)} issuances for another integration completed meanwhile"
        )
        assert result.revoked == count
        assert finished - started < 10
        assert during, "issuance for another integration was blocked by the delete"
    finally:
        await harness.close()


# -- the connection pool ---------------------------------------------------------------


async def backends(conn: Any, dsn: str) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'scep-ca'",
            urlsplit(dsn).path.lstrip("/"),
        )
    )


async def test_pool_stays_within_max_and_serves_every_caller(dsn: str) -> None:
    pool = ConnectionPool(dsn, 0, 3)
    observer = await raw(dsn)
    try:
        await pool.open()
        assert pool.size == 0
        results = await asyncio.gather(*(pool.fetchval("SELECT $1::int FROM pg_sleep(0.01)", n) for n in range(40)))
        assert results == list(range(40))
        assert pool.size == 3
        assert await backends(observer, dsn) == 3
    finally:
        await pool.close(5)
        await observer.close()


async def test_pool_replaces_connections_the_server_dropped(dsn: str) -> None:
    pool = ConnectionPool(dsn, 2, 2)
    observer = await raw(dsn)
    try:
        await pool.open()
        await observer.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND application_name = 'scep-ca'",
            urlsplit(dsn).path.lstrip("/"),
        )
        await asyncio.sleep(0.2)  # the client sees the EOF
        assert await pool.fetchval("SELECT 1") == 1
        assert pool.size == 1  # the two dead ones were dropped, one new one opened
    finally:
        await pool.close(5)
        await observer.close()


async def test_pool_cancellation_leaks_nothing(dsn: str) -> None:
    pool = ConnectionPool(dsn, 1, 1)
    try:
        await pool.open()
        busy = asyncio.create_task(pool.fetchval("SELECT pg_sleep(0.5)"))
        await asyncio.sleep(0.1)
        waiting = asyncio.create_task(pool.fetchval("SELECT 1"))
        await asyncio.sleep(0.1)
        waiting.cancel()  # cancelled while queued for the only connection
        await busy
        assert pool.size == 1 and await pool.fetchval("SELECT 2") == 2
        running = asyncio.create_task(pool.fetchval("SELECT pg_sleep(5)"))
        await asyncio.sleep(0.2)
        running.cancel()  # cancelled mid-query: that connection's state is unknown, it is dropped
        with pytest.raises(asyncio.CancelledError):
            await running
        assert pool.size == 0
        assert await asyncio.wait_for(pool.fetchval("SELECT 3"), 5) == 3
        assert pool.size == 1
    finally:
        await pool.close(5)


async def test_pool_keeps_connections_after_server_errors(dsn: str) -> None:
    pool = ConnectionPool(dsn, 1, 1)
    observer = await raw(dsn)
    try:
        await pool.open()
        pid = await pool.fetchval("SELECT pg_backend_pid()")
        with pytest.raises(asyncpg.PostgresError):
            await pool.fetchval("SELECT 1/0")
        with pytest.raises(asyncpg.PostgresError):
            async with pool.connection() as conn, conn.transaction():
                await conn.execute("CREATE TABLE t (x int)")
                await conn.execute("SELECT 1/0")
        assert await pool.fetchval("SELECT pg_backend_pid()") == pid  # same session, reused
        assert await pool.fetchval("SELECT to_regclass('t') IS NULL")  # the transaction rolled back
    finally:
        await pool.close(5)
        await observer.close()


async def test_pool_close_refuses_waiters_and_drops_busy_connections(dsn: str) -> None:
    pool = ConnectionPool(dsn, 1, 1)
    await pool.open()
    busy = asyncio.create_task(pool.fetchval("SELECT pg_sleep(0.3)"))
    await asyncio.sleep(0.1)
    waiting = asyncio.create_task(pool.fetchval("SELECT 1"))
    await asyncio.sleep(0.05)
    await pool.close(5)
    with pytest.raises(StoreError, match="closed"):
        await waiting
    await busy  # finishes; its connection is then closed, not returned
    assert pool.size == 0


# -- round trips and latency -----------------------------------------------------------


class RoundTripCounter:
    """A TCP relay between the store and PostgreSQL that counts request/response turns: each
    burst of client bytes that follows a server reply (or opens the connection) is one round
    trip. It measures what goes over the wire, whatever the client library does."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.round_trips = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        replied = [True]

        async def client_to_server() -> None:
            while data := await reader.read(65536):
                if replied[0]:
                    self.round_trips += 1
                    replied[0] = False
                up_writer.write(data)
                await up_writer.drain()
            up_writer.close()

        async def server_to_client() -> None:
            while data := await up_reader.read(65536):
                replied[0] = True
                writer.write(data)
                await writer.drain()
            writer.close()

        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            await asyncio.gather(client_to_server(), server_to_client())


async def test_hot_paths_are_one_round_trip_each(dsn: str) -> None:
    parts = urlsplit(dsn)
    counter = RoundTripCounter(parts.hostname or "127.0.0.1", parts.port or 5432)
    port = await counter.start()
    proxied = parts._replace(netloc=f"{parts.username}@127.0.0.1:{port}").geturl()
    store = await opened(proxied, 1, 1)  # one connection: every statement is prepared once
    try:
        await store.create_integration(integration("int1"))
        for n in range(3):  # warm-up: asyncpg prepares each statement on first use
            await add(store, f"w{n}")
            await store.record_issuance(issuance(certificate(f"{0xFFF0 + n:x}"), f"w{n}"))
            await store.get_integration("int1")
            await store.get_transaction("int1", "nope")
            await store.challenge_usable("int1", "x", NOW)
        calls = 100
        trips: dict[str, int] = {}
        for n in range(calls):
            # In enrollment order, so that the challenge cache never fills up.
            for name, op in (
                ("add_challenge", lambda n=n: add(store, f"c{n}")),
                ("challenge_usable", lambda n=n: store.challenge_usable("int1", f"c{n}", NOW)),
                ("get_integration", lambda: store.get_integration("int1")),
                ("get_transaction", lambda n=n: store.get_transaction("int1", f"TXN-{n + 1:x}")),
                ("record_issuance", lambda n=n: store.record_issuance(issuance(certificate(f"{n + 1:x}"), f"c{n}"))),
            ):
                before = counter.round_trips
                await op()
                trips[name] = trips.get(name, 0) + counter.round_trips - before
        costs = {name: total / calls for name, total in trips.items()}
        print("\nround trips per call: " + ", ".join(f"{k} {v:g}" for k, v in costs.items()))
        assert costs == dict.fromkeys(costs, 1.0)
    finally:
        await store.close()
        await counter.stop()


async def test_issuance_latency(dsn: str) -> None:
    """Prints per-call latency (sequential) and throughput (concurrent, two stores)."""
    store = await opened(dsn, 2, 10)
    other = await opened(dsn, 2, 10)
    conn = await raw(dsn)
    try:
        await store.create_integration(integration("int1"))
        for n in range(50):  # warm-up
            await store.record_issuance(issuance(certificate(f"{0xFF0000 + n:x}"), None))
        ping = []
        for _ in range(500):
            t = time.perf_counter()
            await conn.fetchval("SELECT 1")
            ping.append(time.perf_counter() - t)
        seq, adds = [], []
        for n in range(1000):
            t = time.perf_counter()
            await add(store, f"c{n}")
            adds.append(time.perf_counter() - t)
            t = time.perf_counter()
            await store.record_issuance(issuance(certificate(f"{n + 1:x}"), f"c{n}"))
            seq.append(time.perf_counter() - t)

        total, per_task = 4000, 125
        stores = (store, other)

        async def worker(w: int) -> None:
            for n in range(per_task):
                s = stores[w % 2]
                serial = f"{0x1000000 + w * per_task + n:x}"
                await s.record_issuance(issuance(certificate(serial), None))

        t = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(total // per_task)))
        concurrent_s = time.perf_counter() - t

        def us(values: list[float]) -> str:
            ordered = sorted(values)
            return (
                f"median {statistics.median(ordered) * 1e6:.0f} us, "
                f"p99 {ordered[int(len(ordered) * 0.99)] * 1e6:.0f} us"
            )

        print(
            f"\nSELECT 1 round trip: {us(ping)}"
            f"\nadd_challenge (sequential): {us(adds)}"
            f"\nrecord_issuance with challenge (sequential): {us(seq)}"
            f"\nrecord_issuance, {total // per_task} tasks on two stores: "
            f"{total / concurrent_s:.0f} issuances/s"
        )
        assert await store.count_certificates() == 50 + 1000 + total
        assert statistics.median(seq) < 0.05
    finally:
        await conn.close()
        await store.close()
        await other.close()


async def test_records_round_trip_exactly_across_stores(dsn: str) -> None:
    """timestamptz keeps microseconds; bytea, text[] and NULL booleans come back as written."""
    first, second = await opened(dsn), await opened(dsn)
    try:
        item = integration("int1", allow_basic=None, include_ca_in_reply=True, allowed_san_types=("uri",))
        await first.create_integration(item)
        assert await second.get_integration("int1") == item
        cert = certificate("abc", created_at=NOW - timedelta(microseconds=1), user_agent=None)
        await first.record_issuance(issuance(cert, None))
        assert await second.get_certificate("abc") == cert
    finally:
        await first.close()
        await second.close()


# -- scep-ca db upgrade / info ---------------------------------------------------------


def run_db(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run ``scep-ca db ...`` through db_cmds.register with main's option layout (main.py
    itself is wired separately); returns stdout."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS)
    common.add_argument("--data-dir", default=argparse.SUPPRESS)
    parser = argparse.ArgumentParser(prog="scep-ca")
    parser.add_argument("--config")
    parser.add_argument("--data-dir")
    db_cmds.register(parser.add_subparsers(dest="command", required=True), common)
    args = parser.parse_args(list(argv))
    capsys.readouterr()
    assert args.func(args) == 0
    return capsys.readouterr().out


async def test_db_commands_on_postgres(
    dsn: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SCEP_CA_STORE_DSN", dsn)
    data = ["--data-dir", str(tmp_path / "data")]

    async def cli(*argv: str) -> str:
        # The commands call asyncio.run themselves: run them off this test's event loop.
        return await asyncio.to_thread(run_db, capsys, *argv)

    versions = [m.version for m in MIGRATIONS]
    info = json.loads(await cli("db", "info", *data, "--json"))
    assert (info["backend"], info["schema_version"], info["pending"]) == ("postgresql", 0, versions)
    assert info["location"].endswith(urlsplit(dsn).path)
    upgraded = json.loads(await cli("db", "upgrade", *data, "--json"))
    assert (upgraded["applied"], upgraded["schema_version"], upgraded["pending"]) == (versions, LATEST_VERSION, [])
    out = await cli("db", "upgrade", *data)
    assert "already up to date" in out and f"Schema version: {LATEST_VERSION}" in out
    out = await cli("db", "info", *data)
    assert "postgresql" in out and f"Schema version:  {LATEST_VERSION}" in out and "Pending" not in out
    assert not (tmp_path / "data").exists()

    monkeypatch.setenv("SCEP_CA_STORE_DSN", "postgresql://postgres:secret@127.0.0.1:1/nowhere")
    for command in ("info", "upgrade"):
        with pytest.raises(CliError, match=r"cannot (connect to|upgrade) PostgreSQL at 127\.0\.0\.1:1/nowhere") as exc:
            await cli("db", command, *data)
        assert "secret" not in str(exc.value)


async def test_db_commands_on_sqlite(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    versions = [m.version for m in schema_sqlite.MIGRATIONS]
    info = json.loads(await asyncio.to_thread(run_db, capsys, "db", "info", *data, "--json"))
    assert (info["backend"], info["schema_version"], info["pending"]) == ("sqlite", 0, versions)
    assert not (tmp_path / "data").exists(), "db info must not create the database"
    upgraded = json.loads(await asyncio.to_thread(run_db, capsys, "db", "upgrade", *data, "--json"))
    assert (upgraded["applied"], upgraded["schema_version"]) == (versions, versions[-1])
    assert (tmp_path / "data" / "scep-ca.sqlite3").is_file()
    out = await asyncio.to_thread(run_db, capsys, "db", "upgrade", *data)
    assert "already up to date" in out


async def _apply_migrations(conn: asyncpg.Connection, count: int) -> None:
    """The first ``count`` migrations, as a store of that version applied them."""
    await conn.execute(MIGRATIONS_TABLE)
    for migration in MIGRATIONS[:count]:
        for statement in migration.statements:
            await conn.execute(statement)
        await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", migration.version)


async def _insert_old_integration(conn: asyncpg.Connection, deleted_at: datetime | None = None) -> None:
    """Integration ``int1`` written row-wise into a database of an older schema version."""
    await conn.execute(
        "INSERT INTO integrations (id, name, subject_template, created_at, validity_days, username,"
        " username_key, deleted_at) VALUES ('int1', 'one', 'CN=$USERID$', now(), 365, 'u1', 'u1', $1)",
        deleted_at,
    )


async def _insert_old_certificate(
    conn: asyncpg.Connection, record: CertificateRecord, *, without: tuple[str, ...] = ()
) -> None:
    """``record`` written row-wise, without the columns ``without`` that an older schema lacks."""
    params = RowMapper(CERTIFICATES, PostgresConverters()).params(record, created_at=record.not_before)
    values = {c: v for c, v in zip(CERTIFICATE_COLUMNS.split(", "), params, strict=True) if c not in without}
    marks = ", ".join(f"${n}" for n in range(1, len(values) + 1))
    await conn.execute(f"INSERT INTO certificates ({', '.join(values)}) VALUES ({marks})", *values.values())


async def test_migration_8_keeps_certificates_and_redefines_the_issuance_functions(dsn: str) -> None:
    """A database of version 7 with a certificate: migration 8 adds the CRL shard column (NULL
    for that certificate) and redefines scep_record_issuance and scep_record_renewal, which
    then store a new certificate's shard, a renewal's included."""
    old = certificate("01")
    conn = await raw(dsn)
    try:
        async with conn.transaction():
            await _apply_migrations(conn, 7)
            await _insert_old_integration(conn)
            await _insert_old_certificate(conn, old, without=("crl_shard",))
    finally:
        await conn.close()
    store = await opened(dsn)
    try:
        assert (await store.info()).schema_version == LATEST_VERSION
        kept = await store.get_certificate("01")
        assert kept is not None and kept.crl_shard is None and kept.der == old.der
        await store.record_issuance(issuance(certificate("02", crl_shard=5), None))
        renewal = issuance(certificate("03", crl_shard=9, transaction_id="t-renew"), None)
        await store.record_issuance(replace(renewal, renews="02"))
        for serial, shard in (("02", 5), ("03", 9)):
            new = await store.get_certificate(serial)
            assert new is not None and new.crl_shard == shard
    finally:
        await store.close()


async def test_migration_10_replaces_the_integration_index_and_reads_old_deletions_alike(dsn: str) -> None:
    """As SQLite's: a version 9 database whose integration was deleted the old way (its issued
    certificate revoked per row, its hold left on hold). After migration 10 the index is
    (integration_id, status, crl_shard), the row revoked then keeps its date, and the hold left
    behind reads as revoked by the deletion."""
    cessation = "cessationOfOperation"
    revoked = certificate("01", crl_shard=1, status=CertStatus.REVOKED, revoked_at=NOW, revocation_reason=cessation)
    held = certificate("02", crl_shard=1, status=CertStatus.REVOKED, revoked_at=NOW, revocation_reason=HOLD)
    deleted_at = NOW + timedelta(hours=1)
    conn = await raw(dsn)
    try:
        async with conn.transaction():
            await _apply_migrations(conn, 9)
            await _insert_old_integration(conn, deleted_at)
            for record in (revoked, held):
                await _insert_old_certificate(conn, record)
    finally:
        await conn.close()
    store = await opened(dsn)
    try:
        assert (await store.info()).schema_version == LATEST_VERSION
        conn = await raw(dsn)
        try:
            indexes = {r[0]: r[1] for r in await conn.fetch("SELECT indexname, indexdef FROM pg_indexes")}
        finally:
            await conn.close()
        assert "certificates_integration_status" not in indexes
        assert "(integration_id, status, crl_shard)" in indexes["certificates_integration_shard"]
        entries = {e.serial: (e.revoked_at, e.reason) for e in await store.revoked_shard_entries(ISSUER, 1, NOW)}
        assert entries == {"01": (NOW, cessation), "02": (deleted_at, cessation)}
    finally:
        await store.close()


async def test_migration_11_makes_the_expiry_day_inlinable_and_keeps_every_day(dsn: str) -> None:
    """Migration 9's scep_expiry_day was declared IMMUTABLE over a STABLE body, so the planner
    called it row by row; migration 11's body is inlined into the query (EXPLAIN shows the
    expression, not the call). The day is the same as migration 9's and as Python's ``_day``
    at the instants where floating point or a time zone could move it, and the counts a
    version 10 database kept are still taken back exactly when the certificate is revoked."""
    instants = [
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2026, 12, 7, 23, 59, 59, tzinfo=UTC),
        datetime(2026, 12, 8, 4, 59, 59, 999999, tzinfo=timezone(timedelta(hours=5))),
        datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
    ]
    conn = await raw(dsn)
    try:
        async with conn.transaction():
            await _apply_migrations(conn, 10)
            old = [await conn.fetchval("SELECT scep_expiry_day($1)", t) for t in instants]
            await _insert_old_integration(conn)
            await _insert_old_certificate(conn, certificate("0a"))
        plan_before = "\n".join(r[0] for r in await conn.fetch("EXPLAIN VERBOSE SELECT scep_expiry_day(now())"))
    finally:
        await conn.close()
    assert "scep_expiry_day" in plan_before  # the call this migration removes
    store = await opened(dsn)
    try:
        assert (await store.info()).schema_version == LATEST_VERSION
        conn = await raw(dsn)
        try:
            plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN VERBOSE SELECT scep_expiry_day(now())"))
            new = [await conn.fetchval("SELECT scep_expiry_day($1)", t) for t in instants]
            await conn.execute("UPDATE certificates SET status = 'revoked' WHERE serial = '0a'")
            counts = {
                r[0]: r[1] for r in await conn.fetch("SELECT status, sum(n) FROM certificate_counts GROUP BY status")
            }
        finally:
            await conn.close()
    finally:
        await store.close()
    assert "scep_expiry_day" not in plan and "EXTRACT(epoch" in plan, plan
    assert new == old == [postgres_console_day(t) for t in instants]
    # The insert counted under the old body, the revocation took it back under the new one.
    assert counts == {"issued": 0, "revoked": 1}
