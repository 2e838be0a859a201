"""What expires when: CA and RA certificates, the CRL, the fleet of device certificates.

One place for the thresholds and texts that the logs, ``/metrics``, ``scep-ca status``
and the notifications share (issue 21, items 2, 3 and 5).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from config.clock import Clock, utc_now
from scep_ca.pki.ca import CAIdentity
from scep_ca.pki.ra_renewal import ends_with_ca, ra_certificates
from store.base import CertificateCounts, CertificateStatsStore, StoreUnavailable

log = logging.getLogger(__name__)

# Days before the CA's notAfter at which it is announced, loudest last.
CA_WARNING_DAYS = (180, 90, 30)
# Anything due within this many days makes ``scep-ca status`` exit 1.
ACTION_DAYS = 30
# The ``within`` label of scep_ca_certificates_expiring and its horizon.
EXPIRING_WITHIN = MappingProxyType({"7d": dt.timedelta(days=7), "30d": dt.timedelta(days=30)})
ROLLOVER_HINT = (
    "plan the rollover: `scep-ca ca rollover` creates the next CA (announced by GetNextCACert), "
    "then `scep-ca ca activate-next` switches issuance once clients have it"
)


def days_left(not_after: dt.datetime, now: dt.datetime) -> int:
    """Whole days until ``not_after`` (negative once passed)."""
    return (not_after - now) // dt.timedelta(days=1)


def ca_warning_level(not_after: dt.datetime, now: dt.datetime) -> int | None:
    """The smallest threshold of ``CA_WARNING_DAYS`` that ``not_after`` is within, or None."""
    left = days_left(not_after, now)
    within = [days for days in CA_WARNING_DAYS if left < days]
    return min(within) if within else None


def ca_warning(ca: CAIdentity, now: dt.datetime) -> str | None:
    """The CA expiry warning (with how to roll over), or None when more than 180 days are left."""
    level = ca_warning_level(ca.cert.not_valid_after_utc, now)
    if level is None:
        return None
    left = days_left(ca.cert.not_valid_after_utc, now)
    when = ca.cert.not_valid_after_utc.strftime("%Y-%m-%d")
    return f"the CA certificate expires on {when} ({left} days left, within {level} days): {ROLLOVER_HINT}"


def ra_warnings(ca: CAIdentity, now: dt.datetime, renew_before_days: int) -> list[str]:
    """RA certificates that should have been renewed already (renewal failed or is off)."""
    problems = []
    for ra in ra_certificates(ca):
        left = days_left(ra.not_after, now)
        if left < renew_before_days and ends_with_ca(ca, ra):
            problems.append(
                f"the {ra.usage} RA certificate expires with the CA certificate in {left} days; "
                f"renewal cannot outlive the CA: {ROLLOVER_HINT}"
            )
        elif left < renew_before_days:
            problems.append(
                f"the {ra.usage} RA certificate expires in {left} days and was not renewed: "
                "check the server log, or run `scep-ca ra renew`"
            )
    return problems


def log_expiry(ca: CAIdentity, now: dt.datetime, renew_before_days: int) -> None:
    """At start and daily: one warning line per problem (operators alert on WARNING)."""
    for line in [ca_warning(ca, now), *ra_warnings(ca, now, renew_before_days)]:
        if line is not None:
            log.warning("event=expiry_warning %s", line)


@dataclass(frozen=True)
class Counts:
    """The certificate counts and when they were computed (monotonic seconds)."""

    rows: Sequence[CertificateCounts]
    computed_at: float


async def read_counts(store: CertificateStatsStore, now: dt.datetime) -> Sequence[CertificateCounts]:
    return await store.certificate_counts(now, tuple(EXPIRING_WITHIN.values()))


class CountsCache:
    """Per-integration counts for ``/metrics``, at most ``max_age`` seconds old when asked for.

    The count is one aggregate scan of the certificates table (seconds at 1,000,000 rows in
    SQLite, bench/metrics_scrape.py); a scrape must stay under 100 ms, so a scrape never waits
    for it: the app starts the first count when it starts (``start``), and a scrape that finds
    the counts stale starts one refresh in the background and answers with what it has (no
    count series until the first count is done)."""

    def __init__(
        self,
        store: CertificateStatsStore,
        max_age: float,
        clock: Clock = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._max_age = max_age
        self._clock = clock
        self._monotonic = monotonic
        self._counts: Counts | None = None
        self._refreshing: asyncio.Task[None] | None = None
        # Whether the last count reached the store (``scep_ca_store_up``); None before the first.
        self.store_up: bool | None = None

    def start(self) -> None:
        """Begin a count in the background unless one runs (needs the running event loop)."""
        if self._refreshing is None:
            self._refreshing = asyncio.create_task(self._refresh())
            self._refreshing.add_done_callback(self._done)

    async def current(self) -> Sequence[CertificateCounts] | None:
        """The latest counts (None until the first count succeeds); never waits for a count."""
        if self._counts is None or self._monotonic() - self._counts.computed_at >= self._max_age:
            self.start()
        return None if self._counts is None else self._counts.rows

    def _done(self, task: asyncio.Task[None]) -> None:
        self._refreshing = None

    async def _refresh(self) -> None:
        started = self._monotonic()
        try:
            rows = await read_counts(self._store, self._clock())
        except StoreUnavailable as exc:
            log.warning("metrics: could not count certificates: the store is unavailable: %s", exc)
            self.store_up = False
            return
        except Exception:
            log.warning("metrics: could not count certificates", exc_info=True)
            self.store_up = False
            return
        self.store_up = True
        self._counts = Counts(rows, started)

    async def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
            await asyncio.gather(self._refreshing, return_exceptions=True)
