"""The fields of the request being handled, for its log records (``scep_ca.server.logsetup``).

The services bind what they learn while handling a request (the transactionID once a message
is decoded); the server opens a fresh set per request and its log filter copies them onto
each record. This module holds only the context variable, so that the services can bind
fields without importing the server layer that formats them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

# The fields of the request being handled in this context; None outside requests. A
# fresh dict per request, reset when the request ends: aiohttp runs the requests of a
# keep-alive connection one after another in one task, so a field bound during one
# request would otherwise leak into the next one's records.
_REQUEST_FIELDS: ContextVar[dict[str, str] | None] = ContextVar("scep_ca_log_fields", default=None)

# Bounds a path-derived value (the integration id is whatever the client put in the URL).
MAX_FIELD_CHARS = 128


def bind_log_fields(*, transaction_id: str | None = None, integration: str | None = None) -> None:
    """Add fields to every later record of the current request (no-op outside a request)."""
    fields = _REQUEST_FIELDS.get()
    if fields is None:
        return
    if transaction_id is not None:
        fields["transaction_id"] = transaction_id[:MAX_FIELD_CHARS]
    if integration is not None:
        fields["integration"] = integration[:MAX_FIELD_CHARS]


@contextmanager
def request_log_fields(fields: dict[str, str]) -> Iterator[None]:
    """Make ``fields`` the current request's log fields until the block ends."""
    token = _REQUEST_FIELDS.set(fields)
    try:
        yield
    finally:
        _REQUEST_FIELDS.reset(token)


def current_log_fields() -> dict[str, str] | None:
    """The current request's fields, or None outside a request."""
    return _REQUEST_FIELDS.get()
