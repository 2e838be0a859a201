"""Failed-login throttling for the challenge URL, per (user name, client address).

Policy (``ChallengeConfig``): more than ``lockout_failures`` failed logins for one
(user name, client address) pair within ``lockout_window_seconds`` lock that pair
out for ``lockout_seconds``. While locked, every login attempt of the pair, right
or wrong, is answered with HTTP 429 Too Many Requests and a ``Retry-After``
header, without checking the credentials (the attempt that trips the lock is
answered 429 too). A successful login clears the pair's failures.

Keying by the pair, not by the user name alone, means a stranger guessing
passwords cannot lock the real MDM server out from another address. The
passwords are 160-bit random values, so the lock is about noise and load, not
about guessing odds.

State is in memory, per process (each worker counts on its own), and bounded by
``max_entries``: beyond it, idle pairs are dropped first, then the oldest.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

LockKey = tuple[str, str]


@dataclass
class _Entry:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0


class Lockout:
    """Sliding-window failure counter with timed lock-out; ``clock`` returns seconds."""

    def __init__(
        self,
        max_failures: int,
        window_seconds: float,
        lockout_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 100_000,
    ) -> None:
        self._max_failures = max_failures
        self._window = window_seconds
        self._lockout = lockout_seconds
        self._clock = clock
        self._max_entries = max_entries
        self._entries: dict[LockKey, _Entry] = {}

    @staticmethod
    def key(username: str, address: str) -> LockKey:
        """Normalised key: user names compare case-insensitively and are length-capped."""
        return (username.lower()[:256], address)

    def retry_after(self, key: LockKey) -> float:
        """Seconds until ``key`` may try again; 0 when it is not locked."""
        entry = self._entries.get(key)
        if entry is None:
            return 0.0
        return max(0.0, entry.locked_until - self._clock())

    def record_failure(self, key: LockKey) -> float:
        """Count a failure; returns the lock time left (> 0 when this failure locked the pair)."""
        now = self._clock()
        entry = self._entries.get(key)
        if entry is None:
            self._make_room(now)
            entry = self._entries[key] = _Entry()
        self._expire(entry, now)
        entry.failures.append(now)
        if len(entry.failures) > self._max_failures:
            entry.locked_until = now + self._lockout
            entry.failures.clear()
        return max(0.0, entry.locked_until - now)

    def record_success(self, key: LockKey) -> None:
        """Forget the pair's failures."""
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self, entry: _Entry, now: float) -> None:
        while entry.failures and entry.failures[0] <= now - self._window:
            entry.failures.popleft()

    def _idle(self, entry: _Entry, now: float) -> bool:
        self._expire(entry, now)
        return not entry.failures and entry.locked_until <= now

    def _make_room(self, now: float) -> None:
        if len(self._entries) < self._max_entries:
            return
        for stale in [k for k, e in self._entries.items() if self._idle(e, now)]:
            del self._entries[stale]
        # Still full: drop the oldest pairs (dicts keep insertion order).
        excess = len(self._entries) - self._max_entries + 1
        for oldest in list(self._entries)[: max(0, excess)]:
            del self._entries[oldest]
