"""The resolved client of each request: a typed request key and the middleware that sets it.

``client_middleware`` resolves the client once per request (``config.clients``: the
TCP peer, or the address a trusted proxy forwarded) and stores it under ``CLIENT``;
every handler and middleware reads it from there: the challenge URL (Basic over plain
HTTP, the lockout key), the SCEP audit address, the status API, ``/metrics`` and the
log's ``client`` field. It lives in ``challenge``, the lowest package with aiohttp
handlers, because ``challenge`` sits below ``scep_ca.services`` and ``scep_ca.server`` in the
layers contract (pyproject.toml) and may not import them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from config.clients import FORWARDED_FOR, Client, TrustedProxies, is_proxy_header

CLIENT: web.RequestKey[Client] = web.RequestKey("scep_ca_client", Client)


def client_middleware(proxies: TrustedProxies) -> Middleware:
    """Resolve each request's client with ``proxies`` before anything else sees the request."""

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        headers = request.headers
        request[CLIENT] = proxies.resolve(
            request.remote,
            headers.getall(FORWARDED_FOR, []),
            proxy_headers=any(is_proxy_header(name) for name in headers),
        )
        return await handler(request)

    return middleware
