"""Fixtures for the store contract suite.

``harness`` is parametrised over the backends; each harness gives the contract
tests a fresh, opened store plus the few backend-specific hooks they need
(a second store on the same database, bulk inserts, failure injection).

PostgreSQL tests run against the server at ``SCEP_CA_TEST_PG_DSN`` (default: the project
machines' trust-auth server, database ``postgres``); each test creates and drops its own
database ``scep_ca_test_<random>``. An unreachable server fails the tests instead of skipping
them, so that a broken CI machine cannot pass without the PostgreSQL half of the suite.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import asyncpg
import pytest

from scep_ca.pki.records import CertificateRecord
from store import sqlite_codec
from store.base import Store
from store.columns import CERTIFICATES, insert_sql
from store.pg_pool import safe_dsn
from store.postgres import CERTIFICATE_COLUMNS as PG_CERTIFICATE_COLUMNS
from store.postgres import PostgresStore
from store.sqlite import SQLiteStore

BACKENDS = ["sqlite", "postgres"]

PG_ADMIN_DSN = os.environ.get("SCEP_CA_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


class Harness(Protocol):
    store: Store

    async def second_store(self) -> Store:
        """Another opened store object on the same database (stands in for another process)."""

    async def bulk_insert_certificates(self, records: Sequence[CertificateRecord]) -> None:
        """Insert rows directly, bypassing record_issuance, for volume tests."""

    async def execute(self, sql: str) -> None:
        """Run SQL directly on the database, past the store (tampering, fault injection)."""

    async def fail_deleting_challenges(self, integration_id: str) -> None:
        """Make deleting this integration's challenges (a statement of ``delete_integration`` after
        the one that marks it deleted) fail with an error whose message contains 'injected failure'."""

    async def close(self) -> None: ...


class SQLiteHarness:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.store: Store = SQLiteStore(path)
        self._extra: list[Store] = []

    async def second_store(self) -> Store:
        other = SQLiteStore(self.path)
        await other.open()
        self._extra.append(other)
        return other

    def _execute(self, sql: str, rows: Sequence[tuple[object, ...]] | None = None) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            if rows is None:
                conn.execute(sql)
            else:
                conn.execute("BEGIN")
                conn.executemany(sql, rows)
                conn.execute("COMMIT")
        finally:
            conn.close()

    async def execute(self, sql: str) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.executescript(sql)
        finally:
            conn.close()

    async def bulk_insert_certificates(self, records: Sequence[CertificateRecord]) -> None:
        sql = insert_sql(CERTIFICATES, "?")
        self._execute(sql, [sqlite_codec.certificate_params(r, r.not_before) for r in records])

    async def fail_deleting_challenges(self, integration_id: str) -> None:
        self._execute(
            f"""
            CREATE TRIGGER inject_deletion_failure BEFORE DELETE ON challenges
            WHEN OLD.integration_id = '{integration_id}'
            BEGIN SELECT RAISE(ABORT, 'injected failure'); END
            """
        )

    async def close(self) -> None:
        for other in self._extra:
            await other.close()
        await self.store.close()


async def pg_admin_connect() -> Any:
    """A connection to the admin database; fails the test (never skips) when unreachable."""
    try:
        return await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"PostgreSQL is unreachable at {safe_dsn(PG_ADMIN_DSN)} ({exc!r}); start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` "
            "or point SCEP_CA_TEST_PG_DSN at a server"
        )


@asynccontextmanager
async def temporary_database() -> AsyncIterator[str]:
    """Create ``scep_ca_test_<random>``, yield its DSN, drop it (and its sessions) afterwards."""
    name = f"scep_ca_test_{secrets.token_hex(6)}"
    admin = await pg_admin_connect()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield urlsplit(PG_ADMIN_DSN)._replace(path=f"/{name}").geturl()
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@contextmanager
def temporary_database_sync() -> Iterator[str]:
    """``temporary_database`` for synchronous tests (the CLI in-process, servers as processes)."""
    loop = asyncio.new_event_loop()
    database = temporary_database()
    try:
        yield loop.run_until_complete(database.__aenter__())
    finally:
        loop.run_until_complete(database.__aexit__(None, None, None))
        loop.close()


def sql_sync(sql: str, dsn: str = PG_ADMIN_DSN) -> list[asyncpg.Record]:
    """Run one statement on ``dsn`` (default: the admin database) and return its rows."""

    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            return list(await conn.fetch(sql))
        finally:
            await conn.close()

    return asyncio.run(run())


class PostgresHarness:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.store: Store = PostgresStore(dsn, 1, 10)
        self._extra: list[Store] = []

    async def second_store(self) -> Store:
        other = PostgresStore(self.dsn, 1, 10)
        await other.open()
        self._extra.append(other)
        return other

    async def execute(self, sql: str) -> None:
        await self._execute(sql)

    async def _execute(self, sql: str) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def bulk_insert_certificates(self, records: Sequence[CertificateRecord]) -> None:
        rows = [
            (
                r.serial,
                r.integration_id,
                r.issuer_fingerprint,
                r.subject,
                r.not_before,
                r.not_after,
                r.der,
                r.transaction_id,
                r.pubkey_sha256,
                r.message_type,
                r.requester_address,
                r.user_agent,
                r.status.value,
                r.revoked_at,
                r.revocation_reason,
                r.created_at or r.not_before,
                r.crl_shard,
            )
            for r in records
        ]
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.copy_records_to_table(
                "certificates", records=rows, columns=[c.strip() for c in PG_CERTIFICATE_COLUMNS.split(",")]
            )
        finally:
            await conn.close()

    async def fail_deleting_challenges(self, integration_id: str) -> None:
        await self._execute(
            f"""
            CREATE FUNCTION inject_deletion_failure() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF OLD.integration_id = '{integration_id}' THEN
                    RAISE EXCEPTION 'injected failure';
                END IF;
                RETURN OLD;
            END $$;
            CREATE TRIGGER inject_deletion_failure BEFORE DELETE ON challenges
                FOR EACH ROW EXECUTE FUNCTION inject_deletion_failure();
            """
        )

    async def close(self) -> None:
        for other in self._extra:
            await other.close()
        await self.store.close()


@pytest.fixture(params=[pytest.param(b, marks=[pytest.mark.postgres] if b == "postgres" else []) for b in BACKENDS])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    if request.param == "sqlite":
        h: Harness = SQLiteHarness(tmp_path / "store.sqlite3")
        await h.store.open()
        try:
            yield h
        finally:
            await h.close()
    elif request.param == "postgres":
        async with temporary_database() as dsn:
            h = PostgresHarness(dsn)
            await h.store.open()
            try:
                yield h
            finally:
                await h.close()
    else:  # pragma: no cover - a new backend must add its harness here
        raise AssertionError(f"no harness for backend {request.param}")


@pytest.fixture
def store(harness: Harness) -> Store:
    return harness.store
