"""Failed-login throttling for the challenge URL: a budget of credential checks per key.

Keys. A login presenting the user name of a live integration is keyed by (that user name,
client address); a login presenting any other user name by the client address alone
(``address_key``), so a flood of random user names from one address shares one budget and
one row, and the table does not grow with the names tried.

Policy (``ChallengeConfig``). Before any credential is checked, the attempt is reserved in
the store (``Store.auth_reserve``: one atomic transaction that counts it and answers). In one
fixed window of ``lockout_window_seconds`` a key gets at most ``lockout_failures`` checks:
every reservation counts as in flight until its check ends, a failed check counts as a
failure, a successful one is released and clears the key's failures. So at most
``lockout_failures`` checks run per key and window, however many requests arrive at once and
whichever worker process or host receives them. Answers without a check:

* the window's failures already reached ``lockout_failures``: the key is locked for
  ``lockout_seconds`` from this attempt, and it and every later attempt of the key, right or
  wrong, gets HTTP 429 Too Many Requests with ``Retry-After`` until the lock ends. Attempts
  while locked are not counted and do not extend the lock; counting starts afresh after it.
* checks still in flight hold the rest of the budget: HTTP 429 with ``Retry-After: 1``, no
  lock (the checks in flight may yet succeed, as when an MDM fetches many challenges at once).

So the ``lockout_failures``-th failure in a window is still answered 401, and the next
attempt trips the lock (429). The window is fixed, not sliding: it opens at the key's first
reservation (or the first after the previous window or lock ended) and lasts
``lockout_window_seconds``; checks straddling two windows can reach twice the budget in one
window's length. A reservation whose check is still running when its window ends counts in
neither window.

IPv6: a client's address counts by its /64 (``budget_address``). One subscriber line or host
usually gets a whole /64 (RFC 6177) and can pick any of its 2^64 addresses, so keying by the
full address would give such a client as many budgets as it likes.

Keying by the pair, not by the user name alone, means a stranger guessing passwords cannot
lock the real MDM server out from another address. The passwords are 160-bit random values,
so the budget is about noise and load (each Basic check is ~0.1 s of scrypt and 32 MiB), not
about guessing odds.

State is in the store (table ``auth_throttle``), shared by every worker process and every
host on the same database. Keys are SHA-256 hashes: no user names are stored. A check that
never reports back (its process died) holds its slot until the window ends. Rows whose window
and lock are both over are purged, a bounded number per reservation.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from dataclasses import dataclass

from config.clock import Clock, utc_now
from store.base import AuthVerdict, ThrottleStore

# Retry-After when checks in flight hold the budget: they end within about a second.
BUSY_RETRY_SECONDS = 1.0
# IPv6 clients share one budget per network of this prefix length (see the module docstring).
IPV6_BUDGET_PREFIX = 64


def budget_address(address: str) -> str:
    """The part of a client address a budget is kept for: an IPv6 address's /64, else the address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, IPV6_BUDGET_PREFIX), strict=False))
    return address


@dataclass(frozen=True)
class Attempt:
    """The store's answer to one reservation, as the service needs it."""

    key: str
    window_start: dt.datetime
    allowed: bool
    # Refused: seconds until the key may try again (for Retry-After).
    retry_after: float = 0.0
    # Refused because the key is locked out; tripped: by this very attempt.
    locked: bool = False
    tripped: bool = False


class Lockout:
    """Per-key check budget with timed lock-out, kept in ``store``; ``clock`` returns aware UTC datetimes."""

    def __init__(
        self,
        store: ThrottleStore,
        max_failures: int,
        window_seconds: float,
        lockout_seconds: float,
        *,
        clock: Clock = utc_now,
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
        material = f"{len(name)}:{name}{budget_address(address)}".encode("utf-8", "surrogatepass")
        return hashlib.sha256(material).hexdigest()

    @staticmethod
    def address_key(address: str) -> str:
        """The key of every user name that is not a live integration's, from ``address``."""
        # Not of key()'s "<digits>:" form, so it cannot collide with any pair's key.
        material = f"unknown-user\0{budget_address(address)}"
        return hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()

    async def reserve(self, key: str) -> Attempt:
        """Reserve one check for ``key``; when allowed, report its outcome with ``release``."""
        now = self._clock()
        answer = await self._store.auth_reserve(key, now, self._window, self._max_failures, self._lockout)
        if answer.verdict is AuthVerdict.ALLOWED:
            return Attempt(key, answer.window_start, allowed=True)
        if answer.verdict is AuthVerdict.BUSY or answer.locked_until is None:
            return Attempt(key, answer.window_start, allowed=False, retry_after=BUSY_RETRY_SECONDS)
        wait = max(0.0, (answer.locked_until - now).total_seconds())
        # The store locks until exactly now + lockout when this reservation trips the lock.
        tripped = answer.locked_until == now + self._lockout
        return Attempt(key, answer.window_start, allowed=False, retry_after=wait, locked=True, tripped=tripped)

    async def release(self, attempt: Attempt, *, failed: bool) -> None:
        """End an allowed attempt: a failure counts; a success forgets the key's failures."""
        await self._store.auth_release(attempt.key, attempt.window_start, self._clock(), failed=failed)
