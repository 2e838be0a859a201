"""RA renewal, exactly once across every worker process and host (issue 21, item 1).

Whoever finds an RA certificate within ``ra.renew_before_days`` of its notAfter takes the
store lease ``ra-renewal`` (``store.base.LeaseStore``: a row in SQLite or PostgreSQL, so
workers of one host and every host on one PostgreSQL share it), loads the RA files again
(another process may have renewed them while this one waited) and renews only what is
still due. Processes that find the lease held wait for it, then find nothing due; running
workers pick the new files up at their next reload (``scep_ca.server.ra_reload``). Hosts
therefore share the data directory (a shared volume) or keep the RA keys in a shared token,
as they already must to serve one RA behind a load balancer; a host whose data directory is
a copy finds the renewal claimed and logs what to copy instead of making a second RA.

The file work (``scep_ca.pki.ra_renewal.renew_ra``) is passed in: at ``serve``'s start
with a PKCS#11 token it runs in a forked child (the supervisor holds no token state), so
what was renewed is found by comparing the RA certificates before and after.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from typing import Protocol

from cryptography.hazmat.primitives import hashes

from audit.events import SYSTEM, Event
from audit.service import AuditSink, Draft, NoAudit
from config.clock import Clock, utc_now
from scep_ca.pki.ca import CAIdentity
from scep_ca.pki.ra_renewal import Renewed, due, ra_certificates
from store.base import LeaseStore

log = logging.getLogger(__name__)

LEASE_NAME = "ra-renewal"
# Followed by the SHA-256 of an RA certificate: held from its renewal until it expires.
RENEWED_PREFIX = "ra-renewed:"
# Longer than a renewal takes (two key pairs, even in a slow token); a holder that dies
# blocks the others for this long at most.
LEASE_TTL = dt.timedelta(minutes=10)
LEASE_POLL_SECONDS = 0.25

LoadIdentity = Callable[[], CAIdentity]
RenewFiles = Callable[[CAIdentity, tuple[str, ...]], None]


class RenewalEvents(Protocol):
    """Told once per renewed RA certificate, by the process that renewed it: a log line
    (``LogRenewalEvents``, the default) or a notification too. The audit event
    (``ra.renewed``) is the renewer's own."""

    def ra_renewed(self, renewed: Renewed) -> None: ...


class LogRenewalEvents:
    """One structured log line per renewal (``event=ra_renewed`` plus the certificates' facts)."""

    def ra_renewed(self, renewed: Renewed) -> None:
        log.warning(
            "event=ra_renewed usage=%s old_serial=%x old_not_after=%s new_serial=%x new_not_after=%s "
            "new_sha256=%s: GetCACert now serves the new RA certificate",
            renewed.usage,
            renewed.old.serial_number,
            renewed.old.not_valid_after_utc.isoformat(),
            renewed.new.serial_number,
            renewed.new.not_valid_after_utc.isoformat(),
            renewed.new.fingerprint(hashes.SHA256()).hex(),
        )


class RaRenewer:
    """Renews the RA certificates that are due, once across processes and hosts."""

    def __init__(
        self,
        store: LeaseStore,
        load: LoadIdentity,
        renew_files: RenewFiles,
        renew_before_days: int,
        events: RenewalEvents | None = None,
        clock: Clock = utc_now,
        poll_seconds: float = LEASE_POLL_SECONDS,
        audit: AuditSink | None = None,
        actor: str = SYSTEM,
    ) -> None:
        self._poll_seconds = poll_seconds
        self._store = store
        self._load = load
        self._renew_files = renew_files
        self._renew_before_days = renew_before_days
        self._events = events or LogRenewalEvents()
        self._clock = clock
        self._audit = audit or NoAudit()
        self._actor = actor

    async def renew_due(self, *, force: bool = False) -> tuple[Renewed, ...]:
        """Renew every RA certificate within the window (all of them with ``force``: ``ra renew``).

        Returns what this process renewed: nothing when nothing was due, or when another
        process renewed it while this one waited for the lease."""
        if not force and not self._due(self._load()):
            return ()
        token = await self._wait_for_lease()
        now = self._clock()
        try:
            before = self._load()
            usages = tuple(ra.usage for ra in ra_certificates(before)) if force else self._due(before)
            claims = await self._claim(before, usages, now)
            if not claims:
                return ()
            try:
                self._renew_files(before, tuple(claims))
            except BaseException:
                # Nothing was renewed for good: whoever tries next may claim these again.
                for name, claim in claims.values():
                    await self._store.release_lease(name, claim)
                raise
            renewed = _changes(before, self._load())
        finally:
            await self._store.release_lease(LEASE_NAME, token)
        for item in renewed:
            self._events.ra_renewed(item)
        # Files, not rows: recorded right after the renewal, as the CLI's key operations are.
        await self._audit.append(*(_renewal_event(item, self._actor) for item in renewed))
        return renewed

    async def _wait_for_lease(self) -> int:
        """The renewal lease, once whoever holds it is done (its renewal is then seen on disk)."""
        waited = False
        while True:
            token = await self._store.acquire_lease(LEASE_NAME, self._clock(), LEASE_TTL)
            if token is not None:
                return token
            if not waited:
                log.info("RA renewal: another process holds the renewal lease; waiting for it")
                waited = True
            await asyncio.sleep(self._poll_seconds)

    async def _claim(
        self, identity: CAIdentity, usages: tuple[str, ...], now: dt.datetime
    ) -> dict[str, tuple[str, int]]:
        """Claim each RA certificate's renewal for good (a lease until it expires): usage -> (lease, token).

        A host whose data directory is a copy, not shared, still holds the old RA after
        another host renewed it: the claim stops it from issuing a second, different RA."""
        certs = {ra.usage: ra.cert for ra in ra_certificates(identity)}
        claims: dict[str, tuple[str, int]] = {}
        for usage in usages:
            cert = certs[usage]
            name = f"{RENEWED_PREFIX}{cert.fingerprint(hashes.SHA256()).hex()}"
            ttl = max(cert.not_valid_after_utc - now, dt.timedelta(0)) + LEASE_TTL
            claim = await self._store.acquire_lease(name, now, ttl)
            if claim is None:
                log.error(
                    "the %s RA certificate (serial %x) was renewed by another scep-ca host, but this host's data "
                    "directory still holds the old one: share the data directory between hosts, or copy ra*.pem, "
                    "ra*.key and ra-previous/ from the host that renewed it",
                    usage,
                    cert.serial_number,
                )
                continue
            claims[usage] = (name, claim)
        return claims

    def _due(self, identity: CAIdentity) -> tuple[str, ...]:
        return tuple(ra.usage for ra in due(identity, self._clock(), self._renew_before_days))


def _changes(before: CAIdentity, after: CAIdentity) -> tuple[Renewed, ...]:
    old = {ra.usage: ra.cert for ra in ra_certificates(before)}
    return tuple(
        Renewed(ra.usage, old[ra.usage], ra.cert)
        for ra in ra_certificates(after)
        if ra.usage in old and ra.cert != old[ra.usage]
    )


def _renewal_event(renewed: Renewed, actor: str) -> Draft:
    return Draft(
        Event.RA_RENEWED,
        f"ra/{renewed.usage}",
        {
            "usage": renewed.usage,
            "old_serial": format(renewed.old.serial_number, "x"),
            "old_not_after": renewed.old.not_valid_after_utc.isoformat(),
            "new_serial": format(renewed.new.serial_number, "x"),
            "new_not_after": renewed.new.not_valid_after_utc.isoformat(),
            "new_sha256": renewed.new.fingerprint(hashes.SHA256()).hex(),
        },
        actor=actor,
    )
