"""Thin aiohttp handlers for SCEP over HTTP (RFC 8894 section 4.1).

They decode the transport (GET ``message=`` base64 or POST raw DER), cap bodies,
and set content types; everything else happens in ``ScepService``.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re

from aiohttp import web

from challenge.request_client import CLIENT
from scep_ca.protocol.errors import MalformedRequest
from scep_ca.server.query import raw_query_param
from scep_ca.services.scep import PKI_MESSAGE_CONTENT_TYPE, RequestContext, ScepService, UnknownIntegration

log = logging.getLogger(__name__)

SCEP_SERVICE: web.AppKey[ScepService] = web.AppKey("scep_service", ScepService)

_WHITESPACE = re.compile(r"\s+")


def decode_message_param(value: str) -> bytes:
    """Base64 from a GET ``message=``: tolerate spaces for ``+``, line breaks, URL-safe and no padding."""
    # A space can only be a '+' that a proxy or client form-decoded; line breaks come from sscep.
    text = value.replace(" ", "+")
    text = _WHITESPACE.sub("", text)
    text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedRequest("message is not valid base64") from exc


def _bad_request(text: str) -> web.Response:
    return web.Response(status=400, text=text + "\n")


def _not_found() -> web.Response:
    return web.Response(status=404, text="unknown SCEP integration\n")


async def handle_scep(request: web.Request) -> web.Response:
    """``GET|POST /scep/<integration>[/anything]?operation=...``."""
    service = request.app[SCEP_SERVICE]
    integration_id = request.match_info["integration"]
    raw_query = request.rel_url.raw_query_string
    operation = (raw_query_param(raw_query, "operation") or "").strip()
    op = operation.lower()
    try:
        if op == "getcacaps":
            return web.Response(text=await service.get_ca_caps(integration_id), content_type="text/plain")
        if op in ("getcacert", "getnextcacert"):
            getter = service.get_ca_cert if op == "getcacert" else service.get_next_ca_cert
            body, ctype = await getter(integration_id)
            # Set the header directly: Apple rejects a GetCACert Content-Type with parameters.
            return web.Response(body=body, headers={"Content-Type": ctype})
        if op == "pkioperation":
            der = await _pki_message(request, raw_query)
            ctx = RequestContext(remote=request[CLIENT].address, user_agent=request.headers.get("User-Agent"))
            reply = await service.pki_operation(integration_id, der, ctx)
            return web.Response(body=reply, headers={"Content-Type": PKI_MESSAGE_CONTENT_TYPE})
    except UnknownIntegration:
        return _not_found()
    except MalformedRequest as exc:
        log.warning("bad SCEP request integration=%s remote=%s: %s", integration_id, request[CLIENT].address, exc)
        return _bad_request(str(exc))
    if not operation:
        return _bad_request("missing operation parameter")
    return _bad_request("unsupported operation")


async def _pki_message(request: web.Request, raw_query: str) -> bytes:
    if request.method == "POST":
        # Any Content-Type: scepclient sends application/octet-stream, others x-pki-message.
        body = await request.read()
        if body:
            return body
    message = raw_query_param(raw_query, "message")
    if not message:
        raise MalformedRequest("missing message")
    return decode_message_param(message)


def setup_scep_routes(app: web.Application, service: ScepService) -> None:
    app[SCEP_SERVICE] = service
    for path in ("/scep/{integration}", "/scep/{integration}/{tail:.*}"):
        app.router.add_route("GET", path, handle_scep)
        app.router.add_route("POST", path, handle_scep)
