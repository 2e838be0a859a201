"""The validator gate's arithmetic with a clock the test moves: buckets refill at their rate,
never beyond their burst; a slot is waited for at most queue_seconds."""

from __future__ import annotations

import asyncio

import pytest

from config.model import ValidatorLimitsConfig
from scep_ca.services.validators.base import ValidatorBusy
from scep_ca.services.validators.gate import BUSY_RETRY_SECONDS, MAX_TRACKED_CLIENTS, ValidatorGate


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def _admit(gate: ValidatorGate, integration: str, remote: str) -> None:
    async with gate.admit(integration, remote):
        pass


async def test_client_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    clock = Clock()
    limits = ValidatorLimitsConfig(client_rate=0.5, client_burst=2)
    gate = ValidatorGate(limits, clock)
    await _admit(gate, "a", "192.0.2.1")
    await _admit(gate, "a", "192.0.2.1")
    with pytest.raises(ValidatorBusy) as busy:
        await _admit(gate, "a", "192.0.2.1")
    assert (busy.value.reason, busy.value.retry_after) == ("client address over its rate", 2)
    # Another address, and the same address at another integration, have their own buckets.
    await _admit(gate, "a", "192.0.2.2")
    await _admit(gate, "b", "192.0.2.1")
    clock.now += 2.0  # one token back
    await _admit(gate, "a", "192.0.2.1")
    with pytest.raises(ValidatorBusy):
        await _admit(gate, "a", "192.0.2.1")
    clock.now += 3600  # never more than the burst
    await _admit(gate, "a", "192.0.2.1")
    await _admit(gate, "a", "192.0.2.1")
    with pytest.raises(ValidatorBusy):
        await _admit(gate, "a", "192.0.2.1")


async def test_integration_bucket_counts_every_address() -> None:
    clock = Clock()
    gate = ValidatorGate(ValidatorLimitsConfig(integration_rate=1.0, integration_burst=3), clock)
    for n in range(3):
        await _admit(gate, "a", f"192.0.2.{n}")
    with pytest.raises(ValidatorBusy) as busy:
        await _admit(gate, "a", "192.0.2.9")
    assert (busy.value.reason, busy.value.retry_after) == ("integration over its rate", 1)
    await _admit(gate, "b", "192.0.2.9")


async def test_a_slot_is_waited_for_at_most_queue_seconds() -> None:
    gate = ValidatorGate(ValidatorLimitsConfig(concurrency=1, queue_seconds=0.2))
    release = asyncio.Event()

    async def hold() -> None:
        async with gate.admit("a", "192.0.2.1"):
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ValidatorBusy) as busy:
        await _admit(gate, "a", "192.0.2.2")
    assert (busy.value.reason, busy.value.retry_after) == ("all call slots busy", BUSY_RETRY_SECONDS)
    assert 0.15 <= loop.time() - started < 5.0
    await _admit(gate, "b", "192.0.2.2")  # other integrations have their own slots
    release.set()
    await holder
    await _admit(gate, "a", "192.0.2.2")  # the slot came back


async def test_the_oldest_client_is_forgotten_beyond_the_cap() -> None:
    clock = Clock()
    gate = ValidatorGate(ValidatorLimitsConfig(client_rate=0.001, client_burst=1, integration_burst=10**6), clock)
    await _admit(gate, "a", "first")
    for n in range(MAX_TRACKED_CLIENTS):
        await _admit(gate, "a", f"addr-{n}")
    # "first" was the least recently seen: forgotten, so it has a full bucket again.
    await _admit(gate, "a", "first")
    with pytest.raises(ValidatorBusy):
        await _admit(gate, "a", f"addr-{MAX_TRACKED_CLIENTS - 1}")


async def test_an_ipv6_client_counts_per_slash_64() -> None:
    gate = ValidatorGate(ValidatorLimitsConfig(client_rate=0.001, client_burst=1), Clock())
    await _admit(gate, "a", "2001:db8:1:2::1")
    # Another address of the same /64 is the same subscriber: no fresh budget.
    with pytest.raises(ValidatorBusy):
        await _admit(gate, "a", "2001:db8:1:2:ffff::9")
    await _admit(gate, "a", "2001:db8:1:3::1")
    # IPv4 (also mapped into IPv6) per address.
    await _admit(gate, "a", "192.0.2.1")
    await _admit(gate, "a", "192.0.2.2")
    with pytest.raises(ValidatorBusy):
        await _admit(gate, "a", "::ffff:192.0.2.1")
