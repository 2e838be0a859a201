"""Logging as text or JSON lines (``log.format``), with per-request fields.

JSON lines carry, besides time/level/logger/message, the fields known for the record:
``transactionID``, ``integration``, ``client`` (the resolved client address, ``config.clients``) and ``worker``. The
request fields come from a context variable that ``log_context_middleware`` sets for
each request (integration id from the route, client address) and that the service can
extend once it has decoded a message (``scep_ca.services.logctx.bind_log_fields``). Only
these named fields are ever added: headers, bodies, challenges and passwords never
reach a record unless a caller puts them in a message, which callers never do.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TextIO

from aiohttp import web

from challenge.request_client import CLIENT
from config.model import LogConfig
from scep_ca.protocol.text import escape_text
from scep_ca.server.http_parse_errors import HttpParseErrorFilter
from scep_ca.services.logctx import MAX_FIELD_CHARS, current_log_fields, request_log_fields

# Record attribute -> JSON key. The attributes are set by ``_ContextFilter`` or passed
# by callers as ``extra=``.
_FIELD_KEYS = {"transaction_id": "transactionID", "integration": "integration", "client": "client"}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(worker_tag)s: %(message)s"


@web.middleware
async def log_context_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Give the records logged while handling ``request`` its client address and integration."""
    fields: dict[str, str] = {}
    # Set by challenge.request_client.client_middleware, which runs before this one.
    address = request[CLIENT].address
    if address:
        fields["client"] = address
    # SCEP routes name it "integration", the challenge URL "integration_id".
    integration = request.match_info.get("integration") or request.match_info.get("integration_id")
    if integration:
        fields["integration"] = integration[:MAX_FIELD_CHARS]
    with request_log_fields(fields):
        return await handler(request)


class _ContextFilter(logging.Filter):
    """Copies the request fields and the worker index onto each record it lets through."""

    def __init__(self) -> None:
        super().__init__()
        self.worker: int | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        fields = current_log_fields()
        if fields:
            for name, value in fields.items():
                # An explicit extra= wins over the context.
                if not hasattr(record, name):
                    setattr(record, name, value)
        record.worker = self.worker
        record.worker_tag = "" if self.worker is None else f" [worker {self.worker}]"
        return True


class TextFormatter(logging.Formatter):
    """One record, one line: non-printable characters in the message and in every field are escaped
    (``scep_ca.protocol.text``).

    A transactionID or a user name is whatever the client sent; with a raw newline it
    could start a forged record (threat model: anyone on the network must not make the
    server log forged lines). JSON lines are safe already (``json.dumps`` escapes). A
    traceback keeps its lines, each indented and escaped, so none of them can pass for a
    record of its own.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        escaped = {k: escape_text(v) if isinstance(v, str) else v for k, v in record.__dict__.items()}
        return super().formatMessage(logging.makeLogRecord(escaped))

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        blocks = [record.exc_text] if record.exc_text else []
        if record.stack_info:
            blocks.append(self.formatStack(record.stack_info))
        for block in blocks:
            line += "".join(f"\n    {escape_text(part)}" for part in block.splitlines())
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for attr, key in _FIELD_KEYS.items():
            value = getattr(record, attr, None)
            if value is not None:
                entry[key] = str(value)
        worker = getattr(record, "worker", None)
        if worker is not None:
            entry["worker"] = worker
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def build_handler(cfg: LogConfig, stream: TextIO | None = None) -> logging.Handler:
    """A handler writing ``cfg.format`` records, with the request fields, to ``stream`` (stderr)."""
    handler = logging.StreamHandler(stream)
    handler.addFilter(_ContextFilter())
    handler.addFilter(HttpParseErrorFilter())
    if cfg.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter(TEXT_FORMAT))
    return handler


def configure_logging(cfg: LogConfig) -> None:
    """Send every record of the process to stderr in ``cfg.format`` at ``cfg.level``."""
    handler = build_handler(cfg)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(cfg.level)


def tag_worker(index: int) -> None:
    """Mark every later record of this process with its worker index (called in a worker child)."""
    for handler in logging.getLogger().handlers:
        for flt in handler.filters:
            if isinstance(flt, _ContextFilter):
                flt.worker = index
