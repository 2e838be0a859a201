"""The last line of defence: an exception no handler turned into an answer becomes a bare 500.

Every known bad input has a typed answer (HTTP 4xx, a FAILURE CertRep, an OCSP error
status); this middleware is for the bug nobody has found yet. aiohttp on its own
already keeps the traceback from the client (outside debug mode) but writes the whole
traceback, exception message included, to the log: the message can hold text the
client sent (no forged log lines). Here the log gets one ERROR line
with the exception type, where it was raised and the route, never the message; the
client gets a fixed text.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "?"
    last = frames[-1]
    return f"{last.filename}:{last.lineno} in {last.name}"


@web.middleware
async def safety_net_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException:
        raise  # deliberate answers (404, 413, ...)
    except Exception as exc:
        # The route's pattern, not the request path: the path is the client's text.
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "?"
        log.error("unhandled %s at %s (%s %s)", type(exc).__name__, _where(exc), request.method, route)
        return web.Response(status=500, text="internal server error\n")
