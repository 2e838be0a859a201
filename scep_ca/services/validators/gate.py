"""Bounds on the outbound calls of intune and webhook validators, one set per integration.

Every decryptable PKCSReq to such an integration costs an outbound call, so anyone could
otherwise flood the validator, and through it every other integration (issue 17 item 5).
Before ``validate`` calls out, a request must pass, in this order:

1. a token bucket per (integration, client address): one address cannot spend the
   integration's budget (an IPv6 client counts per /64, the block one subscriber gets);
2. a token bucket per integration: the integration's share of calls per second;
3. a slot among ``concurrency`` calls in flight for the integration, waited for at most
   ``queue_seconds`` (less than the call timeouts, so a queued client is answered before
   a call could have been).

A request over any bound gets ``ValidatorBusy``: HTTP 503 with Retry-After, which SCEP
clients (certmonger, MDM agents) retry, and nothing is recorded. A FAILURE CertRep would
be final for the client, and PENDING would promise a transaction the store does not hold.
The state lives in one ``ValidatorGate`` per process (the app's), never at module level.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from config.model import ValidatorLimitsConfig
from scep_ca.services.validators.base import ValidatorBusy

# Client addresses remembered per integration; the least recently seen is forgotten first
# (forgetting one only gives it a full bucket again: the integration's bound still holds).
MAX_TRACKED_CLIENTS = 10_000
# Retry-After when no slot freed within queue_seconds: calls in flight end within a timeout.
BUSY_RETRY_SECONDS = 5


@dataclass
class _Bucket:
    tokens: float
    stamp: float

    def take(self, now: float, rate: float, burst: int) -> float:
        """0 when a token was taken, else the seconds until one is there."""
        self.tokens = min(float(burst), self.tokens + (now - self.stamp) * rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / rate


@dataclass
class _IntegrationBounds:
    slots: asyncio.Semaphore
    bucket: _Bucket
    clients: OrderedDict[str, _Bucket] = field(default_factory=OrderedDict)


class ValidatorGate:
    def __init__(self, limits: ValidatorLimitsConfig, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._limits = limits
        self._monotonic = monotonic
        self._bounds: dict[str, _IntegrationBounds] = {}

    @asynccontextmanager
    async def admit(self, integration_id: str, remote: str | None) -> AsyncIterator[None]:
        """Hold one of the integration's call slots; raises ValidatorBusy over any bound."""
        limits = self._limits
        bounds = self._for(integration_id)
        now = self._monotonic()
        wait = self._client_bucket(bounds, client_key(remote), now).take(now, limits.client_rate, limits.client_burst)
        if wait:
            raise ValidatorBusy("client address over its rate", _seconds(wait))
        wait = bounds.bucket.take(now, limits.integration_rate, limits.integration_burst)
        if wait:
            raise ValidatorBusy("integration over its rate", _seconds(wait))
        try:
            await asyncio.wait_for(bounds.slots.acquire(), timeout=limits.queue_seconds)
        except TimeoutError:
            raise ValidatorBusy("all call slots busy", BUSY_RETRY_SECONDS) from None
        try:
            yield
        finally:
            bounds.slots.release()

    def _for(self, integration_id: str) -> _IntegrationBounds:
        bounds = self._bounds.get(integration_id)
        if bounds is None:
            limits = self._limits
            bucket = _Bucket(float(limits.integration_burst), self._monotonic())
            bounds = _IntegrationBounds(asyncio.Semaphore(limits.concurrency), bucket)
            self._bounds[integration_id] = bounds
        return bounds

    def _client_bucket(self, bounds: _IntegrationBounds, address: str, now: float) -> _Bucket:
        bucket = bounds.clients.get(address)
        if bucket is None:
            bucket = bounds.clients[address] = _Bucket(float(self._limits.client_burst), now)
            if len(bounds.clients) > MAX_TRACKED_CLIENTS:
                bounds.clients.popitem(last=False)
        else:
            bounds.clients.move_to_end(address)
        return bucket


def client_key(remote: str | None) -> str:
    """The address a client's budget is kept under: IPv6 per /64, anything else as it is."""
    try:
        address = ipaddress.ip_address(remote or "")
    except ValueError:
        return remote or ""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _seconds(wait: float) -> int:
    return max(1, math.ceil(wait))
