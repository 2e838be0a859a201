"""Bytes an issuance's audit event takes in each store (README "Audit log", retention and size).

    .venv/bin/python bench/audit_size.py --n 5000

Seals N ``scep.issued`` events shaped as the server writes them (a real scep-ca certificate
with CDP and AIA, its details) into a fresh SQLite file and a fresh PostgreSQL database at
127.0.0.1:5432, then reports the bytes of ``audit_events`` per event: SQLite's dbstat (table
and index pages) and PostgreSQL's ``pg_total_relation_size`` (table, TOAST, primary key).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from audit.events import Event  # noqa: E402
from audit.keys import FileMacKey  # noqa: E402
from audit.service import AuditLog, Draft, der_text  # noqa: E402
from scep_ca.pki.ca import create_ca  # noqa: E402
from scep_ca.pki.certificate_factory import CertificateFactory  # noqa: E402
from scep_ca.protocol.client import build_csr  # noqa: E402
from scep_ca.protocol.csr import CsrPolicy, check_csr  # noqa: E402
from scep_ca.protocol.dn import parse_dn  # noqa: E402
from store.base import Store  # noqa: E402
from store.postgres import PostgresStore  # noqa: E402
from store.sqlite import SQLiteStore  # noqa: E402
from tests.store.conftest import temporary_database  # noqa: E402
from tests.store.test_contract import integration  # noqa: E402

SUBJECT = "CN=$USERID$,OU=MDM,O=scep-client,C=US"


def certificate_der(tmp: Path) -> bytes:
    ca = create_ca(tmp / "ca", subject="CN=scep-ca,O=scep-ca", key_size=2048, validity_days=3650, passphrase=None)
    factory = CertificateFactory(ca, "https://scep.example.com", lambda: datetime.now(UTC))
    integ = integration("k3v9x2aq7d", subject_template=SUBJECT)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = build_csr(key, parse_dn("CN=alice@example.com,OU=MDM,O=scep-client,C=US"), "0123456789ABCDEF")
    checked = check_csr(csr, CsrPolicy((2048,), factory.subject_template(integ)))
    return factory.sign(integ, checked, "6F2D0C5D7B2E4A1F", 19, "192.0.2.17", "Dalvik/2.1.0").der


def draft(i: int, der: bytes) -> Draft:
    serial = f"{0x1234567890ABCDEF1234 + i:x}"
    details = {
        "integration": "k3v9x2aq7d",
        "transaction_id": "6F2D0C5D7B2E4A1F9C8B7A6D5E4F3A2B1C0D9E8F",
        "message_type": 19,
        "address": "192.0.2.17",
        "user_agent": "Dalvik/2.1.0 (Linux; U; Android 13)",
        "serial": serial,
        "subject": "CN=alice@example.com,OU=MDM,O=scep-client,C=US",
        "not_after": "2027-12-06T22:00:00+00:00",
        "certificate": der_text(der),
        "validator": "ndes",
        "verdict": "allowed",
        "old_serial": None,
        "supersedes": None,
    }
    return Draft(Event.CERT_ISSUED, f"certificate/{serial}", details, actor="scep:192.0.2.17")


async def fill(store: Store, n: int, der: bytes) -> None:
    log = AuditLog(store, FileMacKey(bytes(32)), lambda: datetime.now(UTC))
    for i in range(n):
        await log.append(draft(i, der))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000)
    n = parser.parse_args().n
    with tempfile.TemporaryDirectory() as tmp:
        der = certificate_der(Path(tmp))
        path = Path(tmp) / "audit.sqlite3"
        sqlite_store = SQLiteStore(path)
        await sqlite_store.open()
        await fill(sqlite_store, n, der)
        await sqlite_store.close()
        db = sqlite3.connect(path)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (size,) = db.execute(
            "SELECT sum(pgsize) FROM dbstat WHERE name IN ('audit_events', 'sqlite_autoindex_audit_events_1')"
        ).fetchone()
        db.close()
    print(f"certificate: {len(der)} bytes DER")
    print(f"SQLite:     {size / n:6.0f} bytes an event, {size / n / 1000:.1f} GB per million")
    async with temporary_database() as dsn:
        pg_store = PostgresStore(dsn, 1, 2)
        await pg_store.open()
        await fill(pg_store, n, der)
        await pg_store.close()
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("VACUUM ANALYZE audit_events")
            size = await conn.fetchval("SELECT pg_total_relation_size('audit_events')")
        finally:
            await conn.close()
    print(f"PostgreSQL: {size / n:6.0f} bytes an event, {size / n / 1000:.1f} GB per million")


if __name__ == "__main__":
    asyncio.run(main())
