"""The audit log on both backends: rows commit with their action or not at all, and direct
tampering with ``audit_events`` (a field changed, a row deleted, a forged row, two rows
swapped, the tail cut after a checkpoint) is caught and named by ``AuditLog.verify``."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.encoding import GENESIS, seal
from audit.events import Event
from audit.keys import FileMacKey
from audit.lanes import Lanes
from audit.service import AuditLog, Draft
from store.base import AuditFilter, ChallengeRejected, IssuanceRequest, RenewalRefused, Store
from tests.store.conftest import Harness
from tests.store.test_contract import NOW, add, certificate, integration, issuance

KEY = FileMacKey(bytes(range(32)))
WRITER = "host:1:test/1"


def make_log(store: Store, key: FileMacKey = KEY) -> AuditLog:
    ticks = itertools.count()
    signer = Ed25519PrivateKey.generate()
    return AuditLog(
        store,
        key,
        lambda: NOW + timedelta(seconds=next(ticks)),
        checkpoint_key=lambda: signer,
        lanes=Lanes("host:1:test"),
    )


async def five_events(log: AuditLog) -> None:
    for n in range(1, 6):
        await log.append(Draft(Event.CHALLENGE_ISSUED, f"integration/i{n}", {"n": n, "user": "ü"}, actor="cli"))


async def test_untouched_log_verifies(harness: Harness) -> None:
    log = make_log(harness.store)
    await five_events(log)
    report = await log.verify()
    assert report.ok and dict(report.chains) == {WRITER: 5}
    rows = await harness.store.list_audit(AuditFilter(event=str(Event.CHALLENGE_ISSUED)))
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5] and rows[0].details == {"n": 1, "user": "ü"}
    # A checkpoint of an untouched log verifies too.
    checkpoint = json.dumps(await log.checkpoint())
    assert (await log.verify(checkpoint)).ok


async def test_a_wrong_key_fails_every_chain(harness: Harness) -> None:
    await five_events(make_log(harness.store))
    report = await make_log(harness.store, FileMacKey(b"\x01" * 32)).verify()
    assert [(p.writer, p.seq, p.kind) for p in report.problems] == [(WRITER, 1, "modified")]


TAMPERING = {
    "modified": ("UPDATE audit_events SET actor = 'mallory' WHERE seq = 3", 3),
    "missing": ("DELETE FROM audit_events WHERE seq = 3", 3),
    "reordered": (
        "UPDATE audit_events SET seq = -1 WHERE seq = 2; UPDATE audit_events SET seq = 2 WHERE seq = 3; "
        "UPDATE audit_events SET seq = 3 WHERE seq = -1",
        2,
    ),
    "inserted": (
        "INSERT INTO audit_events (writer, seq, at, actor, event, object, details, prev_mac, mac) "
        "SELECT writer, 6, at, 'mallory', 'cert.revoked', 'certificate/ab', details, mac, "
        "'1111111111111111111111111111111111111111111111111111111111111111' FROM audit_events WHERE seq = 5",
        6,
    ),
}


@pytest.mark.parametrize("kind", sorted(TAMPERING))
async def test_tampering_is_caught_and_named(harness: Harness, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Verify reads pages of two records, so that every case also crosses page boundaries.
    monkeypatch.setattr("audit.service._VERIFY_PAGE", 2)
    log = make_log(harness.store)
    await five_events(log)
    sql, seq = TAMPERING[kind]
    await harness.execute(sql)
    report = await log.verify()
    assert not report.ok
    assert [(p.writer, p.seq, p.kind) for p in report.problems] == [(WRITER, seq, kind)]


async def test_a_tail_cut_after_a_checkpoint_is_caught(harness: Harness) -> None:
    log = make_log(harness.store)
    await five_events(log)
    checkpoint = json.dumps(await log.checkpoint())
    await harness.execute("DELETE FROM audit_events WHERE seq >= 4")
    assert (await log.verify()).ok  # without the checkpoint, a shorter chain looks whole
    report = await log.verify(checkpoint)
    assert [(p.writer, p.seq, p.kind) for p in report.problems] == [(WRITER, 4, "cut_short")]


async def test_a_head_rewritten_with_the_key_is_caught_by_the_checkpoint(harness: Harness) -> None:
    log = make_log(harness.store)
    await five_events(log)
    checkpoint = json.dumps(await log.checkpoint())
    # Someone holding the audit key re-seals the last record with other content: every MAC
    # verifies, but the head is not the one the checkpoint signed.
    (*_, fourth, fifth) = await harness.store.audit_page(None, 100)
    forged = seal(KEY, WRITER, 5, fifth.at, "mallory", fifth.event, fifth.target, fifth.details, fourth.mac)
    await harness.execute(f"UPDATE audit_events SET actor = 'mallory', mac = '{forged.mac}' WHERE seq = 5")
    assert (await log.verify()).ok
    report = await log.verify(checkpoint)
    assert [(p.writer, p.seq, p.kind) for p in report.problems] == [(WRITER, 5, "modified")]


async def test_events_commit_with_their_action_only(harness: Harness) -> None:
    store = harness.store
    log = make_log(store)
    await store.create_integration(integration())
    await add(store, "c1")
    cert = certificate("0a")
    # A refused action (the challenge is unknown) leaves no event, and the chain's head stands.
    with pytest.raises(ChallengeRejected), log.recording(Draft(Event.CERT_ISSUED, "certificate/0b")) as seal:
        await store.record_issuance(issuance(certificate("0b"), challenge="nope"), audit=seal)
    assert await store.audit_empty()
    with log.recording(Draft(Event.CERT_ISSUED, "certificate/0a", {"serial": "0a"})) as seal:
        await store.record_issuance(issuance(cert), audit=seal)
    # Deleting reports how many it revoked, a fact only its transaction knows.
    with log.recording(Draft(Event.INTEGRATION_DELETED, "integration/int1")) as seal:
        await store.delete_integration("int1", NOW, audit=seal)
    rows = await store.audit_page(None, 100)
    assert [(r.seq, r.event, r.details) for r in rows] == [
        (1, "scep.issued", {"serial": "0a"}),
        (2, "integration.deleted", {"revoked": 1}),
    ]
    assert (await log.verify()).ok


async def test_a_renewal_and_a_refused_second_renewal(harness: Harness) -> None:
    """The renewal statement carries its events too; a second renewal of the same certificate
    is refused and leaves none (PostgreSQL: one statement, the rows only when it succeeds)."""
    store = harness.store
    log = make_log(store)
    await store.create_integration(integration())
    await add(store, "c1")
    await store.record_issuance(issuance(certificate("0a")))
    for serial, refused in (("0b", False), ("0c", True)):
        request = IssuanceRequest(certificate(serial), None, NOW, renews="0a")
        draft = Draft(Event.CERT_RENEWED, f"certificate/{serial}", {"old_serial": "0a"})
        with pytest.raises(RenewalRefused) if refused else contextlib.nullcontext(), log.recording(draft) as seal:
            await store.record_issuance(request, audit=seal)
    rows = await store.audit_page(None, 100)
    assert [(r.seq, r.event, r.target) for r in rows] == [(1, "scep.renewed", "certificate/0b")]
    # The refused attempt gave its chain back untouched: the next event continues it.
    await log.append(Draft(Event.SERVER_STOP, "server"))
    assert [r.seq for r in await store.audit_page(None, 100)] == [1, 2]
    assert (await log.verify()).ok


async def test_the_sealers_details_text_is_kept_and_a_record_without_one_is_encoded_by_the_store(
    harness: Harness,
) -> None:
    # seal() hands the store the details' text it MACed; a backup's replayed or restored records
    # come without one. Both read back as the same details and both verify.
    sealed = seal(KEY, WRITER, 1, NOW, "cli", str(Event.CHALLENGE_ISSUED), "integration/a", {"b": 1, "a": "ü"}, GENESIS)
    bare = dataclasses.replace(
        seal(KEY, WRITER, 2, NOW, "cli", str(Event.CHALLENGE_ISSUED), "integration/b", {"a": "é"}, sealed.mac),
        details_json=None,
    )
    await harness.store.append_audit(lambda outcome: [sealed, bare])
    rows = await harness.store.list_audit(AuditFilter())
    assert [(r.seq, r.details) for r in rows] == [(1, {"b": 1, "a": "ü"}), (2, {"a": "é"})]
    report = await make_log(harness.store).verify()
    assert report.ok and dict(report.chains) == {WRITER: 2}
