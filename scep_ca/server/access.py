"""Who may use the internal endpoints (status API, ``/metrics``): a bearer token, or a local client.

With a token configured, a request needs ``Authorization: Bearer <token>`` (compared in
constant time, RFC 6750 §2.1), whoever sends it. Without one, only a local client
(``config.clients``: a direct loopback peer that is not a trusted proxy) is served.
"""

from __future__ import annotations

import enum
import hmac

from aiohttp import web

from challenge.request_client import CLIENT


class Access(enum.Enum):
    GRANTED = "granted"
    BAD_TOKEN = "bad-token"  # answer 401 with WWW-Authenticate: Bearer
    NOT_LOCAL = "not-local"  # answer 403


def check_access(request: web.Request, token: bytes | None) -> Access:
    """Whether ``request`` may use an endpoint protected by ``token`` (None: local clients only)."""
    if token is not None:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        given = value.strip().encode("utf-8")
        if scheme.lower() == "bearer" and hmac.compare_digest(given, token):
            return Access.GRANTED
        return Access.BAD_TOKEN
    return Access.GRANTED if request[CLIENT].local else Access.NOT_LOCAL


BEARER_CHALLENGE = 'Bearer realm="scep-ca"'
