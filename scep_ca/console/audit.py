"""The seam between console actions and the audit log (issue 18).

Every console action calls ``ConsoleAuditSink.record`` with the admin's name and address.
Until the audit service is wired in, ``LogAuditSink`` writes one structured log line per
event; the ``/console/audit`` page shows events only when an ``AuditReader`` is given.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

log = logging.getLogger("scep_ca.console.audit")


class ConsoleEvent(enum.StrEnum):
    LOGIN = "console.login"
    LOGIN_FAILED = "console.login_failed"
    LOGOUT = "console.logout"
    INTEGRATION_CREATE = "integration.create"
    INTEGRATION_ROTATE = "integration.rotate_password"
    INTEGRATION_DELETE = "integration.delete"
    CHALLENGE_ISSUE = "challenge.issue"
    CERTIFICATE_REVOKE = "certificate.revoke"
    REQUEST_APPROVE = "request.approve"
    REQUEST_REJECT = "request.reject"
    ADMIN_CREATE = "admin.create"
    ADMIN_DISABLE = "admin.disable"
    ADMIN_RESET_PASSWORD = "admin.reset_password"


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
