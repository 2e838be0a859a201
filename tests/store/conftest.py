"""Fixtures for the store contract suite.

``harness`` is parametrised over the backends; each harness gives the contract
tests a fresh, opened store plus the few backend-specific hooks they need
(a second store on the same database, bulk inserts, failure injection). To add
PostgreSQL, write a ``PostgresHarness`` with the same methods and add "postgres"
to ``BACKENDS``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Protocol

import pytest

from store import sqlite_codec
from store.base import CertificateRecord, Store
from store.sqlite import SQLiteStore

BACKENDS = ["sqlite"]


class Harness(Protocol):
    store: Store

    async def second_store(self) -> Store:
        """Another opened store object on the same database (stands in for another process)."""

    async def bulk_insert_certificates(self, records: Sequence[CertificateRecord]) -> None:
        """Insert rows directly, bypassing record_issuance, for volume tests."""

    async def fail_revocation_after(self, integration_id: str, revoked: int) -> None:
        """Make revoking this integration's certificates fail with an error whose message contains
        'injected failure' once ``revoked`` of them are revoked."""

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

    async def bulk_insert_certificates(self, records: Sequence[CertificateRecord]) -> None:
        sql = f"INSERT INTO certificates ({sqlite_codec.CERTIFICATE_COLUMNS}) VALUES ({', '.join('?' * 16)})"
        self._execute(sql, [sqlite_codec.certificate_params(r, r.not_before) for r in records])

    async def fail_revocation_after(self, integration_id: str, revoked: int) -> None:
        self._execute(
            f"""
            CREATE TRIGGER inject_revocation_failure BEFORE UPDATE OF status ON certificates
            WHEN NEW.status = 'revoked' AND NEW.integration_id = '{integration_id}' AND (
                SELECT count(*) FROM certificates
                WHERE integration_id = NEW.integration_id AND status = 'revoked'
            ) >= {int(revoked)}
            BEGIN SELECT RAISE(ABORT, 'injected failure'); END
            """
        )

    async def close(self) -> None:
        for other in self._extra:
            await other.close()
        await self.store.close()


@pytest.fixture(params=BACKENDS)
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    if request.param == "sqlite":
        h: Harness = SQLiteHarness(tmp_path / "store.sqlite3")
    else:  # pragma: no cover - a new backend must add its harness here
        raise AssertionError(f"no harness for backend {request.param}")
    await h.store.open()
    try:
        yield h
    finally:
        await h.close()


@pytest.fixture
def store(harness: Harness) -> Store:
    return harness.store
