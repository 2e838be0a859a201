"""HTTP Basic for the challenge URL: parsing the header and deciding where it is allowed.

Basic sends the password itself, so by default (``Integration.allow_basic`` None) it
is offered only where nobody can read it on the way: when the server terminates
TLS, or when the client connects over loopback (a local TLS-terminating proxy, or
tests). ``allow_basic`` True or False overrides that per integration.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
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


def is_loopback_address(address: str | None) -> bool:
    """Whether a peer address (as aiohttp reports it) is a loopback address."""
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        # ::ffff:127.0.0.1 from a dual-stack socket; Python 3.11 does not call it loopback.
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def basic_allowed(allow_basic: bool | None, tls: bool, client_address: str | None) -> bool:
    """The per-integration switch, or by default: over TLS or from loopback only."""
    if allow_basic is not None:
        return allow_basic
    return tls or is_loopback_address(client_address)
