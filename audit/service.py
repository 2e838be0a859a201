"""The audit log service: what the rest of scep-ca calls to record, read and verify events.

API (for the SCEP and challenge services, the CLI, the console and backups):

- ``recording(*drafts)``: a context manager yielding the ``AuditSeal`` to pass as ``audit=`` to
  the store write method of the action; the events commit in the action's transaction or not
  at all (``store.base.AuditSeal``). Yields None when the log is disabled.
- ``append(*drafts)``: events with no other write (a refused request, a server start), in a
  transaction of their own.
- ``list(query)``: events, oldest first, filtered by time, event, actor, integration, serial.
- ``verify(checkpoint=None) -> VerifyReport``: every chain (``audit.verify``), optionally
  against a signed checkpoint's text.
- ``checkpoint() -> dict``: the signed heads of every chain (``audit.checkpoint``), as JSON.

Events never carry a challenge, password or key: callers put identifiers and verdicts in
``details``, and a certificate as its DER in base64 (public).
"""

from __future__ import annotations

import base64
import getpass
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from audit import encoding
from audit.checkpoint import CheckpointPublicKey, CheckpointSigner, make_checkpoint, read_checkpoint
from audit.encoding import MacKey
from audit.events import SYSTEM, Event
from audit.lanes import Lanes
from audit.verify import Head, Verifier, VerifyReport
from config.clock import Clock
from store.base import AuditFilter, AuditRecord, AuditSeal, AuditStore, StoreError, StoreUnavailable

log = logging.getLogger(__name__)

# Records read at once by verify: memory stays flat however long the log.
_VERIFY_PAGE = 2000


@dataclass(frozen=True)
class Draft:
    """An event before it is sealed: who did what to which object, and the facts."""

    event: Event | str
    target: str
    details: Mapping[str, object] = field(default_factory=dict)
    actor: str = SYSTEM


def certificate_target(serial: str) -> str:
    return f"certificate/{serial}"


def integration_target(integration_id: str) -> str:
    return f"integration/{integration_id}"


def der_text(der: bytes) -> str:
    return base64.b64encode(der).decode("ascii")


class AuditSink(Protocol):
    """The part of the log that actions use (services depend on this, not on ``AuditLog``)."""

    def recording(self, *drafts: Draft) -> AbstractContextManager[AuditSeal | None]: ...

    async def append(self, *drafts: Draft) -> None: ...


class NoAudit:
    """The sink of code built without a log (library use, unit tests): records nothing."""

    @contextmanager
    def recording(self, *drafts: Draft) -> Iterator[AuditSeal | None]:
        yield None

    async def append(self, *drafts: Draft) -> None:
        return None


def os_actor() -> str:
    """The actor of an operator CLI command: the OS user running it."""
    try:
        return f"os:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"os:uid={os.getuid()}"


@dataclass(frozen=True)
class AuditQuery:
    since: datetime | None = None
    until: datetime | None = None
    event: str | None = None
    actor: str | None = None
    integration: str | None = None
    serial: str | None = None
    limit: int | None = None


class AuditLog:
    """The audit log of one process: its lanes (chains), the MAC key, the checkpoint key."""

    def __init__(
        self,
        store: AuditStore,
        key: MacKey,
        clock: Clock,
        *,
        checkpoint_key: Callable[[], CheckpointSigner] | None = None,
        enabled: bool = True,
        lanes: Lanes | None = None,
    ) -> None:
        self._store = store
        self._key = key
        self._clock = clock
        self._checkpoint_key = checkpoint_key
        self._enabled = enabled
        self._lanes = lanes or Lanes()

    @property
    def enabled(self) -> bool:
        return self._enabled

    # -- writing -------------------------------------------------------------------

    @contextmanager
    def recording(self, *drafts: Draft) -> Iterator[AuditSeal | None]:
        if not self._enabled or not drafts:
            yield None
            return
        lane = self._lanes.take()
        sealed: list[AuditRecord] = []

        def seal(outcome: Mapping[str, int]) -> Sequence[AuditRecord]:
            sealed.clear()
            seq, prev, now = lane.seq, lane.mac, self._clock()
            for draft in drafts:
                seq += 1
                record = encoding.seal(
                    self._key,
                    lane.writer,
                    seq,
                    now,
                    draft.actor,
                    str(draft.event),
                    draft.target,
                    {**draft.details, **outcome},
                    prev,
                )
                sealed.append(record)
                prev = record.mac
            return list(sealed)

        try:
            yield seal
        except StoreError as exc:
            # A store's refusal changed nothing (store.base): the head stands. A fault may have
            # struck during COMMIT, leaving it unknown whether the rows are in: retire the lane.
            if not sealed or not isinstance(exc, StoreUnavailable):
                self._lanes.give_back(lane)
            raise
        except BaseException:
            if not sealed:
                self._lanes.give_back(lane)
            raise
        if sealed:
            lane.seq, lane.mac = sealed[-1].seq, sealed[-1].mac
        self._lanes.give_back(lane)

    async def append(self, *drafts: Draft) -> None:
        with self.recording(*drafts) as seal:
            if seal is not None:
                await self._store.append_audit(seal)

    async def start(self, version: str, config_digest: str) -> None:
        """At server start: "log started" once for a log that has no record yet (a new or an
        upgraded data directory), then the start itself."""
        if not self._enabled:
            return
        drafts = []
        if await self._store.audit_empty():
            drafts.append(Draft(Event.LOG_STARTED, "audit", {"version": version}))
        drafts.append(Draft(Event.SERVER_START, "server", {"version": version, "config_sha256": config_digest}))
        await self.append(*drafts)

    # -- reading -------------------------------------------------------------------

    async def list(self, query: AuditQuery) -> list[AuditRecord]:
        rows = await self._store.list_audit(
            AuditFilter(since=query.since, until=query.until, event=query.event, actor=query.actor)
        )
        picked = [r for r in rows if _matches(r, query)]
        return picked if query.limit is None else picked[: max(query.limit, 0)]

    async def newest(self, flt: AuditFilter) -> Sequence[AuditRecord]:
        """Rows as ``flt`` picks them in the store (``newest_first`` and ``limit`` included)."""
        return await self._store.list_audit(flt)

    async def verify(self, checkpoint: str | None = None, public: CheckpointPublicKey | None = None) -> VerifyReport:
        """Every chain, and against ``checkpoint`` (its JSON text) when given; raises
        ``CheckpointError`` for a checkpoint that is not one or whose signature fails."""
        heads = None
        if checkpoint is not None:
            if public is None:
                if self._checkpoint_key is None:
                    raise ValueError("no checkpoint public key to check the checkpoint with")
                public = self._checkpoint_key().public_key()
            heads = read_checkpoint(checkpoint, public)
        verifier = Verifier(self._key, heads)
        after = None
        while page := await self._store.audit_page(after, _VERIFY_PAGE):
            for record in page:
                verifier.add(record)
            after = (page[-1].writer, page[-1].seq)
        return verifier.report()

    async def checkpoint(self) -> dict[str, Any]:
        if self._checkpoint_key is None:
            raise ValueError("no checkpoint key")
        heads = {w: Head(s, m) for w, s, m in await self._store.audit_heads()}
        return make_checkpoint(heads, self._clock(), self._checkpoint_key())


def _matches(record: AuditRecord, query: AuditQuery) -> bool:
    if query.integration is not None and not (
        record.target == integration_target(query.integration) or record.details.get("integration") == query.integration
    ):
        return False
    return query.serial is None or (
        record.target == certificate_target(query.serial.lower())
        or query.serial.lower() in (record.details.get("serial"), record.details.get("old_serial"))
    )
