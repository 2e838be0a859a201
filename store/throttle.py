"""The failed-login throttle's arithmetic, shared by every store backend.

Pure: a key's row (or None) in, the row to write (None: delete it) and the answer out. Each
backend runs these inside one transaction that holds the key's row (SQLite: ``BEGIN
IMMEDIATE``; PostgreSQL: ``SELECT ... FOR UPDATE``), so concurrent reservations of one key
from any process or host see each other's counts. The semantics are documented on
``Store.auth_reserve`` and ``Store.auth_release``.

Invariant within a window: ``failures + pending <= max_attempts``. A reservation adds to
``pending``, a failed release moves one from ``pending`` to ``failures``, a successful one
removes it from ``pending`` and clears ``failures``. So without a success no more than
``max_attempts`` checks start in one window. A release carries its reservation's
``window_start`` and moves counts only in that window: a check still running when its window
ends (or when a lock replaced it) cannot free a slot of the next window.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from store.base import AuthReservation, AuthVerdict


@dataclass(frozen=True)
class ThrottleRow:
    window_start: datetime
    failures: int  # failed checks in the window
    pending: int  # checks reserved in the window and not yet released
    locked_until: datetime | None

    def expires_at(self, window: timedelta) -> datetime:
        """When the row stops mattering (window and lock both over), for the purge."""
        end = self.window_start + window
        return end if self.locked_until is None else max(end, self.locked_until)


def reserve(
    row: ThrottleRow | None, now: datetime, window: timedelta, max_attempts: int, lockout: timedelta
) -> tuple[ThrottleRow, AuthReservation]:
    """The row after one reservation attempt, and the answer."""
    if row is not None and row.locked_until is not None and row.locked_until > now:
        return row, AuthReservation(AuthVerdict.LOCKED, row.window_start, row.locked_until)
    if row is None or row.window_start + window <= now or row.locked_until is not None:
        # No window, or it ended, or a lock ended: counting starts afresh.
        row = ThrottleRow(window_start=now, failures=0, pending=0, locked_until=None)
    if row.failures + row.pending < max_attempts:
        row = replace(row, pending=row.pending + 1)
        return row, AuthReservation(AuthVerdict.ALLOWED, row.window_start)
    if row.failures >= max_attempts:
        until = now + lockout
        locked = ThrottleRow(window_start=now, failures=0, pending=0, locked_until=until)
        return locked, AuthReservation(AuthVerdict.LOCKED, now, until)
    return row, AuthReservation(AuthVerdict.BUSY, row.window_start)


def release(row: ThrottleRow | None, window_start: datetime, *, failed: bool) -> ThrottleRow | None:
    """The row after a reservation of the window ``window_start`` ended; None: delete the row."""
    if row is None:
        return None  # purged: its window and any lock are over, so there is nothing to count in
    same_window = row.window_start == window_start and row.locked_until is None
    pending = max(0, row.pending - 1) if same_window else row.pending
    if failed:
        if not same_window:
            return row
        return replace(row, failures=row.failures + 1, pending=pending)
    row = replace(row, failures=0, pending=pending)
    if row.pending == 0 and row.locked_until is None:
        return None
    return row
