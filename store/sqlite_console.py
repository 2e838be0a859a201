"""The SQLite store's console roles: admin accounts, sessions, dashboard counts and search.

A mixin of ``SQLiteStore`` (same connection, lock and transactions), kept apart so that the
enrollment store stays readable. Schema: migration 7 in ``store/schema_sqlite.py``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime

from scep_ca.pki.records import CertificateRecord
from store import revocation_rule as rule
from store import sqlite_codec as codec
from store.base import (
    AdminAccount,
    AdminRole,
    CertificateSearch,
    ConsoleSession,
    DuplicateAdmin,
    IntegrationCounts,
    LastAdmin,
)
from store.columns import ADMIN_COLUMNS, SESSION_COLUMNS
from store.schema_sqlite import DAY_US
from store.search import SearchTerms, dashboard_counts, only_revoked, revoked_page_walks_expiry, search_terms

# Valid, revoked and expiring per integration from the maintained counts (migration 7): whole
# days strictly inside the intervals from the counts, the day of "now" and the horizon's day
# counted exactly from the certificates themselves (their rows in the expiry index). The counts
# are kept per status as written; the revocation rule (store/revocation_rule.py) applies on read.
_COUNTS = f"""
SELECT c.integration_id,
       sum(n) FILTER (WHERE {rule.ISSUED} AND expiry_day > :today),
       sum(n) FILTER (WHERE {rule.REVOKED}),
       sum(n) FILTER (WHERE {rule.ISSUED} AND expiry_day > :today AND expiry_day < :horizon_day)
FROM certificate_counts c JOIN integrations i ON i.id = c.integration_id GROUP BY c.integration_id
"""
# Counted from the certificates alone, then only live integrations kept (the rule's ISSUED: an
# issued row of a deleted integration is revoked), as in PostgreSQL (store/postgres_console.py).
_BOUNDARY_DAYS = """
SELECT b.* FROM (
  SELECT integration_id,
         count(*) FILTER (WHERE not_after > :now AND not_after < :tomorrow),
         count(*) FILTER (WHERE not_after > :now AND not_after < :tomorrow AND not_after <= :horizon)
           + count(*) FILTER (WHERE not_after >= :horizon_start AND not_after <= :horizon AND not_after >= :tomorrow)
  FROM certificates INDEXED BY certificates_expiry
  WHERE status = 'issued' AND ((not_after > :now AND not_after < :tomorrow)
                               OR (not_after >= :horizon_start AND not_after <= :horizon))
  GROUP BY integration_id
) b JOIN integrations i ON i.id = b.integration_id WHERE i.deleted_at IS NULL
"""
_PENDING = "SELECT integration_id, count(*) FROM transactions WHERE status = 'pending' GROUP BY integration_id"


class SQLiteConsoleMixin:
    """``AdminStore``, ``SessionStore`` and ``OverviewStore`` for ``SQLiteStore``."""

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError  # SQLiteStore's

    def _read(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError  # SQLiteStore's

    # -- admins ------------------------------------------------------------------------

    async def create_admin(self, account: AdminAccount) -> None:
        try:
            with self._transaction() as conn:
                conn.execute(
                    f"INSERT INTO admins ({ADMIN_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                    (
                        account.name,
                        account.role.value,
                        account.password_scrypt,
                        codec.to_us(account.created_at),
                        codec.opt_to_us(account.disabled_at),
                    ),
                )
        except sqlite3.IntegrityError as exc:
            raise DuplicateAdmin(f"an admin named {account.name!r} exists") from exc

    async def get_admin(self, name: str) -> AdminAccount | None:
        with self._read() as conn:
            row = conn.execute(f"SELECT {ADMIN_COLUMNS} FROM admins WHERE name = ?", (name,)).fetchone()
        return None if row is None else _admin(row)

    async def list_admins(self) -> Sequence[AdminAccount]:
        with self._read() as conn:
            rows = conn.execute(f"SELECT {ADMIN_COLUMNS} FROM admins ORDER BY name").fetchall()
        return [_admin(row) for row in rows]

    async def set_admin_password(self, name: str, password_scrypt: str) -> bool:
        with self._transaction() as conn:
            changed = conn.execute(
                "UPDATE admins SET password_scrypt = ? WHERE name = ?", (password_scrypt, name)
            ).rowcount
            conn.execute("DELETE FROM console_sessions WHERE admin = ?", (name,))
        return changed == 1

    async def disable_admin(self, name: str, now: datetime, *, keep_an_admin: bool = False) -> bool:
        # BEGIN IMMEDIATE: no other writer between the count and the update.
        with self._transaction() as conn:
            if keep_an_admin:
                (others,) = conn.execute(
                    "SELECT count(*) FROM admins WHERE role = 'admin' AND disabled_at IS NULL AND name != ?", (name,)
                ).fetchone()
                target = conn.execute(
                    "SELECT 1 FROM admins WHERE name = ? AND role = 'admin' AND disabled_at IS NULL", (name,)
                ).fetchone()
                if target is not None and others == 0:
                    raise LastAdmin(name)
            changed = conn.execute(
                "UPDATE admins SET disabled_at = ? WHERE name = ? AND disabled_at IS NULL", (codec.to_us(now), name)
            ).rowcount
            conn.execute("DELETE FROM console_sessions WHERE admin = ?", (name,))
        return changed == 1

    # -- sessions ----------------------------------------------------------------------

    async def create_session(self, session: ConsoleSession) -> None:
        with self._transaction() as conn:
            conn.execute(
                f"INSERT INTO console_sessions ({SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    session.token_hash,
                    session.admin,
                    session.csrf_token,
                    codec.to_us(session.created_at),
                    codec.to_us(session.last_seen),
                    session.address,
                ),
            )

    async def touch_session(
        self, token_hash: str, now: datetime, idle_after: datetime, created_after: datetime
    ) -> ConsoleSession | None:
        with self._transaction() as conn:
            # Expired sessions of anyone go with each touch: the table stays at the live ones.
            conn.execute(
                "DELETE FROM console_sessions WHERE last_seen <= ? OR created_at <= ?",
                (codec.to_us(idle_after), codec.to_us(created_after)),
            )
            row = conn.execute(
                f"SELECT {', '.join('s.' + c for c in SESSION_COLUMNS.split(', '))} FROM console_sessions s "
                "JOIN admins a ON a.name = s.admin AND a.disabled_at IS NULL WHERE s.token_hash = ?",
                (token_hash,),
            ).fetchone()
            if row is None:
                conn.execute("DELETE FROM console_sessions WHERE token_hash = ?", (token_hash,))
                return None
            conn.execute(
                "UPDATE console_sessions SET last_seen = ? WHERE token_hash = ?", (codec.to_us(now), token_hash)
            )
        session = _session(row)
        return ConsoleSession(
            session.token_hash, session.admin, session.csrf_token, session.created_at, now, session.address
        )

    async def delete_session(self, token_hash: str) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM console_sessions WHERE token_hash = ?", (token_hash,))

    # -- overview ----------------------------------------------------------------------

    async def integration_counts(self, now: datetime, expiring_before: datetime) -> Sequence[IntegrationCounts]:
        now_us, horizon_us = codec.to_us(now), codec.to_us(expiring_before)
        today, horizon_day = now_us // DAY_US, horizon_us // DAY_US
        days = {"today": today, "horizon_day": horizon_day}
        bounds = {
            "now": now_us,
            "tomorrow": (today + 1) * DAY_US,
            "horizon": horizon_us,
            "horizon_start": horizon_day * DAY_US,
        }
        with self._read() as conn:
            whole = conn.execute(_COUNTS, days).fetchall()
            edges = {str(r[0]): (int(r[1]), int(r[2])) for r in conn.execute(_BOUNDARY_DAYS, bounds).fetchall()}
            pending = {str(k): int(v) for k, v in conn.execute(_PENDING).fetchall()}
        return dashboard_counts(whole, edges, pending, horizon_after_today=horizon_day > today)

    async def search_certificates(self, search: CertificateSearch) -> Sequence[CertificateRecord]:
        terms = search_terms(search)
        if only_revoked(terms, search):
            with self._read() as conn:
                rows = _revoked_page(conn, search.limit, search.offset, search.integration_id)
            return [codec.CERTIFICATE_ROWS.record(row) for row in rows]
        clauses, params = _where(terms, search)
        # +not_after: with a text the index ranges of the match drive the query, sorted after;
        # without one the expiry index gives the order and LIMIT stops the walk early.
        order = "+not_after" if terms.text else "not_after"
        sql = f"SELECT {rule.COLUMNS} FROM {rule.JOINED}"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += f" ORDER BY {order}, serial LIMIT ? OFFSET ?"
        params += [search.limit, search.offset]
        with self._read() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [codec.CERTIFICATE_ROWS.record(row) for row in rows]


def _revoked_page(
    conn: sqlite3.Connection, limit: int, offset: int, integration_id: str | None
) -> list[Sequence[object]]:
    """A page of revoked certificates by expiry (of one integration, or of all), the cheaper of two
    exact ways (was 0.1-0.3 s at a million certificates, 2 % revoked: every revoked row, each with
    its DER, went through the sort).

    Revoked means the revocation rule (``store/revocation_rule.py``): revoked on its own, or of a
    deleted integration. Walking the expiry index stops after ``offset + limit`` revoked rows:
    cheap while they are dense. Otherwise the revoked rows' keys come from their indexes
    (``rule.revoked_keys_sqlite``), only the keys are sorted and the page's rows are read last. An
    estimate of the revoked count and the largest rowid choose between them in about a millisecond.
    """
    one = (integration_id,) if integration_id else ()
    placeholder = "?" if integration_id else None
    (revoked,) = conn.execute(rule.revoked_estimate_sqlite(placeholder), one * 2).fetchone()
    (largest,) = conn.execute("SELECT max(rowid) FROM certificates").fetchone()
    if revoked_page_walks_expiry(offset=offset, limit=limit, certificates=largest or 0, revoked=revoked):
        # CROSS JOIN: the certificates in expiry order outside, each one's integration looked up.
        where = rule.REVOKED + (" AND c.integration_id = ?" if integration_id else "")
        sql = (
            f"SELECT {rule.COLUMNS} FROM certificates c INDEXED BY certificates_expiry "
            f"CROSS JOIN integrations i ON i.id = c.integration_id "
            f"WHERE {where} ORDER BY c.not_after, c.serial LIMIT ? OFFSET ?"
        )
        params = (*one, limit, offset)
    else:
        sql = (
            f"SELECT {rule.COLUMNS} FROM {rule.JOINED} WHERE c.rowid IN ("
            f"SELECT rowid FROM ({rule.revoked_keys_sqlite(placeholder)}) ORDER BY not_after, serial LIMIT ? OFFSET ?"
            ") ORDER BY c.not_after, c.serial"
        )
        params = (*one, *one, limit, offset)
    return conn.execute(sql, params).fetchall()


def _where(terms: SearchTerms, search: CertificateSearch) -> tuple[list[str], list[object]]:
    clauses: list[str] = []
    params: list[object] = []
    if terms.text:
        matches = ["(subject COLLATE NOCASE >= ? AND subject COLLATE NOCASE < ?)"]
        params += [terms.subject_low, terms.subject_high]
        if terms.serial_prefix:
            matches.append("(serial >= ? AND serial < ?)")
            params += [terms.serial_prefix, terms.serial_prefix + "g"]  # "g" sorts after every hex digit
        clauses.append("(" + " OR ".join(matches) + ")")
    if search.integration_id:
        clauses.append("c.integration_id = ?")
        params.append(search.integration_id)
    now = codec.to_us(search.now)
    status = terms.status_sql("?")
    if status is not None:
        clauses.append(status)
        if terms.status_needs_now:
            params.append(now)
    if search.expiring_before is not None:
        clauses.append(f"{rule.ISSUED} AND not_after > ? AND not_after <= ?")
        params += [now, codec.to_us(search.expiring_before)]
    if search.after is not None:
        # The row value on its own does not use the index on not_after: the leading range does.
        after_us = codec.to_us(search.after[0])
        clauses.append("not_after >= ? AND (not_after, serial) > (?, ?)")
        params += [after_us, after_us, search.after[1]]
    return clauses, params


def _admin(row: Sequence[object]) -> AdminAccount:
    return AdminAccount(
        name=str(row[0]),
        role=AdminRole(str(row[1])),
        password_scrypt=str(row[2]),
        created_at=codec.from_us(row[3]),
        disabled_at=codec.opt_from_us(row[4]),
    )


def _session(row: Sequence[object]) -> ConsoleSession:
    return ConsoleSession(
        token_hash=str(row[0]),
        admin=str(row[1]),
        csrf_token=str(row[2]),
        created_at=codec.from_us(row[3]),
        last_seen=codec.from_us(row[4]),
        address=str(row[5]),
    )
