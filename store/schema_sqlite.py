"""SQLite schema migrations, applied in order by ``SQLiteStore.open``.

Each migration is a version number and its DDL statements; a migration never
changes once released (add a new one instead). Times are INTEGER microseconds
since the Unix epoch, UTC: exact, compact and ordered, so range filters and
ORDER BY work on the column directly.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    statements: tuple[str, ...]


MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    applied_at TEXT NOT NULL
)
"""

REVOCATION_EPOCH_KEY = "revocation_epoch"
# One UTC day in the store's time unit (microseconds): the bucket of certificate_counts.
DAY_US = 86_400_000_000

_V1 = Migration(
    1,
    (
        """
        CREATE TABLE integrations (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            subject_template TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            validity_days INTEGER NOT NULL,
            username TEXT NOT NULL,
            -- casefold() of username, computed in Python so lookups are
            -- case-insensitive beyond ASCII (NOCASE folds ASCII only).
            username_key TEXT NOT NULL,
            password_scrypt TEXT,
            nt_hash_encrypted BLOB,
            allow_basic INTEGER CHECK (allow_basic IN (0, 1)),
            allowed_san_types TEXT NOT NULL DEFAULT '[]',  -- JSON array of strings
            include_ca_in_reply INTEGER CHECK (include_ca_in_reply IN (0, 1)),
            deleted_at INTEGER
        )
        """,
        # Deleted integrations keep their username for audit; only live ones must be unique.
        """
        CREATE UNIQUE INDEX integrations_live_username
            ON integrations (username_key) WHERE deleted_at IS NULL
        """,
        """
        CREATE TABLE challenges (
            id INTEGER PRIMARY KEY,
            integration_id TEXT NOT NULL REFERENCES integrations (id),
            challenge_hash TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            used_at INTEGER
        )
        """,
        "CREATE INDEX challenges_lookup ON challenges (integration_id, challenge_hash)",
        """
        CREATE TABLE certificates (
            serial TEXT PRIMARY KEY,
            integration_id TEXT NOT NULL REFERENCES integrations (id),
            issuer_fingerprint TEXT NOT NULL,
            subject TEXT NOT NULL,
            not_before INTEGER NOT NULL,
            not_after INTEGER NOT NULL,
            der BLOB NOT NULL,
            transaction_id TEXT NOT NULL,
            pubkey_sha256 TEXT NOT NULL,
            message_type INTEGER NOT NULL,
            requester_address TEXT,
            user_agent TEXT,
            status TEXT NOT NULL CHECK (status IN ('issued', 'revoked')),
            revoked_at INTEGER,
            revocation_reason TEXT,
            created_at INTEGER NOT NULL
        )
        """,
        # Serves delete_integration's bulk revoke and per-integration listings.
        "CREATE INDEX certificates_integration_status ON certificates (integration_id, status)",
        # CRL and OCSP read only revoked rows of one issuer; a partial index keeps it small.
        """
        CREATE INDEX certificates_revoked
            ON certificates (issuer_fingerprint) WHERE status = 'revoked'
        """,
        # No index on transaction_id (the transactions table is keyed by it) nor on created_at
        # (listings sort in memory): each index on this table costs every enrollment ~15 us.
        """
        CREATE TABLE transactions (
            integration_id TEXT NOT NULL REFERENCES integrations (id),
            transaction_id TEXT NOT NULL,
            pubkey_sha256 TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('issued', 'pending', 'rejected')),
            serial TEXT REFERENCES certificates (serial),
            message_type INTEGER NOT NULL,
            csr_der BLOB,
            created_at INTEGER NOT NULL,
            PRIMARY KEY (integration_id, transaction_id)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE crl_numbers (
            issuer_fingerprint TEXT PRIMARY KEY,
            number INTEGER NOT NULL
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE meta (
            key TEXT PRIMARY KEY,
            value INTEGER NOT NULL
        ) WITHOUT ROWID
        """,
        f"INSERT INTO meta (key, value) VALUES ('{REVOCATION_EPOCH_KEY}', 0)",
    ),
)

_V2 = Migration(
    2,
    (
        "ALTER TABLE integrations ADD COLUMN require_approval INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE integrations ADD COLUMN revoke_superseded INTEGER NOT NULL DEFAULT 0",
        # The approval queue: few rows, read by status.
        "CREATE INDEX transactions_status ON transactions (status) WHERE status = 'pending'",
        # add_challenge purges used and expired rows and counts unused ones; without these it
        # scans every row of the integration (13 ms an add with 10,000 unused challenges).
        "CREATE INDEX challenges_expiry ON challenges (integration_id, expires_at)",
        "CREATE INDEX challenges_used ON challenges (integration_id) WHERE used_at IS NOT NULL",
        "CREATE INDEX challenges_unused ON challenges (integration_id) WHERE used_at IS NULL",
    ),
)

_V3 = Migration(
    3,
    (
        # Failed challenge-URL logins per (user name, client address), shared by every worker
        # process and host (challenge/lockout.py). key: SHA-256 hex of the normalised pair, so
        # no user names are stored. Fixed window: failures counted since window_start.
        # expires_at: when the row stops mattering (window and lock both over), for the purge.
        """
        CREATE TABLE auth_throttle (
            key TEXT PRIMARY KEY,
            window_start INTEGER NOT NULL,
            failures INTEGER NOT NULL,
            locked_until INTEGER,
            expires_at INTEGER NOT NULL
        ) WITHOUT ROWID
        """,
        "CREATE INDEX auth_throttle_expiry ON auth_throttle (expires_at)",
    ),
)

_V4 = Migration(
    4,
    (
        # A certificate is renewed at most once: the renewal sets this, in the transaction that
        # records the new certificate, only where it is still NULL (store/sqlite.py _MARK_RENEWED).
        # No foreign key: the mark may be written before the new certificate's row.
        "ALTER TABLE certificates ADD COLUMN superseded_by TEXT",
        # A renewal's transaction names the certificate it renews; approval marks that one.
        "ALTER TABLE transactions ADD COLUMN renews TEXT",
    ),
)

_V5 = Migration(
    5,
    (
        # Attempts are reserved before the password check (store/throttle.py): pending counts
        # the key's checks in flight, so failures + pending bounds the checks of a window.
        "ALTER TABLE auth_throttle ADD COLUMN pending INTEGER NOT NULL DEFAULT 0",
    ),
)

_V6 = Migration(
    6,
    (
        # Challenge validators (scep_ca/services/validators): the kind, its non-secret settings
        # as JSON text, and its secret encrypted with the server's secret key (AES-GCM).
        "ALTER TABLE integrations ADD COLUMN validator TEXT NOT NULL DEFAULT 'ndes'",
        "ALTER TABLE integrations ADD COLUMN validator_settings TEXT NOT NULL DEFAULT '{}'",
        "ALTER TABLE integrations ADD COLUMN validator_secret_encrypted BLOB",
    ),
)

_V7 = Migration(
    7,
    (
        # The audit log (the audit package): append only, one chain per writer, each row sealed
        # by a MAC over its canonical encoding and the previous row's MAC. A rowid table (rows
        # carry a certificate, too large for WITHOUT ROWID); one time index, for the newest
        # events (an index here costs each enrollment a few microseconds).
        """
        CREATE TABLE audit_events (
            writer TEXT NOT NULL,
            seq INTEGER NOT NULL,
            at INTEGER NOT NULL,
            actor TEXT NOT NULL,
            event TEXT NOT NULL,
            object TEXT NOT NULL,
            details TEXT NOT NULL,  -- a JSON object
            prev_mac TEXT NOT NULL,
            mac TEXT NOT NULL,
            UNIQUE (writer, seq)
        )
        """,
        # The console's latest events and `audit list --since`: newest first, without a scan.
        "CREATE INDEX audit_events_at ON audit_events (at)",
    ),
)

_V8 = Migration(
    8,
    (
        # The CRL shard a certificate's CDP names (scep_ca/pki/crl_shards.py); NULL for
        # certificates issued before, whose CDP names the full CRL.
        "ALTER TABLE certificates ADD COLUMN crl_shard INTEGER",
        # A shard's CRL reads the revoked rows of one issuer and shard only.
        """
        CREATE INDEX certificates_revoked_shard
            ON certificates (issuer_fingerprint, crl_shard) WHERE status = 'revoked'
        """,
    ),
)

_V9 = Migration(
    9,
    (
        # The operator console (scep_ca/console): accounts, never deleted (audit names them).
        """
        CREATE TABLE admins (
            name TEXT PRIMARY KEY,
            role TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'auditor')),
            password_scrypt TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            disabled_at INTEGER
        ) WITHOUT ROWID
        """,
        # Sessions shared by every worker and host; the key is the SHA-256 of the cookie's token.
        """
        CREATE TABLE console_sessions (
            token_hash TEXT PRIMARY KEY,
            admin TEXT NOT NULL REFERENCES admins (name),
            csrf_token TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            last_seen INTEGER NOT NULL,
            address TEXT NOT NULL
        ) WITHOUT ROWID
        """,
        "CREATE INDEX console_sessions_admin ON console_sessions (admin)",
        "CREATE INDEX console_sessions_last_seen ON console_sessions (last_seen)",
        # The dashboard's per-integration counts (valid, revoked, expiring) read this index alone;
        # the search's "sorted by expiry" walks the second. Each costs an enrollment a few us.
        "CREATE INDEX certificates_expiry_by_integration ON certificates (integration_id, status, not_after)",
        "CREATE INDEX certificates_expiry ON certificates (not_after)",
        # The search by subject (store/search.py: the start of the subject or of its CN value,
        # ASCII case folded) is a range on this index. A trigram index (FTS5) would find any
        # substring, but it cost every enrollment about 1 ms (a segment flush per transaction).
        "CREATE INDEX certificates_subject ON certificates (subject COLLATE NOCASE)",
        # The dashboard's counts, maintained by triggers: certificates per integration, status and
        # UTC day of expiry (not_after / one day in microseconds). Counting index entries took
        # 0.2-0.7 s at a million certificates; summing these rows takes milliseconds, and only
        # the two boundary days are counted exactly (store/sqlite_console.py). SQLite has one
        # writer at a time, so these hot rows add no contention; each enrollment pays one upsert.
        """
        CREATE TABLE certificate_counts (
            integration_id TEXT NOT NULL,
            status TEXT NOT NULL,
            expiry_day INTEGER NOT NULL,
            n INTEGER NOT NULL,
            PRIMARY KEY (integration_id, status, expiry_day)
        ) WITHOUT ROWID
        """,
        f"""
        CREATE TRIGGER certificate_counts_insert AFTER INSERT ON certificates BEGIN
            INSERT INTO certificate_counts VALUES (new.integration_id, new.status, new.not_after / {DAY_US}, 1)
            ON CONFLICT DO UPDATE SET n = n + 1;
        END
        """,
        f"""
        CREATE TRIGGER certificate_counts_update AFTER UPDATE OF status ON certificates
        WHEN old.status IS NOT new.status BEGIN
            UPDATE certificate_counts SET n = n - 1
            WHERE integration_id = old.integration_id AND status = old.status AND expiry_day = old.not_after / {DAY_US};
            INSERT INTO certificate_counts VALUES (new.integration_id, new.status, new.not_after / {DAY_US}, 1)
            ON CONFLICT DO UPDATE SET n = n + 1;
        END
        """,
        f"""
        CREATE TRIGGER certificate_counts_delete AFTER DELETE ON certificates BEGIN
            UPDATE certificate_counts SET n = n - 1
            WHERE integration_id = old.integration_id AND status = old.status AND expiry_day = old.not_after / {DAY_US};
        END
        """,
        f"""
        INSERT INTO certificate_counts
        SELECT integration_id, status, not_after / {DAY_US}, count(*) FROM certificates GROUP BY 1, 2, 3
        """,
    ),
)

_V10 = Migration(
    10,
    (
        # Revocation by deletion is derived (store/revocation_rule.py): a deleted integration's
        # issued certificates are revoked without a write per row, and the CRL shards read them as
        # "issued rows of deleted integration X in shard S". The shard joins migration 1's
        # (integration_id, status) index, whose prefix still serves everything that one did:
        # one index as before, so enrollment pays nothing more.
        "DROP INDEX certificates_integration_status",
        "CREATE INDEX certificates_integration_shard ON certificates (integration_id, status, crl_shard)",
    ),
)

MIGRATIONS: tuple[Migration, ...] = (_V1, _V2, _V3, _V4, _V5, _V6, _V7, _V8, _V9, _V10)
