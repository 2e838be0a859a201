"""Reading the raw query string of a request, where aiohttp's parsed query would corrupt it.

Shared by the SCEP handlers (``scep_web``) and the metrics middleware that labels requests by
SCEP operation, so that the metrics do not import a handler module.
"""

from __future__ import annotations

from urllib.parse import unquote


def raw_query_param(raw_query: str, name: str) -> str | None:
    """A query parameter read from the raw query string, percent-decoded but with ``+`` kept;
    the name matches in any case, the first one wins.

    aiohttp/yarl turn a literal ``+`` into a space, while macOS leaves ``+`` and ``/``
    unescaped in SCEP GETs (RFC 8894 section 4.1), so the parsed query would corrupt base64.
    """
    wanted = name.lower()
    for pair in raw_query.split("&"):
        key, _, value = pair.partition("=")
        if unquote(key).lower() == wanted:
            return unquote(value)
    return None
