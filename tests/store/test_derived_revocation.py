"""Revocation by deletion is derived (store/revocation_rule.py): every read path, on both backends.

Deleting an integration writes nothing per certificate; its issued certificates and its holds
read as revoked (revocationDate = deleted_at, cessationOfOperation) everywhere: get (OCSP, the
status API, ``cert show``), the full CRL, the shard CRLs, listings and their status filters, the
console's search and counts, the metrics' counts and a backup's manifest. Certificates revoked on
their own keep their own date and reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta

from scep_ca.pki.records import CertificateRecord, CertStatus, RevokedEntry
from store.base import (
    HOLD,
    CertificateCounts,
    CertificateFilter,
    CertificateSearch,
    CertSearchStatus,
    IntegrationCounts,
    Store,
)
from tests.store.conftest import Harness
from tests.store.test_contract import ISSUER, NOW, certificate, integration, issuance

DELETED_AT = NOW + timedelta(hours=1)
EARLIER = NOW - timedelta(days=1)
CESSATION = "cessationOfOperation"


async def _seed(store: Store) -> None:
    """int1 (to be deleted): two issued certificates in shards 1 and 2, one expired, one revoked
    on its own before the deletion, one on hold. int2 (live): one issued, one on hold."""
    await store.create_integration(integration("int1"))
    await store.create_integration(integration("int2"))
    for cert in (
        certificate("01", crl_shard=1),
        certificate("02", crl_shard=2),
        certificate("03", crl_shard=1, not_after=NOW - timedelta(hours=2)),  # expired
        certificate("04", crl_shard=1),
        certificate("05", crl_shard=1, status=CertStatus.REVOKED, revoked_at=NOW, revocation_reason=HOLD),
        certificate("f1", "int2", crl_shard=1),
        certificate("f2", "int2", crl_shard=1, status=CertStatus.REVOKED, revoked_at=NOW, revocation_reason=HOLD),
    ):
        await store.record_issuance(issuance(cert, None))
    assert await store.revoke_certificate("04", "keyCompromise", EARLIER)


def _entries(entries: Sequence[RevokedEntry]) -> dict[str, tuple[object, str | None]]:
    return {e.serial: (e.revoked_at, e.reason) for e in entries}


def _serials(records: Sequence[CertificateRecord]) -> list[str]:
    return sorted(r.serial for r in records)


async def test_deleting_an_integration_revokes_its_certificates_in_every_read(store: Store) -> None:
    await _seed(store)
    epoch = await store.revocation_epoch()

    result = await store.delete_integration("int1", DELETED_AT)

    # The issued ones (expired too) and the hold; not the one revoked on its own.
    assert result.revoked == 4
    assert await store.revocation_epoch() != epoch
    by_deletion = (CertStatus.REVOKED, DELETED_AT, CESSATION)
    for serial in ("01", "02", "03", "05"):
        record = await store.get_certificate(serial)
        assert record is not None and (record.status, record.revoked_at, record.revocation_reason) == by_deletion
    own = await store.get_certificate("04")
    assert own is not None and (own.status, own.revoked_at, own.revocation_reason) == (
        CertStatus.REVOKED,
        EARLIER,
        "keyCompromise",
    )
    live = await store.get_certificate("f1")
    assert live is not None and (live.status, live.revoked_at, live.revocation_reason) == (
        CertStatus.ISSUED,
        None,
        None,
    )

    # The full CRL, oldest first; the live integration's hold stays a hold.
    full = await store.revoked_entries(ISSUER)
    assert [e.serial for e in full] == ["04", "f2", "01", "02", "03", "05"]
    assert _entries(full) == {
        "01": (DELETED_AT, CESSATION),
        "02": (DELETED_AT, CESSATION),
        "03": (DELETED_AT, CESSATION),
        "04": (EARLIER, "keyCompromise"),
        "05": (DELETED_AT, CESSATION),
        "f2": (NOW, HOLD),
    }
    # Each shard: its own certificates, unexpired ones only after the cut-off.
    assert _entries(await store.revoked_shard_entries(ISSUER, 1, NOW)) == {
        "01": (DELETED_AT, CESSATION),
        "04": (EARLIER, "keyCompromise"),
        "05": (DELETED_AT, CESSATION),
        "f2": (NOW, HOLD),
    }
    assert _entries(await store.revoked_shard_entries(ISSUER, 1, NOW - timedelta(days=1)))["03"] == (
        DELETED_AT,
        CESSATION,
    )
    assert _entries(await store.revoked_shard_entries(ISSUER, 2, NOW)) == {"02": (DELETED_AT, CESSATION)}
    assert await store.revoked_shard_entries("b" * 64, 1, NOW) == []

    # Listings (cert list --status ...): revoked lists them, issued and valid do not.
    revoked = await store.list_certificates(CertificateFilter(status=CertStatus.REVOKED))
    assert _serials(revoked) == ["01", "02", "03", "04", "05", "f2"]
    assert {r.serial: r.revocation_reason for r in revoked}["02"] == CESSATION
    assert _serials(await store.list_certificates(CertificateFilter(status=CertStatus.ISSUED))) == ["f1"]
    assert (
        _serials(await store.list_certificates(CertificateFilter(integration_id="int1", status=CertStatus.ISSUED)))
        == []
    )
    assert _serials(await store.list_certificates(CertificateFilter(issued_only_unexpired_at=NOW))) == ["f1"]
    expired = CertificateFilter(status=CertStatus.ISSUED, expired_before=NOW)
    assert await store.list_certificates(expired) == []
    assert _serials(await store.list_certificates(CertificateFilter(on_hold=True))) == ["f2"]
    listed = await store.list_certificates(CertificateFilter(integration_id="int1"))
    assert {r.serial: r.status for r in listed} == dict.fromkeys(["01", "02", "03", "04", "05"], CertStatus.REVOKED)
    assert await store.count_certificates("int1") == 5

    # The console's search and counts.
    def search(status: CertSearchStatus | None = None, **kw: object) -> CertificateSearch:
        return replace(CertificateSearch(now=NOW, status=status), **kw)  # type: ignore[arg-type]

    assert _serials(await store.search_certificates(search(CertSearchStatus.VALID))) == ["f1"]
    assert _serials(await store.search_certificates(search(CertSearchStatus.REVOKED))) == [
        "01",
        "02",
        "03",
        "04",
        "05",
        "f2",
    ]
    assert await store.search_certificates(search(CertSearchStatus.EXPIRED)) == []
    assert _serials(await store.search_certificates(search(expiring_before=NOW + timedelta(days=400)))) == ["f1"]
    (found,) = await store.search_certificates(search(text="device-02"))
    assert (found.status, found.revoked_at, found.revocation_reason) == by_deletion
    assert await store.integration_counts(NOW, NOW + timedelta(days=400)) == [
        IntegrationCounts("int1", valid=0, revoked=5, expiring=0, pending=0),
        IntegrationCounts("int2", valid=1, revoked=1, expiring=1, pending=0),
    ]
    # /metrics and `scep-ca status`: a deleted integration's certificates are revoked, none valid.
    assert await store.certificate_counts(NOW, (timedelta(days=400), timedelta(days=1))) == [
        CertificateCounts("int1", valid=0, revoked=5, expiring=(0, 0)),
        CertificateCounts("int2", valid=1, revoked=1, expiring=(1, 0)),
    ]


async def test_a_deleted_integrations_certificate_cannot_be_revoked_again_or_released(store: Store) -> None:
    await _seed(store)
    await store.delete_integration("int1", DELETED_AT)
    epoch = await store.revocation_epoch()

    # Already revoked (by the deletion): False, nothing changed, the epoch stays.
    assert await store.revoke_certificate("01", "keyCompromise", DELETED_AT + timedelta(hours=1)) is False
    # The hold ended with the deletion: neither released nor revoked with another reason.
    assert await store.end_hold("05", None, DELETED_AT) is False
    assert await store.end_hold("05", "keyCompromise", DELETED_AT) is False
    assert await store.revocation_epoch() == epoch
    for serial in ("01", "05"):
        record = await store.get_certificate(serial)
        assert record is not None
        assert (record.status, record.revoked_at, record.revocation_reason) == (
            CertStatus.REVOKED,
            DELETED_AT,
            CESSATION,
        )
    # The live integration's are unaffected.
    assert await store.end_hold("f2", None, DELETED_AT) is True
    assert await store.revoke_certificate("f1", "keyCompromise", DELETED_AT) is True


async def test_a_row_revoked_by_an_older_delete_keeps_its_date(harness: Harness) -> None:
    """Stores whose deletes revoked per row (before migration 10) read the same afterwards: those
    rows are revoked on their own, with the date and reason written then."""
    store = harness.store
    await store.create_integration(integration("int1"))
    await harness.bulk_insert_certificates(
        [certificate("01", crl_shard=1, status=CertStatus.REVOKED, revoked_at=EARLIER, revocation_reason=CESSATION)]
    )
    await store.delete_integration("int1", DELETED_AT)
    record = await store.get_certificate("01")
    assert record is not None and (record.revoked_at, record.revocation_reason) == (EARLIER, CESSATION)
    assert _entries(await store.revoked_entries(ISSUER)) == {"01": (EARLIER, CESSATION)}
    assert _entries(await store.revoked_shard_entries(ISSUER, 1, NOW)) == {"01": (EARLIER, CESSATION)}
