"""Failed-login throttling for the challenge URL, per (user name, client address).

Policy (``ChallengeConfig``): more than ``lockout_failures`` failed logins for one
(user name, client address) pair within ``lockout_window_seconds`` lock that pair
out for ``lockout_seconds``. While locked, every login attempt of the pair, right
or wrong, is answered with HTTP 429 Too Many Requests and a ``Retry-After``
header, without checking the credentials (the attempt that trips the lock is
answered 429 too). A successful login clears the pair's failures. Failures while
locked are not counted and do not extend the lock; counting starts afresh after it.

The window is fixed, not sliding: it opens at the pair's first failure (or the
first one after the previous window ended) and the failures in it are counted
until ``lockout_window_seconds`` later. So the lock trips on the
(``lockout_failures`` + 1)-th failure within one window; failures straddling two
windows can reach up to twice the threshold in a window's length before a lock.

Keying by the pair, not by the user name alone, means a stranger guessing
passwords cannot lock the real MDM server out from another address. The
passwords are 160-bit random values, so the lock is about noise and load, not
about guessing odds.

State is in the store (table ``auth_throttle``), shared by every worker process and
every host on the same database, so the threshold holds however connections are
spread. Each failure is counted atomically (one transaction, see ``Store.auth_failure``).
The key is the SHA-256 of the normalised pair: no user names are stored. Rows whose
window and lock are both over are purged, a bounded number per failure.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable

from store.base import Store


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Lockout:
    """Fixed-window failure counter with timed lock-out, kept in ``store``; ``clock`` returns aware UTC datetimes."""

    def __init__(
        self,
        store: Store,
        max_failures: int,
        window_seconds: float,
        lockout_seconds: float,
        *,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        self._store = store
        self._max_failures = max_failures
        self._window = dt.timedelta(seconds=window_seconds)
        self._lockout = dt.timedelta(seconds=lockout_seconds)
        self._clock = clock

    @staticmethod
    def key(username: str, address: str) -> str:
        """Normalised key: user names compare case-insensitively and are length-capped; hashed."""
        name = username.lower()[:256]
        # Length-prefixed, so no (name, address) split of one string collides with another.
        material = f"{len(name)}:{name}{address}".encode("utf-8", "surrogatepass")
        return hashlib.sha256(material).hexdigest()

    async def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may try again; 0 when it is not locked."""
        now = self._clock()
        until = await self._store.auth_locked_until(key, now)
        return 0.0 if until is None else max(0.0, (until - now).total_seconds())

    async def record_failure(self, key: str) -> float:
        """Count a failure; returns the lock time left (> 0 when the pair is locked after it)."""
        now = self._clock()
        until = await self._store.auth_failure(key, now, self._window, self._max_failures, self._lockout)
        return 0.0 if until is None else max(0.0, (until - now).total_seconds())

    async def record_success(self, key: str) -> None:
        """Forget the pair's failures (a lock that a concurrent failure set meanwhile stays)."""
        await self._store.auth_success(key, self._clock())
