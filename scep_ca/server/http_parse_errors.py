"""HTTP that does not parse is logged as one line, not as aiohttp's traceback.

aiohttp answers a request it cannot parse (a request line or header over
``server.max_line_bytes``, a malformed header, bad chunked framing) with 400 itself,
before any handler runs, and logs it through ``aiohttp.server`` at ERROR with the
parser's traceback, whose message quotes the offending bytes. That is a client's
fault, not ours: a stranger could fill the log with tracebacks and plant their bytes
in it. This filter, on the handler, turns those records into one WARNING line naming
the error class and status, without the traceback or the request's bytes.
"""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError

AIOHTTP_SERVER_LOGGER = "aiohttp.server"


class HttpParseErrorFilter(logging.Filter):
    """Rewrites aiohttp's "Error handling request" records caused by unparseable HTTP."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != AIOHTTP_SERVER_LOGGER or not record.exc_info:
            return True
        exc = record.exc_info[1]
        if not isinstance(exc, HttpProcessingError):
            return True
        peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        record.msg = "unparseable HTTP request from %s answered %s: %s"
        record.args = (peer, exc.code, type(exc).__name__)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = record.exc_text = None
        return True
