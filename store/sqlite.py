"""The embedded SQLite store (WAL), the default backend.

Concurrency strategy. One ``sqlite3`` connection per store object, in autocommit
mode; every write method issues ``BEGIN IMMEDIATE`` ... ``COMMIT`` itself and runs
its whole unit of work synchronously, with no ``await`` inside the transaction.
Coroutines on one event loop therefore never interleave inside a transaction, and
no thread hop is needed: the statements here take tens of microseconds, less than
handing work to a thread pool would cost. Several server processes sharing the
file are serialised by SQLite's write lock: ``BEGIN IMMEDIATE`` takes it up front
(so a reader never has to upgrade and deadlock) and ``busy_timeout`` makes a
process wait for it instead of failing. The price is that while another process
holds the lock, this process's event loop waits too (at most ``busy_timeout``);
write transactions here are short, and deployments with many processes or hosts
belong on PostgreSQL. A per-object lock also makes the object safe to share
between threads, which ``check_same_thread=False`` would otherwise allow unsafely.

``record_issuance`` is the hot path: six prepared statements (BEGIN, live check,
challenge UPDATE, two INSERTs, COMMIT), all cached by ``sqlite3``'s statement cache;
pragmas are set once per connection in ``open``.

Faults of the environment (a full disk, an I/O error, the lock held past ``busy_timeout``)
surface as ``StoreUnavailable``; the transaction they interrupted is rolled back, so
nothing of it stays. Constraint violations and programming errors are not masked.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager, suppress
from datetime import datetime, timedelta
from pathlib import Path

from config.clock import utc_now
from config.files import PRIVATE_MODE, check_not_writable, write_private
from scep_ca.pki.records import CertificateRecord, CertStatus, Integration, RevokedEntry, Transaction, TransactionStatus
from store import revocation_rule as rule
from store import sqlite_codec as codec
from store import throttle
from store.base import (
    HOLD,
    LEASE_KEY_PREFIX,
    AuditFilter,
    AuditRecord,
    AuditSeal,
    AuthReservation,
    CertificateCounts,
    CertificateFilter,
    ChallengeAdd,
    ChallengeRejected,
    DeleteResult,
    DuplicateIntegration,
    DuplicateSerial,
    DuplicateTransaction,
    EnrollmentState,
    IntegrationNotFound,
    IssuanceRequest,
    RenewalPending,
    RenewalRefused,
    StoreError,
    StoreInfo,
    StoreUnavailable,
)
from store.columns import CERTIFICATES, INTEGRATIONS, TRANSACTIONS, insert_sql
from store.schema_sqlite import MIGRATIONS, MIGRATIONS_TABLE, REVOCATION_EPOCH_KEY
from store.sqlite_console import SQLiteConsoleMixin

BUSY_TIMEOUT_MS = 5000
# Primary result codes (https://sqlite.org/rescode.html) that are faults of the environment,
# not of a statement: the disk or file system (full, I/O error, read-only, cannot open, not a
# database or damaged), memory, or another process holding the lock past ``busy_timeout``.
# Anything else (a constraint, a syntax error) is a bug or a duplicate and is not masked.
_UNAVAILABLE_CODES = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
        sqlite3.SQLITE_NOTADB,
    }
)
WAL_AUTOCHECKPOINT_PAGES = 4000

# What each table is selected as (store.columns); a certificate with the revocation rule applied.
_INTEGRATION_COLUMNS = INTEGRATIONS.select_names()
_GET_CERTIFICATE = f"SELECT {rule.COLUMNS} FROM {rule.JOINED} WHERE c.serial = ?"
_TRANSACTION_COLUMNS = TRANSACTIONS.select_names()
_INSERT_INTEGRATION = insert_sql(INTEGRATIONS, "?")
_INSERT_CERTIFICATE = insert_sql(CERTIFICATES, "?")
_INSERT_TRANSACTION = insert_sql(TRANSACTIONS, "?")
# A certificate is renewed once: only an unrenewed, unrevoked certificate of the integration takes
# the mark, so of two renewals signed by one certificate exactly one commits.
# These two run only once the integration is known live in the same transaction (a deleted
# one's certificates are revoked by store/revocation_rule.py, whatever their status column says).
_MARK_RENEWED = (
    "UPDATE certificates SET superseded_by = ? "
    "WHERE serial = ? AND integration_id = ? AND status = 'issued' AND superseded_by IS NULL"
)
_SUPERSEDE = (
    "UPDATE certificates SET status = 'revoked', revoked_at = ?, revocation_reason = 'superseded' "
    "WHERE serial = ? AND integration_id = ? AND status = 'issued'"
)
# One pending renewal per certificate. The integration narrows the scan to the primary key's
# prefix; the approval queue is operator-paced, so no index of its own.
_PENDING_RENEWAL = (
    "SELECT 1 FROM transactions "
    "WHERE integration_id = ? AND renews = ? AND status = 'pending' AND created_at >= ? LIMIT 1"
)
# Before every stored time: "no cut-off".
_NO_TIME_US = -(2**63)
# Several rows may share a hash (two identical random draws, or a re-added
# challenge): consume exactly one of them. INDEXED BY for the reason given in challenge_usable.
_CONSUME_CHALLENGE = """
UPDATE challenges SET used_at = ?
WHERE id = (
    SELECT id FROM challenges INDEXED BY challenges_lookup
    WHERE integration_id = ? AND challenge_hash = ? AND used_at IS NULL AND expires_at > ?
    LIMIT 1
)
"""
_BUMP_EPOCH = "UPDATE meta SET value = value + 1 WHERE key = ?"
# A hold ends once, whichever of confirmation, refusal or recovery comes first; a hold of a
# deleted integration has ended already (revoked by the deletion: store/revocation_rule.py).
_RELEASE_HOLD = (
    "UPDATE certificates SET status = 'issued', revoked_at = NULL, revocation_reason = NULL "
    f"WHERE serial = ? AND status = 'revoked' AND revocation_reason = ? AND {rule.LIVE_INTEGRATION}"
)
_REVOKE_HELD = (
    "UPDATE certificates SET revoked_at = ?, revocation_reason = ? "
    f"WHERE serial = ? AND status = 'revoked' AND revocation_reason = ? AND {rule.LIVE_INTEGRATION}"
)
# A deleted integration's certificates are revoked already (store/revocation_rule.py).
_REVOKE = (
    "UPDATE certificates SET status = ?, revoked_at = ?, revocation_reason = ? "
    f"WHERE serial = ? AND status = 'issued' AND {rule.LIVE_INTEGRATION}"
)
# The CRLs: rows revoked on their own and the deleted integrations' rows (store/revocation_rule.py).
# CROSS JOIN: the deleted integrations first, then each one's range of the index (the planner,
# without statistics, would otherwise walk the whole index and look up each row's integration).
_DELETED_FIRST = "CROSS JOIN certificates c INDEXED BY certificates_integration_shard"
_REVOKED_ENTRIES = rule.revoked_entries_sql(":issuer", join_certificates=_DELETED_FIRST)
_REVOKED_SHARD_ENTRIES = rule.revoked_entries_sql(
    ":issuer", ":shard", ":not_after_from", join_certificates=_DELETED_FIRST
)
_COUNT_BY_DELETION = rule.count_by_deletion_sql("?")
# One row whatever exists: the transaction's columns (NULL when there is none), then whether
# the challenge is usable (same lookup as challenge_usable).
_ENROLLMENT_STATE = (
    "SELECT {columns}, EXISTS (SELECT 1 FROM challenges INDEXED BY challenges_lookup "
    "WHERE integration_id = ? AND challenge_hash = ? AND used_at IS NULL AND expires_at > ?) "
    "FROM (SELECT 1) LEFT JOIN transactions t ON t.integration_id = ? AND t.transaction_id = ?"
).format(columns=TRANSACTIONS.select_names("t."))
# Rows of other keys whose window and lock are both over, deleted by each auth_reserve: rows
# are only created by reservations, so this keeps the table at about the keys still counted.
AUTH_PURGE_LIMIT = 100
_AUTH_PURGE = (
    "DELETE FROM auth_throttle WHERE key IN "
    "(SELECT key FROM auth_throttle WHERE expires_at <= ? AND key <> ? ORDER BY expires_at LIMIT ?)"
)


class SQLiteStore(SQLiteConsoleMixin):
    """``Store`` on one SQLite database file. Call ``open()`` before use."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        if self._conn is not None:
            return
        with _faults():
            self._open()

    def _open(self) -> None:
        _create_private_file(self._path)
        conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None, cached_statements=256)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"SQLite refused WAL mode for {self._path} (got {mode})")
            # NORMAL in WAL mode: a commit survives an application crash; only an OS
            # crash or power loss can lose the last transactions, never corrupt the file.
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            # Fewer, larger checkpoints: each one fsyncs, and at the default (1000 pages) that
            # fsync is a third of an enrollment's store time.
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
            self._conn = conn
            self._migrate()
        except BaseException:
            self._conn = None
            conn.close()
            raise

    async def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    async def info(self) -> StoreInfo:
        with self._read() as conn:
            version = _schema_version(conn)
        return StoreInfo(
            schema_version=version,
            backend="sqlite",
            extra={"path": str(self._path), "sqlite_version": sqlite3.sqlite_version},
        )

    def _migrate(self) -> None:
        # Inside one IMMEDIATE transaction, so two processes opening a new file at
        # once apply each migration exactly once.
        with self._transaction() as conn:
            conn.execute(MIGRATIONS_TABLE)
            current = _schema_version(conn)
            latest = MIGRATIONS[-1].version
            if current > latest:
                raise StoreError(f"database schema version {current} is newer than this scep-ca supports ({latest})")
            applied_at = utc_now().isoformat()
            for migration in MIGRATIONS:
                if migration.version > current:
                    for statement in migration.statements:
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                        (migration.version, applied_at),
                    )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT; any exception rolls everything back and re-raises."""
        with self._lock, _faults():
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    # After a full disk or an I/O error SQLite may have rolled back already, and
                    # a failing ROLLBACK must not hide the error that caused it.
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        # A single SELECT in autocommit mode is its own consistent snapshot.
        with self._lock, _faults():
            yield self._connection()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("the store is not open")
        return self._conn

    # -- integrations ----------------------------------------------------------------

    async def create_integration(self, integration: Integration, *, audit: AuditSeal | None = None) -> None:
        try:
            with self._transaction() as conn:
                conn.execute(_INSERT_INTEGRATION, codec.INTEGRATION_ROWS.params(integration))
                _append_audit(conn, audit)
        except sqlite3.IntegrityError as exc:
            raise DuplicateIntegration(
                f"an integration with id {integration.id!r} or username {integration.username!r} exists"
            ) from exc

    async def get_integration(self, integration_id: str, *, include_deleted: bool = False) -> Integration | None:
        sql = f"SELECT {_INTEGRATION_COLUMNS} FROM integrations WHERE id = ?"
        if not include_deleted:
            sql += " AND deleted_at IS NULL"
        with self._read() as conn:
            row = conn.execute(sql, (integration_id,)).fetchone()
        return None if row is None else codec.INTEGRATION_ROWS.record(row)

    async def find_integration_by_username(self, username: str) -> Integration | None:
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {_INTEGRATION_COLUMNS} FROM integrations WHERE username_key = ? AND deleted_at IS NULL",
                (codec.username_key(username),),
            ).fetchone()
        return None if row is None else codec.INTEGRATION_ROWS.record(row)

    async def list_integrations(self, *, include_deleted: bool = False) -> Sequence[Integration]:
        where = "" if include_deleted else " WHERE deleted_at IS NULL"
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_INTEGRATION_COLUMNS} FROM integrations{where} ORDER BY created_at, id"
            ).fetchall()
        return [codec.INTEGRATION_ROWS.record(row) for row in rows]

    async def update_credentials(
        self,
        integration_id: str,
        *,
        username: str,
        password_scrypt: str,
        nt_hash_encrypted: bytes,
        audit: AuditSeal | None = None,
    ) -> None:
        try:
            with self._transaction() as conn:
                cursor = conn.execute(
                    "UPDATE integrations SET username = ?, username_key = ?, password_scrypt = ?, "
                    "nt_hash_encrypted = ? WHERE id = ? AND deleted_at IS NULL",
                    (username, codec.username_key(username), password_scrypt, nt_hash_encrypted, integration_id),
                )
                if cursor.rowcount != 1:
                    raise IntegrationNotFound(integration_id)
                _append_audit(conn, audit)
        except sqlite3.IntegrityError as exc:
            raise DuplicateIntegration(f"another live integration has username {username!r}") from exc

    async def delete_integration(
        self, integration_id: str, now: datetime, *, audit: AuditSeal | None = None
    ) -> DeleteResult:
        now_us = codec.to_us(now)
        with self._transaction() as conn:
            cursor = conn.execute(
                "UPDATE integrations SET deleted_at = ? WHERE id = ? AND deleted_at IS NULL",
                (now_us, integration_id),
            )
            if cursor.rowcount != 1:
                raise IntegrationNotFound(integration_id)
            # Nothing is written per certificate: deleted_at revokes them (store/revocation_rule.py).
            # Counted for the audit event and the operator; two ranges of one index.
            revoked = sum(n for (n,) in conn.execute(_COUNT_BY_DELETION, (integration_id, integration_id)))
            # Used ones too: nothing can consume them any more, and nothing would purge them.
            conn.execute("DELETE FROM challenges WHERE integration_id = ?", (integration_id,))
            conn.execute(_BUMP_EPOCH, (REVOCATION_EPOCH_KEY,))
            _append_audit(conn, audit, {"revoked": revoked})
        return DeleteResult(revoked=revoked, deleted_at=now)

    # -- challenges ------------------------------------------------------------------

    async def add_challenge(self, add: ChallengeAdd, *, audit: AuditSeal | None = None) -> bool:
        now_us = codec.to_us(add.now)
        with self._transaction() as conn:
            _require_live(conn, add.integration_id)
            # Used and expired rows can never be consumed again. Purging them here keeps
            # an integration's rows at max_unused plus those used since the last add
            # (each enrollment fetches a new challenge), so the scans below stay short
            # without a background job; kept until expiry they would pile up to an
            # hour's worth of enrollments and make every add slower.
            # Two statements, each served by its own index (an OR would scan the integration).
            conn.execute(
                "DELETE FROM challenges WHERE integration_id = ? AND used_at IS NOT NULL", (add.integration_id,)
            )
            conn.execute(
                "DELETE FROM challenges WHERE integration_id = ? AND expires_at <= ?", (add.integration_id, now_us)
            )
            # Counting stops at max_unused: with a large cache, a full count is a long scan.
            (unused,) = conn.execute(
                "SELECT count(*) FROM (SELECT 1 FROM challenges WHERE integration_id = ? AND used_at IS NULL LIMIT ?)",
                (add.integration_id, add.max_unused),
            ).fetchone()
            if unused >= add.max_unused:
                return False
            conn.execute(
                "INSERT INTO challenges (integration_id, challenge_hash, created_at, expires_at) VALUES (?, ?, ?, ?)",
                (add.integration_id, add.challenge_hash, now_us, codec.to_us(add.expires_at)),
            )
            _append_audit(conn, audit)
        return True

    async def challenge_usable(self, integration_id: str, challenge_hash: str, now: datetime) -> bool:
        with self._read() as conn:
            row = conn.execute(
                # INDEXED BY: without statistics the planner may pick challenges_expiry and scan
                # every unexpired challenge of the integration (measured: 90 us with 2,000).
                "SELECT 1 FROM challenges INDEXED BY challenges_lookup WHERE integration_id = ? "
                "AND challenge_hash = ? AND used_at IS NULL AND expires_at > ? LIMIT 1",
                (integration_id, challenge_hash, codec.to_us(now)),
            ).fetchone()
        return row is not None

    async def count_unused_challenges(self, integration_id: str, now: datetime) -> int:
        with self._read() as conn:
            (count,) = conn.execute(
                "SELECT count(*) FROM challenges WHERE integration_id = ? AND used_at IS NULL AND expires_at > ?",
                (integration_id, codec.to_us(now)),
            ).fetchone()
        return int(count)

    # -- issuance --------------------------------------------------------------------

    async def record_issuance(self, req: IssuanceRequest, *, audit: AuditSeal | None = None) -> None:
        cert = req.certificate
        now_us = codec.to_us(req.now)
        cert_params = codec.certificate_params(cert, req.now)
        txn_params = codec.TRANSACTION_ROWS.params(
            Transaction(
                integration_id=cert.integration_id,
                transaction_id=cert.transaction_id,
                pubkey_sha256=cert.pubkey_sha256,
                status=TransactionStatus.ISSUED,
                created_at=req.now,
                serial=cert.serial,
                message_type=cert.message_type,
                renews=req.renews,
            )
        )
        with self._transaction() as conn:
            if req.challenge_hash is None:
                _require_live(conn, cert.integration_id)
            elif (
                conn.execute(_CONSUME_CHALLENGE, (now_us, cert.integration_id, req.challenge_hash, now_us)).rowcount
                != 1
            ):
                _require_live(conn, cert.integration_id)  # a deleted integration is reported as such
                raise ChallengeRejected(cert.integration_id)
            # A consumed challenge proves the integration live in this transaction: deleting an
            # integration deletes its challenges in the same transaction, and adding one checks it.
            # The renewed-once mark before the inserts, in the order scep_record_renewal uses, so
            # that both backends report an already renewed certificate as RenewalRefused first.
            if req.renews is not None:
                _mark_renewed(conn, req.renews, cert)
            _insert(conn, _INSERT_CERTIFICATE, cert_params, DuplicateSerial, cert.serial)
            _insert(conn, _INSERT_TRANSACTION, txn_params, DuplicateTransaction, cert.transaction_id)
            superseded = (
                req.supersedes is not None
                and conn.execute(_SUPERSEDE, (now_us, req.supersedes, cert.integration_id)).rowcount
            )
            if superseded:
                conn.execute(_BUMP_EPOCH, (REVOCATION_EPOCH_KEY,))
            _append_audit(conn, audit)

    async def enrollment_state(
        self, integration_id: str, transaction_id: str, challenge_hash: str | None, now: datetime
    ) -> EnrollmentState:
        with self._read() as conn:
            row = conn.execute(
                _ENROLLMENT_STATE, (integration_id, challenge_hash, codec.to_us(now), integration_id, transaction_id)
            ).fetchone()
        txn = None if row[0] is None else codec.TRANSACTION_ROWS.record(row)
        return EnrollmentState(transaction=txn, challenge_usable=bool(row[-1]))

    async def get_transaction(self, integration_id: str, transaction_id: str) -> Transaction | None:
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {_TRANSACTION_COLUMNS} FROM transactions WHERE integration_id = ? AND transaction_id = ?",
                (integration_id, transaction_id),
            ).fetchone()
        return None if row is None else codec.TRANSACTION_ROWS.record(row)

    async def record_pending(
        self,
        txn: Transaction,
        challenge_hash: str | None,
        now: datetime,
        *,
        open_since: datetime | None = None,
        audit: AuditSeal | None = None,
    ) -> None:
        now_us = codec.to_us(now)
        with self._transaction() as conn:
            _require_live(conn, txn.integration_id)
            # BEGIN IMMEDIATE holds the write lock from here to COMMIT: check and insert are one step.
            if txn.renews is not None:
                since_us = _NO_TIME_US if open_since is None else codec.to_us(open_since)
                if conn.execute(_PENDING_RENEWAL, (txn.integration_id, txn.renews, since_us)).fetchone():
                    raise RenewalPending(txn.renews)
            if challenge_hash is not None:
                consumed = conn.execute(
                    _CONSUME_CHALLENGE, (now_us, txn.integration_id, challenge_hash, now_us)
                ).rowcount
                if consumed != 1:
                    raise ChallengeRejected(txn.integration_id)
            params = codec.TRANSACTION_ROWS.params(txn)
            _insert(conn, _INSERT_TRANSACTION, params, DuplicateTransaction, txn.transaction_id)
            _append_audit(conn, audit)

    async def list_transactions(
        self, status: TransactionStatus | None = None, integration_id: str | None = None
    ) -> Sequence[Transaction]:
        clauses, params = [], []
        if status is not None:
            clauses.append("status = ?")
            params.append(status.value)
        if integration_id is not None:
            clauses.append("integration_id = ?")
            params.append(integration_id)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_TRANSACTION_COLUMNS} FROM transactions{where} ORDER BY created_at", params
            ).fetchall()
        return [codec.TRANSACTION_ROWS.record(r) for r in rows]

    async def resolve_pending(
        self,
        integration_id: str,
        transaction_id: str,
        certificate: CertificateRecord | None,
        now: datetime,
        *,
        supersedes: str | None = None,
        audit: AuditSeal | None = None,
    ) -> bool:
        now_us = codec.to_us(now)
        with self._transaction() as conn:
            _require_live(conn, integration_id)
            row = conn.execute(
                "SELECT renews FROM transactions "
                "WHERE integration_id = ? AND transaction_id = ? AND status = 'pending'",
                (integration_id, transaction_id),
            ).fetchone()
            if row is None:
                return False
            if certificate is None:
                conn.execute(
                    "UPDATE transactions SET status = 'rejected' WHERE integration_id = ? AND transaction_id = ?",
                    (integration_id, transaction_id),
                )
                _append_audit(conn, audit)
                return True
            params = codec.certificate_params(certificate, now)
            _insert(conn, _INSERT_CERTIFICATE, params, DuplicateSerial, certificate.serial)
            if row[0] is not None:
                _mark_renewed(conn, row[0], certificate)
            conn.execute(
                "UPDATE transactions SET status = 'issued', serial = ? WHERE integration_id = ? AND transaction_id = ?",
                (certificate.serial, integration_id, transaction_id),
            )
            if supersedes is not None and conn.execute(_SUPERSEDE, (now_us, supersedes, integration_id)).rowcount:
                conn.execute(_BUMP_EPOCH, (REVOCATION_EPOCH_KEY,))
            _append_audit(conn, audit)
            return True

    # -- certificates ----------------------------------------------------------------

    async def get_certificate(self, serial: str) -> CertificateRecord | None:
        with self._read() as conn:
            row = conn.execute(_GET_CERTIFICATE, (serial,)).fetchone()
        return None if row is None else codec.CERTIFICATE_ROWS.record(row)

    async def list_certificates(self, flt: CertificateFilter) -> Sequence[CertificateRecord]:
        clauses: list[str] = []
        params: list[object] = []
        if flt.integration_id is not None:
            clauses.append("c.integration_id = ?")
            params.append(flt.integration_id)
        if flt.status is not None:
            clauses.append(rule.status_is(flt.status))
        if flt.expired_before is not None:
            clauses.append("c.not_after < ?")
            params.append(codec.to_us(flt.expired_before))
        if flt.issued_only_unexpired_at is not None:
            clauses.append(f"{rule.ISSUED} AND c.not_after >= ?")
            params.append(codec.to_us(flt.issued_only_unexpired_at))
        if flt.on_hold:
            clauses.append(rule.ON_HOLD)
        if flt.expires_by is not None:
            clauses.append("c.not_after <= ?")
            params.append(codec.to_us(flt.expires_by))
        sql = f"SELECT {rule.COLUMNS} FROM {rule.JOINED}"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY c.created_at, c.serial"
        if flt.limit is not None:
            sql += " LIMIT ?"
            params.append(max(flt.limit, 0))
        with self._read() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [codec.CERTIFICATE_ROWS.record(row) for row in rows]

    async def count_certificates(self, integration_id: str | None = None) -> int:
        with self._read() as conn:
            if integration_id is None:
                (count,) = conn.execute("SELECT count(*) FROM certificates").fetchone()
            else:
                (count,) = conn.execute(
                    "SELECT count(*) FROM certificates WHERE integration_id = ?", (integration_id,)
                ).fetchone()
        return int(count)

    async def certificate_counts(self, now: datetime, horizons: Sequence[timedelta]) -> Sequence[CertificateCounts]:
        # A full scan (about a second at 1,000,000 rows): on its own read-only connection in a
        # thread, so enrollments on the event loop and on the shared connection go on meanwhile
        # (WAL lets readers and the writer run at once).
        self._connection()  # refuse as every other method does when the store is not open
        return await asyncio.to_thread(self._certificate_counts, now, horizons)

    def _certificate_counts(self, now: datetime, horizons: Sequence[timedelta]) -> list[CertificateCounts]:
        now_us = codec.to_us(now)
        # Counted per (integration, status as written) in one scan, then the revocation rule
        # applied to those few groups (store/revocation_rule.py), not joined per row.
        expiring = "".join(f", sum(not_after > ? AND not_after <= ?) AS e{i}" for i in range(len(horizons)))
        params: list[int] = [now_us]
        for horizon in horizons:
            params += [now_us, codec.to_us(now + horizon)]
        derived = "".join(f", sum(CASE WHEN {rule.ISSUED} THEN c.e{i} ELSE 0 END)" for i in range(len(horizons)))
        with _faults(), closing(sqlite3.connect(f"{self._path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            rows = conn.execute(
                f"SELECT c.integration_id, sum(CASE WHEN {rule.ISSUED} THEN c.valid ELSE 0 END), "
                f"sum(CASE WHEN {rule.REVOKED} THEN c.n ELSE 0 END){derived} "
                f"FROM (SELECT integration_id, status, count(*) AS n, sum(not_after > ?) AS valid{expiring} "
                "FROM certificates GROUP BY integration_id, status) c JOIN integrations i ON i.id = c.integration_id "
                "GROUP BY c.integration_id ORDER BY c.integration_id",
                params,
            ).fetchall()
        return [CertificateCounts(row[0], int(row[1]), int(row[2]), tuple(int(n) for n in row[3:])) for row in rows]

    async def acquire_lease(self, name: str, now: datetime, ttl: timedelta) -> int | None:
        # A lease is a meta row holding its expiry; the expiry is also the holder's token.
        token = codec.to_us(now + ttl)
        with self._transaction() as conn:
            taken = conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value WHERE meta.value <= ?",
                (LEASE_KEY_PREFIX + name, token, codec.to_us(now)),
            ).rowcount
        return token if taken == 1 else None

    async def release_lease(self, name: str, token: int) -> None:
        with self._transaction() as conn:
            conn.execute("UPDATE meta SET value = 0 WHERE key = ? AND value = ?", (LEASE_KEY_PREFIX + name, token))

    async def revoke_certificate(
        self, serial: str, reason: str, now: datetime, *, audit: AuditSeal | None = None
    ) -> bool:
        with self._transaction() as conn:
            changed = conn.execute(_REVOKE, (CertStatus.REVOKED.value, codec.to_us(now), reason, serial)).rowcount
            if changed:
                conn.execute(_BUMP_EPOCH, (REVOCATION_EPOCH_KEY,))
                _append_audit(conn, audit)
        return changed == 1

    async def end_hold(
        self, serial: str, revoke_reason: str | None, now: datetime, *, audit: AuditSeal | None = None
    ) -> bool:
        params: tuple[object, ...]
        if revoke_reason is None:
            sql, params = _RELEASE_HOLD, (serial, HOLD)
        else:
            sql, params = _REVOKE_HELD, (codec.to_us(now), revoke_reason, serial, HOLD)
        with self._transaction() as conn:
            changed = conn.execute(sql, params).rowcount
            if changed:
                conn.execute(_BUMP_EPOCH, (REVOCATION_EPOCH_KEY,))
                _append_audit(conn, audit)
        return changed == 1

    async def revoked_entries(self, issuer_fingerprint: str) -> Sequence[RevokedEntry]:
        with self._read() as conn:
            rows = conn.execute(_REVOKED_ENTRIES, {"issuer": issuer_fingerprint}).fetchall()
        return [codec.revoked_from_row(row) for row in rows]

    async def revoked_shard_entries(
        self, issuer_fingerprint: str, shard: int, expired_before: datetime
    ) -> Sequence[RevokedEntry]:
        params = {"issuer": issuer_fingerprint, "shard": shard, "not_after_from": codec.to_us(expired_before)}
        with self._read() as conn:
            rows = conn.execute(_REVOKED_SHARD_ENTRIES, params).fetchall()
        return [codec.revoked_from_row(row) for row in rows]

    async def next_crl_number(self, issuer_fingerprint: str, *, audit: AuditSeal | None = None) -> int:
        with self._transaction() as conn:
            (number,) = conn.execute(
                "INSERT INTO crl_numbers (issuer_fingerprint, number) VALUES (?, 1) "
                "ON CONFLICT (issuer_fingerprint) DO UPDATE SET number = number + 1 RETURNING number",
                (issuer_fingerprint,),
            ).fetchall()[0]
            _append_audit(conn, audit, {"number": int(number)})
        return int(number)

    async def revocation_epoch(self) -> int:
        with self._read() as conn:
            (value,) = conn.execute("SELECT value FROM meta WHERE key = ?", (REVOCATION_EPOCH_KEY,)).fetchone()
        return int(value)

    # -- audit log ---------------------------------------------------------------------

    async def append_audit(self, seal: AuditSeal) -> None:
        with self._transaction() as conn:
            _append_audit(conn, seal)

    async def list_audit(self, flt: AuditFilter) -> Sequence[AuditRecord]:
        clauses: list[str] = []
        params: list[object] = []
        for clause, value in (
            ("at >= ?", None if flt.since is None else codec.to_us(flt.since)),
            ("at < ?", None if flt.until is None else codec.to_us(flt.until)),
            ("event = ?", flt.event),
            ("actor = ?", flt.actor),
            ("writer = ?", flt.writer),
        ):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        sql = f"SELECT {_AUDIT_COLUMNS} FROM audit_events"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY at DESC, writer DESC, seq DESC" if flt.newest_first else " ORDER BY at, writer, seq"
        if flt.limit is not None:
            sql += " LIMIT ?"
            params.append(max(flt.limit, 0))
        with self._read() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [_audit_record(row) for row in rows]

    async def audit_page(self, after: tuple[str, int] | None, limit: int) -> Sequence[AuditRecord]:
        writer, seq = after or ("", -1)
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_AUDIT_COLUMNS} FROM audit_events WHERE (writer, seq) > (?, ?) ORDER BY writer, seq LIMIT ?",
                (writer, seq, limit),
            ).fetchall()
        return [_audit_record(row) for row in rows]

    async def audit_heads(self) -> Sequence[tuple[str, int, str]]:
        with self._read() as conn:
            # Each max(seq) is one probe of the (writer, seq) index.
            rows = conn.execute(
                "SELECT writer, seq, mac FROM audit_events a WHERE seq = "
                "(SELECT max(seq) FROM audit_events b WHERE b.writer = a.writer) ORDER BY writer"
            ).fetchall()
        return [(str(w), int(s), str(m)) for w, s, m in rows]

    async def audit_empty(self) -> bool:
        with self._read() as conn:
            return conn.execute("SELECT 1 FROM audit_events LIMIT 1").fetchone() is None

    # -- failed-login throttling -----------------------------------------------------

    async def auth_locked_until(self, key: str, now: datetime) -> datetime | None:
        now_us = codec.to_us(now)
        with self._read() as conn:
            row = conn.execute(
                "SELECT locked_until FROM auth_throttle WHERE key = ? AND locked_until > ?", (key, now_us)
            ).fetchone()
        return None if row is None else codec.from_us(row[0])

    async def auth_reserve(
        self, key: str, now: datetime, window: timedelta, max_attempts: int, lockout: timedelta
    ) -> AuthReservation:
        with self._transaction() as conn:
            conn.execute(_AUTH_PURGE, (codec.to_us(now), key, AUTH_PURGE_LIMIT))
            row, answer = throttle.reserve(_auth_row(conn, key), now, window, max_attempts, lockout)
            _auth_write(conn, key, row, window)
        return answer

    async def auth_release(self, key: str, window_start: datetime, now: datetime, *, failed: bool) -> None:
        with self._transaction() as conn:
            row = throttle.release(_auth_row(conn, key), window_start, failed=failed)
            if row is None:
                conn.execute("DELETE FROM auth_throttle WHERE key = ?", (key,))
            else:
                # The row's own window length is unknown here; its expiry stands (a release
                # never moves the window or the lock).
                conn.execute(
                    "UPDATE auth_throttle SET failures = ?, pending = ? WHERE key = ?",
                    (row.failures, row.pending, key),
                )


def _auth_row(conn: sqlite3.Connection, key: str) -> throttle.ThrottleRow | None:
    row = conn.execute(
        "SELECT window_start, failures, pending, locked_until FROM auth_throttle WHERE key = ?", (key,)
    ).fetchone()
    if row is None:
        return None
    return throttle.ThrottleRow(
        window_start=codec.from_us(row[0]),
        failures=row[1],
        pending=row[2],
        locked_until=None if row[3] is None else codec.from_us(row[3]),
    )


def _auth_write(conn: sqlite3.Connection, key: str, row: throttle.ThrottleRow, window: timedelta) -> None:
    conn.execute(
        "INSERT INTO auth_throttle (key, window_start, failures, pending, locked_until, expires_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET window_start = excluded.window_start, "
        "failures = excluded.failures, pending = excluded.pending, locked_until = excluded.locked_until, "
        "expires_at = excluded.expires_at",
        (
            key,
            codec.to_us(row.window_start),
            row.failures,
            row.pending,
            codec.opt_to_us(row.locked_until),
            codec.to_us(row.expires_at(window)),
        ),
    )


_AUDIT_COLUMNS = "writer, seq, at, actor, event, object, details, prev_mac, mac"
_INSERT_AUDIT = f"INSERT INTO audit_events ({_AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"


def _append_audit(conn: sqlite3.Connection, seal: AuditSeal | None, outcome: Mapping[str, int] | None = None) -> None:
    """Inside a write transaction: the action's audit rows (store.base.AuditSeal)."""
    if seal is None:
        return
    rows = [
        (r.writer, r.seq, codec.to_us(r.at), r.actor, r.event, r.target, r.details_text(), r.prev_mac, r.mac)
        for r in seal(outcome or {})
    ]
    conn.executemany(_INSERT_AUDIT, rows)


def _audit_record(row: sqlite3.Row | tuple[object, ...]) -> AuditRecord:
    writer, seq, at, actor, event, obj, details, prev_mac, mac = row
    return AuditRecord(
        writer=str(writer),
        seq=int(str(seq)),
        at=codec.from_us(at),
        actor=str(actor),
        event=str(event),
        target=str(obj),
        details=json.loads(str(details)),
        prev_mac=str(prev_mac),
        mac=str(mac),
    )


def _mark_renewed(conn: sqlite3.Connection, renewed: str, new: CertificateRecord) -> None:
    """Inside a write transaction: ``renewed`` is superseded by ``new``, or RenewalRefused."""
    if conn.execute(_MARK_RENEWED, (new.serial, renewed, new.integration_id)).rowcount != 1:
        raise RenewalRefused(renewed)


@contextmanager
def _faults() -> Iterator[None]:
    """Re-raise SQLite's faults of the environment as ``StoreUnavailable``; the rest unchanged."""
    try:
        yield
    except sqlite3.Error as exc:
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in _UNAVAILABLE_CODES:
            # SQLite's own text ("database or disk is full"): it never names the file.
            raise StoreUnavailable(str(exc)) from exc
        raise


def _require_live(conn: sqlite3.Connection, integration_id: str) -> None:
    row = conn.execute("SELECT 1 FROM integrations WHERE id = ? AND deleted_at IS NULL", (integration_id,)).fetchone()
    if row is None:
        raise IntegrationNotFound(integration_id)


def _schema_version(conn: sqlite3.Connection) -> int:
    (version,) = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    return int(version)


def _insert(
    conn: sqlite3.Connection,
    sql: str,
    params: Sequence[object],
    duplicate: Callable[[str], StoreError],
    key: str,
) -> None:
    """One INSERT; a duplicate key becomes ``duplicate(key)``, any other constraint failure propagates."""
    try:
        conn.execute(sql, params)
    except sqlite3.IntegrityError as exc:
        if _is_unique_violation(exc):
            raise duplicate(key) from exc
        raise


def _is_unique_violation(exc: sqlite3.IntegrityError) -> bool:
    # sqlite_errorname (Python 3.11+) tells a duplicate key from e.g. a foreign-key failure.
    return getattr(exc, "sqlite_errorname", "") in ("SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_UNIQUE")


def _create_private_file(path: Path) -> None:
    """Create the database file with mode 0600: it holds password hashes and
    encrypted NT hashes. SQLite gives its -wal and -shm files the same mode.
    An existing file that group or others may write to is refused."""
    if not path.exists():
        # FileExistsError: another process (the CLI, another worker) created it since the check.
        with suppress(FileExistsError):
            write_private(path, b"")
    check_not_writable(path, PRIVATE_MODE)
