"""The same-transaction rule under faults: a full SQLite disk and PostgreSQL cut off in the
middle of an enrollment leave neither a certificate without its "issued" event nor an event
without its certificate, the wire answer is 503 + Retry-After, and every chain verifies."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import asyncpg
from cryptography.hazmat.primitives.asymmetric import rsa

from audit.events import Event
from audit.factory import audit_log
from challenge.issuer import issue_challenge
from config import load_config
from scep_ca.protocol.enums import PKIStatus
from store.base import AuditFilter, CertificateFilter, Store
from store.postgres import PostgresStore
from tests.integration.conftest import ServerFactory
from tests.integration.test_store_faults import (
    NO_LIMIT,
    Relayed,
    _assert_503,
    _pkcs_req,
    _small_pages,
    _status,
    pg_server,  # noqa: F401 - the fixture
)
from tests.store.test_contract import integration

ISSUED = AuditFilter(event=str(Event.CERT_ISSUED))


async def _issued_events(store: Store) -> list[str]:
    return [str(r.details["serial"]) for r in await store.list_audit(ISSUED)]


async def _serials(store: Store) -> list[str]:
    return sorted(c.serial for c in await store.list_certificates(CertificateFilter()))


async def test_a_full_sqlite_disk_at_any_point_of_an_enrollment_keeps_certificates_and_events_paired(
    tmp_path: Path, make_server: ServerFactory, device_key: rsa.RSAPrivateKey
) -> None:
    """The database is capped at its size plus 0, 1, 2 ... 24 pages of 512 bytes, one enrollment
    per cap: the certificate row and the event row (which carries the certificate too) need
    several pages each, so some caps stop the transaction between the two inserts."""
    _small_pages(tmp_path)
    server = await make_server(**{"challenge.max_unused": 100})  # refused attempts keep theirs
    conn = server.store._conn  # type: ignore[attr-defined]  # max_page_count is per connection
    outcomes = []
    for extra in range(25):
        challenge = await server.challenge()
        der, signer = _pkcs_req(server.ca, device_key, challenge, f"cap-{extra}")
        unused = await server.store.count_unused_challenges(server.integration.id, dt.datetime.now(dt.UTC))
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        conn.execute(f"PRAGMA max_page_count = {pages + extra}")
        resp = await server.client.post(f"{server.url()}?operation=PKIOperation", data=der)
        conn.execute(f"PRAGMA max_page_count = {NO_LIMIT}")
        if resp.status == 503:
            await _assert_503(resp)
            outcomes.append("503")
            # Nothing of the attempt stays: its challenge is still unused.
            assert await server.store.count_unused_challenges(server.integration.id, dt.datetime.now(dt.UTC)) == unused
        else:
            assert resp.status == 200
            assert _status(await resp.read(), signer, device_key) is PKIStatus.SUCCESS
            outcomes.append("issued")
        # After every attempt, whatever its answer: one event per certificate, no other.
        assert sorted(await _issued_events(server.store)) == await _serials(server.store)
    # Both kinds of outcome happened, so the sweep did cut transactions short.
    assert "503" in outcomes and "issued" in outcomes, outcomes
    assert sorted(await _issued_events(server.store)) == await _serials(server.store)
    report = await audit_log(server.config, server.store).verify()
    assert report.ok, report.problems


async def test_postgresql_cut_off_during_an_enrollment_keeps_certificates_and_events_paired(
    pg_server: Relayed,  # noqa: F811
    device_key: rsa.RSAPrivateKey,
) -> None:
    """The event insert is held up by a trigger (pg_sleep) and the connection is cut while it
    waits: the answer is 503, and the certificate and its event are both there or both absent.
    The client's retry (same transactionID) then gets the certificate."""
    direct = PostgresStore(pg_server.dsn, 1, 2)
    await direct.open()
    try:
        await direct.create_integration(integration("pg"))
        config = load_config(None, {}, {})
        admin = await asyncpg.connect(pg_server.dsn)
        try:
            await admin.execute(
                "CREATE FUNCTION slow_audit() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN IF NEW.event = 'scep.issued' THEN PERFORM pg_sleep(0.5); END IF; RETURN NEW; END $$; "
                "CREATE TRIGGER slow_audit BEFORE INSERT ON audit_events "
                "FOR EACH ROW EXECUTE FUNCTION slow_audit()"
            )
        finally:
            await admin.close()
        challenge = await issue_challenge(direct, config.challenge, "pg")
        assert challenge is not None
        der, signer = _pkcs_req(pg_server.ca, device_key, challenge, "pg-cut-1")
        request = asyncio.ensure_future(pg_server.client.post("/scep/pg?operation=PKIOperation", data=der))
        await asyncio.sleep(0.25)  # the statement is inside the trigger now
        await pg_server.relay.stop()
        await _assert_503(await request)
        await pg_server.relay.start()
        await asyncio.sleep(0.5)  # PostgreSQL finishes (or abandons) the statement it was running
        assert sorted(await _issued_events(direct)) == await _serials(direct)
        # The client retries: the answer is the certificate (recorded, or issued now).
        resp = await pg_server.client.post("/scep/pg?operation=PKIOperation", data=der)
        assert resp.status == 200
        assert _status(await resp.read(), signer, device_key) is PKIStatus.SUCCESS
        serials = await _serials(direct)
        assert len(serials) == 1 and await _issued_events(direct) == serials
        report = await audit_log(load_config(None, {}, {"data_dir": str(pg_server.data_dir)}), direct).verify()
        assert report.ok, report.problems
    finally:
        await direct.close()
