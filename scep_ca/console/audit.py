"""Console actions in the audit log (the ``audit`` package).

Every console action calls ``ConsoleAuditSink.record`` with the admin's name and address:
``AuditLogSink`` appends it to the audit log as ``console.*`` / ``admin.*`` events with the
actor ``console:<admin>`` (``LogAuditSink``, one log line, serves where no log is wired).
Actions that change the store (create, rotate, delete, revoke, approve, reject, challenge)
also write their own event in their transaction, through the services. The ``/console/audit``
page reads the log through ``AuditLogReader``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from audit.events import Event
from audit.service import AuditLog, AuditSink, Draft
from store.base import AuditFilter

log = logging.getLogger("scep_ca.console.audit")


# The console's event names live with every other event name (audit/events.py).
ConsoleEvent = Event


class ConsoleAuditSink(Protocol):
    async def record(
        self, actor: str, address: str, event: ConsoleEvent, obj: str, details: Mapping[str, object]
    ) -> None:
        """Record one action; ``obj`` names what it acted on (an integration id, a serial)."""


class LogAuditSink:
    """The default sink: one log line per event, its fields as structured log fields."""

    async def record(
        self, actor: str, address: str, event: ConsoleEvent, obj: str, details: Mapping[str, object]
    ) -> None:
        fields: dict[str, object] = {
            "audit_actor": actor,
            "audit_address": address,
            "audit_event": event.value,
            "audit_object": obj,
        }
        fields.update({f"audit_{k}": v for k, v in details.items()})
        # %r: names and subjects come from people and devices; repr keeps a forged line break out.
        log.info("audit %s by %r from %s on %r %r", event.value, actor, address, obj, dict(details), extra=fields)


@dataclass(frozen=True)
class AuditRow:
    at: datetime
    actor: str
    address: str
    event: str
    obj: str
    details: str


class AuditReader(Protocol):
    """What the audit page reads once the audit log exists (wired by the CLI)."""

    async def events(self, *, event: str | None, actor: str | None, limit: int) -> Sequence[AuditRow]: ...

    async def verify(self) -> str:
        """A one-line verdict of the chain's verification."""


class AuditLogSink:
    """Console actions as audit events, with the admin as actor and the address in the details."""

    def __init__(self, audit: AuditSink) -> None:
        self._audit = audit

    async def record(
        self, actor: str, address: str, event: ConsoleEvent, obj: str, details: Mapping[str, object]
    ) -> None:
        facts = {**details, "address": address}
        await self._audit.append(Draft(event.value, f"console/{obj}", facts, actor=f"console:{actor}"))


class AuditLogReader:
    """The audit page's events (newest first, one index range) and the log's verification."""

    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit

    async def events(self, *, event: str | None, actor: str | None, limit: int) -> Sequence[AuditRow]:
        records = await self._audit.newest(AuditFilter(event=event, actor=actor, limit=limit, newest_first=True))
        return [
            AuditRow(
                at=r.at,
                actor=r.actor,
                address=str(r.details.get("address", "")),
                event=r.event,
                obj=r.target,
                details=json.dumps(r.details, sort_keys=True),
            )
            for r in records
        ]

    async def verify(self) -> str:
        report = await self._audit.verify()
        if report.ok:
            return f"OK: {report.records} records in {len(report.chains)} chains verify"
        return "FAILED: " + "; ".join(str(p) for p in report.problems)
