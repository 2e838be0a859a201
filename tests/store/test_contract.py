"""The Store contract: every backend must pass these tests unchanged."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from scep_ca.pki.records import (
    CertificateRecord,
    CertStatus,
    Integration,
    RevokedEntry,
    Transaction,
    TransactionStatus,
)
from store.base import (
    HOLD,
    AuthReservation,
    AuthVerdict,
    CertificateFilter,
    ChallengeAdd,
    ChallengeRejected,
    DuplicateIntegration,
    DuplicateSerial,
    DuplicateTransaction,
    EnrollmentState,
    IntegrationNotFound,
    IssuanceRequest,
    RenewalPending,
    RenewalRefused,
    Store,
)
from tests.store.conftest import Harness

# Microseconds on purpose: times must round-trip exactly.
NOW = datetime(2026, 11, 28, 12, 0, 0, 123456, tzinfo=UTC)
VALIDITY = timedelta(minutes=60)
ISSUER = "a" * 64
OTHER_ISSUER = "b" * 64


def integration(id_: str = "int1", username: str | None = None, **changes: object) -> Integration:
    base = Integration(
        id=id_,
        name=f"Integration {id_}",
        subject_template="CN=$USERID$,O=Example",
        created_at=NOW,
        validity_days=365,
        username=username or f"user-{id_}",
        password_scrypt="scrypt$16384$8$1$c2FsdA==$aGFzaA==",
        nt_hash_encrypted=b"\x00\x01nonce-and-ciphertext\xff",
        allow_basic=None,
        allowed_san_types=("rfc822Name", "uri"),
        include_ca_in_reply=False,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def certificate(serial: str, integration_id: str = "int1", **changes: object) -> CertificateRecord:
    base = CertificateRecord(
        serial=serial,
        integration_id=integration_id,
        issuer_fingerprint=ISSUER,
        subject=f"CN=device-{serial},O=Example",
        not_before=NOW - timedelta(minutes=5),
        not_after=NOW + timedelta(days=365),
        der=b"\x30\x82" + serial.encode(),
        transaction_id=f"TXN-{serial}",
        pubkey_sha256=f"{int(serial, 16):064x}",
        message_type=19,
        requester_address="192.0.2.7",
        user_agent="scepclient/2.1.0",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def issuance(cert: CertificateRecord, challenge: str | None = "c1", now: datetime = NOW) -> IssuanceRequest:
    return IssuanceRequest(certificate=cert, challenge_hash=challenge, now=now)


async def add(store: Store, challenge: str, integration_id: str = "int1", now: datetime = NOW) -> bool:
    return await store.add_challenge(
        ChallengeAdd(
            integration_id=integration_id,
            challenge_hash=challenge,
            now=now,
            expires_at=now + VALIDITY,
            max_unused=5,
        )
    )


async def snapshot(store: Store) -> tuple[int, int, int, list[CertificateRecord]]:
    """What a rejected request must leave unchanged."""
    return (
        await store.count_certificates(),
        await store.count_unused_challenges("int1", NOW),
        await store.revocation_epoch(),
        list(await store.list_certificates(CertificateFilter())),
    )


# -- schema ----------------------------------------------------------------------------


async def test_migrations_are_idempotent(harness: Harness) -> None:
    store = harness.store
    await store.create_integration(integration())
    await store.open()  # already open: no-op
    other = await harness.second_store()  # opens the same database and finds it migrated
    info = await other.info()
    # Both see the same, fully migrated schema (each backend numbers its own migrations).
    assert info.schema_version == (await store.info()).schema_version >= 2
    assert await other.get_integration("int1") == integration()


# -- integrations ----------------------------------------------------------------------


async def test_integration_round_trip(store: Store) -> None:
    first = integration("int1", allow_basic=None)
    second = integration("int2", allow_basic=True, allowed_san_types=(), include_ca_in_reply=None)
    third = integration("int3", allow_basic=False, password_scrypt=None, nt_hash_encrypted=None)
    for item in (first, second, third):
        await store.create_integration(item)
    assert await store.get_integration("int1") == first
    assert await store.get_integration("int2") == second
    assert await store.get_integration("int3") == third
    assert await store.get_integration("nope") is None
    assert [i.id for i in await store.list_integrations()] == ["int1", "int2", "int3"]


async def test_integration_validator_round_trip(store: Store) -> None:
    default = integration("int1")
    intune = integration(
        "int2",
        validator="intune",
        validator_settings='{"tenant": "contoso.onmicrosoft.com", "client_id": "c1"}',
        validator_secret_encrypted=b"\x00nonce-and-ciphertext\xff",
        allowed_san_types=("uri:tag:microsoft.com,2022-09-14:sid:",),
    )
    await store.create_integration(default)
    await store.create_integration(intune)
    read_default = await store.get_integration("int1")
    assert read_default == default
    assert read_default is not None
    assert (read_default.validator, read_default.validator_settings) == ("ndes", "{}")
    assert read_default.validator_secret_encrypted is None
    assert await store.get_integration("int2") == intune
    assert [i.validator for i in await store.list_integrations()] == ["ndes", "intune"]


async def test_duplicate_integration_id(store: Store) -> None:
    await store.create_integration(integration("int1"))
    with pytest.raises(DuplicateIntegration):
        await store.create_integration(integration("int1", username="someone-else"))


async def test_duplicate_live_username_case_insensitive(store: Store) -> None:
    await store.create_integration(integration("int1", username="MDM-Admin"))
    with pytest.raises(DuplicateIntegration):
        await store.create_integration(integration("int2", username="mdm-admin"))
    assert [i.id for i in await store.list_integrations()] == ["int1"]


async def test_username_lookup(store: Store) -> None:
    await store.create_integration(integration("int1", username="MobileIron"))
    await store.create_integration(integration("int2", username="intune"))
    found = await store.find_integration_by_username("mobileiron")
    assert found is not None and found.id == "int1"
    assert (await store.find_integration_by_username("MOBILEIRON")) == found
    assert await store.find_integration_by_username("mobileiro") is None
    assert await store.find_integration_by_username("") is None


async def test_username_reusable_after_delete(store: Store) -> None:
    await store.create_integration(integration("int1", username="mdm"))
    await store.delete_integration("int1", NOW)
    assert await store.find_integration_by_username("mdm") is None
    await store.create_integration(integration("int2", username="mdm"))
    found = await store.find_integration_by_username("mdm")
    assert found is not None and found.id == "int2"
    assert [i.id for i in await store.list_integrations()] == ["int2"]
    assert [i.id for i in await store.list_integrations(include_deleted=True)] == ["int1", "int2"]


async def test_update_credentials(store: Store) -> None:
    await store.create_integration(integration("int1", username="old"))
    await store.create_integration(integration("int2", username="taken"))
    await store.update_credentials("int1", username="New", password_scrypt="scrypt$new", nt_hash_encrypted=b"nt2")
    assert await store.find_integration_by_username("old") is None
    updated = await store.find_integration_by_username("new")
    assert updated is not None and updated.id == "int1"
    assert updated.username == "New"
    assert updated.password_scrypt == "scrypt$new"
    assert updated.nt_hash_encrypted == b"nt2"
    assert updated.subject_template == integration().subject_template  # the rest is untouched
    with pytest.raises(DuplicateIntegration):
        await store.update_credentials("int1", username="TAKEN", password_scrypt="x", nt_hash_encrypted=b"x")
    with pytest.raises(IntegrationNotFound):
        await store.update_credentials("nope", username="x", password_scrypt="x", nt_hash_encrypted=b"x")
    await store.delete_integration("int2", NOW)
    with pytest.raises(IntegrationNotFound):
        await store.update_credentials("int2", username="y", password_scrypt="y", nt_hash_encrypted=b"y")


# -- challenges ------------------------------------------------------------------------


async def test_challenge_cache_full_and_counts(store: Store) -> None:
    await store.create_integration(integration("int1"))
    for n in range(5):
        assert await add(store, f"c{n}") is True
    assert await store.count_unused_challenges("int1", NOW) == 5
    assert await add(store, "c5") is False  # NDES "The password cache is full."
    assert await store.count_unused_challenges("int1", NOW) == 5
    assert await store.challenge_usable("int1", "c5", NOW) is False
    # Consuming one frees a slot.
    await store.record_issuance(issuance(certificate("01"), "c0"))
    assert await store.count_unused_challenges("int1", NOW) == 4
    assert await add(store, "c5") is True


async def test_expired_challenges_are_purged_and_free_the_cache(store: Store) -> None:
    await store.create_integration(integration("int1"))
    for n in range(5):
        assert await add(store, f"c{n}")
    later = NOW + VALIDITY  # expiry instant: no longer usable
    assert await store.count_unused_challenges("int1", later) == 0
    assert await store.challenge_usable("int1", "c0", later) is False
    assert await store.challenge_usable("int1", "c0", later - timedelta(microseconds=1)) is True
    assert await add(store, "fresh", now=later) is True
    assert await store.count_unused_challenges("int1", later) == 1


async def test_challenge_usable(store: Store) -> None:
    await store.create_integration(integration("int1"))
    await store.create_integration(integration("int2"))
    await add(store, "c1")
    assert await store.challenge_usable("int1", "c1", NOW) is True
    assert await store.challenge_usable("int2", "c1", NOW) is False  # another integration's
    assert await store.challenge_usable("int1", "unknown", NOW) is False
    await store.record_issuance(issuance(certificate("01"), "c1"))
    assert await store.challenge_usable("int1", "c1", NOW) is False  # used


async def test_enrollment_state_agrees_with_the_two_lookups(store: Store) -> None:
    await store.create_integration(integration("int1"))
    await store.create_integration(integration("int2"))
    await add(store, "c1")
    await add(store, "c2")
    fresh = await store.enrollment_state("int1", "TXN-01", "c1", NOW)
    assert fresh == EnrollmentState(transaction=None, challenge_usable=True)
    assert (await store.enrollment_state("int1", "TXN-01", None, NOW)).challenge_usable is False
    assert (await store.enrollment_state("int2", "TXN-01", "c1", NOW)).challenge_usable is False  # foreign
    assert (await store.enrollment_state("int1", "TXN-01", "c1", NOW + VALIDITY)).challenge_usable is False
    await store.record_issuance(issuance(certificate("01"), "c1"))
    known = await store.enrollment_state("int1", "TXN-01", "c1", NOW)
    assert known.transaction == await store.get_transaction("int1", "TXN-01")
    assert known.transaction is not None and known.transaction.serial == "01"
    assert known.challenge_usable is False  # used
    other = await store.enrollment_state("int1", "TXN-02", "c2", NOW)
    assert other == EnrollmentState(transaction=None, challenge_usable=True)
    assert (await store.enrollment_state("int2", "TXN-01", "c2", NOW)).transaction is None


async def test_add_challenge_needs_live_integration(store: Store) -> None:
    with pytest.raises(IntegrationNotFound):
        await add(store, "c1", integration_id="nope")
    await store.create_integration(integration("int1"))
    await store.delete_integration("int1", NOW)
    with pytest.raises(IntegrationNotFound):
        await add(store, "c1")


# -- issuance --------------------------------------------------------------------------


async def test_record_issuance(store: Store) -> None:
    await store.create_integration(integration("int1"))
    await add(store, "c1")
    cert = certificate("1f")
    await store.record_issuance(issuance(cert, "c1"))
    stored = await store.get_certificate("1f")
    assert stored == replace(cert, created_at=NOW)  # created_at defaults to the request time
    assert stored.status is CertStatus.ISSUED
    txn = await store.get_transaction("int1", cert.transaction_id)
    assert txn is not None
    assert txn.status is TransactionStatus.ISSUED
    assert txn.serial == "1f"
    assert txn.pubkey_sha256 == cert.pubkey_sha256
    assert txn.message_type == 19
    assert txn.created_at == NOW
    assert await store.get_transaction("int2", cert.transaction_id) is None
    assert await store.challenge_usable("int1", "c1", NOW) is False
    assert await store.count_certificates() == 1
    assert await store.count_certificates("int1") == 1
    assert await store.count_certificates("int2") == 0


async def test_record_issuance_keeps_given_created_at(store: Store) -> None:
    await store.create_integration(integration("int1"))
    created = NOW - timedelta(seconds=3)
    await store.record_issuance(issuance(certificate("02", created_at=created), None))
    stored = await store.get_certificate("02")
    assert stored is not None and stored.created_at == created


async def test_renewal_without_challenge(store: Store) -> None:
    await store.create_integration(integration("int1"))
    await add(store, "c1")
    await store.record_issuance(issuance(certificate("02", message_type=17), None))
    stored = await store.get_certificate("02")
    assert stored is not None and stored.message_type == 17
    assert await store.challenge_usable("int1", "c1", NOW) is True  # untouched


@pytest.mark.parametrize("case", ["used", "expired", "foreign", "unknown"])
async def test_rejected_challenge_changes_nothing(store: Store, case: str) -> None:
    await store.create_integration(integration("int1"))
    await store.create_integration(integration("int2"))
    await add(store, "c1")
    await add(store, "spare")
    await add(store, "theirs", integration_id="int2")
    await store.record_issuance(issuance(certificate("01"), "c1"))
    challenge, now = {
        "used": ("c1", NOW),
        "expired": ("spare", NOW + VALIDITY),
        "foreign": ("theirs", NOW),
        "unknown": ("never-issued", NOW),
    }[case]
    before = await snapshot(store)
    with pytest.raises(ChallengeRejected):
        await store.record_issuance(issuance(certificate("02"), challenge, now))
    assert await snapshot(store) == before
    assert await store.get_certificate("02") is None
    assert await store.get_transaction("int1", "TXN-02") is None
    assert await store.challenge_usable("int1", "spare", NOW) is True
    assert await store.challenge_usable("int2", "theirs", NOW) is True


async def test_duplicate_transaction(store: Store) -> None:
    await store.create_integration(integration("int1"))
    await add(store, "c1")
    await add(store, "c2")
    await store.record_issuance(issuance(certificate("01", transaction_id="T"), "c1"))
    before = await snapshot(store)
    with pytest.raises(DuplicateTransaction):
        await store.record_issuance(issuance(certificate("02", transaction_id="T"), "c2"))
    assert await snapshot(store) == before
    assert await store.challenge_usable("int1", "c2", NOW) is True  # not consumed
    assert await store.get_certificate("02") is None
    txn = await store.get_transaction("int1", "T")
    assert txn is not None and txn.serial == "01"


async def test_same_transaction_id_in_another_integration_is_fine(store: Store) -> None:
    await store.create_integration(integration("int1"))
    await store.create_integration(integration("int2"))
    await store.record_issuance(issuance(certificate("01", transaction_id="T"), None))
    await store.record_issuance(issuance(certificate("02", "int2", transaction_id="T"), None))
    assert await store.count_certificates() == 2


async def test_duplicate_serial(store: Store) -> None:
    await store.create_integration(integration("int1"))
    await add(store, "c1")
    await add(store, "c2")
    await store.record_issuance(issuance(certificate("01"), "c1"))
    before = await snapshot(store)
    with pytest.raises(DuplicateSerial):
        await store.record_issuance(issuance(certificate("01", transaction_id="OTHER"), "c2"))
    assert await snapshot(store) == before
    assert await store.challenge_usable("int1", "c2", NOW) is True
    assert await store.get_transaction("int1", "OTHER") is None


@pytest.mark.parametrize("challenge", ["c1", None])
async def test_issuance_for_deleted_integration(store: Store, challenge: str | None) -> None:
    await store.create_integration(integration("int1"))
    await add(store, "c1")
    await store.delete_integration("int1", NOW)
    with pytest.raises(IntegrationNotFound):
        await store.record_issuance(issuance(certificate("01"), challenge))
    assert await store.count_certificates() == 0
    with pytest.raises(IntegrationNotFound):
        await store.record_issuance(issuance(certificate("02", "never-existed"), None))


async def test_shared_hash_consumes_one_row(store: Store) -> None:
    await store.create_integration(integration("int1"))
    await add(store, "same")
    await add(store, "same")
    await store.record_issuance(issuance(certificate("01"), "same"))
    assert await store.count_unused_challenges("int1", NOW) == 1
    await store.record_issuance(issuance(certificate("02"), "same"))
    assert await store.count_unused_challenges("int1", NOW) == 0
    with pytest.raises(ChallengeRejected):
        await store.record_issuance(issuance(certificate("03"), "same"))


async def test_naive_time_is_refused(store: Store) -> None:
    await store.create_integration(integration("int1"))
    with pytest.raises((ValueError, TypeError)):
        await store.record_issuance(issuance(certificate("01"), None, now=NOW.replace(tzinfo=None)))
    assert await store.count_certificates() == 0


# -- deletion and revocation -----------------------------------------------------------


async def test_delete_integration_revokes_everything(store: Store) -> None:
    await store.create_integration(integration("int1", username="mdm"))
    await store.create_integration(integration("int2"))
    for n in range(1, 6):
        await store.record_issuance(issuance(certificate(f"{n:02x}"), None))
    await store.record_issuance(issuance(certificate("ff", "int2"), None))
    earlier = NOW - timedelta(days=1)
    assert await store.revoke_certificate("05", "keyCompromise", earlier)
    await add(store, "c1")
    epoch = await store.revocation_epoch()

    when = NOW + timedelta(hours=1)
    result = await store.delete_integration("int1", when)

    assert result.revoked == 4
    assert result.deleted_at == when
    for n in range(1, 5):
        cert = await store.get_certificate(f"{n:02x}")
        assert cert is not None
        assert cert.status is CertStatus.REVOKED
        assert cert.revoked_at == when
        assert cert.revocation_reason == "cessationOfOperation"
    already = await store.get_certificate("05")
    assert already is not None and already.revoked_at == earlier and already.revocation_reason == "keyCompromise"
    untouched = await store.get_certificate("ff")
    assert untouched is not None and untouched.status is CertStatus.ISSUED
    assert await store.challenge_usable("int1", "c1", NOW) is False
    assert await store.count_unused_challenges("int1", NOW) == 0
    assert await store.find_integration_by_username("mdm") is None
    assert await store.get_integration("int1") is None
    deleted = await store.get_integration("int1", include_deleted=True)
    assert deleted is not None and deleted.deleted_at == when and deleted.deleted
    assert await store.revocation_epoch() != epoch
    assert {e.serial for e in await store.revoked_entries(ISSUER)} == {"01", "02", "03", "04", "05"}
    with pytest.raises(IntegrationNotFound):
        await store.delete_integration("int1", when)
    with pytest.raises(IntegrationNotFound):
        await store.delete_integration("never-existed", when)


async def test_delete_integration_is_all_or_nothing(harness: Harness) -> None:
    store = harness.store
    await store.create_integration(integration("int1", username="mdm"))
    for n in range(1, 21):
        await store.record_issuance(issuance(certificate(f"{n:02x}"), None))
    await add(store, "c1")
    epoch = await store.revocation_epoch()
    # Fails after the integration is marked deleted (and so its certificates revoked), before commit.
    await harness.fail_deleting_challenges("int1")

    with pytest.raises(Exception, match="injected failure"):
        await store.delete_integration("int1", NOW)

    issued = await store.list_certificates(CertificateFilter(status=CertStatus.ISSUED))
    assert len(issued) == 20
    assert await store.revoked_entries(ISSUER) == []
    live = await store.get_integration("int1")
    assert live is not None and live.deleted_at is None
    assert await store.find_integration_by_username("mdm") == live
    assert await store.challenge_usable("int1", "c1", NOW) is True
    assert await store.revocation_epoch() == epoch


async def test_delete_100k_certificates(harness: Harness) -> None:
    store = harness.store
    await store.create_integration(integration("big"))
    await store.create_integration(integration("small"))
    count = 100_000
    await harness.bulk_insert_certificates(
        [certificate(f"{n + 0x100000:x}", "big", transaction_id=f"T{n}") for n in range(count)]
    )
    await store.record_issuance(issuance(certificate("01", "small"), None))
    assert await store.count_certificates("big") == count

    started = time.perf_counter()
    result = await store.delete_integration("big", NOW)
    elapsed = time.perf_counter() - started
    print(f"\ndelete_integration revoked {result.revoked} certificates in {elapsed:.3f} s")

    assert result.revoked == count
    assert elapsed < 10
    assert await store.list_certificates(CertificateFilter(integration_id="big", status=CertStatus.ISSUED)) == []
    assert len(await store.revoked_entries(ISSUER)) == count
    small = await store.get_certificate("01")
    assert small is not None and small.status is CertStatus.ISSUED


async def test_revoke_certificate(store: Store) -> None:
    await store.create_integration(integration("int1"))
    await store.record_issuance(issuance(certificate("01"), None))
    await store.record_issuance(issuance(certificate("02", issuer_fingerprint=OTHER_ISSUER), None))
    epoch = await store.revocation_epoch()
    when = NOW + timedelta(minutes=1)

    assert await store.revoke_certificate("01", "keyCompromise", when) is True
    epoch_after = await store.revocation_epoch()
    assert epoch_after != epoch
    cert = await store.get_certificate("01")
    assert cert is not None
    assert (cert.status, cert.revoked_at, cert.revocation_reason) == (CertStatus.REVOKED, when, "keyCompromise")

    # A second revocation changes nothing: not the time, not the reason, not the epoch.
    assert await store.revoke_certificate("01", "superseded", when + timedelta(days=1)) is False
    assert await store.get_certificate("01") == cert
    assert await store.revoke_certificate("ffff", "keyCompromise", when) is False
    assert await store.revocation_epoch() == epoch_after


async def test_revoked_entries_per_issuer(store: Store) -> None:
    await store.create_integration(integration("int1"))
    await store.record_issuance(issuance(certificate("01"), None))
    await store.record_issuance(issuance(certificate("02"), None))
    await store.record_issuance(issuance(certificate("03", issuer_fingerprint=OTHER_ISSUER), None))
    assert await store.revoked_entries(ISSUER) == []
    await store.revoke_certificate("02", "affiliationChanged", NOW)
    await store.revoke_certificate("03", "keyCompromise", NOW)
    entries = await store.revoked_entries(ISSUER)
    assert [(e.serial, e.revoked_at, e.reason) for e in entries] == [("02", NOW, "affiliationChanged")]
    other = await store.revoked_entries(OTHER_ISSUER)
    assert [e.serial for e in other] == ["03"]
    assert await store.revoked_entries("c" * 64) == []


async def test_crl_numbers_increase_per_issuer(store: Store) -> None:
    assert [await store.next_crl_number(ISSUER) for _ in range(3)] == [1, 2, 3]
    assert await store.next_crl_number(OTHER_ISSUER) == 1
    assert await store.next_crl_number(ISSUER) == 4


async def test_crl_numbers_are_shared_between_store_objects(harness: Harness) -> None:
    other = await harness.second_store()
    numbers = [await harness.store.next_crl_number(ISSUER), await other.next_crl_number(ISSUER)]
    numbers.append(await harness.store.next_crl_number(ISSUER))
    assert numbers == [1, 2, 3]


async def test_epoch_is_shared_between_store_objects(harness: Harness) -> None:
    store = harness.store
    other = await harness.second_store()
    await store.create_integration(integration("int1"))
    await store.record_issuance(issuance(certificate("01"), None))
    before = await other.revocation_epoch()
    await store.revoke_certificate("01", "keyCompromise", NOW)
    assert await other.revocation_epoch() != before


# -- listing ---------------------------------------------------------------------------


async def test_list_certificates_filters(store: Store) -> None:
    await store.create_integration(integration("int1"))
    await store.create_integration(integration("int2"))
    t = [NOW + timedelta(seconds=n) for n in range(4)]
    expired_at = NOW - timedelta(days=1)
    await store.record_issuance(issuance(certificate("04"), None, now=t[0]))
    await store.record_issuance(issuance(certificate("03", not_after=expired_at), None, now=t[1]))
    await store.record_issuance(issuance(certificate("02", "int2"), None, now=t[2]))
    await store.record_issuance(issuance(certificate("01"), None, now=t[3]))
    await store.revoke_certificate("01", "keyCompromise", NOW)

    async def serials(**kwargs: object) -> list[str]:
        return [c.serial for c in await store.list_certificates(CertificateFilter(**kwargs))]  # type: ignore[arg-type]

    assert await serials() == ["04", "03", "02", "01"]  # by creation time, not serial
    assert await serials(integration_id="int1") == ["04", "03", "01"]
    assert await serials(status=CertStatus.REVOKED) == ["01"]
    assert await serials(status=CertStatus.ISSUED, integration_id="int1") == ["04", "03"]
    assert await serials(expired_before=NOW) == ["03"]
    assert await serials(issued_only_unexpired_at=NOW) == ["04", "02"]
    assert await serials(limit=2) == ["04", "03"]
    assert await serials(integration_id="int1", limit=1) == ["04"]
    assert await serials(integration_id="none") == []


# -- concurrency -----------------------------------------------------------------------


async def test_concurrent_tasks_consume_a_challenge_once(store: Store) -> None:
    await store.create_integration(integration("int1"))
    await add(store, "c1")

    async def attempt(n: int) -> bool:
        try:
            await store.record_issuance(issuance(certificate(f"{n + 1:x}"), "c1"))
        except ChallengeRejected:
            return False
        return True

    results = await asyncio.gather(*(attempt(n) for n in range(50)))
    assert results.count(True) == 1
    assert await store.count_certificates() == 1


# -- renewal supersession and the approval queue ----------------------------------------


async def test_issuance_can_supersede_a_certificate_atomically(store: Store) -> None:
    await store.create_integration(integration(revoke_superseded=True))
    await store.record_issuance(issuance(certificate("0a"), challenge=None))
    epoch = await store.revocation_epoch()
    renewed = replace(certificate("0b"), transaction_id="t-renew")
    await store.record_issuance(replace(issuance(renewed, challenge=None), supersedes="0a"))
    old = await store.get_certificate("0a")
    assert old is not None and old.status is CertStatus.REVOKED and old.revocation_reason == "superseded"
    assert await store.revocation_epoch() != epoch
    assert (await store.get_certificate("0b")) is not None


def renewal(serial: str, renews: str, tid: str | None = None) -> IssuanceRequest:
    cert = certificate(serial, message_type=17, transaction_id=tid or f"t-renew-{serial}")
    return replace(issuance(cert, challenge=None), renews=renews)


async def test_a_certificate_is_renewed_once(store: Store) -> None:
    await store.create_integration(integration())
    await store.record_issuance(issuance(certificate("0a"), challenge=None))
    await store.record_issuance(renewal("0b", renews="0a"))
    old = await store.get_certificate("0a")
    assert old is not None and old.superseded_by == "0b" and old.status is CertStatus.ISSUED
    new = await store.get_certificate("0b")
    assert new is not None and new.superseded_by is None
    txn = await store.get_transaction("int1", "t-renew-0b")
    assert txn is not None and txn.renews == "0a" and txn.serial == "0b"
    before = await snapshot(store)
    # A new transaction, and a resend of the first one: the store refuses both, changing nothing.
    for again in (renewal("0c", renews="0a"), renewal("0d", renews="0a", tid="t-renew-0b")):
        with pytest.raises(RenewalRefused):
            await store.record_issuance(again)
    assert await snapshot(store) == before
    assert await store.get_transaction("int1", "t-renew-0c") is None
    # The renewed certificate can itself be renewed, once.
    await store.record_issuance(renewal("0e", renews="0b"))
    assert [c.superseded_by for c in await store.list_certificates(CertificateFilter())] == ["0b", "0e", None]


def test_a_renewal_consumes_no_challenge() -> None:
    with pytest.raises(ValueError, match="no challenge"):
        replace(issuance(certificate("0b"), challenge="c1"), renews="0a")


@pytest.mark.parametrize("case", ["revoked", "other-integration", "unknown"])
async def test_renewal_of_a_certificate_that_cannot_be_renewed(store: Store, case: str) -> None:
    await store.create_integration(integration())
    await store.create_integration(integration("int2"))
    await store.record_issuance(issuance(certificate("0a", "int2" if case == "other-integration" else "int1"), None))
    if case == "revoked":
        assert await store.revoke_certificate("0a", "keyCompromise", NOW)
    before = await snapshot(store)
    with pytest.raises(RenewalRefused):
        await store.record_issuance(renewal("0b", renews="ff" if case == "unknown" else "0a"))
    assert await snapshot(store) == before
    assert await store.get_transaction("int1", "t-renew-0b") is None
    old = await store.get_certificate("0a")
    assert old is not None and old.superseded_by is None


async def test_renewal_on_a_deleted_integration(store: Store) -> None:
    await store.create_integration(integration())
    await store.record_issuance(issuance(certificate("0a"), None))
    await store.delete_integration("int1", NOW)
    with pytest.raises(IntegrationNotFound):
        await store.record_issuance(renewal("0b", renews="0a"))
    assert await store.count_certificates() == 1


async def test_renewal_that_revokes_the_superseded_certificate(store: Store) -> None:
    await store.create_integration(integration(revoke_superseded=True))
    await store.record_issuance(issuance(certificate("0a"), None))
    await store.record_issuance(replace(renewal("0b", renews="0a"), supersedes="0a"))
    old = await store.get_certificate("0a")
    assert old is not None and (old.status, old.revocation_reason, old.superseded_by) == (
        CertStatus.REVOKED,
        "superseded",
        "0b",
    )


async def test_concurrent_renewals_of_one_certificate_exactly_one_wins(store: Store, harness: Harness) -> None:
    await store.create_integration(integration())
    await store.record_issuance(issuance(certificate("0a"), None))
    other = await harness.second_store()

    async def attempt(target: Store, n: int) -> bool:
        try:
            await target.record_issuance(renewal(f"{n + 0x100:x}", renews="0a"))
        except RenewalRefused:
            return False
        return True

    results = await asyncio.gather(*(attempt(s, 2 * n + i) for n in range(10) for i, s in enumerate((store, other))))
    assert results.count(True) == 1
    assert await store.count_certificates() == 2
    old = await store.get_certificate("0a")
    assert old is not None and old.superseded_by is not None
    assert await store.get_certificate(old.superseded_by) is not None


def pending_renewal(tid: str, renews: str) -> Transaction:
    return replace(pending(tid), message_type=17, renews=renews)


async def test_approving_a_renewal_marks_the_renewed_certificate(store: Store) -> None:
    await store.create_integration(integration(require_approval=True, revoke_superseded=True))
    await store.record_issuance(issuance(certificate("0a"), None))
    await store.record_pending(pending_renewal("p1", "0a"), None, NOW)
    txn = await store.get_transaction("int1", "p1")
    assert txn is not None and txn.renews == "0a" and txn.status is TransactionStatus.PENDING
    epoch = await store.revocation_epoch()
    assert await store.resolve_pending("int1", "p1", certificate("0b", transaction_id="p1"), NOW, supersedes="0a")
    old = await store.get_certificate("0a")
    assert old is not None and (old.superseded_by, old.status) == ("0b", CertStatus.REVOKED)
    assert old.revocation_reason == "superseded" and await store.revocation_epoch() != epoch


@pytest.mark.parametrize("meanwhile", ["renewed", "revoked"])
async def test_approving_a_renewal_refused_when_renewed_or_revoked_meanwhile(store: Store, meanwhile: str) -> None:
    await store.create_integration(integration(require_approval=True))
    await store.record_issuance(issuance(certificate("0a"), None))
    await store.record_pending(pending_renewal("p1", "0a"), None, NOW)
    if meanwhile == "renewed":
        # Renewed without approval (the integration's require_approval was turned off meanwhile).
        await store.record_issuance(renewal("0b", renews="0a"))
    else:
        assert await store.revoke_certificate("0a", "keyCompromise", NOW)
    before = await snapshot(store)
    with pytest.raises(RenewalRefused):
        await store.resolve_pending("int1", "p1", certificate("0c", transaction_id="p1"), NOW)
    assert await snapshot(store) == before
    txn = await store.get_transaction("int1", "p1")
    assert txn is not None and txn.status is TransactionStatus.PENDING and txn.serial is None
    assert await store.resolve_pending("int1", "p1", None, NOW), "it can still be rejected"


async def test_one_pending_renewal_per_certificate(store: Store) -> None:
    await store.create_integration(integration(require_approval=True))
    for serial in ("0a", "0b"):
        await store.record_issuance(issuance(certificate(serial, transaction_id=f"t-{serial}"), None))
    await store.record_pending(pending_renewal("p1", "0a"), None, NOW)
    before = (await snapshot(store), await store.list_transactions())
    with pytest.raises(RenewalPending):
        await store.record_pending(pending_renewal("p2", "0a"), None, NOW)
    assert (await snapshot(store), await store.list_transactions()) == before
    # Another certificate's renewal, and a request that renews nothing, are not held up.
    await store.record_pending(pending_renewal("p3", "0b"), None, NOW)
    await store.record_pending(pending("p4"), None, NOW)
    # A pending renewal created before open_since has expired and holds nothing.
    later = NOW + timedelta(hours=2)

    async def renew_later(tid: str) -> None:
        await store.record_pending(replace(pending_renewal(tid, "0a"), created_at=later), None, later, open_since=later)

    await renew_later("p5")
    # Nor does a rejected one.
    assert await store.resolve_pending("int1", "p5", None, later)
    await renew_later("p6")
    with pytest.raises(RenewalPending):
        await renew_later("p7")
    pending_ids = [t.transaction_id for t in await store.list_transactions(TransactionStatus.PENDING)]
    assert sorted(pending_ids) == ["p1", "p3", "p4", "p6"]


async def test_concurrent_pending_renewals_of_one_certificate_exactly_one_is_queued(
    store: Store, harness: Harness
) -> None:
    await store.create_integration(integration(require_approval=True))
    await store.record_issuance(issuance(certificate("0a"), None))
    other = await harness.second_store()

    async def attempt(target: Store, n: int) -> bool:
        try:
            await target.record_pending(pending_renewal(f"p{n}", "0a"), None, NOW, open_since=NOW)
        except RenewalPending:
            return False
        return True

    results = await asyncio.gather(*(attempt(s, 2 * n + i) for n in range(10) for i, s in enumerate((store, other))))
    assert results.count(True) == 1
    queued = await store.list_transactions(TransactionStatus.PENDING)
    assert [t.transaction_id for t in queued] == [f"p{results.index(True)}"]


async def test_integration_flags_round_trip(store: Store) -> None:
    await store.create_integration(integration(require_approval=True, revoke_superseded=True))
    got = await store.get_integration("int1")
    assert got is not None and got.require_approval and got.revoke_superseded


def pending(tid: str = "p1", integration_id: str = "int1") -> Transaction:
    return Transaction(
        integration_id=integration_id,
        transaction_id=tid,
        pubkey_sha256="f" * 64,
        status=TransactionStatus.PENDING,
        created_at=NOW,
        message_type=19,
        csr_der=b"\x30\x03\x02\x01\x00",
    )


async def test_pending_consumes_the_challenge_and_queues(store: Store) -> None:
    await store.create_integration(integration(require_approval=True))
    assert await add(store, "c1")
    await store.record_pending(pending(), "c1", NOW)
    assert await store.count_unused_challenges("int1", NOW) == 0
    queued = await store.list_transactions(TransactionStatus.PENDING)
    assert [(t.transaction_id, t.csr_der) for t in queued] == [("p1", b"\x30\x03\x02\x01\x00")]
    with pytest.raises(ChallengeRejected):
        await store.record_pending(pending("p2"), "c1", NOW)
    with pytest.raises(DuplicateTransaction):
        await store.record_pending(pending(), None, NOW)
    assert len(await store.list_transactions()) == 1


async def test_approve_inserts_certificate_once(store: Store) -> None:
    await store.create_integration(integration(require_approval=True))
    await store.record_pending(pending(), None, NOW)
    cert = replace(certificate("0c"), transaction_id="p1")
    assert await store.resolve_pending("int1", "p1", cert, NOW)
    txn = await store.get_transaction("int1", "p1")
    assert txn is not None and txn.status is TransactionStatus.ISSUED and txn.serial == "0c"
    assert await store.get_certificate("0c") is not None
    assert not await store.resolve_pending("int1", "p1", None, NOW), "already resolved"
    assert not await store.resolve_pending("int1", "nope", None, NOW)
    assert await store.list_transactions(TransactionStatus.PENDING) == []


async def test_reject_leaves_no_certificate(store: Store) -> None:
    await store.create_integration(integration(require_approval=True))
    await store.record_pending(pending(), None, NOW)
    assert await store.resolve_pending("int1", "p1", None, NOW)
    txn = await store.get_transaction("int1", "p1")
    assert txn is not None and txn.status is TransactionStatus.REJECTED
    assert await store.count_certificates() == 0


async def test_pending_on_deleted_integration(store: Store) -> None:
    await store.create_integration(integration(require_approval=True))
    await store.record_pending(pending(), None, NOW)
    await store.delete_integration("int1", NOW)
    with pytest.raises(IntegrationNotFound):
        await store.record_pending(pending("p2"), None, NOW)
    with pytest.raises(IntegrationNotFound):
        await store.resolve_pending("int1", "p1", replace(certificate("0d"), transaction_id="p1"), NOW)
    assert await store.count_certificates() == 0


# -- failed-login throttling ---------------------------------------------------------------

WINDOW = timedelta(seconds=60)
LOCKOUT = timedelta(seconds=300)


async def reserve(store: Store, key: str = "k1", at: datetime = NOW, max_attempts: int = 3) -> AuthReservation:
    return await store.auth_reserve(key, at, WINDOW, max_attempts, LOCKOUT)


async def fail(store: Store, key: str = "k1", at: datetime = NOW, max_attempts: int = 3) -> AuthVerdict:
    """Reserve and, when allowed, report a failed check: one wrong login."""
    got = await reserve(store, key, at, max_attempts)
    if got.verdict is AuthVerdict.ALLOWED:
        await store.auth_release(key, got.window_start, at, failed=True)
    return got.verdict


ALLOWED, LOCKED, BUSY = AuthVerdict.ALLOWED, AuthVerdict.LOCKED, AuthVerdict.BUSY


async def test_auth_reserve_allows_max_checks_then_locks(store: Store) -> None:
    assert await store.auth_locked_until("k1", NOW) is None
    assert [await fail(store) for _ in range(3)] == [ALLOWED] * 3
    assert await store.auth_locked_until("k1", NOW) is None
    # The fourth attempt is not checked: it trips the lock, to the microsecond.
    assert await reserve(store) == AuthReservation(LOCKED, NOW, NOW + LOCKOUT)
    assert await store.auth_locked_until("k1", NOW) == NOW + LOCKOUT
    assert await store.auth_locked_until("k1", NOW + LOCKOUT - timedelta(microseconds=1)) == NOW + LOCKOUT
    assert await store.auth_locked_until("k1", NOW + LOCKOUT) is None
    assert await store.auth_locked_until("k2", NOW) is None, "per key"
    assert (await reserve(store, key="k2")).verdict is ALLOWED


async def test_auth_reserve_while_locked_neither_counts_nor_extends(store: Store) -> None:
    for _ in range(4):
        await fail(store)
    later = NOW + timedelta(seconds=100)
    for _ in range(10):
        assert await reserve(store, at=later) == AuthReservation(LOCKED, NOW, NOW + LOCKOUT)
    # After the lock: counting starts afresh (nothing was counted while locked).
    end = NOW + LOCKOUT
    assert [await fail(store, at=end) for _ in range(3)] == [ALLOWED] * 3
    assert await reserve(store, at=end) == AuthReservation(LOCKED, end, end + LOCKOUT)


async def test_auth_reserve_counts_checks_in_flight(store: Store) -> None:
    """Reservations whose checks have not ended hold the budget: BUSY, and no lock."""
    held = [await reserve(store) for _ in range(3)]
    assert {r.verdict for r in held} == {ALLOWED} and {r.window_start for r in held} == {NOW}
    assert await reserve(store) == AuthReservation(BUSY, NOW)
    assert await store.auth_locked_until("k1", NOW) is None
    # Two fail: still in the budget (2 failures + 1 in flight).
    for r in held[:2]:
        await store.auth_release("k1", r.window_start, NOW, failed=True)
    assert (await reserve(store)).verdict is BUSY
    # The third fails too: the window's checks are used up and the next attempt locks.
    await store.auth_release("k1", held[2].window_start, NOW, failed=True)
    assert (await reserve(store)).verdict is LOCKED


async def test_auth_release_success_clears_failures_but_not_a_running_lock(store: Store) -> None:
    assert await fail(store, max_attempts=2) is ALLOWED
    ok = await reserve(store, max_attempts=2)
    assert ok.verdict is ALLOWED
    await store.auth_release("k1", ok.window_start, NOW, failed=False)
    # The earlier failure was forgotten and the success's slot given back: two checks again.
    assert [await fail(store, max_attempts=2) for _ in range(2)] == [ALLOWED] * 2
    late = await reserve(store, max_attempts=2)
    assert late.verdict is LOCKED
    await store.auth_release("k1", NOW, NOW, failed=False)  # a success from before must not lift the lock
    assert await store.auth_locked_until("k1", NOW) == NOW + LOCKOUT
    await store.auth_release("unknown", NOW, NOW, failed=False)
    await store.auth_release("unknown", NOW, NOW, failed=True)
    assert (await reserve(store, key="unknown", max_attempts=1)).verdict is ALLOWED


async def test_auth_reserve_fixed_window(store: Store) -> None:
    assert await fail(store, max_attempts=2) is ALLOWED
    assert await fail(store, at=NOW + timedelta(seconds=40), max_attempts=2) is ALLOWED
    # The window began at the first reservation and ended 60 s later: a new one starts.
    t = NOW + WINDOW
    assert await fail(store, at=t, max_attempts=2) is ALLOWED
    assert await fail(store, at=t, max_attempts=2) is ALLOWED
    late = t + timedelta(seconds=59)
    assert await reserve(store, at=late, max_attempts=2) == AuthReservation(LOCKED, late, late + LOCKOUT)


async def test_auth_release_of_an_ended_window_frees_no_slot_of_the_next(store: Store) -> None:
    """A check still running when its window ends cannot give the next window an extra check."""
    stale = await reserve(store, max_attempts=1)
    t = NOW + WINDOW
    fresh = await reserve(store, at=t, max_attempts=1)
    assert (fresh.verdict, fresh.window_start) == (ALLOWED, t)
    for failed in (True, False):
        await store.auth_release("k1", stale.window_start, t, failed=failed)
        assert (await reserve(store, at=t, max_attempts=1)).verdict is BUSY
    await store.auth_release("k1", fresh.window_start, t, failed=True)
    assert (await reserve(store, at=t, max_attempts=1)).verdict is LOCKED


async def test_auth_reserve_purges_stale_rows_of_other_keys(store: Store, harness: Harness) -> None:
    for i in range(5):
        await fail(store, key=f"old{i}", max_attempts=1)
    await fail(store, key="locked", max_attempts=1)
    assert (await reserve(store, key="locked", max_attempts=1)).verdict is LOCKED
    later = NOW + WINDOW + timedelta(seconds=1)  # old* are over; "locked" is still locked
    await fail(store, key="new", at=later, max_attempts=1)
    assert await store.auth_locked_until("locked", later) == NOW + LOCKOUT
    for i in range(5):
        # Purged (or at least over): a new failure starts from zero again.
        assert await fail(store, key=f"old{i}", at=later, max_attempts=1) is ALLOWED
    other = await harness.second_store()
    assert (await reserve(other, key="new", at=later, max_attempts=1)).verdict is LOCKED


async def test_auth_reserve_is_atomic_across_stores(store: Store, harness: Harness) -> None:
    """40 parallel reservations of one key through two store objects (two processes): exactly
    max_attempts are allowed; the rest see the budget held by checks in flight."""
    other = await harness.second_store()
    results = await asyncio.gather(*(reserve(s, max_attempts=10) for _ in range(20) for s in (store, other)))
    verdicts = [r.verdict for r in results]
    assert (verdicts.count(ALLOWED), verdicts.count(BUSY)) == (10, 30)
    assert await other.auth_locked_until("k1", NOW) is None
    # All ten fail, concurrently: the next 20 attempts all find the key locked, one lock end.
    allowed = [r for r in results if r.verdict is ALLOWED]
    await asyncio.gather(
        *(
            s.auth_release("k1", r.window_start, NOW, failed=True)
            for r, s in zip(allowed, [store, other] * 5, strict=True)
        )
    )
    locks = await asyncio.gather(*(reserve(s, max_attempts=10) for _ in range(10) for s in (store, other)))
    assert {(r.verdict, r.locked_until) for r in locks} == {(LOCKED, NOW + LOCKOUT)}


async def test_a_certificate_on_hold_is_released_or_revoked_once(store: Store) -> None:
    # Recorded on hold (issue 17 item 6): revoked with reason certificateHold until the
    # validator confirms it; end_hold ends the hold once, whichever way.
    await store.create_integration(integration("int1"))
    for serial in ("01", "02", "03"):
        held = replace(certificate(serial), status=CertStatus.REVOKED, revoked_at=NOW, revocation_reason=HOLD)
        await store.record_issuance(issuance(held, None))
    record = await store.get_certificate("01")
    assert record is not None and (record.status, record.revocation_reason) == (CertStatus.REVOKED, HOLD)
    await store.revoke_certificate("01", "keyCompromise", NOW)  # an operator's revocation does not end a hold
    assert [c.serial for c in await store.list_certificates(CertificateFilter(on_hold=True))] == ["01", "02", "03"]
    epoch = await store.revocation_epoch()

    assert await store.end_hold("01", None, NOW + timedelta(seconds=5)) is True
    released = await store.get_certificate("01")
    assert released is not None
    assert (released.status, released.revoked_at, released.revocation_reason) == (CertStatus.ISSUED, None, None)
    assert await store.revocation_epoch() != epoch

    later = NOW + timedelta(minutes=3)
    assert await store.end_hold("02", "cessationOfOperation", later) is True
    revoked = await store.get_certificate("02")
    assert revoked is not None
    assert (revoked.status, revoked.revoked_at, revoked.revocation_reason) == (
        CertStatus.REVOKED,
        later,
        "cessationOfOperation",
    )
    # Once only: neither a released nor a revoked certificate is on hold any more.
    epoch = await store.revocation_epoch()
    assert await store.end_hold("01", "cessationOfOperation", later) is False
    assert await store.end_hold("02", None, later) is False
    assert await store.end_hold("ffff", None, later) is False
    assert await store.get_certificate("01") == released
    assert await store.get_certificate("02") == revoked
    assert await store.revocation_epoch() == epoch
    # An operator's revocation is not a hold: end_hold does not lift it.
    await store.record_issuance(issuance(certificate("04"), None))
    await store.revoke_certificate("04", "keyCompromise", later)
    assert await store.end_hold("04", None, later) is False
    # The held certificate is listed for the CRL as on hold.
    entries = {e.serial: e.reason for e in await store.revoked_entries(ISSUER)}
    assert entries["03"] == HOLD and "01" not in entries
    assert [c.serial for c in await store.list_certificates(CertificateFilter(on_hold=True))] == ["03"]


# -- CRL shards (scep_ca/pki/crl_shards.py) ----------------------------------------------------


async def test_crl_shard_is_stored_and_a_shard_lists_its_unexpired_revoked_certificates(store: Store) -> None:
    await store.create_integration(integration("int1"))
    await store.create_integration(integration("int2", username="other"))
    shards = {"01": 1, "02": 1, "03": 2, "04": None, "05": 1, "06": 1}
    await store.record_issuance(issuance(certificate("01", crl_shard=1), None))
    await store.record_issuance(issuance(certificate("02", "int2", crl_shard=1), None))
    await store.record_issuance(issuance(certificate("03", crl_shard=2), None))
    await store.record_issuance(issuance(certificate("04"), None))  # issued before shards: the full CRL only
    await store.record_issuance(issuance(certificate("05", issuer_fingerprint=OTHER_ISSUER, crl_shard=1), None))
    # Expired an hour before NOW.
    await store.record_issuance(issuance(certificate("06", crl_shard=1, not_after=NOW - timedelta(hours=1)), None))
    for serial, shard in shards.items():
        record = await store.get_certificate(serial)
        assert record is not None and record.crl_shard == shard, (serial, record)
    assert await store.revoked_shard_entries(ISSUER, 1, NOW - timedelta(days=1)) == []
    for serial in shards:
        assert await store.revoke_certificate(serial, "keyCompromise", NOW) is True

    def serials(entries: Sequence[RevokedEntry]) -> list[str]:
        return sorted(e.serial for e in entries)

    # Every integration's certificates of the shard; not another issuer's, not another shard's.
    assert serials(await store.revoked_shard_entries(ISSUER, 1, NOW - timedelta(hours=2))) == ["01", "02", "06"]
    # Once expired before the cut-off, a certificate leaves its shard, and stays in the full CRL.
    assert serials(await store.revoked_shard_entries(ISSUER, 1, NOW)) == ["01", "02"]
    assert serials(await store.revoked_shard_entries(ISSUER, 2, NOW)) == ["03"]
    assert await store.revoked_shard_entries(ISSUER, 3, NOW) == []
    assert serials(await store.revoked_shard_entries(OTHER_ISSUER, 1, NOW)) == ["05"]
    assert serials(await store.revoked_entries(ISSUER)) == ["01", "02", "03", "04", "06"]
    (entry,) = await store.revoked_shard_entries(ISSUER, 2, NOW)
    assert (entry.revoked_at, entry.reason) == (NOW, "keyCompromise")


async def test_a_renewal_stores_the_new_certificates_shard(store: Store) -> None:
    await store.create_integration(integration("int1"))
    await store.record_issuance(issuance(certificate("0a", crl_shard=3), None))
    renewed = renewal("0b", renews="0a")
    await store.record_issuance(replace(renewed, certificate=replace(renewed.certificate, crl_shard=7)))
    new = await store.get_certificate("0b")
    assert new is not None and new.crl_shard == 7
