"""The PostgreSQL store's console roles: admin accounts, sessions, dashboard counts and search.

A mixin of ``PostgresStore`` (same pool), kept apart so that the enrollment store stays
readable. Schema: migration 7 in ``store/schema_postgres.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from scep_ca.pki.records import CertificateRecord
from store import revocation_rule as rule
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
from store.pg_pool import ConnectionPool
from store.search import PG_ASCII_FOLD, dashboard_counts, only_revoked, revoked_page_walks_expiry, search_terms

# As in SQLite: whole days strictly inside the intervals from the maintained counts, the day of
# "now" and the horizon's day counted exactly from the certificates themselves; the counts are
# kept per status as written, the revocation rule (store/revocation_rule.py) applies on read.
_COUNTS = f"""
SELECT c.integration_id,
       coalesce(sum(n) FILTER (WHERE {rule.ISSUED} AND expiry_day > $1), 0),
       coalesce(sum(n) FILTER (WHERE {rule.REVOKED}), 0),
       coalesce(sum(n) FILTER (WHERE {rule.ISSUED} AND expiry_day > $1 AND expiry_day < $2), 0)
FROM certificate_counts c JOIN integrations i ON i.id = c.integration_id GROUP BY c.integration_id
"""
# Counted from the certificates alone, then only live integrations kept (the rule's ISSUED: an
# issued row of a deleted integration is revoked): joined per row, PostgreSQL intersected each
# integration's whole index range with the days' (157 ms at a million certificates, against 13).
_BOUNDARY_DAYS = """
SELECT b.* FROM (
  SELECT integration_id,
         count(*) FILTER (WHERE not_after > $1 AND not_after < $2),
         count(*) FILTER (WHERE not_after > $1 AND not_after < $2 AND not_after <= $3)
           + count(*) FILTER (WHERE not_after >= $4 AND not_after <= $3 AND not_after >= $2)
  FROM certificates
  WHERE status = 'issued' AND ((not_after > $1 AND not_after < $2) OR (not_after >= $4 AND not_after <= $3))
  GROUP BY integration_id
) b JOIN integrations i ON i.id = b.integration_id WHERE i.deleted_at IS NULL
"""
# A page of the revoked certificates (``_revoked_page``): limit and offset are $1 and $2.
_PAGE = "ORDER BY not_after, serial LIMIT $1 OFFSET $2"
_PENDING = "SELECT integration_id, count(*) FROM transactions WHERE status = 'pending' GROUP BY integration_id"


class PostgresConsoleMixin:
    """``AdminStore``, ``SessionStore`` and ``OverviewStore`` for ``PostgresStore``."""

    def _p(self) -> ConnectionPool:
        raise NotImplementedError  # PostgresStore's

    def _certificate_record(self, row: Any) -> CertificateRecord:
        raise NotImplementedError  # PostgresStore's

    # -- admins ------------------------------------------------------------------------

    async def create_admin(self, account: AdminAccount) -> None:
        try:
            await self._p().execute(
                f"INSERT INTO admins ({ADMIN_COLUMNS}) VALUES ($1, $2, $3, $4, $5)",
                account.name,
                account.role.value,
                account.password_scrypt,
                account.created_at,
                account.disabled_at,
            )
        except asyncpg.UniqueViolationError as exc:
            raise DuplicateAdmin(f"an admin named {account.name!r} exists") from exc

    async def get_admin(self, name: str) -> AdminAccount | None:
        row = await self._p().fetchrow(f"SELECT {ADMIN_COLUMNS} FROM admins WHERE name = $1", name)
        return None if row is None else _admin(row)

    async def list_admins(self) -> Sequence[AdminAccount]:
        rows = await self._p().fetch(f"SELECT {ADMIN_COLUMNS} FROM admins ORDER BY name")
        return [_admin(row) for row in rows]

    async def set_admin_password(self, name: str, password_scrypt: str) -> bool:
        async with self._p().connection() as conn, conn.transaction():
            status = await conn.execute("UPDATE admins SET password_scrypt = $2 WHERE name = $1", name, password_scrypt)
            await conn.execute("DELETE FROM console_sessions WHERE admin = $1", name)
        return bool(status == "UPDATE 1")

    async def disable_admin(self, name: str, now: datetime, *, keep_an_admin: bool = False) -> bool:
        async with self._p().connection() as conn, conn.transaction():
            if keep_an_admin:
                # FOR UPDATE locks every enabled admin: a concurrent disable waits here, then reads
                # the rows again (READ COMMITTED) and sees this one's update.
                enabled = await conn.fetch(
                    "SELECT name FROM admins WHERE role = 'admin' AND disabled_at IS NULL ORDER BY name FOR UPDATE"
                )
                names = {row["name"] for row in enabled}
                if names == {name}:
                    raise LastAdmin(name)
            status = await conn.execute(
                "UPDATE admins SET disabled_at = $2 WHERE name = $1 AND disabled_at IS NULL", name, now
            )
            await conn.execute("DELETE FROM console_sessions WHERE admin = $1", name)
        return bool(status == "UPDATE 1")

    # -- sessions ----------------------------------------------------------------------

    async def create_session(self, session: ConsoleSession) -> None:
        await self._p().execute(
            f"INSERT INTO console_sessions ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)",
            session.token_hash,
            session.admin,
            session.csrf_token,
            session.created_at,
            session.last_seen,
            session.address,
        )

    async def touch_session(
        self, token_hash: str, now: datetime, idle_after: datetime, created_after: datetime
    ) -> ConsoleSession | None:
        async with self._p().connection() as conn, conn.transaction():
            await conn.execute(
                "DELETE FROM console_sessions WHERE last_seen <= $1 OR created_at <= $2", idle_after, created_after
            )
            row = await conn.fetchrow(
                "UPDATE console_sessions s SET last_seen = $2 FROM admins a "
                "WHERE s.token_hash = $1 AND a.name = s.admin AND a.disabled_at IS NULL "
                f"RETURNING {', '.join('s.' + c for c in SESSION_COLUMNS.split(', '))}",
                token_hash,
                now,
            )
            if row is None:
                await conn.execute("DELETE FROM console_sessions WHERE token_hash = $1", token_hash)
                return None
        return ConsoleSession(*row)

    async def delete_session(self, token_hash: str) -> None:
        await self._p().execute("DELETE FROM console_sessions WHERE token_hash = $1", token_hash)

    # -- overview ----------------------------------------------------------------------

    async def integration_counts(self, now: datetime, expiring_before: datetime) -> Sequence[IntegrationCounts]:
        day = timedelta(days=1)
        today, horizon_day = _day(now), _day(expiring_before)
        tomorrow, horizon_start = _EPOCH + (today + 1) * day, _EPOCH + horizon_day * day
        async with self._p().connection() as conn:
            whole = await conn.fetch(_COUNTS, today, horizon_day)
            edges = {
                str(r[0]): (int(r[1]), int(r[2]))
                for r in await conn.fetch(_BOUNDARY_DAYS, now, tomorrow, expiring_before, horizon_start)
            }
            pending = {str(r[0]): int(r[1]) for r in await conn.fetch(_PENDING)}
        return dashboard_counts(whole, edges, pending, horizon_after_today=horizon_day > today)

    async def search_certificates(self, search: CertificateSearch) -> Sequence[CertificateRecord]:
        terms = search_terms(search)
        if only_revoked(terms, search):
            return await self._revoked_page(search)
        clauses: list[str] = []
        params: list[object] = []

        def param(value: object) -> str:
            params.append(value)
            return f"${len(params)}"

        if terms.text:
            low, high = param(terms.subject_low), param(terms.subject_high)
            matches = [f"({PG_ASCII_FOLD} >= {low} AND {PG_ASCII_FOLD} < {high})"]
            if terms.serial_prefix:
                # "g" sorts after every hex digit (the column's collation is "C").
                low, high = param(terms.serial_prefix), param(terms.serial_prefix + "g")
                matches.append(f"(serial >= {low} AND serial < {high})")
            clauses.append("(" + " OR ".join(matches) + ")")
        if search.integration_id:
            clauses.append(f"c.integration_id = {param(search.integration_id)}")
        if terms.status is not None:
            status = terms.status_sql(param(search.now) if terms.status_needs_now else "")
            assert status is not None
            clauses.append(status)
        if search.expiring_before is not None:
            now, horizon = param(search.now), param(search.expiring_before)
            clauses.append(f"{rule.ISSUED} AND not_after > {now} AND not_after <= {horizon}")
        if search.after is not None:
            # The leading range lets the planner walk the index on not_after.
            when, serial = param(search.after[0]), param(search.after[1])
            clauses.append(f"not_after >= {when} AND (not_after, serial) > ({when}, {serial})")
        sql = f"SELECT {rule.COLUMNS} FROM {rule.JOINED}"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += f" ORDER BY not_after, serial LIMIT {param(search.limit)} OFFSET {param(search.offset)}"
        rows = await self._p().fetch(sql, *params)
        return [self._certificate_record(row) for row in rows]

    async def _revoked_page(self, search: CertificateSearch) -> list[CertificateRecord]:
        """A page of revoked certificates by expiry (of one integration, or of all), the cheaper of
        two exact ways, chosen as in SQLite (``store.search.revoked_page_walks_expiry``): walking
        the expiry index while revoked rows are dense, otherwise sorting only the revoked rows'
        keys from their indexes (``rule.revoked_keys_pg``; not a 24 MB spill of every revoked row
        at a million certificates, 2 % revoked) and reading the page's rows last by primary key."""
        one = [search.integration_id] if search.integration_id else []
        integration = "$2" if one else None
        async with self._p().connection() as conn:
            deleted = [row[0] for row in await conn.fetch("SELECT id FROM integrations WHERE deleted_at IS NOT NULL")]
            revoked = await conn.fetchval(rule.revoked_estimate_pg("$1", integration), deleted, *one)
            # The maintained counts (a few rows a day an integration) hold the total.
            total = await conn.fetchval("SELECT coalesce(sum(n), 0) FROM certificate_counts")
            if revoked_page_walks_expiry(
                offset=search.offset, limit=search.limit, certificates=int(total), revoked=int(revoked)
            ):
                where = rule.REVOKED + (" AND c.integration_id = $3" if one else "")
                sql = f"SELECT {rule.COLUMNS} FROM {rule.JOINED} WHERE {where} {_PAGE}"
                params: list[object] = [search.limit, search.offset, *one]
            else:
                keys = rule.revoked_keys_pg("$3", "$4" if one else None, any_deleted=bool(deleted))
                sql = (
                    f"SELECT {rule.COLUMNS} FROM {rule.JOINED} WHERE c.serial IN (SELECT serial FROM ({keys}) "
                    f"revoked {_PAGE}) ORDER BY not_after, serial"
                )
                params = [search.limit, search.offset, deleted, *one]
            rows = await conn.fetch(sql, *params)
        return [self._certificate_record(row) for row in rows]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _day(when: datetime) -> int:
    """The UTC day number of ``when``, as ``scep_expiry_day`` computes it in the database."""
    return (when - _EPOCH) // timedelta(days=1)


def _admin(row: Any) -> AdminAccount:
    return AdminAccount(
        name=row[0], role=AdminRole(row[1]), password_scrypt=row[2], created_at=row[3], disabled_at=row[4]
    )
