"""Each worker's RA upkeep: serve renewed RA certificates without a restart, and renew daily.

Every ``CHECK_SECONDS`` a worker compares the RA files with what it loaded (a few stat
calls) and, when a renewal by any process or host changed them, loads them again and
switches GetCACert, CertRep signing, decryption and the metrics to them. Once a day it asks
``RaRenewer`` to renew what is due (the store lease makes that happen once) and logs the
expiry warnings (``scep_ca.services.expiry``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from config.clock import Clock, utc_now
from scep_ca.pki.ca import CAIdentity
from scep_ca.pki.ra_renewal import ra_files_state
from scep_ca.services.expiry import log_expiry
from scep_ca.services.ra_renewal import LoadIdentity, RaRenewer

log = logging.getLogger(__name__)

CHECK_SECONDS = 60.0
DAY_SECONDS = 86_400.0


class RaWatch:
    def __init__(
        self,
        data_dir: Path,
        load: LoadIdentity,
        apply: Callable[[CAIdentity], None],
        renewer: RaRenewer,
        renew_before_days: int,
        *,
        announce: bool,
        check_seconds: float = CHECK_SECONDS,
        clock: Clock = utc_now,
        jobs: Sequence[Callable[[], Awaitable[object]]] = (),
    ) -> None:
        # Run at start and in every daily round (notifications: they dedupe themselves).
        self._jobs = jobs
        self._data_dir = data_dir
        self._load = load
        self._apply = apply
        self._renewer = renewer
        self._renew_before_days = renew_before_days
        self._announce = announce
        self._check_seconds = check_seconds
        self._clock = clock
        self._state = ra_files_state(data_dir)

    async def run(self) -> None:
        """Until cancelled. ``serve`` renewed at start already, so the first daily round is a day away."""
        next_round = time.monotonic() + DAY_SECONDS
        await self._run_jobs()
        while True:
            await asyncio.sleep(self._check_seconds)
            if time.monotonic() >= next_round:
                next_round += DAY_SECONDS
                await self.daily()
            self.reload_if_changed()

    async def daily(self) -> None:
        try:
            await self._renewer.renew_due()
        except Exception:
            # Retried tomorrow; the warnings below (and the RA metrics) say it is overdue.
            log.warning("RA renewal failed", exc_info=True)
        self.reload_if_changed()
        if self._announce:
            try:
                log_expiry(self._load(), self._clock(), self._renew_before_days)
            except Exception:
                log.warning("could not load the CA to check its expiry", exc_info=True)
        await self._run_jobs()

    async def _run_jobs(self) -> None:
        for job in self._jobs:
            try:
                await job()
            except Exception:
                log.warning("daily expiry job failed", exc_info=True)

    def reload_if_changed(self) -> bool:
        state = ra_files_state(self._data_dir)
        if state == self._state:
            return False
        try:
            identity = self._load()
        except Exception as exc:
            # A renewal may be half-way (key renamed, certificate not yet): next time.
            log.info("RA files changed but do not load yet (%s); retrying", exc)
            return False
        self._state = state
        self._apply(identity)
        log.info(
            "serving renewed RA certificates: %s",
            ", ".join(f"{c.serial_number:x}" for c in (identity.ra_cert, identity.enc_cert) if c is not None),
        )
        return True
