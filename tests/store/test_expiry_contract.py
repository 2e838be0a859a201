"""Store contract for issue 21, on SQLite and PostgreSQL: certificate counts, the expiring
filter, and leases (the RA renewal's exactly-once across processes and hosts)."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
from datetime import timedelta
from pathlib import Path

from scep_ca.pki.ca import CAIdentity, create_ca, load_ca
from scep_ca.pki.ra_renewal import renew_ra
from scep_ca.services.ra_renewal import RaRenewer
from store.base import CertificateCounts, CertificateFilter, Store
from tests.store.conftest import Harness
from tests.store.test_contract import NOW, certificate, integration, issuance

HORIZONS = (timedelta(days=7), timedelta(days=30))


async def _issue(store: Store, serial: str, integration_id: str, not_after: dt.datetime) -> None:
    cert = certificate(serial, integration_id, not_after=not_after)
    await store.record_issuance(issuance(cert, challenge=None))


async def test_certificate_counts_per_integration(store: Store) -> None:
    for id_ in ("int1", "int2", "int3"):
        await store.create_integration(integration(id_))
    await _issue(store, "a1", "int1", NOW + timedelta(days=365))
    await _issue(store, "a2", "int1", NOW + timedelta(days=5))  # expiring within 7d and 30d
    await _issue(store, "a3", "int1", NOW + timedelta(days=20))  # within 30d only
    await _issue(store, "a4", "int1", NOW + timedelta(days=30))  # on the 30d edge: counted
    await _issue(store, "a5", "int1", NOW - timedelta(seconds=1))  # expired: neither valid nor revoked
    await _issue(store, "a6", "int1", NOW + timedelta(days=3))
    assert await store.revoke_certificate("a6", "keyCompromise", NOW)  # revoked: not expiring
    await _issue(store, "b1", "int2", NOW + timedelta(days=2))
    await store.delete_integration("int2", NOW)
    counts = await store.certificate_counts(NOW, HORIZONS)
    assert list(counts) == [
        CertificateCounts("int1", valid=4, revoked=1, expiring=(1, 3)),
        CertificateCounts("int2", valid=0, revoked=1, expiring=(0, 0)),
    ]


async def test_expires_by_lists_valid_certificates_expiring_soon(store: Store) -> None:
    await store.create_integration(integration("int1"))
    await _issue(store, "a1", "int1", NOW + timedelta(days=365))
    await _issue(store, "a2", "int1", NOW + timedelta(days=5))
    await _issue(store, "a3", "int1", NOW - timedelta(days=1))
    flt = CertificateFilter(issued_only_unexpired_at=NOW, expires_by=NOW + timedelta(days=30))
    assert [c.serial for c in await store.list_certificates(flt)] == ["a2"]


async def test_lease_is_exclusive_until_released_or_expired(harness: Harness) -> None:
    first, second = harness.store, await harness.second_store()
    ttl = timedelta(minutes=10)
    token = await first.acquire_lease("job", NOW, ttl)
    assert token is not None
    assert await second.acquire_lease("job", NOW + timedelta(minutes=9), ttl) is None
    assert await second.acquire_lease("other-job", NOW, ttl) is not None
    await first.release_lease("job", token)
    again = await second.acquire_lease("job", NOW + timedelta(minutes=1), ttl)
    assert again is not None
    # A stale holder's release does not free the lease someone else holds now.
    await first.release_lease("job", token)
    assert await first.acquire_lease("job", NOW + timedelta(minutes=2), ttl) is None
    # A holder that died: its lease runs out by itself.
    assert await first.acquire_lease("job", NOW + timedelta(minutes=11, seconds=1), ttl) is not None


async def test_concurrent_renewers_renew_once(harness: Harness, tmp_path: Path) -> None:
    """Three processes (three store connections) find the RA due at once: one renewal in all."""
    data = tmp_path / "data"
    create_ca(data, subject="CN=Lease CA", key_size=2048, validity_days=3650, passphrase=None, ra_validity_days=10)
    calls: list[tuple[str, ...]] = []

    def load() -> CAIdentity:
        return load_ca(data, None)

    def renew_files(identity: CAIdentity, usages: tuple[str, ...]) -> None:
        calls.append(usages)
        renew_ra(data, identity, usages, passphrase=None, token=None, validity_days=730, now=dt.datetime.now(dt.UTC))

    stores = [harness.store, await harness.second_store(), await harness.second_store()]
    results = await asyncio.gather(
        *(RaRenewer(s, load, renew_files, 30, poll_seconds=0.01).renew_due() for s in stores)
    )
    assert calls == [("signing", "encryption")]
    assert sorted(len(r) for r in results) == [0, 0, 2]
    assert len(list((data / "ra-previous").iterdir())) == 1


async def test_a_host_with_a_copied_data_directory_does_not_renew_twice(harness: Harness, tmp_path: Path) -> None:
    """Host B holds a copy of host A's files from before A's renewal: the claim stops a second RA."""
    host_a, host_b = tmp_path / "a", tmp_path / "b"
    create_ca(host_a, subject="CN=Copy CA", key_size=2048, validity_days=3650, passphrase=None, ra_validity_days=10)
    shutil.copytree(host_a, host_b)

    def renewer(data: Path, store: Store) -> RaRenewer:
        def renew_files(identity: CAIdentity, usages: tuple[str, ...]) -> None:
            renew_ra(
                data, identity, usages, passphrase=None, token=None, validity_days=730, now=dt.datetime.now(dt.UTC)
            )

        return RaRenewer(store, lambda: load_ca(data, None), renew_files, 30)

    assert len(await renewer(host_a, harness.store).renew_due()) == 2
    assert await renewer(host_b, await harness.second_store()).renew_due() == ()
    assert not (host_b / "ra-previous").exists()
