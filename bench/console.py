"""The console's dashboard and certificate search at a million certificates.

1. Creates a store (SQLite in a temporary data directory, or PostgreSQL with ``--dsn``: a fresh
   database is created and dropped), ten integrations, and ``--rows`` certificates (default
   1,000,000; 2 % revoked, expiries spread over two years, 50 pending requests), written with
   direct SQL in batches: the store's own migrations made the schema and its indexes.
2. Starts the console app in process (``scep_ca.cli.console_app.console_app``, the one
   ``scep-ca serve`` runs) on a loopback port and signs in.
3. Times, over HTTP, ``--rounds`` requests of each page and prints the median and the worst:
   the dashboard (after one warm-up request that builds and signs the CRL), a search for one
   device by subject text, by serial prefix, the first page sorted by expiry, and a filtered
   page (one integration, expiring within 30 days), and pages 2 and 100 of the revoked ones.
4. Times ``scep-ca cert list`` pages in process (the CLI's ``main``: store opened, one page read
   and printed): the first page, a page from the middle (``--after``), the same with a status and
   an integration filter, and a search.
5. Deletes one integration (a tenth of the rows; its certificates are then revoked by rule) and
   times the revoked pages again, of every integration and of the deleted one.

    python bench/console.py [--rows N] [--rounds N] [--dsn postgresql://postgres@127.0.0.1/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import io
import os
import re
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import asyncpg
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config import Config, load_config
from scep_ca.cli.console_app import console_app
from scep_ca.cli.main import main as cli_main
from scep_ca.console.accounts import Accounts
from scep_ca.pki.ca import create_ca
from scep_ca.pki.ca_set import CASet
from store.base import AdminRole, CertificateSearch
from store.factory import open_store

INTEGRATIONS = 10
BATCH = 20_000
PASSWORD = "bench password 123"
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _us(when: dt.datetime) -> int:
    return (when - EPOCH) // dt.timedelta(microseconds=1)


def rows(first: int, n: int, now: dt.datetime) -> list[tuple[object, ...]]:
    """(serial, integration, subject, not_before, not_after, status, revoked_at, reason) per certificate."""
    out = []
    for i in range(first, first + n):
        serial = format(secrets.randbits(159) | 1 << 150, "x")
        not_after = now + dt.timedelta(minutes=(i * 7919) % (2 * 365 * 24 * 60))
        revoked = i % 50 == 0
        out.append(
            (
                serial,
                f"bench{i % INTEGRATIONS}",
                f"CN=device-{i:07d},OU=MDM,O=Example Corp",
                not_after - dt.timedelta(days=365),
                not_after,
                "revoked" if revoked else "issued",
                now if revoked else None,
                "keyCompromise" if revoked else None,
            )
        )
    return out


_COLUMNS = (
    "serial, integration_id, issuer_fingerprint, subject, not_before, not_after, der, transaction_id, "
    "pubkey_sha256, message_type, status, revoked_at, revocation_reason, created_at"
)


def fill_sqlite(path: Path, n: int, fingerprint: str, now: dt.datetime) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = OFF")
        der = secrets.token_bytes(900)  # an RSA-2048 certificate's size
        for start in range(0, n, BATCH):
            batch = rows(start, min(BATCH, n - start), now)
            conn.execute("BEGIN")
            conn.executemany(
                f"INSERT INTO certificates ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 19, ?, ?, ?, ?)",
                [
                    (
                        s,
                        i,
                        fingerprint,
                        subj,
                        _us(nb),
                        _us(na),
                        der,
                        f"t{s}",
                        s,
                        st,
                        _us(ra) if ra else None,
                        r,
                        _us(now),
                    )
                    for s, i, subj, nb, na, st, ra, r in batch
                ],
            )
            conn.execute("COMMIT")
        conn.execute("ANALYZE")
    finally:
        conn.close()


async def fill_postgres(dsn: str, n: int, fingerprint: str, now: dt.datetime) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        der = secrets.token_bytes(900)
        for start in range(0, n, BATCH):
            batch = rows(start, min(BATCH, n - start), now)
            await conn.copy_records_to_table(
                "certificates",
                columns=[c.strip() for c in _COLUMNS.split(",")],
                records=[
                    (s, i, fingerprint, subj, nb, na, der, f"t{s}", s, 19, st, ra, r, now)
                    for s, i, subj, nb, na, st, ra, r in batch
                ],
            )
        # As autovacuum would have by then: the visibility map lets counts read the index alone.
        await conn.execute("VACUUM ANALYZE certificates")
    finally:
        await conn.close()


async def timed(session: aiohttp.ClientSession, url: str, rounds: int, expect: str) -> tuple[float, float]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        async with session.get(url) as answer:
            body = await answer.text()
        times.append((time.perf_counter() - start) * 1000)
        assert answer.status == 200 and expect in body, (url, answer.status, body[-500:])
    return statistics.median(times), max(times)


async def run(args: argparse.Namespace, tmp: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    overrides: dict[str, object] = {"data_dir": str(tmp)}
    admin_dsn, dbname = args.dsn, None
    if admin_dsn:
        dbname = f"scep_ca_bench_{secrets.token_hex(4)}"
        admin = await asyncpg.connect(admin_dsn)
        await admin.execute(f"CREATE DATABASE {dbname}")
        await admin.close()
        overrides["store.dsn"] = re.sub(r"/[^/]*$", f"/{dbname}", admin_dsn)
    try:
        config = load_config(None, {}, overrides)
        ca = create_ca(tmp, subject="CN=bench CA", key_size=2048, validity_days=3650, passphrase=None)
        store = open_store(config)
        await store.open()
        from scep_ca.pki.records import Integration, Transaction, TransactionStatus

        for k in range(INTEGRATIONS):
            await store.create_integration(
                Integration(f"bench{k}", f"Bench {k}", "CN=$USERID$", now, 365, f"scep-bench{k}")
            )
        for k in range(50):
            txn = Transaction(
                f"bench{k % INTEGRATIONS}", f"P{k}", "00" * 32, TransactionStatus.PENDING, now, csr_der=b"0"
            )
            await store.record_pending(txn, None, now)
        await Accounts(store).create("bench", AdminRole.AUDITOR, PASSWORD)
        await store.close()
        start = time.perf_counter()
        if config.store.dsn:
            await fill_postgres(config.store.dsn, args.rows, ca.fingerprint_sha256, now)
        else:
            fill_sqlite(config.sqlite_path, args.rows, ca.fingerprint_sha256, now)
        print(
            f"filled {args.rows:,} certificates in {time.perf_counter() - start:.1f} s "
            f"({'PostgreSQL' if config.store.dsn else 'SQLite'})"
        )

        runner = web.AppRunner(console_app(config, CASet(current=ca), None))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        base = f"http://127.0.0.1:{port}/console"
        try:
            # unsafe=True: the jar keeps cookies of an IP-address host (127.0.0.1).
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
                page = await (await session.get(f"{base}/login")).text()
                token = re.search(r'name="csrf" value="([^"]+)"', page)
                assert token is not None
                await session.post(
                    f"{base}/login", data={"csrf": token.group(1), "name": "bench", "password": PASSWORD}
                )
                await timed(session, f"{base}/", 1, "Certificates by integration")  # warm-up: CRL signed once
                target = f"device-{args.rows // 2:07d}"
                serial_prefix = await _serial_of(config, target)
                checks = [
                    ("dashboard", f"{base}/", "Certificates by integration"),
                    (f"search subject '{target}'", f"{base}/certificates?q={target}", target),
                    ("search serial prefix (8 hex)", f"{base}/certificates?q={serial_prefix[:8]}", serial_prefix),
                    ("first page by expiry", f"{base}/certificates", "device-"),
                    ("integration + expiring 30 d", f"{base}/certificates?integration=bench3&expiring=30", "device-"),
                    ("status revoked, page 2", f"{base}/certificates?status=revoked&page=2", "device-"),
                    ("status revoked, page 100", f"{base}/certificates?status=revoked&page=100", "device-"),
                ]
                for label, url, expect in checks:
                    median, worst = await timed(session, url, args.rounds, expect)
                    print(f"{label:36} median {median:7.1f} ms   worst {worst:7.1f} ms   ({args.rounds} requests)")
                # A cursor half-way through the expiry range (rows expire over two years).
                middle = f"{now + dt.timedelta(days=365):%Y-%m-%dT%H:%M:%S.%fZ},0"
                for label, argv in _cli_pages(target, middle):
                    median, worst = await asyncio.to_thread(timed_cli, config, argv, args.rounds)
                    print(
                        f"{label:36} median {median:7.1f} ms   worst {worst:7.1f} ms   ({args.rounds} runs, in process)"
                    )
                # A deleted integration's certificates are revoked by rule (store/revocation_rule.py):
                # the revoked pages then read them through the integration's index as well.
                start = time.perf_counter()
                revoked = await _delete_integration(config, "bench3", now)
                print(f"deleted bench3 ({revoked:,} certificates revoked) in {time.perf_counter() - start:.3f} s")
                for label, url in (
                    ("then status revoked, page 2", f"{base}/certificates?status=revoked&page=2"),
                    ("then status revoked, page 100", f"{base}/certificates?status=revoked&page=100"),
                    ("then bench3, revoked, page 2", f"{base}/certificates?integration=bench3&status=revoked&page=2"),
                ):
                    median, worst = await timed(session, url, args.rounds, "device-")
                    print(f"{label:36} median {median:7.1f} ms   worst {worst:7.1f} ms   ({args.rounds} requests)")
        finally:
            await runner.cleanup()
    finally:
        if dbname:
            admin = await asyncpg.connect(admin_dsn)
            await admin.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
            await admin.close()


async def _delete_integration(config: Config, integration_id: str, now: dt.datetime) -> int:
    store = open_store(config)
    await store.open()
    try:
        return (await store.delete_integration(integration_id, now)).revoked
    finally:
        await store.close()


async def _serial_of(config: Config, target: str) -> str:
    store = open_store(config)
    await store.open()
    try:
        (record,) = await store.search_certificates(CertificateSearch(now=dt.datetime.now(dt.UTC), text=target))
        return record.serial
    finally:
        await store.close()


def _cli_pages(target: str, middle: str) -> list[tuple[str, list[str]]]:
    """``scep-ca cert list`` pages (issue 23: under 100 ms a page), the whole command in process."""
    return [
        ("cert list, first page", ["cert", "list"]),
        ("cert list, page from the middle", ["cert", "list", "--after", middle]),
        ("cert list --status revoked, middle", ["cert", "list", "--status", "revoked", "--after", middle]),
        ("cert list --integration, middle", ["cert", "list", "--integration", "bench3", "--after", middle]),
        (f"cert list --search {target}", ["cert", "list", "--search", target]),
    ]


def timed_cli(config: Config, argv: list[str], rounds: int) -> tuple[float, float]:
    """Runs the CLI's ``main`` (store opened and closed each time, as the command does), output discarded."""
    base = ["--data-dir", str(config.data_dir)]
    if config.store.dsn:
        os.environ["SCEP_CA_STORE_DSN"] = config.store.dsn
    times = []
    try:
        for _ in range(rounds):
            out, err = io.StringIO(), io.StringIO()
            start = time.perf_counter()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = cli_main([*base, *argv])
            times.append((time.perf_counter() - start) * 1000)
            assert code == 0 and out.getvalue().count("\n") > 1, (argv, err.getvalue())
    finally:
        os.environ.pop("SCEP_CA_STORE_DSN", None)
    return statistics.median(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--dsn", help="PostgreSQL admin DSN (a database is created and dropped); default SQLite")
    args = parser.parse_args()
    os.environ.pop("SCEP_CA_STORE_DSN", None)
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
