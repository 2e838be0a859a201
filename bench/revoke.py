"""Deleting an integration with many certificates, then serving its revocation.

    .venv/bin/python bench/revoke.py --count 100000
    .venv/bin/python bench/revoke.py --count 100000 --store postgres

What it does, in order:
1. Creates a throwaway CA and a store with one integration: SQLite in a temporary directory,
   or with ``--store postgres`` a fresh database on the server of ``--pg-dsn`` (created here
   and dropped at the end). Seeds ``--count`` certificate rows in one transaction past the
   store (SQLite: a second sqlite3 connection; PostgreSQL: COPY, then VACUUM ANALYZE, as
   autovacuum would have done by the time a million certificates were issued);
   ``record_issuance`` one at a time would take minutes and is not what is measured. Rows are
   built with the store's own columns; every row carries the same ~900-byte placeholder DER,
   since nothing measured here reads it.
2. Times ``RevocationService.delete_integration`` (the store's one-transaction delete: the
   integration marked deleted, which revokes its certificates without a write per row
   (store/revocation_rule.py), its challenges deleted, the epoch bumped).
3. Times ``RevocationService.current_crl()`` cold (fetch the revoked entries, take a CRL
   number, encode and sign) and ``build_crl`` alone, and prints the CRL size; checks that
   the CRL parses, verifies and lists every serial.
4. Every CRL shard cold (``RevocationService.shard_crl``; rows are seeded with the shard
   their serial gives under the default ``revocation.crl_shards``), the largest shard's
   size (target < 1 MB at 1,000,000 revoked) and a check that the shards together list
   every revoked certificate.
5. OCSP answers per second and per-request latency (p50, p99): in-process
   ``RevocationService.ocsp`` on pre-built requests for random revoked serials (parse,
   store lookup, build, RSA-2048 sign).
6. The reference, in the same run: the same entries through cryptography's
   ``CertificateRevocationListBuilder`` (``--no-reference`` skips it: it takes ~20 s at
   100,000 entries), and with ``--asn1crypto`` also asn1crypto's TbsCertList (~60 s).
Prints each figure, the targets (issue 23: deletion < 5 s and OCSP p99 < 5 ms at 1,000,000,
a shard < 1 MB; CRL < 5 s) and the speed-up ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import random
import secrets
import sqlite3
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config.model import RevocationConfig  # noqa: E402
from scep_ca.pki.ca import CAIdentity, create_ca  # noqa: E402
from scep_ca.pki.ca_set import ca_id  # noqa: E402
from scep_ca.pki.crl import build_crl  # noqa: E402
from scep_ca.pki.crl_shards import shard_of  # noqa: E402
from scep_ca.pki.records import CertificateRecord, Integration, RevokedEntry  # noqa: E402
from scep_ca.services.revocation import RevocationService  # noqa: E402
from store import sqlite_codec as codec  # noqa: E402
from store.base import Store  # noqa: E402
from store.columns import CERTIFICATES, RowMapper, insert_sql  # noqa: E402
from store.postgres import PostgresConverters, PostgresStore  # noqa: E402
from store.sqlite import SQLiteStore  # noqa: E402

INTEGRATION = "bench"
# revocation.crl_shards' default (config/model.py).
SHARDS = RevocationConfig().crl_shards
PUBLIC_URL = "http://bench.example"


def records(ca: CAIdentity, count: int, now: dt.datetime) -> tuple[list[str], Iterator[CertificateRecord]]:
    """``count`` issued certificates of INTEGRATION: their serials, and the records (lazily)."""
    der = secrets.token_bytes(900)
    pubkey = hashlib.sha256(der).hexdigest()
    serials = [format(secrets.randbits(159) | (1 << 158), "x") for _ in range(count)]
    made = (
        CertificateRecord(
            serial=serial,
            integration_id=INTEGRATION,
            issuer_fingerprint=ca.fingerprint_sha256,
            subject=f"CN=device-{i},O=Bench",
            not_before=now - dt.timedelta(minutes=5),
            not_after=now + dt.timedelta(days=365),
            der=der,
            transaction_id=f"txn-{i}",
            pubkey_sha256=pubkey,
            message_type=19,
            created_at=now,
            crl_shard=shard_of(int(serial, 16), SHARDS),
        )
        for i, serial in enumerate(serials)
    )
    return serials, made


def seed_sqlite(db: Path, ca: CAIdentity, count: int, now: dt.datetime) -> list[str]:
    """Insert ``count`` issued certificates of INTEGRATION in one transaction; returns the serials."""
    serials, made = records(ca, count, now)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(insert_sql(CERTIFICATES, "?"), (codec.certificate_params(r, now) for r in made))
        conn.execute("COMMIT")
    finally:
        conn.close()
    return serials


async def seed_postgres(dsn: str, ca: CAIdentity, count: int, now: dt.datetime) -> list[str]:
    """As seed_sqlite, with COPY (one statement, one transaction), then VACUUM ANALYZE."""
    serials, made = records(ca, count, now)
    mapper = RowMapper(CERTIFICATES, PostgresConverters())
    columns = [c.name for c in CERTIFICATES.insert_columns]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.copy_records_to_table("certificates", records=(mapper.params(r) for r in made), columns=columns)
        await conn.execute("VACUUM ANALYZE certificates")
    finally:
        await conn.close()
    return serials


def _with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


@asynccontextmanager
async def scratch_database(admin_dsn: str) -> AsyncIterator[str]:
    """A new empty database on the server of ``admin_dsn``, dropped afterwards; yields its DSN."""
    name = f"scep_ca_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield _with_database(admin_dsn, name)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@asynccontextmanager
async def bench_store(
    args: argparse.Namespace, base: Path, ca: CAIdentity, now: dt.datetime
) -> AsyncIterator[tuple[Store, list[str]]]:
    """The opened store of ``--store`` with INTEGRATION and ``--count`` certificates in it."""
    if args.store == "sqlite":
        db = base / "scep-ca.sqlite3"
        store: Store = SQLiteStore(db)
        await store.open()
        await store.create_integration(bench_integration(now))
        t0 = time.perf_counter()
        serials = seed_sqlite(db, ca, args.count, now)
        print(f"seeded {args.count} certificates in {time.perf_counter() - t0:.2f} s (bulk insert, not measured)")
        try:
            yield store, serials
        finally:
            await store.close()
        return
    async with scratch_database(args.pg_dsn) as dsn:
        store = PostgresStore(dsn)
        await store.open()
        try:
            await store.create_integration(bench_integration(now))
            t0 = time.perf_counter()
            serials = await seed_postgres(dsn, ca, args.count, now)
            print(
                f"seeded {args.count} certificates in {time.perf_counter() - t0:.2f} s "
                "(COPY + VACUUM ANALYZE, not measured)"
            )
            yield store, serials
        finally:
            await store.close()


def bench_integration(now: dt.datetime) -> Integration:
    return Integration(
        id=INTEGRATION,
        name="bench",
        subject_template="CN=$USERID$",
        created_at=now,
        validity_days=365,
        username="bench",
    )


def reference_cryptography(ca: CAIdentity, entries: Sequence[RevokedEntry], now: dt.datetime) -> float:
    start = time.perf_counter()
    ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(hours=24))
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .add_extension(x509.CRLNumber(1), critical=False)
    )
    for entry in entries:
        revoked = (
            x509.RevokedCertificateBuilder()
            .serial_number(int(entry.serial, 16))
            .revocation_date(entry.revoked_at)
            .add_extension(x509.CRLReason(x509.ReasonFlags.cessation_of_operation), critical=False)
            .build()
        )
        builder = builder.add_revoked_certificate(revoked)
    builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    return time.perf_counter() - start


def reference_asn1crypto(ca: CAIdentity, entries: Sequence[RevokedEntry], now: dt.datetime) -> float:
    from asn1crypto import crl as asn1_crl
    from asn1crypto import x509 as asn1_x509
    from cryptography.hazmat.primitives.asymmetric import padding

    start = time.perf_counter()
    tbs = asn1_crl.TbsCertList(
        {
            "version": "v2",
            "signature": {"algorithm": "sha256_rsa"},
            "issuer": asn1_x509.Certificate.load(ca.cert_der).subject,
            "this_update": asn1_x509.Time({"utc_time": now}),
            "next_update": asn1_x509.Time({"utc_time": now + dt.timedelta(hours=24)}),
            "revoked_certificates": [
                {
                    "user_certificate": int(e.serial, 16),
                    "revocation_date": asn1_x509.Time({"utc_time": e.revoked_at}),
                    "crl_entry_extensions": [{"extn_id": "crl_reason", "extn_value": "cessation_of_operation"}],
                }
                for e in entries
            ],
        }
    ).dump()
    ca.key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())
    return time.perf_counter() - start


def ocsp_requests(ca: CAIdentity, serials: Sequence[str], n: int) -> list[bytes]:
    name_hash = hashlib.sha1(ca.cert.subject.public_bytes()).digest()
    key_hash = ocsp.OCSPRequestBuilder().add_certificate(ca.cert, ca.cert, hashes.SHA1()).build().issuer_key_hash
    out = []
    for serial in random.sample(list(serials), min(n, len(serials))):
        builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(name_hash, key_hash, int(serial, 16), hashes.SHA1())
        builder = builder.add_extension(x509.OCSPNonce(secrets.token_bytes(16)), critical=False)
        out.append(builder.build().public_bytes(serialization.Encoding.DER))
    return out


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="scep-ca-bench-") as tmp:
        base = Path(tmp)
        ca = create_ca(base / "ca", subject="CN=Bench CA", key_size=2048, validity_days=3650, passphrase=None)
        now = dt.datetime.now(dt.UTC)
        async with bench_store(args, base, ca, now) as (store, serials):
            await measure(args, store, ca, serials, now)


async def measure(args: argparse.Namespace, store: Store, ca: CAIdentity, serials: list[str], now: dt.datetime) -> None:
    service = RevocationService(store, ca, public_url=PUBLIC_URL)
    t0 = time.perf_counter()
    result = await service.delete_integration(INTEGRATION)
    t_delete = time.perf_counter() - t0
    assert result.revoked == args.count, result

    t0 = time.perf_counter()
    crl_der = await service.current_crl()
    t_crl_service = time.perf_counter() - t0
    entries = await store.revoked_entries(ca.fingerprint_sha256)
    t0 = time.perf_counter()
    build_crl(ca, entries, 2, now, 24)
    t_crl_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    await service.current_crl()
    t_cached = time.perf_counter() - t0

    crl = x509.load_der_x509_crl(crl_der)
    assert crl.is_signature_valid(ca.public_key) and len(crl) == args.count
    assert {format(r.serial_number, "x") for r in crl} == set(serials)

    # Every shard, cold: each fetches its own entries, takes a CRL number, encodes and signs.
    shard_ders = []
    t0 = time.perf_counter()
    for shard in range(SHARDS):
        shard_ders.append(await service.shard_crl(ca_id(ca), shard))
    t_shards = time.perf_counter() - t0
    shard_sizes = [len(d) for d in shard_ders]
    largest = max(range(SHARDS), key=shard_sizes.__getitem__)
    shard_crls = [x509.load_der_x509_crl(d) for d in shard_ders]
    largest_crl = shard_crls[largest]
    assert largest_crl.is_signature_valid(ca.public_key)
    assert sum(len(c) for c in shard_crls) == args.count
    del shard_ders, shard_crls

    requests = ocsp_requests(ca, serials, args.ocsp)
    first = ocsp.load_der_ocsp_response(await service.ocsp(requests[0]))
    assert first.certificate_status is ocsp.OCSPCertStatus.REVOKED
    latencies = []
    t0 = time.perf_counter()
    for der in requests:
        t1 = time.perf_counter()
        await service.ocsp(der)
        latencies.append(time.perf_counter() - t1)
    t_ocsp = time.perf_counter() - t0
    latencies.sort()
    p50, p99 = latencies[len(latencies) // 2], latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]

    print(f"store: {args.store}")
    print(f"delete integration ({args.count} revoked): {t_delete:.3f} s   (target < 5 s at 1,000,000)")
    print(f"CRL, cold, via the service (fetch + number + build + sign): {t_crl_service:.3f} s   (target < 5 s)")
    print(f"CRL, build_crl alone: {t_crl_build:.3f} s")
    print(f"CRL, cached fetch: {t_cached * 1000:.2f} ms")
    print(f"CRL size: {len(crl_der)} bytes ({len(crl_der) / args.count:.1f} bytes per entry)")
    print(
        f"largest CRL shard: {shard_sizes[largest]} bytes ({len(largest_crl)} entries, shard {largest} "
        f"of {SHARDS})   (target < 1,000,000 bytes)"
    )
    print(f"all {SHARDS} CRL shards, cold: {t_shards:.3f} s ({t_shards / SHARDS * 1000:.1f} ms a shard)")
    print(f"OCSP: {len(requests) / t_ocsp:.0f} answers/s in-process ({len(requests)} requests)")
    print(f"OCSP latency in-process: p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms   (target p99 < 5 ms)")
    if not args.no_reference:
        t_ref = reference_cryptography(ca, entries, now)
        print(
            f"reference: cryptography CertificateRevocationListBuilder: {t_ref:.2f} s "
            f"({t_ref / t_crl_build:.0f}x build_crl)"
        )
    if args.asn1crypto:
        t_asn = reference_asn1crypto(ca, entries, now)
        print(f"reference: asn1crypto TbsCertList + sign: {t_asn:.2f} s ({t_asn / t_crl_build:.0f}x build_crl)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--pg-dsn",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="--store postgres: a server and database to create (and drop) the bench's own database from",
    )
    parser.add_argument("--ocsp", type=int, default=2000, help="OCSP requests to time")
    parser.add_argument("--no-reference", action="store_true", help="skip cryptography's CRL builder")
    parser.add_argument("--asn1crypto", action="store_true", help="also time asn1crypto's CRL encoding")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
