"""HTTP Basic for the challenge URL: parsing the header and deciding where it is allowed.

Basic sends the password itself, so by default (``Integration.allow_basic`` None) it
is offered only where nobody can read it on the way: when the server terminates
TLS, or when the client is local (``config.clients``: a direct loopback peer; a
TLS-terminating proxy on this host must be listed in ``server.trusted_proxies`` and
then gets no such trust). ``allow_basic`` True or False overrides that per integration.
"""

from __future__ import annotations

import base64
import binascii
from typing import NamedTuple

# A user name and a 32-character password fit many times over; longer is not a login.
MAX_TOKEN_CHARS = 1024


class BasicCredentials(NamedTuple):
    username: str
    password: str


def parse_basic(token: str) -> BasicCredentials | None:
    """Decode the token after ``Basic``; None when it is not ``base64(user:password)``."""
    token = token.strip()
    if not token or len(token) > MAX_TOKEN_CHARS:
        return None
    try:
        raw = base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        # RFC 7617 leaves the charset open; old clients send ISO-8859-1.
        text = raw.decode("latin-1")
    username, sep, password = text.partition(":")
    if not sep or not username:
        return None
    return BasicCredentials(username, password)


def basic_allowed(allow_basic: bool | None, tls: bool, client_local: bool) -> bool:
    """The per-integration switch, or by default: over TLS or from a local client only.

    ``client_local`` is ``config.clients.Client.local``: a direct loopback peer that is
    not a trusted proxy (behind a listed same-host proxy, nobody is local).
    """
    if allow_basic is not None:
        return allow_basic
    return tls or client_local
