"""Where the challenge URL lives: the route ``challenge.web`` serves and the URL operators are given.

Without aiohttp, so that the CLI prints the URL without loading the web server.
"""

from __future__ import annotations

# NDES's path, matched in any case as IIS does; the trailing slash is optional.
CHALLENGE_PATH = "/challenge/{integration_id}/{certsrv:(?i:certsrv)}/{admin:(?i:mscep_admin)}{slash:/?}"


def challenge_url(base_url: str, integration_id: str) -> str:
    """The Challenge URL printed for an integration."""
    return f"{base_url.rstrip('/')}/challenge/{integration_id}/certsrv/mscep_admin/"
