"""The public base URL: where relying parties and devices reach this CA.

Every issued certificate names it: the CRL distribution point ``<url>/crl/<ca id>.crl``
(RFC 5280 section 4.2.1.13) and the authority information access, OCSP ``<url>/ocsp`` and
caIssuers ``<url>/ca/<ca id>.crt`` (RFC 5280 section 4.2.2.1). Without them a relying party
cannot learn that a certificate was revoked, which is what deleting an integration is for.

Where it comes from, first match wins: ``server.public_url`` in the config; the URL that
``scep-ca init --public-url`` (or ``serve``'s first start with ``server.public_url`` set)
stored in the data directory (``public_url``, one line); else the listen address of this
start. Only an explicit URL is stored: one that was defaulted follows the address ``serve``
listens on (``serve --port 9000`` issues certificates naming port 9000), while an explicit
one is kept when the listen address changes (``serve`` warns when they differ).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
from pathlib import Path
from urllib.parse import urlsplit

from config import Config
from config.clients import is_loopback_host
from config.files import check_not_writable, write_public
from config.urls import public_url_problem

PUBLIC_URL_FILE = "public_url"


class PublicUrlError(ValueError):
    """Not a usable public URL (config.urls); the message is one line, safe to show."""


def check_public_url(url: str) -> str:
    """The URL without surrounding blanks or a trailing slash, or PublicUrlError."""
    url = url.strip()
    problem = public_url_problem(url)
    if problem is not None:
        # The URL is echoed (escaped) unless it holds credentials: those are not repeated.
        shown = "" if "@" in url else f" {url!r}"
        raise PublicUrlError(f"the public URL{shown} {problem}")
    return url.rstrip("/")


def url_is_loopback(url: str) -> bool:
    return is_loopback_host(urlsplit(url).hostname or "")


def read_public_url(data_dir: Path) -> str | None:
    path = data_dir / PUBLIC_URL_FILE
    if not path.exists():
        return None
    # Whoever could write it would choose the CRL and OCSP URLs of every certificate.
    check_not_writable(path)
    return check_public_url(path.read_text(encoding="utf-8"))


def write_public_url(data_dir: Path, url: str) -> str:
    url = check_public_url(url)
    path = data_dir / PUBLIC_URL_FILE
    # Replaced, not rewritten in place: written with an explicit mode whatever the umask.
    path.unlink(missing_ok=True)
    write_public(path, (url + "\n").encode("utf-8"))
    return url


def with_public_url(config: Config) -> Config:
    """The config with ``server.public_url`` filled in from the data directory when unset."""
    if config.server.public_url:
        return config
    stored = read_public_url(config.data_dir)
    if stored is None:
        return config
    return dataclasses.replace(config, server=dataclasses.replace(config.server, public_url=stored))


def derive_public_url(config: Config) -> str:
    """The listen address as a URL (whatever public URL is set); a wildcard listen address
    (0.0.0.0, ::) names this host instead."""
    host = config.server.host
    try:
        wildcard = not host or ipaddress.ip_address(host).is_unspecified
    except ValueError:
        wildcard = False
    if not wildcard:
        return dataclasses.replace(config, server=dataclasses.replace(config.server, public_url=None)).base_url
    scheme = "https" if config.tls.cert else "http"
    return f"{scheme}://{socket.getfqdn()}:{config.server.port}"


def resolved(config: Config) -> Config:
    """The config with ``server.public_url`` always set: configured, stored, else derived."""
    config = with_public_url(config)
    if config.server.public_url:
        return config
    return dataclasses.replace(config, server=dataclasses.replace(config.server, public_url=derive_public_url(config)))


def public_base_url(config: Config) -> str:
    """The base of every URL that goes into certificates and to MDM admins."""
    return resolved(config).base_url


def loopback_mismatch(config: Config) -> bool:
    """The certificates' URL is loopback while the server listens beyond it: remote relying
    parties would find nothing at the CRL and OCSP URLs of its certificates."""
    return url_is_loopback(public_base_url(config)) and not is_loopback_host(config.server.host)
