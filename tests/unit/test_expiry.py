"""Expiry thresholds and RA due dates (pure: certificates and times only)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from scep_ca.pki.ca import create_ca
from scep_ca.pki.ra_renewal import due
from scep_ca.services.expiry import ca_warning, ca_warning_level, days_left, ra_warnings

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("left_days", "level"),
    [(400, None), (180, None), (179.9, 180), (90, 180), (89.5, 90), (30, 90), (29, 30), (1, 30), (-3, 30)],
)
def test_ca_warning_levels(left_days: float, level: int | None) -> None:
    assert ca_warning_level(NOW + dt.timedelta(days=left_days), NOW) == level


def test_days_left_counts_whole_days() -> None:
    assert days_left(NOW + dt.timedelta(days=29, hours=23), NOW) == 29
    assert days_left(NOW - dt.timedelta(hours=1), NOW) == -1


def test_ca_warning_says_how_to_roll_over(tmp_path: Path) -> None:
    ca = create_ca(tmp_path / "ca", subject="CN=W", key_size=2048, validity_days=60, passphrase=None, now=NOW)
    warning = ca_warning(ca, NOW)
    assert warning is not None
    assert "within 90 days" in warning and "scep-ca ca rollover" in warning and "activate-next" in warning


def test_due_ras_and_ras_that_end_with_the_ca(tmp_path: Path) -> None:
    ca = create_ca(
        tmp_path / "a", subject="CN=D", key_size=2048, validity_days=3650, passphrase=None, now=NOW, ra_validity_days=20
    )
    assert [ra.usage for ra in due(ca, NOW, 30)] == ["signing", "encryption"]
    assert due(ca, NOW, 10) == ()
    short = create_ca(tmp_path / "b", subject="CN=S", key_size=2048, validity_days=20, passphrase=None, now=NOW)
    # Capped at the CA's notAfter: renewing cannot help, so nothing is due and the warning says why.
    assert due(short, NOW, 30) == ()
    assert all("expires with the CA certificate" in w for w in ra_warnings(short, NOW, 30))
    assert len(ra_warnings(short, NOW, 30)) == 2
