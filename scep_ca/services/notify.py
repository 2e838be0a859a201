"""Expiry notifications to ``notify.webhook_url`` (issue 21, item 6).

step-ca-style signed JSON, as the webhook validator sends it (``X-Smallstep-Signature``:
lowercase hex HMAC-SHA256 of the exact body; ``X-Smallstep-Webhook-ID``), for:

- ``ra_renewed``: an RA certificate was renewed (by this server, at start or in its daily round);
- ``ca_expiring``: daily while the CA certificate is within 90 or 30 days of its notAfter;
- ``certificates_expiring``: a daily summary per integration of valid certificates
  expiring within 30 days.

Sending never blocks the caller: each notification is a background task that tries
``notify.attempts`` times, ``notify.retry_seconds`` apart, and logs what failed. Each attempt
is one call of the validators' HTTP client, which repeats a network error or 5xx once itself.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Protocol

from config.clock import Clock, utc_now
from config.model import NotifyConfig
from scep_ca.pki.ca import CAIdentity
from scep_ca.pki.ra_renewal import Renewed
from scep_ca.services.expiry import ACTION_DAYS, EXPIRING_WITHIN, ca_warning_level, days_left, read_counts
from scep_ca.services.ra_renewal import LogRenewalEvents
from scep_ca.services.validators.http import HttpClient, HttpFailure
from scep_ca.services.validators.webhook import SIGNATURE_HEADER, WEBHOOK_ID_HEADER, sign
from store.base import CertificateStatsStore, LeaseStore


class DailyNoticeStore(CertificateStatsStore, LeaseStore, Protocol):
    """The store roles the daily notices use."""


log = logging.getLogger(__name__)

DAILY_LEASE = "notify-daily"
# Under a day, so that a daily round a little early still sends.
DAILY_LEASE_TTL = dt.timedelta(hours=23)
# Only these CA levels are sent (180 days is in the logs, metrics and status only).
NOTIFY_CA_DAYS = (90, 30)


class NotifySecretError(ValueError):
    """The signing secret is not base64 (step-ca's webhook secret format)."""


def decode_secret(value: str) -> bytes:
    try:
        secret = base64.b64decode(value.strip(), validate=True)
    except binascii.Error as exc:
        raise NotifySecretError("the notification secret must be base64, as step-ca's webhook secrets are") from exc
    if len(secret) < 16:
        raise NotifySecretError("the notification secret must decode to at least 16 bytes")
    return secret


def _iso(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


class Notifier:
    def __init__(
        self,
        settings: NotifyConfig,
        secret: bytes,
        http: HttpClient | None = None,
        clock: Clock = utc_now,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        assert settings.webhook_url is not None
        self._url = settings.webhook_url
        self._settings = settings
        self._secret = secret
        self._http = http or HttpClient()
        self._clock = clock
        self._sleep = sleep
        self._tasks: set[asyncio.Task[bool]] = set()

    def send(self, event: str, **fields: object) -> asyncio.Task[bool]:
        """Schedule one notification; returns at once (the task says whether it was delivered)."""
        body = {"timestamp": self._clock().strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "event": event, **fields}
        task = asyncio.create_task(self._deliver(event, json.dumps(body, separators=(",", ":")).encode()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _deliver(self, event: str, body: bytes) -> bool:
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self._secret, body),
            WEBHOOK_ID_HEADER: str(uuid.uuid4()),
        }
        for attempt in range(1, self._settings.attempts + 1):
            try:
                answer = await self._http.request(
                    "POST", self._url, headers=headers, body=body, timeout=self._settings.timeout_seconds
                )
            except HttpFailure as exc:
                problem = str(exc)
            else:
                if 200 <= answer.status < 300:
                    return True
                problem = f"HTTP {answer.status}"
            log.warning("notification %s, attempt %d of %d: %s", event, attempt, self._settings.attempts, problem)
            if attempt < self._settings.attempts:
                await self._sleep(self._settings.retry_seconds)
        log.error("notification %s was not delivered after %d attempts", event, self._settings.attempts)
        return False

    async def drain(self) -> None:
        """Wait until every scheduled notification is delivered or given up (the CLI, before it exits)."""
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._http.close()

    # -- the events ---------------------------------------------------------------------

    def ra_renewed(self, renewed: Renewed) -> None:
        self.send(
            "ra_renewed",
            usage=renewed.usage,
            oldSerialNumber=format(renewed.old.serial_number, "x"),
            serialNumber=format(renewed.new.serial_number, "x"),
            notAfter=_iso(renewed.new.not_valid_after_utc),
        )

    def ca_expiring(self, ca: CAIdentity, now: dt.datetime) -> bool:
        level = ca_warning_level(ca.cert.not_valid_after_utc, now)
        if level not in NOTIFY_CA_DAYS:
            return False
        self.send(
            "ca_expiring",
            within=f"{level}d",
            daysLeft=days_left(ca.cert.not_valid_after_utc, now),
            notAfter=_iso(ca.cert.not_valid_after_utc),
            subject=ca.cert.subject.rfc4514_string(),
            action="scep-ca ca rollover, then scep-ca ca activate-next",
        )
        return True

    async def certificates_expiring(self, store: CertificateStatsStore, now: dt.datetime) -> int:
        """One notification per integration with valid certificates expiring within 30 days."""
        sent = 0
        for row in await read_counts(store, now):
            expiring = dict(zip(EXPIRING_WITHIN, row.expiring, strict=True))
            if expiring["30d"]:
                self.send(
                    "certificates_expiring",
                    integration=row.integration_id,
                    within=f"{ACTION_DAYS}d",
                    count=expiring["30d"],
                    within7d=expiring["7d"],
                    valid=row.valid,
                )
                sent += 1
        return sent


class DailyNotices:
    """The daily notifications, once a day across every worker and host (a store lease of 23 hours)."""

    def __init__(
        self,
        notifier: Notifier,
        store: DailyNoticeStore,
        load: Callable[[], CAIdentity],
        clock: Clock = utc_now,
    ) -> None:
        self._notifier = notifier
        self._store = store
        self._load = load
        self._clock = clock

    async def run(self) -> bool:
        """Send today's notices unless another process did; True when this one sent them."""
        now = self._clock()
        if await self._store.acquire_lease(DAILY_LEASE, now, DAILY_LEASE_TTL) is None:
            return False
        self._notifier.ca_expiring(self._load(), now)
        await self._notifier.certificates_expiring(self._store, now)
        return True


class NotifyingRenewalEvents(LogRenewalEvents):
    """The log line, and the ``ra_renewed`` notification."""

    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier

    def ra_renewed(self, renewed: Renewed) -> None:
        super().ra_renewed(renewed)
        self._notifier.ra_renewed(renewed)
