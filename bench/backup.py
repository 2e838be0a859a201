"""Backup and restore time and file size with many certificates, on SQLite and PostgreSQL.

    .venv/bin/python bench/backup.py --count 100000 1000000 [--backend sqlite postgresql]

For each count and backend: ``scep-ca init`` and one integration in a temporary data
directory (PostgreSQL: a temporary database on ``SCEP_CA_TEST_PG_DSN``, default
postgresql://postgres@127.0.0.1:5432/postgres), then ``--count`` certificate rows inserted by
one SQL statement (not through ``record_issuance``, which would take hours at a million and is
not what is measured); each row carries 1,000 random bytes as its DER, about an issued
certificate's size and as incompressible. The audit log is not filled (an issuance event is
another ~2.5 kB a certificate, README "Audit log": add it in proportion). Then times the real
CLI as a process: ``backup --out F --recipient age1...``, ``backup verify``, and ``restore``
into a new directory (a new database), and prints the backup's size.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
from pyrage import x25519

SCEP_CA = Path(sys.executable).parent / "scep-ca"
ADMIN_DSN = os.environ.get("SCEP_CA_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")

_SQLITE_FILL = """
INSERT INTO certificates (serial, integration_id, issuer_fingerprint, subject, not_before, not_after, der,
    transaction_id, pubkey_sha256, message_type, status, created_at)
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
SELECT printf('%x', 1000000000000 + i), ?, 'ab', 'CN=device-' || i, 0, 0, randomblob(1000), 'bench-' || i,
    lower(hex(randomblob(32))), 19, 'issued', 0 FROM n
"""
_PG_FILL = """
INSERT INTO certificates (serial, integration_id, issuer_fingerprint, subject, not_before, not_after, der,
    transaction_id, pubkey_sha256, message_type, status, created_at)
SELECT to_hex(1000000000000 + i), $2, 'ab', 'CN=device-' || i, now(), now(), gen_random_bytes(1000), 'bench-' || i,
    encode(gen_random_bytes(32), 'hex'), 19, 'issued', now() FROM generate_series(1, $1) AS i
"""


def cli(data_dir: Path, config: Path, *args: str) -> float:
    start = time.perf_counter()
    argv = [str(SCEP_CA), "--config", str(config), "--data-dir", str(data_dir), *args]
    subprocess.run(argv, check=True, capture_output=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - start


async def pg(dsn: str, sql: str, *params: object) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql, *params)
    finally:
        await conn.close()


def database(name: str) -> str:
    asyncio.run(pg(ADMIN_DSN, f'CREATE DATABASE "{name}"'))
    return urlsplit(ADMIN_DSN)._replace(path=f"/{name}").geturl()


def run(count: int, backend: str, work: Path) -> None:
    identity = x25519.Identity.generate()
    key = work / "key.txt"
    key.write_text(str(identity) + "\n")
    made: list[str] = []
    try:
        dsns = []
        for role in ("old", "new"):
            config = work / f"{role}.yaml"
            if backend == "postgresql":
                name = f"scep_ca_bench_{secrets.token_hex(4)}"
                made.append(name)
                dsns.append(database(name))
                config.write_text(f"store:\n  dsn: {dsns[-1]}\n")
            else:
                config.write_text("{}\n")
        old, new = work / "old", work / "new"
        cli(old, work / "old.yaml", "init")
        out = subprocess.run(
            [str(SCEP_CA), "--config", str(work / "old.yaml"), "--data-dir", str(old), "integration", "create", "b"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        integration = next(line.split()[-1] for line in out.splitlines() if "SCEP URL" in line).rsplit("/", 1)[-1]
        start = time.perf_counter()
        if backend == "postgresql":
            asyncio.run(pg(dsns[0], "CREATE EXTENSION IF NOT EXISTS pgcrypto"))
            asyncio.run(pg(dsns[0], _PG_FILL, count, integration))
            asyncio.run(pg(dsns[0], "VACUUM ANALYZE certificates"))
        else:
            with sqlite3.connect(old / "scep-ca.sqlite3") as conn:
                conn.execute(_SQLITE_FILL, (count, integration))
        fill = time.perf_counter() - start
        backup = work / "backup.tar.age"
        took = cli(old, work / "old.yaml", "backup", "--out", str(backup), "--recipient", str(identity.to_public()))
        verify = cli(old, work / "old.yaml", "backup", "verify", str(backup), "--identity", str(key))
        restore_args = ["restore", str(backup), "--identity", str(key)]
        if backend == "postgresql":
            restore_args += ["--database-url", dsns[1]]
        restore = cli(new, work / "new.yaml", *restore_args)
        size = backup.stat().st_size
        print(
            f"{backend:10} {count:>9,} certificates: fill {fill:6.1f} s | backup {took:6.1f} s, "
            f"{size / 1e6:8.1f} MB ({size / count:.0f} B/cert) | verify {verify:6.1f} s | restore {restore:6.1f} s",
            flush=True,
        )
    finally:
        for name in made:
            asyncio.run(pg(ADMIN_DSN, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, nargs="+", default=[100_000])
    parser.add_argument("--backend", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"])
    args = parser.parse_args()
    for count in args.count:
        for backend in args.backend:
            with tempfile.TemporaryDirectory(prefix="scep-ca-bench-backup-") as work:
                run(count, backend, Path(work))


if __name__ == "__main__":
    main()
