"""``scep-ca db upgrade`` and ``scep-ca db info``: the store's schema version.

Every command that opens the store applies pending migrations anyway; ``db upgrade`` does it on
its own, so that an operator can migrate a shared PostgreSQL database once, before rolling out
new server processes, and see what was applied. ``db info`` only reads: it shows the current
and the latest supported schema version and what an upgrade would apply.
"""

from __future__ import annotations

import argparse
import sqlite3
from dataclasses import dataclass

import asyncpg

from config import Config
from scep_ca.cli.context import CliError, opened_store, print_json, run_async
from store import schema_postgres, schema_sqlite
from store.pg_pool import safe_dsn


@dataclass(frozen=True)
class SchemaState:
    backend: str
    location: str  # the SQLite file, or host:port/database (never a password)
    version: int  # 0: no database or no schema yet
    latest: int

    @property
    def pending(self) -> list[int]:
        migrations = schema_postgres.MIGRATIONS if self.backend == "postgresql" else schema_sqlite.MIGRATIONS
        return [m.version for m in migrations if m.version > self.version]

    def as_dict(self) -> dict[str, object]:
        return {
            "backend": self.backend,
            "location": self.location,
            "schema_version": self.version,
            "latest_version": self.latest,
            "pending": self.pending,
        }


async def read_state(config: Config) -> SchemaState:
    """The schema version of the configured store, read without changing anything."""
    if config.store.dsn is not None:
        where = safe_dsn(config.store.dsn)
        try:
            conn = await asyncpg.connect(config.store.dsn)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise CliError(f"cannot connect to PostgreSQL at {where}: {exc}") from exc
        try:
            version = await schema_postgres.schema_version(conn)
        finally:
            await conn.close()
        return SchemaState("postgresql", where, version, schema_postgres.LATEST_VERSION)
    path = config.sqlite_path
    return SchemaState("sqlite", str(path), _sqlite_version(str(path)), schema_sqlite.MIGRATIONS[-1].version)


def _sqlite_version(path: str) -> int:
    try:
        # Read-only and without creating the file: `db info` must not leave an empty database.
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.OperationalError:
        return 0  # no database file yet
    try:
        row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    except sqlite3.OperationalError:
        return 0  # a file without our schema
    except sqlite3.DatabaseError as exc:
        raise CliError(f"{path} is not a readable SQLite database: {exc}") from exc
    finally:
        conn.close()
    return int(row[0])


async def _upgrade(config: Config, args: argparse.Namespace) -> int:
    if config.store.dsn is not None:
        try:
            applied = await schema_postgres.upgrade(config.store.dsn)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise CliError(f"cannot upgrade PostgreSQL at {safe_dsn(config.store.dsn)}: {exc}") from exc
    else:
        applied = (await read_state(config)).pending
        # SQLiteStore.open applies them (in one transaction; it creates the file, mode 0600).
        async with opened_store(config):
            pass
    after = await read_state(config)
    if args.json:
        print_json({**after.as_dict(), "applied": applied})
        return 0
    name = "PostgreSQL" if after.backend == "postgresql" else "SQLite"
    if applied:
        print(f"{name} {after.location}: applied migration(s) {', '.join(map(str, applied))}.")
    else:
        print(f"{name} {after.location}: already up to date.")
    print(f"Schema version: {after.version}")
    return 0


async def _info(config: Config, args: argparse.Namespace) -> int:
    state = await read_state(config)
    if args.json:
        print_json(state.as_dict())
        return 0
    print(f"Backend:         {state.backend}")
    print(f"Location:        {state.location}")
    print(f"Schema version:  {state.version}" + (" (no schema yet)" if state.version == 0 else ""))
    print(f"Latest version:  {state.latest}")
    if state.version > state.latest:
        print("The database is newer than this scep-ca: upgrade scep-ca before using it.")
    elif state.pending:
        print(f"Pending:         {', '.join(map(str, state.pending))} (`scep-ca db upgrade` applies them)")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    """Adds the ``db`` group (``upgrade``, ``info``)."""
    p = sub.add_parser("db", help="the store's database schema")
    dsub = p.add_subparsers(dest="db_cmd", required=True)
    c = dsub.add_parser("upgrade", parents=[common], help="apply pending schema migrations to the configured store")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=run_async(_upgrade))
    c = dsub.add_parser("info", parents=[common], help="show the store backend and its schema version (read-only)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=run_async(_info))
