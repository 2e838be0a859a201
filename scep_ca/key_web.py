"""HTTP 503 while a private key cannot be used (a PKCS#11 token out of reach).

A handler that needs a token key and finds it unavailable raises ``KeyUnavailable``;
this middleware turns it into 503 Service Unavailable with Retry-After (RFC 9110
sections 15.6.4 and 10.2.3), never 500. The token reopens its session on the next
operation (``scep_ca.pkcs11_keys.Token.run``), so the server recovers without a restart.
The reason goes to the log; the client learns only that it should come back.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from scep_ca.keys import KeyUnavailable

log = logging.getLogger("scep_ca.keys")

RETRY_AFTER_SECONDS = 30


@web.middleware
async def key_unavailable_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except KeyUnavailable as exc:
        log.warning("%s %s: 503, a private key is unavailable: %s", request.method, request.path, exc)
        return web.Response(
            status=503,
            text="a signing key is temporarily unavailable; try again later\n",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS), "Cache-Control": "no-store"},
        )
