"""aiohttp routes of the challenge URL: ``/challenge/<integration-id>/certsrv/mscep_admin/``.

Thin handlers: everything is decided in ``ChallengeService.handle``. ``certsrv``
and ``mscep_admin`` match in any case, the trailing slash is optional, and GET
and POST both work (NDES accepts both; Intune's connector scripts POST). HEAD is
not routed: it would consume a challenge from the cache without showing it.

The page is sent as raw bytes with an explicit ``Content-Type: text/html``:
``web.Response(content_type=...)`` would append ``; charset=utf-8`` to a
``text/*`` type, which is wrong for a UTF-16LE body and not what NDES sends.
"""

from __future__ import annotations

from aiohttp import web
from multidict import CIMultiDict

from challenge.request_client import CLIENT
from challenge.service import ChallengeRequest, ChallengeService
from challenge.urls import CHALLENGE_PATH

SERVICE: web.AppKey[ChallengeService] = web.AppKey("challenge_service", ChallengeService)


async def _handle(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    client = request[CLIENT]
    answer = await service.handle(
        ChallengeRequest(
            integration_id=request.match_info["integration_id"],
            authorization=request.headers.get("Authorization"),
            connection=request.transport,
            client_address=client.address,
            client_local=client.local,
            host=request.headers.get("Host"),
        )
    )
    return web.Response(status=answer.status, body=answer.body, headers=CIMultiDict(answer.headers))


def setup_challenge_routes(app: web.Application, service: ChallengeService) -> None:
    """Register the challenge URL (GET and POST) on ``app``, served by ``service``."""
    app[SERVICE] = service
    app.router.add_route("GET", CHALLENGE_PATH, _handle)
    app.router.add_route("POST", CHALLENGE_PATH, _handle)
