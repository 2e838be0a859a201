"""``audit replay``'s checks (pure): authentic events that continue their chains, nothing else;
and the CRL number margin a restore adds."""

from __future__ import annotations

import datetime as dt

import pytest

from audit import encoding
from audit.keys import FileMacKey
from scep_ca.services.backup.crypt import BackupError
from scep_ca.services.backup.replay import check_events
from scep_ca.services.backup.service import CRL_MARGIN_BASE, CRL_MARGIN_PER_SECOND, crl_margin
from store.base import AuditRecord

KEY = FileMacKey(b"k" * 32)
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _chain(writer: str, n: int, start: int = 1, prev: str = encoding.GENESIS) -> list[AuditRecord]:
    records = []
    for seq in range(start, start + n):
        record = encoding.seal(KEY, writer, seq, T0 + dt.timedelta(seconds=seq), "system", "x", "y", {"n": seq}, prev)
        records.append(record)
        prev = record.mac
    return records


def test_events_after_the_restored_heads_are_kept_in_time_order() -> None:
    old = _chain("w/1", 5)
    other = _chain("w/2", 2)
    heads = {"w/1": (3, old[2].mac)}
    fresh = check_events(KEY, [*other, *old], heads)
    assert [(r.writer, r.seq) for r in fresh] == [("w/2", 1), ("w/2", 2), ("w/1", 4), ("w/1", 5)]


def test_a_gap_in_a_chain_is_refused() -> None:
    old = _chain("w/1", 5)
    with pytest.raises(BackupError, match="w/1#5: does not continue its chain"):
        check_events(KEY, [*old[:3], old[4]], {"w/1": (3, old[2].mac)})
    # A chain that starts past the restored head (its first events lost) too.
    with pytest.raises(BackupError, match="w/1#3: does not continue"):
        check_events(KEY, old[2:], {"w/1": (1, old[0].mac)})


def test_a_record_under_another_key_is_refused() -> None:
    forged = encoding.seal(FileMacKey(b"z" * 32), "w/9", 1, T0, "system", "x", "y", {}, encoding.GENESIS)
    with pytest.raises(BackupError, match=r"w/9#1 .*does not verify"):
        check_events(KEY, [*_chain("w/1", 2), forged], {})


def test_crl_margin_grows_with_the_time_since_the_backup() -> None:
    assert crl_margin(T0, T0) == CRL_MARGIN_BASE
    assert crl_margin(T0, T0 + dt.timedelta(hours=1)) == CRL_MARGIN_BASE + 3600 * CRL_MARGIN_PER_SECOND
    # A restore clock behind the backup's never lowers it.
    assert crl_margin(T0, T0 - dt.timedelta(days=1)) == CRL_MARGIN_BASE
