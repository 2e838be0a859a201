"""Is this a usable public base URL? One check for ``server.public_url`` and ``init --public-url``.

The public URL goes into every issued certificate (CRL distribution point and authority
information access, RFC 5280 sections 4.2.1.13 and 4.2.2.1) and to MDM admins, so it is
checked before anything is created: an http:// or https:// URL whose host is a DNS name or
an IP literal, an optional numeric port, an optional path; no credentials (RFC 3986 section
3.2.1 deprecates them, and they would be published in every certificate), no whitespace or
control characters, no query or fragment (the CRL and OCSP paths are appended to it).
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

# A DNS name (RFC 1123 labels; "_" for names that some internal zones use).
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_DNS_NAME = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*\.?\Z")
# Whitespace, C0, DEL and C1: never in a URL that ends up in a certificate.
_FORBIDDEN = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")

PUBLIC_URL_RULE = "must be an http:// or https:// URL with a host (no user:password, spaces, query or fragment)"


def public_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be the public URL (one line, without the URL), or None when it can."""
    if _FORBIDDEN.search(url):
        return "contains whitespace or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port  # a non-numeric or out-of-range port raises here
    except ValueError:
        return "is not a well-formed URL (check the host and port)"
    if parts.scheme not in {"http", "https"}:
        return PUBLIC_URL_RULE
    if "@" in parts.netloc:
        return "must not contain user:password (it would be published in every certificate)"
    host = parts.hostname
    if not host:
        return PUBLIC_URL_RULE
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        return "must not have a query or fragment (the CRL and OCSP paths are appended to it)"
    if port == 0:
        return "has port 0"
    if not _valid_host(host, bracketed=parts.netloc.startswith("[")):
        return f"has a malformed host {host!r}"
    return None


def _valid_host(host: str, *, bracketed: bool) -> bool:
    if bracketed:
        try:
            return ipaddress.ip_address(host.partition("%")[0]).version == 6
        except ValueError:
            return False
    if _DNS_NAME.match(host) is None:
        return False
    # All-numeric dotted names must be real IPv4 addresses (999.1.1.1 is neither).
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host.rstrip("."))
        except ValueError:
            return False
    return True
