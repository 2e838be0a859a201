"""SQLite-specific behaviour: the file, its pragmas, migrations and multi-process races."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from config.model import Config
from scep_ca.pki.records import CertificateRecord, CertStatus
from store.base import HOLD, ChallengeRejected, StoreError
from store.columns import CERTIFICATES
from store.factory import open_store
from store.schema_sqlite import MIGRATIONS, MIGRATIONS_TABLE
from store.sqlite import SQLiteStore
from store.sqlite_codec import certificate_params, to_us
from tests.store.test_contract import ISSUER, NOW, add, certificate, integration, issuance

CESSATION = "cessationOfOperation"


async def test_file_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    store = SQLiteStore(path)
    await store.open()
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            versions = conn.execute("SELECT version FROM schema_migrations").fetchall()
            assert versions == [(m.version,) for m in MIGRATIONS]
        finally:
            conn.close()
        info = await store.info()
        assert (info.backend, info.schema_version, info.extra["path"]) == ("sqlite", MIGRATIONS[-1].version, str(path))
    finally:
        await store.close()


async def test_reopen_keeps_data_and_applies_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    first = SQLiteStore(path)
    await first.open()
    await first.create_integration(integration("int1"))
    await first.close()
    second = SQLiteStore(path)
    await second.open()
    try:
        assert await second.get_integration("int1") == integration("int1")
        assert (await second.info()).schema_version == MIGRATIONS[-1].version
    finally:
        await second.close()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    store = SQLiteStore(path)
    await store.open()
    await store.close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (99, 'future')")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        await SQLiteStore(path).open()


async def test_use_before_open_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not open"):
        await SQLiteStore(tmp_path / "db.sqlite3").revocation_epoch()


def test_two_store_objects_race_on_one_challenge(tmp_path: Path) -> None:
    """Two store objects on one file stand in for two server processes; four threads
    each hammer the same challenge, round after round. Exactly one wins each round."""
    path = tmp_path / "db.sqlite3"
    stores = [SQLiteStore(path), SQLiteStore(path)]
    rounds, threads_per_store = 20, 4
    barrier = threading.Barrier(len(stores) * threads_per_store)
    wins = [0] * rounds
    errors: list[BaseException] = []
    wins_lock = threading.Lock()

    async def setup() -> None:
        for store in stores:
            await store.open()
        await stores[0].create_integration(integration("int1"))

    asyncio.run(setup())

    def worker(store: SQLiteStore, worker_id: int) -> None:
        async def run() -> None:
            for r in range(rounds):
                if worker_id == 0:
                    assert await add(store, f"round-{r}")
                barrier.wait()  # everyone sees the challenge before anyone tries
                serial = f"{(r << 8) | (worker_id + 1):x}"
                try:
                    await store.record_issuance(issuance(certificate(serial), f"round-{r}"))
                except ChallengeRejected:
                    pass
                else:
                    with wins_lock:
                        wins[r] += 1
                barrier.wait()  # round over before the next challenge is added

        try:
            asyncio.run(run())
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(stores[n % 2], n)) for n in range(len(stores) * threads_per_store)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    async def teardown() -> int:
        count = await stores[0].count_certificates()
        for store in stores:
            await store.close()
        return count

    issued = asyncio.run(teardown())
    assert errors == []
    assert wins == [1] * rounds
    assert issued == rounds


def test_factory_builds_sqlite_in_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "new" / "data"
    config = Config(data_dir=data_dir)
    store = open_store(config)
    assert isinstance(store, SQLiteStore)
    assert data_dir.is_dir()
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700

    async def use() -> None:
        await store.open()
        try:
            await store.create_integration(integration("int1"))
        finally:
            await store.close()

    asyncio.run(use())
    assert config.sqlite_path.is_file()


async def test_used_challenges_do_not_pile_up(tmp_path: Path) -> None:
    """Each add purges used rows: without that, an hour of enrollments stays in the
    table and every add_challenge scans it (measured: 332 enrollments/s instead of 5000)."""
    path = tmp_path / "db.sqlite3"
    store = SQLiteStore(path)
    await store.open()
    try:
        await store.create_integration(integration("int1"))
        for n in range(50):
            assert await add(store, f"c{n}")
            await store.record_issuance(issuance(certificate(f"{n + 1:x}"), f"c{n}"))
        conn = sqlite3.connect(path)
        try:
            (rows,) = conn.execute("SELECT count(*) FROM challenges").fetchone()
        finally:
            conn.close()
        assert rows <= 2  # the last one used, nothing older
    finally:
        await store.close()


def _apply_migrations(conn: sqlite3.Connection, count: int) -> None:
    """The first ``count`` migrations, as a store of that version applied them."""
    conn.execute(MIGRATIONS_TABLE)
    for migration in MIGRATIONS[:count]:
        for statement in migration.statements:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?, 'then')", (migration.version,))


def _insert_old_integration(conn: sqlite3.Connection, deleted_at: datetime | None = None) -> None:
    """Integration ``int1`` written row-wise into a database of an older schema version."""
    conn.execute(
        "INSERT INTO integrations (id, name, subject_template, created_at, validity_days, username, username_key,"
        " deleted_at) VALUES ('int1', 'one', 'CN=$USERID$', 0, 365, 'u1', 'u1', ?)",
        (None if deleted_at is None else to_us(deleted_at),),
    )


def _insert_old_certificate(
    conn: sqlite3.Connection, record: CertificateRecord, *, without: tuple[str, ...] = ()
) -> None:
    """``record`` written row-wise, without the columns ``without`` that an older schema lacks."""
    names = [c.name for c in CERTIFICATES.insert_columns]
    params = certificate_params(record, record.not_before)
    values = {n: v for n, v in zip(names, params, strict=True) if n not in without}
    conn.execute(
        f"INSERT INTO certificates ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
        list(values.values()),
    )


async def test_migration_8_keeps_certificates_and_gives_them_no_shard(tmp_path: Path) -> None:
    """A database of version 7 with a certificate: migration 8 adds the CRL shard column
    (NULL for that certificate, whose CDP names the full CRL) and new issuances store theirs."""
    path = tmp_path / "db.sqlite3"
    old = certificate("01")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        _apply_migrations(conn, 7)
        _insert_old_integration(conn)
        # The certificate as version 7 stored it: every column but crl_shard.
        _insert_old_certificate(conn, old, without=("crl_shard",))
    finally:
        conn.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        assert (await store.info()).schema_version == MIGRATIONS[-1].version
        kept = await store.get_certificate("01")
        assert kept is not None and kept.crl_shard is None and kept.der == old.der
        await store.record_issuance(issuance(certificate("02", crl_shard=5), None))
        new = await store.get_certificate("02")
        assert new is not None and new.crl_shard == 5
    finally:
        await store.close()


async def test_migration_10_replaces_the_integration_index_and_reads_old_deletions_alike(tmp_path: Path) -> None:
    """A database of version 9 whose integration was deleted the old way (its issued certificate
    revoked per row; its hold left on hold): after migration 10 the (integration_id, status)
    index is (integration_id, status, crl_shard), the row revoked then keeps its date, and the
    hold left behind reads as revoked by the deletion."""
    path = tmp_path / "db.sqlite3"
    revoked = certificate("01", crl_shard=1, status=CertStatus.REVOKED, revoked_at=NOW, revocation_reason=CESSATION)
    held = certificate("02", crl_shard=1, status=CertStatus.REVOKED, revoked_at=NOW, revocation_reason=HOLD)
    deleted_at = NOW + timedelta(hours=1)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        _apply_migrations(conn, 9)
        _insert_old_integration(conn, deleted_at)
        for record in (revoked, held):
            _insert_old_certificate(conn, record)
    finally:
        conn.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        assert (await store.info()).schema_version == MIGRATIONS[-1].version
        conn = sqlite3.connect(path)
        try:
            indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
            (columns,) = conn.execute(
                "SELECT group_concat(name) FROM pragma_index_info('certificates_integration_shard')"
            ).fetchone()
        finally:
            conn.close()
        assert "certificates_integration_status" not in indexes
        assert columns == "integration_id,status,crl_shard"
        entries = {e.serial: (e.revoked_at, e.reason) for e in await store.revoked_shard_entries(ISSUER, 1, NOW)}
        assert entries == {"01": (NOW, CESSATION), "02": (deleted_at, CESSATION)}
    finally:
        await store.close()
