"""The console's store roles (admins, sessions, overview): every backend passes these unchanged."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from scep_ca.pki.records import CertStatus, Transaction, TransactionStatus
from store.base import (
    AdminAccount,
    AdminRole,
    CertificateSearch,
    CertSearchStatus,
    ConsoleSession,
    DuplicateAdmin,
    IntegrationCounts,
    LastAdmin,
    Store,
)
from store.search import revoked_page_walks_expiry
from tests.store.conftest import Harness
from tests.store.test_contract import NOW, certificate, integration

IDLE = timedelta(minutes=15)
MAX_AGE = timedelta(hours=8)


def admin(name: str = "alice", role: AdminRole = AdminRole.ADMIN) -> AdminAccount:
    return AdminAccount(name=name, role=role, password_scrypt="scrypt$16384$8$1$c2FsdA==$aGFzaA==", created_at=NOW)


def session(token: str = "t1", who: str = "alice") -> ConsoleSession:
    return ConsoleSession(token, who, "csrf-" + token, NOW, NOW, "192.0.2.9")


async def touch(store: Store, token: str, at: timedelta) -> ConsoleSession | None:
    now = NOW + at
    return await store.touch_session(token, now, now - IDLE, now - MAX_AGE)


async def test_admin_round_trip_and_duplicates(store: Store) -> None:
    await store.create_admin(admin())
    await store.create_admin(admin("bob", AdminRole.AUDITOR))
    assert await store.get_admin("alice") == admin()
    assert [a.name for a in await store.list_admins()] == ["alice", "bob"]
    with pytest.raises(DuplicateAdmin):
        await store.create_admin(admin("alice", AdminRole.OPERATOR))
    assert await store.get_admin("alice") == admin()
    assert await store.get_admin("nobody") is None


async def test_session_idle_and_absolute_expiry(store: Store) -> None:
    await store.create_admin(admin())
    await store.create_session(session("t1"))
    live = await touch(store, "t1", timedelta(minutes=14))
    assert live is not None and live.admin == "alice" and live.csrf_token == "csrf-t1"
    assert live.last_seen == NOW + timedelta(minutes=14)
    # Kept alive every 14 minutes, it still ends 8 hours after login.
    for step in range(2, 35):
        assert await touch(store, "t1", timedelta(minutes=14 * step)) is not None
    assert await touch(store, "t1", MAX_AGE) is None
    await store.create_session(session("t2"))
    assert await touch(store, "t2", IDLE) is None  # 15 minutes idle
    assert await touch(store, "t2", timedelta(minutes=1)) is None  # gone, not revived


async def test_logout_disable_and_password_reset_end_sessions(store: Store) -> None:
    await store.create_admin(admin())
    await store.create_admin(admin("bob", AdminRole.OPERATOR))
    for token, who in (("a1", "alice"), ("a2", "alice"), ("b1", "bob")):
        await store.create_session(session(token, who))
    await store.delete_session("a1")
    assert await touch(store, "a1", timedelta(0)) is None
    assert await store.set_admin_password("alice", "scrypt$new") is True
    assert await touch(store, "a2", timedelta(0)) is None
    assert (await store.get_admin("alice")).password_scrypt == "scrypt$new"  # type: ignore[union-attr]
    assert await store.disable_admin("bob", NOW) is True
    assert await store.disable_admin("bob", NOW) is False
    assert await touch(store, "b1", timedelta(0)) is None
    assert (await store.get_admin("bob")).disabled  # type: ignore[union-attr]
    assert await store.set_admin_password("nobody", "x") is False


async def test_integration_counts(harness: Harness) -> None:
    store = harness.store
    await store.create_integration(integration("int1"))
    await store.create_integration(integration("int2"))
    await store.create_integration(integration("int3"))
    h = timedelta(hours=1)
    rows = [
        certificate("a1", not_after=NOW + timedelta(days=300)),
        certificate("a2", not_after=NOW + timedelta(days=10)),  # expiring
        certificate("a3", not_after=NOW - h),  # expired: neither valid nor expiring
        certificate("a4", status=CertStatus.REVOKED, revoked_at=NOW, revocation_reason="keyCompromise"),
        certificate("b1", "int2", not_after=NOW + timedelta(days=29)),
        certificate("a5", not_after=NOW + h),  # expires later today: counted from the row itself
        certificate("b2", "int2", not_after=NOW + timedelta(days=30, minutes=-1)),  # the horizon's day, inside
        certificate("b3", "int2", not_after=NOW + timedelta(days=30, minutes=1)),  # the horizon's day, after it
    ]
    await harness.bulk_insert_certificates(rows)
    await store.record_pending(
        Transaction("int3", "T1", "ab" * 32, TransactionStatus.PENDING, NOW, csr_der=b"0"), None, NOW
    )
    counts = await store.integration_counts(NOW, NOW + timedelta(days=30))
    assert counts == [
        IntegrationCounts("int1", valid=3, revoked=1, expiring=2, pending=0),
        IntegrationCounts("int2", valid=3, revoked=0, expiring=2, pending=0),
        IntegrationCounts("int3", valid=0, revoked=0, expiring=0, pending=1),
    ]
    # The counts follow revocations and deletions.
    assert await store.revoke_certificate("a2", "keyCompromise", NOW)
    await store.delete_integration("int2", NOW)
    counts = await store.integration_counts(NOW, NOW + timedelta(days=30))
    assert counts[:2] == [
        IntegrationCounts("int1", valid=2, revoked=2, expiring=1, pending=0),
        IntegrationCounts("int2", valid=0, revoked=3, expiring=0, pending=0),
    ]
    # A horizon inside today counts only what expires before it.
    counts = await store.integration_counts(NOW, NOW + 2 * h)
    assert counts[0] == IntegrationCounts("int1", valid=2, revoked=2, expiring=1, pending=0)


async def test_search_by_subject_serial_and_filters(harness: Harness) -> None:
    store = harness.store
    await store.create_integration(integration("int1"))
    await store.create_integration(integration("int2"))
    await harness.bulk_insert_certificates(
        [
            certificate("c0ffee", subject="CN=Alice Laptop,O=Example", not_after=NOW + timedelta(days=5)),
            certificate("c0ffef", subject="CN=bob-phone,O=Example", not_after=NOW + timedelta(days=50)),
            certificate("abc", "int2", subject=r"CN=\<img src=x\>,O=Ex%ample", not_after=NOW + timedelta(days=1)),
            certificate("abd", subject="CN=old,O=Example", not_after=NOW - timedelta(days=1)),
            certificate("abe", subject="CN=gone,O=Example", status=CertStatus.REVOKED, revoked_at=NOW),
        ]
    )

    async def serials(**kw: object) -> list[str]:
        return [r.serial for r in await store.search_certificates(CertificateSearch(now=NOW, **kw))]  # type: ignore[arg-type]

    assert await serials() == ["abd", "abc", "c0ffee", "c0ffef", "abe"]  # by expiry
    assert await serials(text="alice") == ["c0ffee"]  # the start of the CN value, ASCII case folded
    assert await serials(text="ALICE LAP") == ["c0ffee"]
    assert await serials(text="cn=alice laptop,o=EXAMPLE") == ["c0ffee"]  # the start of the subject
    assert await serials(text="laptop") == []  # not a substring search
    assert await serials(text="O=Example") == []
    assert await serials(text="C0:FF") == ["c0ffee", "c0ffef"]  # serial prefix, colons and case ignored
    assert await serials(text="00c0ffee") == ["c0ffee"]
    assert await serials(text="<img") == ["abc"]
    assert await serials(text="<img src=x>") == ["abc"]  # escaped as stored (RFC 4514)
    assert await serials(text=r"CN=\<img src=x\>,O=Ex%") == ["abc"]  # % is a character like any other
    assert await serials(text="b%b") == []  # not a wildcard: "bob" does not match
    assert await serials(text="b") == ["c0ffef"]  # "CN=b..." (and "b" is a serial prefix of none)
    assert await serials(text="\U0010ffff") == []
    assert await serials(integration_id="int2") == ["abc"]
    assert await serials(status=CertSearchStatus.VALID) == ["abc", "c0ffee", "c0ffef"]
    assert await serials(status=CertSearchStatus.EXPIRED) == ["abd"]
    assert await serials(status=CertSearchStatus.REVOKED) == ["abe"]
    assert await serials(expiring_before=NOW + timedelta(days=30)) == ["abc", "c0ffee"]
    assert await serials(limit=2, offset=1) == ["abc", "c0ffee"]
    assert await serials(text="nothing-like-this") == []


async def test_revoked_pages_by_expiry_whichever_way_is_cheaper(harness: Harness) -> None:
    """Pages of revoked certificates of every integration: shallow pages walk the expiry index,
    deeper ones sort the revoked rows' keys (store.search.revoked_page_walks_expiry); both give
    the same rows in the same order, ties of expiry broken by serial."""
    store = harness.store
    for name in ("int1", "int2", "int3"):
        await store.create_integration(integration(name))
    rows = [
        certificate(
            f"{0xA000 + n:x}",
            f"int{n % 3 + 1}",
            # Three certificates share each expiry; listed out of order.
            not_after=NOW + timedelta(days=(n * 37) % 40 + 1),
            **({"status": CertStatus.REVOKED, "revoked_at": NOW} if n % 3 == 0 or n % 5 == 0 else {}),
        )
        for n in range(120)
    ]
    await harness.bulk_insert_certificates(rows)
    revoked = sorted((r for r in rows if r.status is CertStatus.REVOKED), key=lambda r: (r.not_after, r.serial))
    expected = [r.serial for r in revoked]
    assert len(expected) == 56
    walks = {
        offset: revoked_page_walks_expiry(offset=offset, limit=5, certificates=len(rows), revoked=len(expected))
        for offset in range(0, 60, 5)
    }
    assert walks[0] and walks[20] and not walks[25] and not walks[55]  # both ways are taken below
    for offset in walks:
        page = await store.search_certificates(
            CertificateSearch(now=NOW, status=CertSearchStatus.REVOKED, limit=5, offset=offset)
        )
        assert [r.serial for r in page] == expected[offset : offset + 5], offset
    # A deleted integration's certificates are revoked (store/revocation_rule.py): every one of
    # them joins the pages, in expiry order, through either way (both taken: the deep pages sort).
    await store.delete_integration("int2", NOW)
    revoked = sorted(
        (r for r in rows if r.status is CertStatus.REVOKED or r.integration_id == "int2"),
        key=lambda r: (r.not_after, r.serial),
    )
    expected = [r.serial for r in revoked]
    assert len(expected) == 88
    for offset in range(0, 90, 5):
        page = await store.search_certificates(
            CertificateSearch(now=NOW, status=CertSearchStatus.REVOKED, limit=5, offset=offset)
        )
        assert [r.serial for r in page] == expected[offset : offset + 5], offset
        assert all(r.status is CertStatus.REVOKED for r in page)
    # And of one integration: the deleted one (every row) and a live one (its own revoked rows).
    for name in ("int2", "int1"):
        mine = [r for r in revoked if r.integration_id == name]
        for offset in range(0, len(mine) + 5, 5):
            search = CertificateSearch(
                now=NOW, integration_id=name, status=CertSearchStatus.REVOKED, limit=5, offset=offset
            )
            page = await store.search_certificates(search)
            assert [r.serial for r in page] == [r.serial for r in mine[offset : offset + 5]], (name, offset)


def test_revoked_page_walks_expiry_while_revoked_rows_are_dense() -> None:
    # A million certificates, 2 % revoked: pages 1 to 4 of 50 walk (about 5,000 rows for page 2).
    assert revoked_page_walks_expiry(offset=50, limit=51, certificates=1_000_000, revoked=20_000)
    assert not revoked_page_walks_expiry(offset=500, limit=51, certificates=1_000_000, revoked=20_000)
    # A few revoked among many: reading them is cheaper than walking past the rest.
    assert not revoked_page_walks_expiry(offset=0, limit=51, certificates=1_000_000, revoked=100)
    assert not revoked_page_walks_expiry(offset=0, limit=51, certificates=1_000_000, revoked=0)
    assert not revoked_page_walks_expiry(offset=0, limit=51, certificates=0, revoked=0)


async def test_keyset_pages_follow_expiry_then_serial(harness: Harness) -> None:
    """``after`` (``cert list``'s cursor) continues strictly after the given (notAfter, serial):
    rows with the same notAfter are split by serial, none repeated, none skipped."""
    store = harness.store
    await store.create_integration(integration("int1"))
    same = NOW + timedelta(days=7)
    rows = [certificate(s, not_after=same) for s in ("a1", "a2", "a3")]
    rows += [certificate("b1", not_after=NOW + timedelta(days=1)), certificate("c1", not_after=NOW + timedelta(days=9))]
    rows.append(certificate("ab1", status=CertStatus.REVOKED, revoked_at=NOW, not_after=same))
    await harness.bulk_insert_certificates(rows)

    async def page(after: tuple[object, str] | None, **kw: object) -> list[str]:
        search = CertificateSearch(now=NOW, limit=2, after=after, **kw)  # type: ignore[arg-type]
        return [r.serial for r in await store.search_certificates(search)]

    assert await page(None) == ["b1", "a1"]
    assert await page((same, "a1")) == ["a2", "a3"]
    assert await page((same, "a3")) == ["ab1", "c1"]
    assert await page((NOW + timedelta(days=9), "c1")) == []
    # With a filter the cursor only narrows it.
    assert await page((same, "a1"), status=CertSearchStatus.VALID) == ["a2", "a3"]
    assert await page((same, "a3"), status=CertSearchStatus.VALID) == ["c1"]
    # Revoked ones of every integration too (not the offset pages' own query shape).
    assert await page(None, status=CertSearchStatus.REVOKED) == ["ab1"]
    assert await page((same, "ab1"), status=CertSearchStatus.REVOKED) == []


async def test_the_last_enabled_admin_is_kept_even_when_two_disable_each_other_at_once(harness: Harness) -> None:
    """``keep_an_admin``: the check and the update are one transaction. Two admins disabling each
    other at the same moment (each the other's console request, on its own connection) leave one
    enabled; before, each read the other as enabled and both were disabled."""
    store = harness.store
    other = await harness.second_store()
    await store.create_admin(admin("alice"))
    await store.create_admin(admin("bob"))
    await store.create_admin(admin("olga", AdminRole.OPERATOR))
    results = await asyncio.gather(
        store.disable_admin("alice", NOW, keep_an_admin=True),
        other.disable_admin("bob", NOW, keep_an_admin=True),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["LastAdmin", "bool"]
    enabled = [a.name for a in await store.list_admins() if a.role is AdminRole.ADMIN and not a.disabled]
    assert len(enabled) == 1
    with pytest.raises(LastAdmin):
        await store.disable_admin(enabled[0], NOW, keep_an_admin=True)
    # Not an admin, or without the flag (the CLI): no such limit.
    assert await store.disable_admin("olga", NOW, keep_an_admin=True) is True
    assert await store.disable_admin(enabled[0], NOW) is True
    assert await store.disable_admin("nobody", NOW, keep_an_admin=True) is False
