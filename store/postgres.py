"""The PostgreSQL store (asyncpg), for several server processes or hosts sharing one database.

Semantics mirror ``SQLiteStore`` exactly; the contract suite in ``tests/store`` runs on both.

Round trips. asyncpg prepares each distinct query once per connection and caches it, so a
repeated call is one Bind/Execute/Sync exchange. The two hot write paths, ``record_issuance``
and ``add_challenge``, are PL/pgSQL functions created by the migrations (``store/schema_postgres``):
one ``SELECT fn(...)`` in autocommit mode is one round trip and one implicit transaction, and
any error inside it rolls the whole call back. Reads are single statements.

The pool is ``store.pg_pool.ConnectionPool`` (why not ``asyncpg.Pool``: see there). Nothing
here leaves session state on a connection (no SET, LISTEN, cursors or session-level advisory
locks; ``set_config(..., true)`` is transaction-local), so a released connection needs no reset.

Columns. Each table's columns and their order come from ``store.columns``, shared with the
SQLite store; ``_PG`` says how PostgreSQL keeps each kind (timestamptz, boolean, text[]).

Concurrency, under PostgreSQL's default READ COMMITTED isolation:

* Challenge consumption is ``UPDATE challenges SET used_at ... WHERE id = (SELECT id ... AND
  used_at IS NULL ... LIMIT 1 FOR UPDATE)``. Two transactions that pick the same row serialise
  on its row lock; the second one, once the first commits, re-evaluates the WHERE clause on the
  new row version (EvalPlanQual), finds ``used_at`` set and drops the row, so it never consumes
  it too, on this host or any other. If the first one rolls back instead (say, a duplicate
  transaction ID), the row is still unused and the second one takes it: the outcome is the
  same as running them one after the other, as SQLite does. ``SKIP LOCKED`` would skip waiting
  but reject the second one even in that case.
* Issuance versus deletion. Every write that needs a live integration (issuance, adding a
  challenge, the approval queue) first takes a *shared* transaction-scoped advisory lock keyed
  by the integration, then checks ``deleted_at`` in a fresh snapshot; ``delete_integration``
  first takes the same lock *exclusively*. So the delete waits until every in-flight issuance
  of the integration has committed (a transaction's locks are released after its commit is
  visible), and an issuance that arrives meanwhile queues behind the delete, then sees
  ``deleted_at`` set and fails with IntegrationNotFound. The delete's later statements run with
  fresh snapshots (READ COMMITTED takes one per statement), so its count of the certificates it
  revokes sees every certificate committed before it got the lock. The revocation itself is
  derived from ``deleted_at`` (``store/revocation_rule.py``), so after the delete returns, every
  certificate of the integration reads as revoked and none can be added.
  Why not ``SELECT ... FOR SHARE`` on the integration row: row locks do not queue fairly. A new
  FOR SHARE request that is compatible with the current share holders is granted even while
  the delete's UPDATE waits, so under steady enrollment traffic the row is never free and the
  delete starves (checked on PostgreSQL 15: with one session holding FOR SHARE and an UPDATE
  waiting, a second FOR SHARE is granted at once and the UPDATE still waits after the first
  commits; a first version of this store that used FOR SHARE had a delete still waiting after
  minutes behind 16 enrolling tasks). The lock manager
  that advisory locks use queues a new shared request behind a waiting exclusive one, so the
  delete waits only for the issuances already in flight. A hash collision between two
  integration ids only makes a delete of one wait for issuances of the other. (The
  foreign-key checks' FOR KEY SHARE lock would not help either: it does not conflict with an
  UPDATE that leaves the key alone.)
* ``delete_integration`` runs as one explicit transaction (several statements, so that the
  fresh-snapshot argument above holds); any failure rolls all of it back.
* Deadlocks: advisory locks come first, in the order challenge-cap lock, integration lock (the
  delete takes no challenge-cap lock). While a delete holds its exclusive integration lock, no
  other write to that integration's rows is running. Everything else takes row locks in the
  order: one challenge row, then certificate rows, then the ``meta`` epoch row. So no cycle of
  waits can form.
* Renewed once. A renewal's issuance (``scep_record_renewal``) and the approval of a queued
  renewal both set the renewed certificate's ``superseded_by`` with one ``UPDATE ... WHERE
  status = 'issued' AND superseded_by IS NULL``: concurrent renewals signed by one certificate
  serialise on its row lock and the later one, re-checking the new row version, updates nothing
  and changes nothing (RenewalRefused). The approval holds the pending transaction's row lock
  before it takes the certificate's; an issuance never waits on a transaction row (its own row
  is new, and a duplicate of a committed key fails at once), so no cycle forms there either.
* Pending renewals. A renewal queued for approval (``record_pending``) first locks the renewed
  certificate's row (``SELECT ... FOR UPDATE``), then looks for another pending renewal of it:
  concurrent renewals of one certificate serialise there, and the later one, whose check runs
  with a fresh snapshot, sees the first one's row and fails (RenewalPending). It takes no
  challenge row and no transaction row lock, so it keeps the row lock order above.
* Failed-login throttling (``auth_reserve``, ``auth_release``) is one transaction each that
  locks the key's row (``INSERT ... ON CONFLICT DO NOTHING`` of a placeholder, then ``SELECT
  ... FOR UPDATE``), computes the new counts with ``store.throttle`` (the same code as
  SQLite's) and writes them back. Concurrent reservations of one key, from any process or
  host, serialise on the row, so no more than the budget are ever allowed at once. The purge
  of other keys' stale rows skips rows another transaction holds (``SKIP LOCKED``).
* Counters (revocation epoch, CRL numbers) are single ``UPDATE ... RETURNING`` / upsert
  statements, atomic under concurrent callers.

Faults of the environment (the server down or restarting, a lost connection, a full disk
or another resource exhausted on the server, a timeout) surface as ``StoreUnavailable``
from every pool call (``store.pg_pool``); a call that met one committed nothing, since each
unit of work is one statement or one explicit transaction.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from scep_ca.pki.records import CertificateRecord, Integration, RevokedEntry, Transaction, TransactionStatus
from store import revocation_rule as rule
from store import schema_postgres as schema
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
from store.columns import (
    CERTIFICATES,
    INTEGRATIONS,
    TRANSACTIONS,
    Column,
    Convert,
    Kind,
    RowMapper,
    insert_sql,
    username_key,
)
from store.pg_pool import ConnectionPool, safe_dsn
from store.postgres_console import PostgresConsoleMixin
from store.sqlite_codec import to_us

# Bounds the graceful close of each idle connection in close().
CLOSE_TIMEOUT_S = 5.0


def aware(value: datetime) -> datetime:
    """Refuse naive datetimes, as the SQLite store does: their zone would be a guess
    (asyncpg would silently take them as UTC)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("store times must be timezone-aware")
    return value


_PG_ENCODE: dict[Kind, Convert] = {Kind.TIME: aware, Kind.TEXT_TUPLE: list}


class PostgresConverters:
    """timestamptz, boolean and bytea map to asyncpg's own types; text[] is a list out and a
    tuple in."""

    def encode(self, column: Column) -> Convert | None:
        return _PG_ENCODE.get(column.kind)

    def decode(self, column: Column) -> Convert | None:
        return tuple if column.kind is Kind.TEXT_TUPLE else None


_PG = PostgresConverters()
_INTEGRATION_ROWS = RowMapper(INTEGRATIONS, _PG)
_CERTIFICATE_ROWS = RowMapper(CERTIFICATES, _PG)
_TRANSACTION_ROWS = RowMapper(TRANSACTIONS, _PG)

INTEGRATION_COLUMNS = INTEGRATIONS.select_names()
# The inserted certificate columns (the store tests bulk-load rows with them).
CERTIFICATE_COLUMNS = CERTIFICATES.insert_names()
TRANSACTION_COLUMNS = TRANSACTIONS.select_names()


def _call(function: str, count: int) -> str:
    return f"SELECT {function}({', '.join(f'${n}' for n in range(1, count + 1))})"


# The functions take the certificate's inserted columns, then challenge hash, now, supersedes
# (scep_record_renewal: the renewed serial first), as schema.issuance_params checks.
_RECORD_ISSUANCE = _call("scep_record_issuance", len(schema.issuance_params()))
_RECORD_RENEWAL = _call("scep_record_renewal", len(schema.issuance_params()) + 1)
# The audit rows, as nine parallel arrays from parameter $first on.
_AUDIT_COLUMNS = "writer, seq, at, actor, event, object, details, prev_mac, mac"


def _audit_rows_from(first: int) -> str:
    p = [f"${n}" for n in range(first, first + 9)]
    return (
        "SELECT w, s, a, ac, e, o, d::jsonb, pm, m FROM unnest("
        f"{p[0]}::text[], {p[1]}::bigint[], {p[2]}::timestamptz[], {p[3]}::text[], {p[4]}::text[], "
        f"{p[5]}::text[], {p[6]}::text[], {p[7]}::text[], {p[8]}::text[]) AS t(w, s, a, ac, e, o, d, pm, m)"
    )


_INSERT_AUDIT = f"INSERT INTO audit_events ({_AUDIT_COLUMNS}) {_audit_rows_from(1)}"


def _audited_issuance(call: str, count: int) -> str:
    """The issuance function and its audit rows in one statement (one round trip, one implicit
    transaction): the rows are inserted only when the function reports success, and a failing
    function or insert undoes both. A CTE that calls a volatile function runs exactly once."""
    return (
        f"WITH r AS ({call} AS result), "
        f"a AS (INSERT INTO audit_events ({_AUDIT_COLUMNS}) "
        f"SELECT q.* FROM ({_audit_rows_from(count + 1)}) AS q, r WHERE r.result = {schema.ISSUANCE_OK}) "
        "SELECT result FROM r"
    )


_AUDITED_ISSUANCE = _audited_issuance(_RECORD_ISSUANCE, len(schema.issuance_params()))
_AUDITED_RENEWAL = _audited_issuance(_RECORD_RENEWAL, len(schema.issuance_params()) + 1)
_ADD_CHALLENGE = "SELECT scep_add_challenge($1, $2, $3, $4, $5)"
_BUMP_EPOCH = "UPDATE meta SET value = value + 1 WHERE key = $1"
# One round trip before a PKCSReq signs anything: the transaction (NULL columns when there
# is none) and whether the challenge is usable.
_ENROLLMENT_STATE = (
    "SELECT {columns}, EXISTS (SELECT 1 FROM challenges WHERE integration_id = $1 AND challenge_hash = $3 "
    "AND used_at IS NULL AND expires_at > $4) "
    "FROM (SELECT 1) AS one LEFT JOIN transactions t ON t.integration_id = $1 AND t.transaction_id = $2"
).format(columns=TRANSACTIONS.select_names("t."))
# See "Issuance versus deletion" above. Two statements: the check needs a snapshot taken
# after the lock is granted.
_SHARE_INTEGRATION_LOCK = "SELECT pg_advisory_xact_lock_shared($1, hashtext($2))"
_LIVE = "SELECT 1 FROM integrations WHERE id = $1 AND deleted_at IS NULL"
# The same statement as in scep_record_issuance (see the reasoning there).
_CONSUME_CHALLENGE = """
UPDATE challenges SET used_at = $1
WHERE id = (
    SELECT id FROM challenges
    WHERE integration_id = $2 AND challenge_hash = $3 AND used_at IS NULL AND expires_at > $4
    LIMIT 1
    FOR UPDATE
)
"""
_INSERT_INTEGRATION = insert_sql(INTEGRATIONS, "$")
_INSERT_CERTIFICATE = insert_sql(CERTIFICATES, "$")
_INSERT_TRANSACTION = insert_sql(TRANSACTIONS, "$")
# See scep_record_renewal (store/schema_postgres.py) for why this settles concurrent renewals.
# These two run only once the integration is known live in the same transaction (a deleted
# one's certificates are revoked by store/revocation_rule.py, whatever their status column says).
_MARK_RENEWED = (
    "UPDATE certificates SET superseded_by = $1 "
    "WHERE serial = $2 AND integration_id = $3 AND status = 'issued' AND superseded_by IS NULL"
)
_SUPERSEDE = (
    "UPDATE certificates SET status = 'revoked', revoked_at = $1, revocation_reason = 'superseded' "
    "WHERE serial = $2 AND integration_id = $3 AND status = 'issued'"
)
# One pending renewal per certificate (record_pending); see "Pending renewals" above.
_LOCK_CERTIFICATE = "SELECT 1 FROM certificates WHERE serial = $1 FOR UPDATE"
_PENDING_RENEWAL = (
    "SELECT 1 FROM transactions WHERE integration_id = $1 AND renews = $2 AND status = 'pending' "
    "AND ($3::timestamptz IS NULL OR created_at >= $3) LIMIT 1"
)
# Failed-login throttling (store/throttle.py holds the arithmetic). $1 key, $2 now. The purge
# deletes a bounded number of other keys' rows whose window and lock are both over (rows are
# only created by reservations, so this keeps the table at about the keys still counted); it
# skips rows another transaction holds instead of waiting.
AUTH_PURGE_LIMIT = 100
_AUTH_PURGE = f"""
DELETE FROM auth_throttle WHERE key IN (
    SELECT key FROM auth_throttle WHERE expires_at <= $2::timestamptz AND key <> $1
    ORDER BY expires_at LIMIT {AUTH_PURGE_LIMIT} FOR UPDATE SKIP LOCKED
)
"""
# A placeholder, so that there is a row to lock: concurrent first reservations of a key wait
# on each other's insert here instead of racing past an empty SELECT ... FOR UPDATE.
_AUTH_ROW_ATTEMPTS = 5
_AUTH_PLACEHOLDER = """
INSERT INTO auth_throttle (key, window_start, failures, pending, locked_until, expires_at)
VALUES ($1, $2::timestamptz, 0, 0, NULL, $2::timestamptz) ON CONFLICT (key) DO NOTHING
"""
_AUTH_LOCK_ROW = "SELECT window_start, failures, pending, locked_until FROM auth_throttle WHERE key = $1 FOR UPDATE"
_AUTH_WRITE = """
UPDATE auth_throttle SET window_start = $2, failures = $3, pending = $4, locked_until = $5, expires_at = $6
WHERE key = $1
"""
_LIVE_INTEGRATION = f"SELECT {INTEGRATION_COLUMNS} FROM integrations WHERE id = $1 AND deleted_at IS NULL"
# Certificates as read, with the revocation rule applied (store/revocation_rule.py).
_GET_CERTIFICATE = f"SELECT {rule.COLUMNS} FROM {rule.JOINED} WHERE c.serial = $1"
_COUNT_BY_DELETION = rule.count_by_deletion_sql("$1")
_REVOKED_ENTRIES = rule.revoked_entries_sql("$1", deleted_ids_array=True)
_REVOKED_SHARD_ENTRIES = rule.revoked_entries_sql("$1", "$2", "$3", deleted_ids_array=True)
_ANY_INTEGRATION = f"SELECT {INTEGRATION_COLUMNS} FROM integrations WHERE id = $1"


class PostgresStore(PostgresConsoleMixin):
    """``Store`` on a PostgreSQL database. Call ``open()`` before use."""

    def __init__(self, dsn: str, pool_min: int = 1, pool_max: int = 10) -> None:
        self._dsn = dsn
        self._pool_min = pool_min
        self._pool_max = pool_max
        self._pool: ConnectionPool | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        """Create the pool and apply pending migrations (once, whoever else is starting)."""
        if self._pool is not None:
            return
        pool = ConnectionPool(self._dsn, self._pool_min, self._pool_max)
        try:
            await pool.open()
            async with pool.connection() as conn:
                await schema.apply_migrations(conn)
        except StoreUnavailable:
            await pool.close(CLOSE_TIMEOUT_S)
            raise
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            await pool.close(CLOSE_TIMEOUT_S)
            # A StoreError, so that every CLI command prints one line instead of a traceback.
            raise StoreError(f"cannot open PostgreSQL store at {safe_dsn(self._dsn)}: {exc}") from exc
        except BaseException:
            await pool.close(CLOSE_TIMEOUT_S)
            raise
        self._pool = pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close(CLOSE_TIMEOUT_S)

    def _p(self) -> ConnectionPool:
        if self._pool is None:
            raise StoreError("the store is not open")
        return self._pool

    def _certificate_record(self, row: Any) -> CertificateRecord:
        return _CERTIFICATE_ROWS.record(row)

    async def info(self) -> StoreInfo:
        async with self._p().connection() as conn:
            version = await schema.schema_version(conn)
            server_version, database = await conn.fetchrow(
                "SELECT current_setting('server_version'), current_database()"
            )
        return StoreInfo(
            schema_version=version,
            backend="postgresql",
            # Never the DSN: it may carry a password.
            extra={
                "server_version": str(server_version),
                "database": str(database),
                "pool": f"{self._pool_min}-{self._pool_max}",
            },
        )

    # -- integrations ----------------------------------------------------------------

    async def create_integration(self, integration: Integration, *, audit: AuditSeal | None = None) -> None:
        try:
            async with self._p().connection() as conn, conn.transaction():
                await conn.execute(_INSERT_INTEGRATION, *_INTEGRATION_ROWS.params(integration))
                await _append_audit(conn, audit)
        except asyncpg.UniqueViolationError as exc:
            raise DuplicateIntegration(
                f"an integration with id {integration.id!r} or username {integration.username!r} exists"
            ) from exc

    async def get_integration(self, integration_id: str, *, include_deleted: bool = False) -> Integration | None:
        sql = _ANY_INTEGRATION if include_deleted else _LIVE_INTEGRATION
        row = await self._p().fetchrow(sql, integration_id)
        return None if row is None else _INTEGRATION_ROWS.record(row)

    async def find_integration_by_username(self, username: str) -> Integration | None:
        row = await self._p().fetchrow(
            f"SELECT {INTEGRATION_COLUMNS} FROM integrations WHERE username_key = $1 AND deleted_at IS NULL",
            username_key(username),
        )
        return None if row is None else _INTEGRATION_ROWS.record(row)

    async def list_integrations(self, *, include_deleted: bool = False) -> Sequence[Integration]:
        where = "" if include_deleted else " WHERE deleted_at IS NULL"
        rows = await self._p().fetch(f"SELECT {INTEGRATION_COLUMNS} FROM integrations{where} ORDER BY created_at, id")
        return [_INTEGRATION_ROWS.record(row) for row in rows]

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
            async with self._p().connection() as conn, conn.transaction():
                status = await conn.execute(
                    "UPDATE integrations SET username = $1, username_key = $2, password_scrypt = $3, "
                    "nt_hash_encrypted = $4 WHERE id = $5 AND deleted_at IS NULL",
                    username,
                    username_key(username),
                    password_scrypt,
                    nt_hash_encrypted,
                    integration_id,
                )
                if _rowcount(status) != 1:
                    raise IntegrationNotFound(integration_id)
                await _append_audit(conn, audit)
        except asyncpg.UniqueViolationError as exc:
            raise DuplicateIntegration(f"another live integration has username {username!r}") from exc

    async def delete_integration(
        self, integration_id: str, now: datetime, *, audit: AuditSeal | None = None
    ) -> DeleteResult:
        aware(now)
        async with self._p().connection() as conn, conn.transaction():
            # Waits for in-flight issuances of this integration; later ones queue behind us.
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))", schema.LOCK_CLASS_INTEGRATION, integration_id
            )
            status = await conn.execute(
                "UPDATE integrations SET deleted_at = $1 WHERE id = $2 AND deleted_at IS NULL", now, integration_id
            )
            if _rowcount(status) != 1:
                raise IntegrationNotFound(integration_id)
            # Nothing is written per certificate: deleted_at revokes them (store/revocation_rule.py).
            # Counted for the audit event and the operator; a new statement, so a new snapshot:
            # it sees every issuance committed before the lock.
            revoked = sum(int(row[0]) for row in await conn.fetch(_COUNT_BY_DELETION, integration_id))
            # Used ones too: nothing can consume them any more, and nothing would purge them.
            await conn.execute("DELETE FROM challenges WHERE integration_id = $1", integration_id)
            await conn.execute(_BUMP_EPOCH, schema.REVOCATION_EPOCH_KEY)
            await _append_audit(conn, audit, {"revoked": revoked})
        return DeleteResult(revoked=revoked, deleted_at=now)

    # -- challenges ------------------------------------------------------------------

    async def add_challenge(self, add: ChallengeAdd, *, audit: AuditSeal | None = None) -> bool:
        params = (add.integration_id, add.challenge_hash, aware(add.now), aware(add.expires_at), add.max_unused)
        if audit is None:
            result = await self._p().fetchval(_ADD_CHALLENGE, *params)
        else:
            async with self._p().connection() as conn, conn.transaction():
                result = await conn.fetchval(_ADD_CHALLENGE, *params)
                if result == schema.ADD_CHALLENGE_OK:
                    await _append_audit(conn, audit)
        if result == schema.ADD_CHALLENGE_NO_INTEGRATION:
            raise IntegrationNotFound(add.integration_id)
        return bool(result == schema.ADD_CHALLENGE_OK)

    async def challenge_usable(self, integration_id: str, challenge_hash: str, now: datetime) -> bool:
        row = await self._p().fetchval(
            "SELECT 1 FROM challenges WHERE integration_id = $1 AND challenge_hash = $2 "
            "AND used_at IS NULL AND expires_at > $3 LIMIT 1",
            integration_id,
            challenge_hash,
            aware(now),
        )
        return row is not None

    async def count_unused_challenges(self, integration_id: str, now: datetime) -> int:
        count = await self._p().fetchval(
            "SELECT count(*) FROM challenges WHERE integration_id = $1 AND used_at IS NULL AND expires_at > $2",
            integration_id,
            aware(now),
        )
        return int(count)

    # -- issuance --------------------------------------------------------------------

    async def record_issuance(self, req: IssuanceRequest, *, audit: AuditSeal | None = None) -> None:
        cert = req.certificate
        now = aware(req.now)
        params: tuple[Any, ...] = (
            *_CERTIFICATE_ROWS.params(cert, created_at=now),
            req.challenge_hash,
            now,
            req.supersedes,
        )
        if req.renews is not None:
            params = (req.renews, *params)
        if audit is None:
            sql = _RECORD_ISSUANCE if req.renews is None else _RECORD_RENEWAL
        else:
            sql = _AUDITED_ISSUANCE if req.renews is None else _AUDITED_RENEWAL
            params = (*params, *_audit_params(audit({})))
        try:
            result = await self._p().fetchval(sql, *params)
        except asyncpg.UniqueViolationError as exc:
            # The function inserts the certificate first, as SQLiteStore does, so a request that
            # duplicates both is reported as DuplicateSerial on both backends.
            if exc.constraint_name == schema.CERTIFICATES_PKEY:
                raise DuplicateSerial(cert.serial) from exc
            if exc.constraint_name == schema.TRANSACTIONS_PKEY:
                raise DuplicateTransaction(cert.transaction_id) from exc
            raise
        if result == schema.ISSUANCE_NO_INTEGRATION:
            raise IntegrationNotFound(cert.integration_id)
        if result == schema.ISSUANCE_CHALLENGE_REJECTED:
            raise ChallengeRejected(cert.integration_id)
        if result == schema.ISSUANCE_RENEWAL_REFUSED:
            raise RenewalRefused(req.renews)

    async def enrollment_state(
        self, integration_id: str, transaction_id: str, challenge_hash: str | None, now: datetime
    ) -> EnrollmentState:
        row = await self._p().fetchrow(_ENROLLMENT_STATE, integration_id, transaction_id, challenge_hash, aware(now))
        txn = None if row is None or row[0] is None else _TRANSACTION_ROWS.record(row)
        return EnrollmentState(transaction=txn, challenge_usable=bool(row is not None and row[-1]))

    async def get_transaction(self, integration_id: str, transaction_id: str) -> Transaction | None:
        row = await self._p().fetchrow(
            f"SELECT {TRANSACTION_COLUMNS} FROM transactions WHERE integration_id = $1 AND transaction_id = $2",
            integration_id,
            transaction_id,
        )
        return None if row is None else _TRANSACTION_ROWS.record(row)

    # The approval queue is operator-paced, so these run as explicit multi-statement
    # transactions rather than server-side functions; the locking is the same as issuance's.

    async def record_pending(
        self,
        txn: Transaction,
        challenge_hash: str | None,
        now: datetime,
        *,
        open_since: datetime | None = None,
        audit: AuditSeal | None = None,
    ) -> None:
        aware(now)
        params = _TRANSACTION_ROWS.params(txn)
        async with self._p().connection() as conn, conn.transaction():
            await _require_live(conn, txn.integration_id)
            if txn.renews is not None:
                # Concurrent renewals of one certificate queue on its row lock; the next one's
                # check then runs with a fresh snapshot (READ COMMITTED) and sees the first's row.
                await conn.execute(_LOCK_CERTIFICATE, txn.renews)
                since = None if open_since is None else aware(open_since)
                if await conn.fetchval(_PENDING_RENEWAL, txn.integration_id, txn.renews, since) is not None:
                    raise RenewalPending(txn.renews)
            if challenge_hash is not None:
                status = await conn.execute(_CONSUME_CHALLENGE, now, txn.integration_id, challenge_hash, now)
                if _rowcount(status) != 1:
                    raise ChallengeRejected(txn.integration_id)
            try:
                await conn.execute(_INSERT_TRANSACTION, *params)
            except asyncpg.UniqueViolationError as exc:
                if exc.constraint_name == schema.TRANSACTIONS_PKEY:
                    raise DuplicateTransaction(txn.transaction_id) from exc
                raise
            await _append_audit(conn, audit)

    async def list_transactions(
        self, status: TransactionStatus | None = None, integration_id: str | None = None
    ) -> Sequence[Transaction]:
        clauses: list[str] = []
        params: list[object] = []
        if status is not None:
            params.append(status.value)
            clauses.append(f"status = ${len(params)}")
        if integration_id is not None:
            params.append(integration_id)
            clauses.append(f"integration_id = ${len(params)}")
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        # The key breaks ties in created_at, so the order is stable between calls.
        rows = await self._p().fetch(
            f"SELECT {TRANSACTION_COLUMNS} FROM transactions{where} "
            "ORDER BY created_at, integration_id, transaction_id",
            *params,
        )
        return [_TRANSACTION_ROWS.record(row) for row in rows]

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
        aware(now)
        cert_params = None if certificate is None else _CERTIFICATE_ROWS.params(certificate, created_at=now)
        async with self._p().connection() as conn, conn.transaction():
            await _require_live(conn, integration_id)
            # FOR UPDATE: of two operators resolving the same request at once, the second waits,
            # re-checks the status once the first commits, and gets False.
            pending = await conn.fetchrow(
                "SELECT renews FROM transactions WHERE integration_id = $1 AND transaction_id = $2 "
                "AND status = 'pending' FOR UPDATE",
                integration_id,
                transaction_id,
            )
            if pending is None:
                return False
            if cert_params is None:
                await conn.execute(
                    "UPDATE transactions SET status = 'rejected' WHERE integration_id = $1 AND transaction_id = $2",
                    integration_id,
                    transaction_id,
                )
                await _append_audit(conn, audit)
                return True
            try:
                await conn.execute(_INSERT_CERTIFICATE, *cert_params)
            except asyncpg.UniqueViolationError as exc:
                if exc.constraint_name == schema.CERTIFICATES_PKEY:
                    raise DuplicateSerial(cert_params[0]) from exc
                raise
            renews = pending[0]
            if renews is not None:
                # Raising rolls the whole approval back: a certificate renewed or revoked while
                # the request waited is not renewed again.
                marked = await conn.execute(_MARK_RENEWED, cert_params[0], renews, integration_id)
                if _rowcount(marked) != 1:
                    raise RenewalRefused(renews)
            await conn.execute(
                "UPDATE transactions SET status = 'issued', serial = $1 "
                "WHERE integration_id = $2 AND transaction_id = $3",
                cert_params[0],
                integration_id,
                transaction_id,
            )
            if supersedes is not None:
                revoked = await conn.execute(_SUPERSEDE, now, supersedes, integration_id)
                if _rowcount(revoked):
                    await conn.execute(_BUMP_EPOCH, schema.REVOCATION_EPOCH_KEY)
            await _append_audit(conn, audit)
            return True

    # -- certificates ----------------------------------------------------------------

    async def get_certificate(self, serial: str) -> CertificateRecord | None:
        row = await self._p().fetchrow(_GET_CERTIFICATE, serial)
        return None if row is None else _CERTIFICATE_ROWS.record(row)

    async def list_certificates(self, flt: CertificateFilter) -> Sequence[CertificateRecord]:
        clauses: list[str] = []
        params: list[object] = []

        def param(value: object) -> str:
            params.append(value)
            return f"${len(params)}"

        if flt.integration_id is not None:
            clauses.append(f"c.integration_id = {param(flt.integration_id)}")
        if flt.status is not None:
            clauses.append(rule.status_is(flt.status))
        if flt.expired_before is not None:
            clauses.append(f"c.not_after < {param(aware(flt.expired_before))}")
        if flt.issued_only_unexpired_at is not None:
            clauses.append(f"{rule.ISSUED} AND c.not_after >= {param(aware(flt.issued_only_unexpired_at))}")
        if flt.on_hold:
            clauses.append(rule.ON_HOLD)
        if flt.expires_by is not None:
            clauses.append(f"c.not_after <= {param(aware(flt.expires_by))}")
        sql = f"SELECT {rule.COLUMNS} FROM {rule.JOINED}"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY c.created_at, c.serial"
        if flt.limit is not None:
            sql += f" LIMIT {param(max(flt.limit, 0))}"
        rows = await self._p().fetch(sql, *params)
        return [_CERTIFICATE_ROWS.record(row) for row in rows]

    async def count_certificates(self, integration_id: str | None = None) -> int:
        if integration_id is None:
            count = await self._p().fetchval("SELECT count(*) FROM certificates")
        else:
            count = await self._p().fetchval(
                "SELECT count(*) FROM certificates WHERE integration_id = $1", integration_id
            )
        return int(count)

    async def certificate_counts(self, now: datetime, horizons: Sequence[timedelta]) -> Sequence[CertificateCounts]:
        now = aware(now)
        # Counted per (integration, status as written) in one scan, then the revocation rule
        # applied to those few groups (store/revocation_rule.py), not joined per row.
        expiring = "".join(
            f", count(*) FILTER (WHERE not_after > $1 AND not_after <= $1 + ${i + 2}::interval) AS e{i}"
            for i in range(len(horizons))
        )
        derived = "".join(f", coalesce(sum(c.e{i}) FILTER (WHERE {rule.ISSUED}), 0)" for i in range(len(horizons)))
        rows = await self._p().fetch(
            f"SELECT c.integration_id, coalesce(sum(c.valid) FILTER (WHERE {rule.ISSUED}), 0), "
            f"coalesce(sum(c.n) FILTER (WHERE {rule.REVOKED}), 0){derived} "
            f"FROM (SELECT integration_id, status, count(*) AS n, count(*) FILTER (WHERE not_after > $1) AS valid"
            f"{expiring} FROM certificates GROUP BY integration_id, status) c "
            "JOIN integrations i ON i.id = c.integration_id GROUP BY c.integration_id ORDER BY c.integration_id",
            now,
            *horizons,
        )
        return [CertificateCounts(row[0], int(row[1]), int(row[2]), tuple(int(n) for n in row[3:])) for row in rows]

    async def acquire_lease(self, name: str, now: datetime, ttl: timedelta) -> int | None:
        # A lease is a meta row holding its expiry (microseconds); the expiry is also the holder's token.
        token = to_us(aware(now) + ttl)
        value = await self._p().fetchval(
            "INSERT INTO meta (key, value) VALUES ($1, $2) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value WHERE meta.value <= $3 RETURNING value",
            LEASE_KEY_PREFIX + name,
            token,
            to_us(aware(now)),
        )
        return token if value is not None else None

    async def release_lease(self, name: str, token: int) -> None:
        await self._p().execute(
            "UPDATE meta SET value = 0 WHERE key = $1 AND value = $2", LEASE_KEY_PREFIX + name, token
        )

    async def end_hold(
        self, serial: str, revoke_reason: str | None, now: datetime, *, audit: AuditSeal | None = None
    ) -> bool:
        # One statement, as revoke_certificate: the epoch moves exactly when the hold ended.
        params = (revoke_reason, aware(now), serial, HOLD, schema.REVOCATION_EPOCH_KEY)
        if audit is None:
            return bool(await self._p().fetchval(_END_HOLD, *params) == 1)
        async with self._p().connection() as conn, conn.transaction():
            changed = await conn.fetchval(_END_HOLD, *params) == 1
            if changed:
                await _append_audit(conn, audit)
        return bool(changed)

    async def revoke_certificate(
        self, serial: str, reason: str, now: datetime, *, audit: AuditSeal | None = None
    ) -> bool:
        # One statement: the epoch moves exactly when a row was revoked, in the same transaction.
        params = (aware(now), reason, serial, schema.REVOCATION_EPOCH_KEY)
        if audit is None:
            return bool(await self._p().fetchval(_REVOKE, *params) == 1)
        async with self._p().connection() as conn, conn.transaction():
            changed = await conn.fetchval(_REVOKE, *params) == 1
            if changed:
                await _append_audit(conn, audit)
        return bool(changed)

    # -- audit log ---------------------------------------------------------------------

    async def append_audit(self, seal: AuditSeal) -> None:
        # One statement: its own transaction.
        await self._p().execute(_INSERT_AUDIT, *_audit_params(seal({})))

    async def list_audit(self, flt: AuditFilter) -> Sequence[AuditRecord]:
        clauses: list[str] = []
        params: list[object] = []
        for column, op, value in (
            ("at", ">=", None if flt.since is None else aware(flt.since)),
            ("at", "<", None if flt.until is None else aware(flt.until)),
            ("event", "=", flt.event),
            ("actor", "=", flt.actor),
            ("writer", "=", flt.writer),
        ):
            if value is not None:
                params.append(value)
                clauses.append(f"{column} {op} ${len(params)}")
        sql = f"SELECT {_AUDIT_READ} FROM audit_events"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY at DESC, writer DESC, seq DESC" if flt.newest_first else " ORDER BY at, writer, seq"
        if flt.limit is not None:
            params.append(max(flt.limit, 0))
            sql += f" LIMIT ${len(params)}"
        return [_audit_record(row) for row in await self._p().fetch(sql, *params)]

    async def audit_page(self, after: tuple[str, int] | None, limit: int) -> Sequence[AuditRecord]:
        writer, seq = after or ("", -1)
        rows = await self._p().fetch(
            f"SELECT {_AUDIT_READ} FROM audit_events WHERE (writer, seq) > ($1, $2) ORDER BY writer, seq LIMIT $3",
            writer,
            seq,
            limit,
        )
        return [_audit_record(row) for row in rows]

    async def audit_heads(self) -> Sequence[tuple[str, int, str]]:
        rows = await self._p().fetch(
            "SELECT DISTINCT ON (writer) writer, seq, mac FROM audit_events ORDER BY writer, seq DESC"
        )
        return [(str(r[0]), int(r[1]), str(r[2])) for r in rows]

    async def audit_empty(self) -> bool:
        return await self._p().fetchval("SELECT 1 FROM audit_events LIMIT 1") is None

    async def revoked_entries(self, issuer_fingerprint: str) -> Sequence[RevokedEntry]:
        rows = await self._p().fetch(_REVOKED_ENTRIES, issuer_fingerprint)
        return [RevokedEntry(serial=row[0], revoked_at=row[1], reason=row[2]) for row in rows]

    async def revoked_shard_entries(
        self, issuer_fingerprint: str, shard: int, expired_before: datetime
    ) -> Sequence[RevokedEntry]:
        rows = await self._p().fetch(_REVOKED_SHARD_ENTRIES, issuer_fingerprint, shard, aware(expired_before))
        return [RevokedEntry(serial=row[0], revoked_at=row[1], reason=row[2]) for row in rows]

    async def next_crl_number(self, issuer_fingerprint: str, *, audit: AuditSeal | None = None) -> int:
        async with self._p().connection() as conn, conn.transaction():
            number = int(await conn.fetchval(_NEXT_CRL_NUMBER, issuer_fingerprint))
            await _append_audit(conn, audit, {"number": number})
        return number

    async def revocation_epoch(self) -> int:
        value = await self._p().fetchval("SELECT value FROM meta WHERE key = $1", schema.REVOCATION_EPOCH_KEY)
        return int(value)

    # -- failed-login throttling -----------------------------------------------------

    async def auth_locked_until(self, key: str, now: datetime) -> datetime | None:
        value: datetime | None = await self._p().fetchval(
            "SELECT locked_until FROM auth_throttle WHERE key = $1 AND locked_until > $2", key, aware(now)
        )
        return value

    async def auth_reserve(
        self, key: str, now: datetime, window: timedelta, max_attempts: int, lockout: timedelta
    ) -> AuthReservation:
        now = aware(now)
        async with self._p().connection() as conn:
            # Its own short transaction: it never waits (SKIP LOCKED), and holding its row locks
            # while waiting for this key's row could close a cycle with another reservation
            # that purged this key's expired row.
            await conn.execute(_AUTH_PURGE, key, now)
            async with conn.transaction():
                found = await _lock_throttle_row(conn, key, now)
                row, answer = throttle.reserve(found, now, window, max_attempts, lockout)
                await conn.execute(
                    _AUTH_WRITE,
                    key,
                    row.window_start,
                    row.failures,
                    row.pending,
                    row.locked_until,
                    row.expires_at(window),
                )
        return answer

    async def auth_release(self, key: str, window_start: datetime, now: datetime, *, failed: bool) -> None:
        aware(now)
        async with self._p().connection() as conn, conn.transaction():
            row = throttle.release(_throttle_row(await conn.fetchrow(_AUTH_LOCK_ROW, key)), window_start, failed=failed)
            if row is None:
                await conn.execute("DELETE FROM auth_throttle WHERE key = $1", key)
            else:
                # A release never moves the window or the lock, so the row's expiry stands.
                await conn.execute(
                    "UPDATE auth_throttle SET failures = $2, pending = $3 WHERE key = $1",
                    key,
                    row.failures,
                    row.pending,
                )


_NEXT_CRL_NUMBER = (
    "INSERT INTO crl_numbers (issuer_fingerprint, number) VALUES ($1, 1) "
    "ON CONFLICT (issuer_fingerprint) DO UPDATE SET number = crl_numbers.number + 1 RETURNING number"
)
_REVOKE = (
    "WITH revoked AS ("
    "  UPDATE certificates SET status = 'revoked', revoked_at = $1, revocation_reason = $2"
    f"  WHERE serial = $3 AND status = 'issued' AND {rule.LIVE_INTEGRATION} RETURNING 1"
    "), bumped AS ("
    "  UPDATE meta SET value = value + 1 WHERE key = $4 AND EXISTS (SELECT 1 FROM revoked) RETURNING 1"
    ") SELECT count(*) FROM revoked"
)
_END_HOLD = (
    "WITH ended AS ("
    "  UPDATE certificates SET"
    "    status = CASE WHEN $1::text IS NULL THEN 'issued' ELSE 'revoked' END,"
    "    revoked_at = CASE WHEN $1::text IS NULL THEN NULL ELSE $2::timestamptz END,"
    "    revocation_reason = $1::text"
    f"  WHERE serial = $3 AND status = 'revoked' AND revocation_reason = $4 AND {rule.LIVE_INTEGRATION} RETURNING 1"
    "), bumped AS ("
    "  UPDATE meta SET value = value + 1 WHERE key = $5 AND EXISTS (SELECT 1 FROM ended) RETURNING 1"
    ") SELECT count(*) FROM ended"
)
# details as text: exactly what was written, whatever jsonb's own spacing.
_AUDIT_READ = "writer, seq, at, actor, event, object, details::text, prev_mac, mac"


def _audit_params(rows: Sequence[AuditRecord]) -> tuple[list[Any], ...]:
    return (
        [r.writer for r in rows],
        [r.seq for r in rows],
        [aware(r.at) for r in rows],
        [r.actor for r in rows],
        [r.event for r in rows],
        [r.target for r in rows],
        [r.details_text() for r in rows],
        [r.prev_mac for r in rows],
        [r.mac for r in rows],
    )


async def _append_audit(conn: Any, seal: AuditSeal | None, outcome: Mapping[str, int] | None = None) -> None:
    """Inside a transaction on ``conn``: the action's audit rows (store.base.AuditSeal)."""
    if seal is not None:
        await conn.execute(_INSERT_AUDIT, *_audit_params(seal(outcome or {})))


def _audit_record(row: Any) -> AuditRecord:
    return AuditRecord(
        writer=row[0],
        seq=int(row[1]),
        at=row[2],
        actor=row[3],
        event=row[4],
        target=row[5],
        details=json.loads(row[6]),
        prev_mac=row[7],
        mac=row[8],
    )


def _throttle_row(record: Any) -> throttle.ThrottleRow | None:
    if record is None:
        return None
    return throttle.ThrottleRow(
        window_start=record["window_start"],
        failures=record["failures"],
        pending=record["pending"],
        locked_until=record["locked_until"],
    )


async def _lock_throttle_row(conn: Any, key: str, now: datetime) -> throttle.ThrottleRow:
    """Inside a transaction: the key's row, locked (a placeholder inserted when there is none).

    A placeholder is an empty window starting now, which throttle.reserve reads as no row. The
    SELECT finds nothing only when another session's purge deleted the row between the two
    statements (its window and lock were over); the next round inserts a placeholder again.
    """
    for _ in range(_AUTH_ROW_ATTEMPTS):
        await conn.execute(_AUTH_PLACEHOLDER, key, now)
        row = _throttle_row(await conn.fetchrow(_AUTH_LOCK_ROW, key))
        if row is not None:
            return row
    raise StoreError("auth_throttle: the key's row was deleted under every attempt to lock it")


async def _require_live(conn: Any, integration_id: str) -> None:
    """Inside a transaction: take the shared integration lock, then check liveness."""
    await conn.execute(_SHARE_INTEGRATION_LOCK, schema.LOCK_CLASS_INTEGRATION, integration_id)
    if await conn.fetchval(_LIVE, integration_id) is None:
        raise IntegrationNotFound(integration_id)


def _rowcount(status: str) -> int:
    """The row count of a command tag such as ``UPDATE 3`` or ``DELETE 0``."""
    return int(status.rsplit(" ", 1)[-1])
