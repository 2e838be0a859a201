"""Thin aiohttp handlers for the CRL, OCSP and the status API; the work is in ``RevocationService``.

Public (relying parties fetch them without credentials, RFC 5280 §4.2.1.13, RFC 6960
Appendix A): ``GET /crl/<ca>.crl`` (the full CRL), ``GET /crl/<ca id>/<shard>.crl`` (one shard,
RFC 5280 §5.2.5), ``GET /ca/<ca>.crt`` (the caIssuers URL of issued
certificates, RFC 5280 §4.2.2.1: one DER certificate, RFC 2585 §4.1), and ``GET /ocsp/<base64>``, ``POST /ocsp``.

Protected: ``GET /api/v1/certificates/<serial>`` and ``POST /api/v1/verify``. With a
token configured, every request needs ``Authorization: Bearer <token>`` (compared in
constant time), else 401. Without one, only local clients are served (403 otherwise):
``scep_ca.server.access`` and ``config.clients`` decide, so behind a reverse proxy (which must
be listed in ``server.trusted_proxies`` when it runs on this host) a token is needed.

Answers are ``Cache-Control: no-cache``: a deletion must be visible at once (README "Revocation"),
so neither a CRL nor an OCSP answer may be reused by an HTTP cache without revalidation.
"""

from __future__ import annotations

import logging
from types import MappingProxyType

from aiohttp import web

from scep_ca.pki.serials import Base, SerialError
from scep_ca.pki.status import MAX_PEM_BYTES, CertificateParseError
from scep_ca.server.access import BEARER_CHALLENGE, Access, check_access
from scep_ca.services.revocation import AmbiguousSerial, RevocationService

log = logging.getLogger(__name__)

CRL_CONTENT_TYPE = "application/pkix-crl"  # RFC 5280 §4.2.1.13 / RFC 2585 §4.2
CA_CERT_CONTENT_TYPE = "application/pkix-cert"  # RFC 2585 §4.1
OCSP_RESPONSE_TYPE = "application/ocsp-response"
# The only issuing CA for now; the path names it so a second CA can be added later.
# A one-certificate OCSPRequest is ~100 bytes; a signed one with a chain a few kB.
MAX_OCSP_BODY_BYTES = 16 * 1024
_NO_CACHE = MappingProxyType({"Cache-Control": "no-cache"})
# ?base= disambiguates a digits-only serial (see scep_ca.pki.serials).
_BASES: MappingProxyType[str, Base] = MappingProxyType({"auto": "auto", "hex": "hex", "dec": "dec"})


class _BodyTooLarge(Exception):
    pass


async def _read_capped(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise _BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(64 * 1024)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)


def _too_large() -> web.Response:
    return web.Response(status=413, text="request body too large\n")


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class _Handlers:
    def __init__(self, service: RevocationService, api_token: str | None) -> None:
        self._service = service
        self._token = api_token.encode("utf-8") if api_token else None

    def _denied(self, request: web.Request) -> web.Response | None:
        """None when the request may use the status API, else the 401/403 answer."""
        access = check_access(request, self._token)
        if access is Access.GRANTED:
            return None
        if access is Access.BAD_TOKEN:
            return web.json_response(
                {"error": "a valid bearer token is required"},
                status=401,
                headers={"WWW-Authenticate": BEARER_CHALLENGE},
            )
        return _json_error(403, "the status API is served to loopback clients only unless an API token is configured")

    async def crl(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self._service.crl_names():
            raise web.HTTPNotFound(text="no such CRL\n")
        der = await self._service.current_crl(name)
        return web.Response(body=der, content_type=CRL_CONTENT_TYPE, headers=_NO_CACHE)

    async def crl_shard(self, request: web.Request) -> web.Response:
        text = request.match_info["shard"]
        # Plain decimal digits only ("+1", " 1", "01" name no shard): one URL per shard.
        if not text.isascii() or not text.isdigit() or (len(text) > 1 and text[0] == "0") or len(text) > 6:
            raise web.HTTPNotFound(text="no such CRL\n")
        try:
            der = await self._service.shard_crl(request.match_info["name"], int(text))
        except KeyError:
            raise web.HTTPNotFound(text="no such CRL\n") from None
        return web.Response(body=der, content_type=CRL_CONTENT_TYPE, headers=_NO_CACHE)

    async def ca_certificate(self, request: web.Request) -> web.Response:
        der = self._service.ca_certificate_der(request.match_info["name"])
        if der is None:
            raise web.HTTPNotFound(text="no such CA\n")
        return web.Response(body=der, content_type=CA_CERT_CONTENT_TYPE)

    async def ocsp_get(self, request: web.Request) -> web.Response:
        # The raw path: base64 may hold '/', '+' and '%2F'-style escapes that the
        # router's decoded match would mangle; decode_get_path percent-decodes itself.
        raw = request.rel_url.raw_path
        encoded = raw.split("/ocsp/", 1)[1] if "/ocsp/" in raw else request.match_info["b64"]
        der = await self._service.ocsp_get(encoded)
        return web.Response(body=der, content_type=OCSP_RESPONSE_TYPE, headers=_NO_CACHE)

    async def ocsp_post(self, request: web.Request) -> web.Response:
        # Any Content-Type is accepted: RFC 6960 Appendix A.1 names application/ocsp-request,
        # but refusing a mislabelled request helps no one.
        try:
            body = await _read_capped(request, MAX_OCSP_BODY_BYTES)
        except _BodyTooLarge:
            return _too_large()
        der = await self._service.ocsp(body)
        return web.Response(body=der, content_type=OCSP_RESPONSE_TYPE, headers=_NO_CACHE)

    async def certificate(self, request: web.Request) -> web.Response:
        denied = self._denied(request)
        if denied is not None:
            return denied
        base = _BASES.get(request.query.get("base", "auto"))
        if base is None:
            return _json_error(400, "base must be auto, hex or dec")
        try:
            data = await self._service.certificate_status(request.match_info["serial"], base=base)
        except SerialError as exc:
            return _json_error(400, str(exc))
        except AmbiguousSerial as exc:
            return _json_error(409, str(exc))
        if data is None:
            return _json_error(404, "no certificate with this serial")
        return web.json_response(data, headers=_NO_CACHE)

    async def verify(self, request: web.Request) -> web.Response:
        denied = self._denied(request)
        if denied is not None:
            return denied
        try:
            body = await _read_capped(request, MAX_PEM_BYTES)
        except _BodyTooLarge:
            return _too_large()
        try:
            data = await self._service.verify(body)
        except CertificateParseError as exc:
            return _json_error(400, str(exc))
        return web.json_response(data, headers=_NO_CACHE)


def setup_revocation_routes(app: web.Application, service: RevocationService, api_token: str | None) -> None:
    """Register the CRL, OCSP and status API routes on ``app`` (see the module docstring)."""
    handlers = _Handlers(service, api_token)
    app.router.add_get("/crl/{name}.crl", handlers.crl)
    app.router.add_get("/crl/{name}/{shard}.crl", handlers.crl_shard)
    app.router.add_get("/ca/{name}.crt", handlers.ca_certificate)
    app.router.add_get("/ocsp/{b64:.+}", handlers.ocsp_get)
    app.router.add_post("/ocsp", handlers.ocsp_post)
    # Some clients keep the trailing slash of a configured responder URL.
    app.router.add_post("/ocsp/", handlers.ocsp_post)
    app.router.add_get("/api/v1/certificates/{serial}", handlers.certificate)
    app.router.add_post("/api/v1/verify", handlers.verify)
