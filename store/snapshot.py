"""Consistent copies of a store's database while it serves, and putting one back.

- SQLite: the online backup API (``sqlite3.Connection.backup``) copies pages under a read
  transaction, so writers in other processes keep going and the copy is one point in time.
- PostgreSQL: ``pg_dump --format=custom --snapshot=ID`` under a REPEATABLE READ transaction
  that exported that snapshot, so the facts read here (counts, CRL numbers, audit heads) and the
  dump describe the same instant. ``pg_restore`` puts it back (Debian's postgresql-client).

The facts are read with plain SQL from the copy itself, which is why they cannot disagree with it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import subprocess
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

from store import revocation_rule as rule
from store.base import AuditRecord, StoreError, StoreUnavailable

# Tables whose presence means a database already belongs to a scep-ca (restore refuses it).
_OWN_TABLES = ("schema_migrations", "certificates", "audit_events")


@dataclass(frozen=True)
class SnapshotFacts:
    """What a backup's manifest says about its database, read from the snapshot itself."""

    schema_version: int
    integrations: int
    certificates: int
    revoked: int
    crl_numbers: Mapping[str, int]  # issuer fingerprint -> last CRL number used
    audit_heads: Mapping[str, tuple[int, str]] = field(default_factory=dict)  # writer -> (seq, mac)

    def as_json(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "integrations": self.integrations,
            "certificates": self.certificates,
            "revoked": self.revoked,
            "crl_numbers": dict(self.crl_numbers),
            "audit_heads": {w: {"seq": s, "mac": m} for w, (s, m) in self.audit_heads.items()},
        }


_COUNTS = (
    "SELECT (SELECT max(version) FROM schema_migrations),"
    " (SELECT count(*) FROM integrations),"
    " (SELECT count(*) FROM certificates),"
    f" (SELECT count(*) FROM {rule.JOINED} WHERE {rule.REVOKED})"
)
_CRL = "SELECT issuer_fingerprint, number FROM crl_numbers"
_HEADS = (
    "SELECT a.writer, a.seq, a.mac FROM audit_events a"
    " JOIN (SELECT writer, max(seq) AS seq FROM audit_events GROUP BY writer) h"
    " ON a.writer = h.writer AND a.seq = h.seq"
)


def _facts(counts: Any, crl: Any, heads: Any) -> SnapshotFacts:
    version, integrations, certificates, revoked = counts
    return SnapshotFacts(
        int(version or 0),
        int(integrations),
        int(certificates),
        int(revoked),
        {str(f): int(n) for f, n in crl},
        {str(w): (int(s), str(m)) for w, s, m in heads},
    )


# -- SQLite -----------------------------------------------------------------------------


def sqlite_copy(source: Path, dest: Path) -> SnapshotFacts:
    """Copy the live database at ``source`` to the new file ``dest`` and read its facts."""
    try:
        with (
            closing(sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)) as src,
            closing(sqlite3.connect(dest)) as out,
        ):
            src.backup(out)
        return sqlite_facts(dest)
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"cannot copy {source}: {exc}") from exc


def sqlite_facts(path: Path) -> SnapshotFacts:
    """The facts of a database file (opened read-only: a backup's copy is never changed)."""
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            counts = conn.execute(_COUNTS).fetchone()
            return _facts(counts, conn.execute(_CRL).fetchall(), conn.execute(_HEADS).fetchall())
    except sqlite3.Error as exc:
        raise StoreError(f"{path.name}: not a scep-ca database ({exc})") from exc


def sqlite_raise_crl_numbers(path: Path, margin: int) -> None:
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE crl_numbers SET number = number + ?", (margin,))


# -- PostgreSQL -------------------------------------------------------------------------


async def _connect(dsn: str) -> Any:
    try:
        return await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        raise StoreUnavailable(f"cannot connect to PostgreSQL: {type(exc).__name__}") from exc


async def pg_dump(dsn: str, dest: Path) -> SnapshotFacts:
    """``pg_dump --format=custom`` of the database into ``dest``, at one exported snapshot."""
    conn = await _connect(dsn)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            facts = _facts(await conn.fetchrow(_COUNTS), await conn.fetch(_CRL), await conn.fetch(_HEADS))
            # The snapshot lives as long as this transaction: pg_dump runs inside it. Compression
            # level 1: bytea is dumped as hex text, which any level halves; the default level
            # took twice as long for 3% less (bench/backup.py, 100,000 certificates).
            await _run(
                [
                    "pg_dump",
                    "--format=custom",
                    "--compress=1",
                    f"--snapshot={snapshot}",
                    f"--file={dest}",
                    f"--dbname={dsn}",
                ]
            )
        return facts
    finally:
        await conn.close()


async def pg_has_tables(dsn: str) -> list[str]:
    """The scep-ca tables the database already holds (restore refuses to write over them)."""
    conn = await _connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = current_schema() AND table_name = ANY($1::text[])",
            list(_OWN_TABLES),
        )
        return sorted(str(r["table_name"]) for r in rows)
    finally:
        await conn.close()


async def pg_restore(dsn: str, dump: Path) -> None:
    await _run(["pg_restore", "--no-owner", "--exit-on-error", f"--dbname={dsn}", str(dump)])


def pg_dump_readable(dump: Path) -> None:
    """Raise StoreError unless ``pg_restore`` can read the archive's table of contents."""
    done = subprocess.run(["pg_restore", "--list", str(dump)], capture_output=True, check=False)
    if done.returncode != 0:
        raise StoreError(f"the database dump is unreadable: {_first_line(done.stderr)}")


_COPY_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)")
_COPY_SIMPLE = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def _copy_field(text: str) -> str | None:
    """One field of PostgreSQL's COPY text format (``\\N`` is NULL, backslash escapes)."""
    if text == "\\N":
        return None

    def unescape(match: re.Match[str]) -> str:
        code = match.group(1)
        if code[0] == "x" and len(code) > 1:
            return chr(int(code[1:], 16))
        if code[0] in "01234567":
            return chr(int(code, 8))
        return _COPY_SIMPLE.get(code, code)

    return _COPY_ESCAPE.sub(unescape, text)


def pg_dump_audit_records(dump: Path) -> list[AuditRecord]:
    """The audit records of a custom-format dump, ordered by writer and seq, read through
    ``pg_restore --data-only`` (COPY text) without a database to restore into."""
    done = subprocess.run(
        ["pg_restore", "--data-only", "--table=audit_events", "--file=-", str(dump)], capture_output=True, check=False
    )
    if done.returncode != 0:
        raise StoreError(f"the database dump is unreadable: {_first_line(done.stderr)}")
    records: list[AuditRecord] = []
    columns: list[str] | None = None
    for line in done.stdout.decode("utf-8").split("\n"):
        if columns is None:
            if line.startswith("COPY ") and ".audit_events " in line:
                columns = [c.strip() for c in line[line.index("(") + 1 : line.index(")")].split(",")]
            continue
        if line == "\\.":
            break
        row = dict(zip(columns, (_copy_field(f) for f in line.split("\t")), strict=True))
        records.append(
            AuditRecord(
                str(row["writer"]),
                int(str(row["seq"])),
                datetime.fromisoformat(str(row["at"])),
                str(row["actor"]),
                str(row["event"]),
                str(row["object"]),
                json.loads(str(row["details"])),
                str(row["prev_mac"]),
                str(row["mac"]),
            )
        )
    records.sort(key=lambda r: (r.writer, r.seq))
    return records


async def pg_raise_crl_numbers(dsn: str, margin: int) -> None:
    conn = await _connect(dsn)
    try:
        await conn.execute("UPDATE crl_numbers SET number = number + $1", margin)
    finally:
        await conn.close()


def _without_password(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """The arguments with a URL DSN's password moved into PGPASSWORD: another local user can
    read a process's arguments (``ps``), not its environment."""
    env = dict(os.environ)
    out = []
    for arg in argv:
        if arg.startswith("--dbname="):
            parts = urlsplit(arg.removeprefix("--dbname="))
            if parts.password is not None:
                env["PGPASSWORD"] = unquote(parts.password)
                netloc = parts.netloc.rsplit("@", 1)
                user = netloc[0].split(":", 1)[0]
                arg = "--dbname=" + urlunsplit(parts._replace(netloc=f"{user}@{netloc[1]}"))
        out.append(arg)
    return out, env


async def _run(argv: list[str]) -> None:
    argv, env = _without_password(argv)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env
        )
    except FileNotFoundError as exc:
        raise StoreUnavailable(f"{argv[0]} is not installed (Debian: postgresql-client)") from exc
    _, err = await proc.communicate()
    if proc.returncode != 0:
        # The DSN is an argument, never repeated here: it may carry a password.
        raise StoreUnavailable(f"{argv[0]} failed: {_first_line(err)}")


def _first_line(err: bytes) -> str:
    lines = err.decode("utf-8", "replace").strip().splitlines()
    return lines[0] if lines else "no message"
