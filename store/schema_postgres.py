"""PostgreSQL schema migrations, applied in order by ``PostgresStore.open`` and ``upgrade``.

The logical schema is SQLite's (``store/schema_sqlite.py``) with native types: ``timestamptz``
for times (microsecond precision, so records round-trip exactly), ``bytea``, ``boolean``,
``text[]`` for the SAN type list, ``bigint`` counters. Key and ordering columns use the "C"
collation so that ORDER BY and uniqueness are bytewise, as in SQLite, whatever the database's
locale, and btree comparisons skip the locale machinery.

Versions follow SQLite's (1: tables, 2: approval flags and the pending-queue index, 3: the
failed-login throttle table, 4: renewed-once marks and ``scep_record_renewal``, 7: the CRL
shard column, with both functions redefined to write it), so that
``scep-ca db info`` means the same on both backends. Migration 2 also creates two PL/pgSQL
functions for the hot paths, ``scep_record_issuance`` and ``scep_add_challenge``: each runs its
whole unit of work server-side, so a call is one round trip and one implicit transaction (see
``store/postgres.py`` for the concurrency reasoning).

Concurrent starts: ``apply_migrations`` takes a transaction-scoped advisory lock before it even
creates ``schema_migrations``, and applies every pending migration plus its bookkeeping row in
that one transaction (PostgreSQL DDL is transactional). Several processes opening a new
database at once therefore queue on the lock; the first applies everything, the others then
find nothing to do. A migration never changes once released: add a new one instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from store.base import StoreError
from store.columns import CERTIFICATES
from store.search import PG_ASCII_FOLD

# pg_advisory_xact_lock(classid, objid) keys. The class is "SCEP" in ASCII, so a DBA reading
# pg_locks can tell the locks apart from other applications' sharing the database.
LOCK_CLASS_MIGRATIONS = 0x53434550
LOCK_CLASS_CHALLENGE_CAP = 0x53434551
# (class, hashtext(integration_id)): shared by every write that needs a live integration,
# exclusive in delete_integration.
LOCK_CLASS_INTEGRATION = 0x53434552

REVOCATION_EPOCH_KEY = "revocation_epoch"

# Result codes of the PL/pgSQL functions (plain integers: cheaper than raising and catching).
ISSUANCE_OK = 0
ISSUANCE_NO_INTEGRATION = 1
ISSUANCE_CHALLENGE_REJECTED = 2
ISSUANCE_RENEWAL_REFUSED = 3
ADD_CHALLENGE_OK = 0
ADD_CHALLENGE_FULL = 1
ADD_CHALLENGE_NO_INTEGRATION = 2

# Named so that a unique violation can be mapped to the right StoreError by constraint name.
CERTIFICATES_PKEY = "certificates_pkey"
TRANSACTIONS_PKEY = "transactions_pkey"


@dataclass(frozen=True)
class Migration:
    version: int
    statements: tuple[str, ...]


MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""

_RECORD_ISSUANCE = f"""
CREATE FUNCTION scep_record_issuance(
    p_serial text,
    p_integration_id text,
    p_issuer_fingerprint text,
    p_subject text,
    p_not_before timestamptz,
    p_not_after timestamptz,
    p_der bytea,
    p_transaction_id text,
    p_pubkey_sha256 text,
    p_message_type integer,
    p_requester_address text,
    p_user_agent text,
    p_status text,
    p_revoked_at timestamptz,
    p_revocation_reason text,
    p_created_at timestamptz,
    p_challenge_hash text,
    p_now timestamptz,
    p_supersedes text
) RETURNS integer
LANGUAGE plpgsql VOLATILE
AS $fn$
BEGIN
    -- Shared integration lock, then the liveness check in a fresh snapshot (each statement of a
    -- VOLATILE function gets one under READ COMMITTED): see "Issuance versus deletion" in
    -- store/postgres.py. Released at commit, after the commit is visible to other sessions.
    PERFORM pg_advisory_xact_lock_shared({LOCK_CLASS_INTEGRATION}, hashtext(p_integration_id));
    PERFORM 1 FROM integrations WHERE id = p_integration_id AND deleted_at IS NULL;
    IF NOT FOUND THEN
        RETURN {ISSUANCE_NO_INTEGRATION};
    END IF;
    IF p_challenge_hash IS NOT NULL THEN
        -- FOR UPDATE (waiting, not SKIP LOCKED): a competitor that holds the row lock
        -- either commits, and the re-check of used_at then drops the row, or rolls back,
        -- and the row is ours. SKIP LOCKED would reject us even when the holder rolls back.
        -- LIMIT 1 sits above the row locking, so a dropped row makes the scan go on to
        -- another row with the same hash, if any.
        UPDATE challenges SET used_at = p_now
        WHERE id = (
            SELECT id FROM challenges
            WHERE integration_id = p_integration_id AND challenge_hash = p_challenge_hash
              AND used_at IS NULL AND expires_at > p_now
            LIMIT 1
            FOR UPDATE
        );
        IF NOT FOUND THEN
            RETURN {ISSUANCE_CHALLENGE_REJECTED};
        END IF;
    END IF;
    -- A unique violation below aborts the whole statement, the challenge update included.
    INSERT INTO certificates (
        serial, integration_id, issuer_fingerprint, subject, not_before, not_after, der,
        transaction_id, pubkey_sha256, message_type, requester_address, user_agent, status,
        revoked_at, revocation_reason, created_at
    ) VALUES (
        p_serial, p_integration_id, p_issuer_fingerprint, p_subject, p_not_before, p_not_after,
        p_der, p_transaction_id, p_pubkey_sha256, p_message_type, p_requester_address,
        p_user_agent, p_status, p_revoked_at, p_revocation_reason, p_created_at
    );
    INSERT INTO transactions (
        integration_id, transaction_id, pubkey_sha256, status, serial, message_type, csr_der,
        created_at
    ) VALUES (
        p_integration_id, p_transaction_id, p_pubkey_sha256, 'issued', p_serial,
        p_message_type, NULL, p_now
    );
    IF p_supersedes IS NOT NULL THEN
        UPDATE certificates
        SET status = 'revoked', revoked_at = p_now, revocation_reason = 'superseded'
        WHERE serial = p_supersedes AND integration_id = p_integration_id AND status = 'issued';
        IF FOUND THEN
            UPDATE meta SET value = value + 1 WHERE key = '{REVOCATION_EPOCH_KEY}';
        END IF;
    END IF;
    RETURN {ISSUANCE_OK};
END
$fn$
"""

_ADD_CHALLENGE = f"""
CREATE FUNCTION scep_add_challenge(
    p_integration_id text,
    p_challenge_hash text,
    p_now timestamptz,
    p_expires_at timestamptz,
    p_max_unused integer
) RETURNS integer
LANGUAGE plpgsql VOLATILE
AS $fn$
DECLARE
    unused bigint;
BEGIN
    -- The count-then-insert below is only exact if adds to one integration take turns. This
    -- lock makes them (it does not block issuances; a hash collision between two ids merely
    -- makes their adds take turns too). Taken before the integration lock, so that adds queued
    -- here do not hold the integration lock and delay a delete_integration.
    PERFORM pg_advisory_xact_lock({LOCK_CLASS_CHALLENGE_CAP}, hashtext(p_integration_id));
    -- As in scep_record_issuance: a concurrent delete_integration either waits for this insert
    -- (and then deletes the new row) or makes this call see the deletion.
    PERFORM pg_advisory_xact_lock_shared({LOCK_CLASS_INTEGRATION}, hashtext(p_integration_id));
    PERFORM 1 FROM integrations WHERE id = p_integration_id AND deleted_at IS NULL;
    IF NOT FOUND THEN
        RETURN {ADD_CHALLENGE_NO_INTEGRATION};
    END IF;
    -- Adds to one integration are serial, so the lock above is held through the commit's WAL
    -- flush (2 ms here), which would cap them at a few hundred a second per integration.
    -- Losing a just-added challenge in a server crash is harmless (the MDM fetches another),
    -- so this transaction does not wait for the flush; an issuance that consumes the challenge
    -- later does wait, and its flush covers this commit record too. Transaction-local.
    PERFORM set_config('synchronous_commit', 'off', true);
    -- Used and expired rows can never be consumed again; purging them here keeps the
    -- integration's rows few without a background job (see SQLiteStore.add_challenge).
    DELETE FROM challenges
    WHERE integration_id = p_integration_id AND (used_at IS NOT NULL OR expires_at <= p_now);
    SELECT count(*) INTO unused
    FROM challenges WHERE integration_id = p_integration_id AND used_at IS NULL;
    IF unused >= p_max_unused THEN
        RETURN {ADD_CHALLENGE_FULL};
    END IF;
    INSERT INTO challenges (integration_id, challenge_hash, created_at, expires_at)
    VALUES (p_integration_id, p_challenge_hash, p_now, p_expires_at);
    RETURN {ADD_CHALLENGE_OK};
END
$fn$
"""

_V1 = Migration(
    1,
    (
        """
        CREATE TABLE integrations (
            id text COLLATE "C" PRIMARY KEY,
            name text NOT NULL,
            subject_template text NOT NULL,
            created_at timestamptz NOT NULL,
            validity_days integer NOT NULL,
            username text NOT NULL,
            -- casefold() of username, computed in Python so that both backends fold alike.
            username_key text COLLATE "C" NOT NULL,
            password_scrypt text,
            nt_hash_encrypted bytea,
            allow_basic boolean,
            allowed_san_types text[] NOT NULL DEFAULT '{}',
            include_ca_in_reply boolean,
            deleted_at timestamptz
        )
        """,
        # Deleted integrations keep their username for audit; only live ones must be unique.
        """
        CREATE UNIQUE INDEX integrations_live_username
            ON integrations (username_key) WHERE deleted_at IS NULL
        """,
        """
        CREATE TABLE challenges (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            integration_id text COLLATE "C" NOT NULL REFERENCES integrations (id),
            challenge_hash text COLLATE "C" NOT NULL,
            created_at timestamptz NOT NULL,
            expires_at timestamptz NOT NULL,
            used_at timestamptz
        )
        """,
        "CREATE INDEX challenges_lookup ON challenges (integration_id, challenge_hash)",
        f"""
        CREATE TABLE certificates (
            serial text COLLATE "C" NOT NULL,
            integration_id text COLLATE "C" NOT NULL REFERENCES integrations (id),
            issuer_fingerprint text COLLATE "C" NOT NULL,
            subject text NOT NULL,
            not_before timestamptz NOT NULL,
            not_after timestamptz NOT NULL,
            der bytea NOT NULL,
            transaction_id text NOT NULL,
            pubkey_sha256 text NOT NULL,
            message_type integer NOT NULL,
            requester_address text,
            user_agent text,
            status text NOT NULL CHECK (status IN ('issued', 'revoked')),
            revoked_at timestamptz,
            revocation_reason text,
            created_at timestamptz NOT NULL,
            CONSTRAINT {CERTIFICATES_PKEY} PRIMARY KEY (serial)
        )
        """,
        # Serves delete_integration's bulk revoke and per-integration listings.
        "CREATE INDEX certificates_integration_status ON certificates (integration_id, status)",
        # CRL and OCSP read only revoked rows of one issuer; a partial index keeps it small.
        """
        CREATE INDEX certificates_revoked
            ON certificates (issuer_fingerprint) WHERE status = 'revoked'
        """,
        f"""
        CREATE TABLE transactions (
            integration_id text COLLATE "C" NOT NULL REFERENCES integrations (id),
            transaction_id text COLLATE "C" NOT NULL,
            pubkey_sha256 text NOT NULL,
            status text NOT NULL CHECK (status IN ('issued', 'pending', 'rejected')),
            serial text COLLATE "C" REFERENCES certificates (serial),
            message_type integer NOT NULL,
            csr_der bytea,
            created_at timestamptz NOT NULL,
            CONSTRAINT {TRANSACTIONS_PKEY} PRIMARY KEY (integration_id, transaction_id)
        )
        """,
        """
        CREATE TABLE crl_numbers (
            issuer_fingerprint text COLLATE "C" PRIMARY KEY,
            number bigint NOT NULL
        )
        """,
        """
        CREATE TABLE meta (
            key text COLLATE "C" PRIMARY KEY,
            value bigint NOT NULL
        )
        """,
        f"INSERT INTO meta (key, value) VALUES ('{REVOCATION_EPOCH_KEY}', 0)",
    ),
)

_V2 = Migration(
    2,
    (
        "ALTER TABLE integrations ADD COLUMN require_approval boolean NOT NULL DEFAULT false",
        "ALTER TABLE integrations ADD COLUMN revoke_superseded boolean NOT NULL DEFAULT false",
        # The approval queue: few rows, read by status.
        "CREATE INDEX transactions_status ON transactions (status) WHERE status = 'pending'",
        _RECORD_ISSUANCE,
        _ADD_CHALLENGE,
    ),
)

_V3 = Migration(
    3,
    (
        # Failed challenge-URL logins per (user name, client address), shared by every worker
        # process and host (challenge/lockout.py); the same table as SQLite's migration 3.
        # key: SHA-256 hex of the normalised pair (no user names stored). Fixed window:
        # failures counted since window_start. expires_at: when the row stops mattering
        # (window and lock both over), for the purge in PostgresStore.auth_failure.
        """
        CREATE TABLE auth_throttle (
            key text COLLATE "C" PRIMARY KEY,
            window_start timestamptz NOT NULL,
            failures integer NOT NULL,
            locked_until timestamptz,
            expires_at timestamptz NOT NULL
        )
        """,
        "CREATE INDEX auth_throttle_expiry ON auth_throttle (expires_at)",
    ),
)

# Parameters of scep_record_issuance, in order, to declare scep_record_renewal and pass them on.
_ISSUANCE_PARAMS = (
    ("p_serial", "text"),
    ("p_integration_id", "text"),
    ("p_issuer_fingerprint", "text"),
    ("p_subject", "text"),
    ("p_not_before", "timestamptz"),
    ("p_not_after", "timestamptz"),
    ("p_der", "bytea"),
    ("p_transaction_id", "text"),
    ("p_pubkey_sha256", "text"),
    ("p_message_type", "integer"),
    ("p_requester_address", "text"),
    ("p_user_agent", "text"),
    ("p_status", "text"),
    ("p_revoked_at", "timestamptz"),
    ("p_revocation_reason", "text"),
    ("p_created_at", "timestamptz"),
    ("p_challenge_hash", "text"),
    ("p_now", "timestamptz"),
    ("p_supersedes", "text"),
)


def issuance_params() -> tuple[tuple[str, str], ...]:
    """scep_record_issuance's parameters, in order, as the migrations define the function: the
    certificate's inserted columns (``store.columns.CERTIFICATES``), then challenge hash, now and
    supersedes. The text above is history and stays as it is; a certificate column added later
    needs a migration that redefines both functions, and this check fails until it exists."""
    expected = (
        *((f"p_{c.name}", c.kind.pg_type) for c in CERTIFICATES.insert_columns),
        ("p_challenge_hash", "text"),
        ("p_now", "timestamptz"),
        ("p_supersedes", "text"),
    )
    if expected != _ISSUANCE_PARAMS_V8:
        raise RuntimeError("store.columns.CERTIFICATES no longer matches scep_record_issuance: add a migration")
    return _ISSUANCE_PARAMS_V8


# A renewal: scep_record_issuance plus the renewed-once mark, in the same implicit transaction.
# The mark comes first, so that two renewals signed by one certificate serialise on that
# certificate's row lock before either inserts anything: the second, once the first commits,
# re-evaluates the WHERE clause on the new row version (EvalPlanQual), finds superseded_by set
# and returns RENEWAL_REFUSED having written nothing; if the first rolls back, the second
# proceeds. Lock order as in scep_record_issuance: integration lock, then certificate rows
# (a renewal consumes no challenge), then the meta row.
def _record_renewal(params: tuple[tuple[str, str], ...]) -> str:
    """scep_record_renewal's definition for scep_record_issuance's parameters ``params``."""
    return f"""
CREATE FUNCTION scep_record_renewal(
    p_renews text,
    {", ".join(f"{name} {kind}" for name, kind in params)}
) RETURNS integer
LANGUAGE plpgsql VOLATILE
AS $fn$
DECLARE
    result integer;
BEGIN
    PERFORM pg_advisory_xact_lock_shared({LOCK_CLASS_INTEGRATION}, hashtext(p_integration_id));
    PERFORM 1 FROM integrations WHERE id = p_integration_id AND deleted_at IS NULL;
    IF NOT FOUND THEN
        RETURN {ISSUANCE_NO_INTEGRATION};
    END IF;
    UPDATE certificates SET superseded_by = p_serial
    WHERE serial = p_renews AND integration_id = p_integration_id AND status = 'issued'
      AND superseded_by IS NULL;
    IF NOT FOUND THEN
        RETURN {ISSUANCE_RENEWAL_REFUSED};
    END IF;
    result := scep_record_issuance({", ".join(name for name, _ in params)});
    IF result <> {ISSUANCE_OK} THEN
        -- Cannot happen while the shared integration lock is held (the liveness checked above
        -- stands, and a renewal carries no challenge); raising undoes the mark if it ever does.
        RAISE EXCEPTION 'scep_record_issuance returned % inside a renewal', result;
    END IF;
    UPDATE transactions SET renews = p_renews
    WHERE integration_id = p_integration_id AND transaction_id = p_transaction_id;
    RETURN {ISSUANCE_OK};
END
$fn$
"""


_RECORD_RENEWAL = _record_renewal(_ISSUANCE_PARAMS)

_V4 = Migration(
    4,
    (
        # The same columns as SQLite's migration 4: a certificate's renewed-once mark and the
        # certificate a renewal transaction renews. No foreign key: the mark is written before
        # the new certificate's row.
        'ALTER TABLE certificates ADD COLUMN superseded_by text COLLATE "C"',
        'ALTER TABLE transactions ADD COLUMN renews text COLLATE "C"',
        _RECORD_RENEWAL,
    ),
)

_V5 = Migration(
    5,
    (
        # Attempts are reserved before the password check (store/throttle.py): pending counts
        # the key's checks in flight, so failures + pending bounds the checks of a window.
        "ALTER TABLE auth_throttle ADD COLUMN pending integer NOT NULL DEFAULT 0",
    ),
)

_V6 = Migration(
    6,
    (
        # Challenge validators (scep_ca/services/validators): the kind, its non-secret settings
        # as JSON text, and its secret encrypted with the server's secret key (AES-GCM).
        "ALTER TABLE integrations ADD COLUMN validator text NOT NULL DEFAULT 'ndes'",
        "ALTER TABLE integrations ADD COLUMN validator_settings text NOT NULL DEFAULT '{}'",
        "ALTER TABLE integrations ADD COLUMN validator_secret_encrypted bytea",
    ),
)

_V7 = Migration(
    7,
    (
        # The audit log (the audit package): append only, one chain per writer, each row sealed
        # by a MAC over its canonical encoding and the previous row's MAC; one time index, for
        # the newest events (an index here costs each enrollment a few microseconds).
        """
        CREATE TABLE audit_events (
            writer text NOT NULL,
            seq bigint NOT NULL,
            at timestamptz NOT NULL,
            actor text NOT NULL,
            event text NOT NULL,
            object text NOT NULL,
            details jsonb NOT NULL,
            prev_mac text NOT NULL,
            mac text NOT NULL,
            PRIMARY KEY (writer, seq)
        )
        """,
        # The console's latest events and `audit list --since`: newest first, without a scan.
        "CREATE INDEX audit_events_at ON audit_events (at)",
    ),
)

# Migration 8's parameters: migration 2's with the CRL shard after created_at, where
# store.columns.CERTIFICATES inserts it.
_ISSUANCE_PARAMS_V8 = (*_ISSUANCE_PARAMS[:16], ("p_crl_shard", "integer"), *_ISSUANCE_PARAMS[16:])


def _one_replacement(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:
        raise RuntimeError(f"migration 8 expects one {old!r} in scep_record_issuance")
    return text.replace(old, new)


# scep_record_issuance of migration 2 with the crl_shard column written too; everything
# else (the locks, the challenge, the supersede) is unchanged.
_RECORD_ISSUANCE_V8 = _one_replacement(
    _one_replacement(
        _one_replacement(
            _RECORD_ISSUANCE,
            "    p_created_at timestamptz,\n",
            "    p_created_at timestamptz,\n    p_crl_shard integer,\n",
        ),
        "revocation_reason, created_at\n    ) VALUES (",
        "revocation_reason, created_at, crl_shard\n    ) VALUES (",
    ),
    "p_revocation_reason, p_created_at\n    );",
    "p_revocation_reason, p_created_at, p_crl_shard\n    );",
)


def _signature(params: tuple[tuple[str, str], ...]) -> str:
    return ", ".join(kind for _, kind in params)


_V8 = Migration(
    8,
    (
        # The CRL shard a certificate's CDP names (scep_ca/pki/crl_shards.py), as SQLite's
        # migration 8; NULL for certificates issued before, whose CDP names the full CRL.
        "ALTER TABLE certificates ADD COLUMN crl_shard integer",
        """
        CREATE INDEX certificates_revoked_shard
            ON certificates (issuer_fingerprint, crl_shard) WHERE status = 'revoked'
        """,
        # The functions take one more parameter: dropped (the renewal calls the issuance)
        # and created again, in this migration's one transaction.
        f"DROP FUNCTION scep_record_renewal(text, {_signature(_ISSUANCE_PARAMS)})",
        f"DROP FUNCTION scep_record_issuance({_signature(_ISSUANCE_PARAMS)})",
        _RECORD_ISSUANCE_V8,
        _record_renewal(_ISSUANCE_PARAMS_V8),
    ),
)

_V9 = Migration(
    9,
    (
        # The operator console (scep_ca/console): the same tables as SQLite's migration 9.
        """
        CREATE TABLE admins (
            name text COLLATE "C" PRIMARY KEY,
            role text NOT NULL CHECK (role IN ('admin', 'operator', 'auditor')),
            password_scrypt text NOT NULL,
            created_at timestamptz NOT NULL,
            disabled_at timestamptz
        )
        """,
        """
        CREATE TABLE console_sessions (
            token_hash text COLLATE "C" PRIMARY KEY,
            admin text COLLATE "C" NOT NULL REFERENCES admins (name),
            csrf_token text NOT NULL,
            created_at timestamptz NOT NULL,
            last_seen timestamptz NOT NULL,
            address text NOT NULL
        )
        """,
        "CREATE INDEX console_sessions_admin ON console_sessions (admin)",
        "CREATE INDEX console_sessions_last_seen ON console_sessions (last_seen)",
        "CREATE INDEX certificates_expiry_by_integration ON certificates (integration_id, status, not_after)",
        "CREATE INDEX certificates_expiry ON certificates (not_after)",
        # The search by subject: a range on the subject with ASCII letters folded, bytewise ("C"),
        # as SQLite's NOCASE index (store/search.py).
        f"CREATE INDEX certificates_subject ON certificates (({PG_ASCII_FOLD}))",
        # The dashboard's counts, maintained per integration, status and UTC day of expiry, as in
        # SQLite (store/sqlite_console.py), by triggers. The shard
        # (the session's pid modulo 8) spreads concurrent enrollments over several rows, so
        # that they do not queue on one counter row's lock; readers sum the shards.
        """
        CREATE TABLE certificate_counts (
            integration_id text COLLATE "C" NOT NULL,
            status text NOT NULL,
            expiry_day bigint NOT NULL,
            shard integer NOT NULL,
            n bigint NOT NULL,
            PRIMARY KEY (integration_id, status, expiry_day, shard)
        )
        """,
        """
        CREATE FUNCTION scep_expiry_day(t timestamptz) RETURNS bigint
        LANGUAGE sql IMMUTABLE AS $$ SELECT floor(date_part('epoch', t) / 86400)::bigint $$
        """,
        # Inserts: one grouped upsert a statement (a bulk COPY is one, not one per row).
        """
        CREATE FUNCTION scep_count_inserted_certificates() RETURNS trigger
        LANGUAGE plpgsql AS $fn$
        BEGIN
            INSERT INTO certificate_counts
            SELECT integration_id, status, scep_expiry_day(not_after), pg_backend_pid() % 8, count(*)
            FROM new_rows GROUP BY 1, 2, 3
            ON CONFLICT (integration_id, status, expiry_day, shard) DO UPDATE SET n = certificate_counts.n + EXCLUDED.n;
            RETURN NULL;
        END
        $fn$
        """,
        """
        CREATE TRIGGER certificate_counts_insert AFTER INSERT ON certificates
        REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION scep_count_inserted_certificates()
        """,
        """
        CREATE FUNCTION scep_count_status_change() RETURNS trigger
        LANGUAGE plpgsql AS $fn$
        BEGIN
            INSERT INTO certificate_counts
            VALUES (OLD.integration_id, OLD.status, scep_expiry_day(OLD.not_after), pg_backend_pid() % 8, -1)
            ON CONFLICT (integration_id, status, expiry_day, shard) DO UPDATE SET n = certificate_counts.n - 1;
            INSERT INTO certificate_counts
            VALUES (NEW.integration_id, NEW.status, scep_expiry_day(NEW.not_after), pg_backend_pid() % 8, 1)
            ON CONFLICT (integration_id, status, expiry_day, shard) DO UPDATE SET n = certificate_counts.n + 1;
            RETURN NULL;
        END
        $fn$
        """,
        # Status changes only; delete_integration moves its counts itself, per day rather than per
        # certificate (store/postgres.py), and says so with scep.counts_moved.
        """
        CREATE TRIGGER certificate_counts_update AFTER UPDATE OF status ON certificates FOR EACH ROW
        WHEN (OLD.status IS DISTINCT FROM NEW.status
              AND current_setting('scep.counts_moved', true) IS DISTINCT FROM 'on')
        EXECUTE FUNCTION scep_count_status_change()
        """,
        """
        INSERT INTO certificate_counts
        SELECT integration_id, status, scep_expiry_day(not_after), 0, count(*) FROM certificates GROUP BY 1, 2, 3
        """,
    ),
)

_V10 = Migration(
    10,
    (
        # As SQLite's migration 10: revocation by deletion is derived (store/revocation_rule.py),
        # and the CRL shards read a deleted integration's issued rows of one shard through this
        # index, which replaces migration 1's (integration_id, status): its prefix serves the same.
        "DROP INDEX certificates_integration_status",
        "CREATE INDEX certificates_integration_shard ON certificates (integration_id, status, crl_shard)",
    ),
)

# The planner inlines an IMMUTABLE SQL function only when its body is immutable too, and
# date_part('epoch', timestamptz) is STABLE: migration 9's body ran as a function call (fmgr_sql)
# on every counted row, about 6% of a PostgreSQL backend's CPU an issuance. A timestamptz minus a
# constant is an interval, whose epoch is immutable: inlined into the counting triggers' queries.
# The same day for every instant (exact numeric, not double: Python's ``_day`` in
# store/postgres_console.py agrees to the microsecond), so the counts kept so far stay right.
_V11 = Migration(
    11,
    (
        """
        CREATE OR REPLACE FUNCTION scep_expiry_day(t timestamptz) RETURNS bigint
        LANGUAGE sql IMMUTABLE
        AS $$ SELECT floor(extract(epoch FROM t - '1970-01-01 00:00:00+00'::timestamptz) / 86400)::bigint $$
        """,
    ),
)

MIGRATIONS: tuple[Migration, ...] = (_V1, _V2, _V3, _V4, _V5, _V6, _V7, _V8, _V9, _V10, _V11)

LATEST_VERSION = MIGRATIONS[-1].version


async def schema_version(conn: Any) -> int:
    """The highest applied migration, 0 for an empty database."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))


async def apply_migrations(conn: Any) -> list[int]:
    """Apply every pending migration on this asyncpg connection; returns the versions applied.

    Raises StoreError if the database is newer than this code (running old code against a
    newer schema could write rows the newer code misreads).
    """
    applied: list[int] = []
    async with conn.transaction():
        # Before CREATE TABLE IF NOT EXISTS: two sessions running that at once can both pass
        # the existence check and one then fails on the catalog's unique index.
        await conn.execute("SELECT pg_advisory_xact_lock($1, 0)", LOCK_CLASS_MIGRATIONS)
        await conn.execute(MIGRATIONS_TABLE)
        current = int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))
        if current > LATEST_VERSION:
            raise StoreError(
                f"database schema version {current} is newer than this scep-ca supports ({LATEST_VERSION})"
            )
        for migration in MIGRATIONS:
            if migration.version <= current:
                continue
            for statement in migration.statements:
                await conn.execute(statement)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", migration.version)
            applied.append(migration.version)
    return applied


async def upgrade(dsn: str) -> list[int]:
    """Apply pending migrations to the database at ``dsn`` (``scep-ca db upgrade``).

    Returns the versions applied now, empty when the schema was already current. Safe to run
    while servers are up and while other processes open stores: the advisory lock orders them.
    """
    conn = await asyncpg.connect(dsn)
    try:
        return await apply_migrations(conn)
    finally:
        await conn.close()
