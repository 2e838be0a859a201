"""The challenge URL over HTTP on a real SQLite store: NTLM (pyspnego as the client), Basic,
refusals, lockout, cache full, and the page as the MDM parsers read it.

NTLM is connection-bound, so the test client has a one-connection connector: Type 1
and Type 3 travel on the same keep-alive connection, as with a real MDM server.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import re
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import spnego
from aiohttp import web
from aiohttp.test_utils import TestClient

from challenge import ntlm
from challenge.codes import hash_challenge
from challenge.credentials import Credentials, make_credentials
from challenge.request_client import client_middleware
from challenge.service import ChallengeRequest, ChallengeService
from challenge.urls import challenge_url
from challenge.web import setup_challenge_routes
from config.clients import TrustedProxies
from config.model import ChallengeConfig
from scep_ca.pki.ca import CAIdentity, create_ca
from scep_ca.pki.records import Integration
from store.base import IntegrationNotFound
from store.sqlite import SQLiteStore

SECRET_KEY = bytes(range(32))
FLEET_REGEX = re.compile(r"(?i)The enrollment challenge password is: <B> (\S*)")
HEX_RUN = re.compile(r"[0-9A-Fa-f]{16}")
LABEL = "The enrollment challenge password is: <B>"

ClientFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


class Clock:
    """A settable UTC clock shared by the service and the assertions."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@dataclass
class Env:
    client: TestClient[web.Request, web.Application]
    store: SQLiteStore
    service: ChallengeService
    clock: Clock
    ca: CAIdentity
    a: Integration
    a_password: str
    b: Integration
    b_password: str

    def url(self, integration_id: str | None = None) -> str:
        return f"/challenge/{integration_id or self.a.id}/certsrv/mscep_admin/"

    async def unused(self, integration_id: str | None = None) -> int:
        return await self.store.count_unused_challenges(integration_id or self.a.id, self.clock())

    async def usable(self, challenge: str, integration_id: str | None = None) -> bool:
        return await self.store.challenge_usable(integration_id or self.a.id, hash_challenge(challenge), self.clock())


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CAIdentity:
    path = Path(tmp_path_factory.mktemp("challenge-ca"))
    return create_ca(path, subject="CN=Challenge Test CA", key_size=2048, validity_days=30, passphrase=None)


@pytest.fixture(scope="module")
def credentials() -> dict[str, Credentials]:
    # scrypt is deliberately slow: make the two integrations' credentials once per module.
    return {iid: make_credentials(SECRET_KEY, iid) for iid in ("intega", "integb")}


def _integration(creds: Credentials, iid: str, allow_basic: bool | None = None) -> Integration:
    return Integration(
        id=iid,
        name=iid,
        subject_template="CN=$USERID$",
        created_at=dt.datetime.now(dt.UTC),
        validity_days=365,
        username=creds.username,
        password_scrypt=creds.password_scrypt,
        nt_hash_encrypted=creds.nt_hash_encrypted,
        allow_basic=allow_basic,
    )


EnvFactory = Callable[..., Awaitable[Env]]


@pytest.fixture
async def make_env(
    tmp_path: Path, aiohttp_client: ClientFactory, ca: CAIdentity, credentials: dict[str, Credentials]
) -> AsyncIterator[EnvFactory]:
    stores: list[SQLiteStore] = []

    async def factory(
        cfg: ChallengeConfig | None = None,
        *,
        tls: bool = False,
        a_basic: bool | None = None,
        trusted_proxies: tuple[str, ...] = (),
    ) -> Env:
        store = SQLiteStore(tmp_path / f"store{len(stores)}.sqlite3")
        await store.open()
        stores.append(store)
        a = _integration(credentials["intega"], "intega", a_basic)
        b = _integration(credentials["integb"], "integb")
        await store.create_integration(a)
        await store.create_integration(b)
        clock = Clock()
        service = ChallengeService(
            store, cfg or ChallengeConfig(), ca.fingerprint_md5, SECRET_KEY, tls=tls, clock=clock
        )
        app = web.Application(middlewares=[client_middleware(TrustedProxies.parse(trusted_proxies))])
        setup_challenge_routes(app, service)
        client = await aiohttp_client(app, connector=aiohttp.TCPConnector(limit=1))
        return Env(
            client,
            store,
            service,
            clock,
            ca,
            a,
            credentials["intega"].password,
            b,
            credentials["integb"].password,
        )

    yield factory
    for store in stores:
        await store.close()


@pytest.fixture
async def env(make_env: EnvFactory) -> Env:
    return await make_env()


# -- helpers --------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def step(ctx: Any, data: bytes | None = None) -> bytes:
    """One pyspnego client step (its stubs say the token may be None; for NTLM it never is)."""
    token = ctx.step(data)
    assert isinstance(token, bytes)
    return token


async def ntlm_request(
    client: TestClient[web.Request, web.Application],
    url: str,
    user: str,
    password: str,
    *,
    scheme: str = "NTLM",
    method: str = "GET",
    type3: Callable[[bytes, bytes], bytes] | None = None,
    type3_client: TestClient[web.Request, web.Application] | None = None,
    before_type3: Callable[[], None] | None = None,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> aiohttp.ClientResponse:
    """Type 1 (without waiting for a 401), our Type 2, then Type 3 on the same connection.

    ``type3`` replaces the client's Type 3 (given Type 1 and Type 2) with a hand-made one.
    """
    # Names this server as a real client does (MsvAvTargetName HTTP/<host of the URL>).
    ctx = spnego.client(user, password, hostname="127.0.0.1", service="HTTP", protocol="ntlm")
    type1 = step(ctx)
    extra = headers or {}
    first = await client.request(method, url, data=data, headers={**extra, "Authorization": f"{scheme} {_b64(type1)}"})
    assert first.status == 401
    await first.read()
    (offer,) = first.headers.getall("WWW-Authenticate")
    assert offer.startswith(f"{scheme} ")
    type2 = base64.b64decode(offer.split(" ", 1)[1])
    answer = type3(type1, type2) if type3 else step(ctx, type2)
    if before_type3:
        before_type3()
    final = await (type3_client or client).request(
        method, url, data=data, headers={**extra, "Authorization": f"{scheme} {_b64(answer)}"}
    )
    await final.read()
    return final


async def basic_request(
    client: TestClient[web.Request, web.Application], url: str, user: str, password: str, method: str = "GET"
) -> aiohttp.ClientResponse:
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    resp = await client.request(method, url, headers={"Authorization": f"Basic {token}"})
    await resp.read()
    return resp


async def page_text(resp: aiohttp.ClientResponse) -> str:
    body = await resp.read()
    assert body[:2] == b"<\x00", "UTF-16LE without a byte-order mark"
    return body.decode("utf-16-le")


def parse_three_ways(html: str) -> str:
    """The password as Fleet's regex, a last-</B> parser and a hex-run parser read it; all must agree."""
    fleet = FLEET_REGEX.search(html)
    assert fleet is not None
    start = html.index(LABEL) + len(LABEL)
    last_bold = html[start : html.rindex("</B>")].strip()
    hex_run = HEX_RUN.search(html)
    assert hex_run is not None
    assert fleet.group(1) == last_bold == hex_run.group(0)
    return last_bold


def v1_type3(user: str) -> Callable[[bytes, bytes], bytes]:
    """A Type 3 carrying a 24-byte (NTLMv1) NT response and an LM response."""

    def build(_type1: bytes, _type2: bytes) -> bytes:
        fields = [b"\x11" * 24, b"\x22" * 24, b"", user.encode("utf-16-le"), "WS".encode("utf-16-le"), b""]
        header = ntlm.SIGNATURE + struct.pack("<I", ntlm.AUTHENTICATE)
        offset, descriptors = 64, b""
        for value in fields:
            descriptors += struct.pack("<HHI", len(value), len(value), offset)
            offset += len(value)
        flags = ntlm.Flag.UNICODE | ntlm.Flag.NTLM | ntlm.Flag.EXTENDED_SESSIONSECURITY
        return header + descriptors + struct.pack("<I", flags) + b"".join(fields)

    return build


def auth_offers(resp: aiohttp.ClientResponse) -> list[str]:
    return resp.headers.getall("WWW-Authenticate", [])


# -- no credentials -------------------------------------------------------------------


async def test_no_credentials_gets_401_with_ntlm_negotiate_and_basic(env: Env) -> None:
    resp = await env.client.get(env.url())
    assert resp.status == 401
    assert auth_offers(resp) == ["Negotiate", "NTLM", 'Basic realm="scep-ca"']
    assert await env.unused() == 0


async def test_basic_not_offered_when_disabled(make_env: EnvFactory) -> None:
    env = await make_env(a_basic=False)
    resp = await env.client.get(env.url())
    assert auth_offers(resp) == ["Negotiate", "NTLM"]
    resp = await basic_request(env.client, env.url(), env.a.username, env.a_password)
    assert resp.status == 401
    assert await env.unused() == 0


async def test_default_basic_policy_by_transport(make_env: EnvFactory) -> None:
    """Basic by default only over TLS or from loopback (checked on the service directly)."""

    class Conn:
        pass

    for tls, address, local, offered in [
        (False, "203.0.113.5", False, False),
        (True, "203.0.113.5", False, True),
        (False, "::1", True, True),
    ]:
        env = await make_env(tls=tls)
        token = "Basic " + _b64(f"{env.a.username}:{env.a_password}".encode())
        answer = await env.service.handle(ChallengeRequest(env.a.id, token, Conn(), address, local))
        assert (answer.status == 200) is offered
        bare = await env.service.handle(ChallengeRequest(env.a.id, None, Conn(), address, local))
        assert (("WWW-Authenticate", 'Basic realm="scep-ca"') in bare.headers) is offered


# -- NTLM -----------------------------------------------------------------------------


async def test_ntlm_issues_a_challenge_on_the_ndes_page(env: Env) -> None:
    resp = await ntlm_request(env.client, env.url(), env.a.username, env.a_password)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/html"  # no charset: the body is UTF-16LE
    html = await page_text(resp)
    challenge = parse_three_ways(html)
    assert len(challenge) == 16 and challenge == challenge.upper()
    assert await env.usable(challenge)
    assert not await env.usable(challenge, env.b.id)
    md5 = env.ca.fingerprint_md5.upper()
    thumb = " ".join(md5[i : i + 8] for i in range(0, 32, 8))
    assert f"The thumbprint (hash value) for the CA certificate is: <B> {thumb} </B>" in html
    assert "will expire within 60 minutes." in html
    assert "<Title>Network Device Enrollment Service</Title>" in html


@pytest.mark.parametrize("form", ["{u}", "EXAMPLE\\{u}", "{u}@example.com", "{U}", "corp.example.com\\{U}"])
async def test_ntlm_username_forms(env: Env, form: str) -> None:
    user = form.format(u=env.a.username, U=env.a.username.upper())
    resp = await ntlm_request(env.client, env.url(), user, env.a_password)
    assert resp.status == 200
    assert await env.unused() == 1


async def test_raw_ntlmssp_inside_negotiate(env: Env) -> None:
    resp = await ntlm_request(env.client, env.url(), env.a.username, env.a_password, scheme="Negotiate")
    assert resp.status == 200
    assert await env.usable(parse_three_ways(await page_text(resp)))


async def test_anonymous_first_then_ntlm_like_go_ntlmssp(env: Env) -> None:
    first = await env.client.get(env.url())
    assert first.status == 401 and "NTLM" in auth_offers(first)
    await first.read()
    resp = await ntlm_request(env.client, env.url(), env.a.username, env.a_password)
    assert resp.status == 200


async def test_every_request_needs_its_own_handshake(env: Env) -> None:
    assert (await ntlm_request(env.client, env.url(), env.a.username, env.a_password)).status == 200
    again = await env.client.get(env.url())  # same connection, no Authorization
    assert again.status == 401
    assert await env.unused() == 1


async def test_post_and_path_variants(env: Env) -> None:
    paths = [
        env.url(),
        env.url().rstrip("/"),
        f"/challenge/{env.a.id}/CertSrv/MSCEP_ADMIN/",
        f"/challenge/{env.a.id}/CERTSRV/mscep_admin",
    ]
    for path in paths:
        assert (await ntlm_request(env.client, path, env.a.username, env.a_password)).status == 200
    # go-ntlmssp resends the body with every step; Intune's scripts POST "operation=GetCACaps".
    resp = await ntlm_request(
        env.client, env.url(), env.a.username, env.a_password, method="POST", data=b"operation=GetCACaps"
    )
    assert resp.status == 200
    assert await env.unused() == 5
    assert challenge_url("https://ca.example.com/", "intega").endswith(env.url())


async def test_other_paths_and_methods(env: Env) -> None:
    for path in [env.url() + "/", f"/challenge/{env.a.id}/certsrv/mscep/", f"/challenge/{env.a.id}/certsrv"]:
        assert (await env.client.get(path)).status == 404
    # HEAD would use up a challenge without showing it.
    assert (await env.client.head(env.url())).status == 405
    assert (await env.client.put(env.url())).status == 405


async def test_ntlm_wrong_password(env: Env) -> None:
    resp = await ntlm_request(env.client, env.url(), env.a.username, "WRONG" + env.a_password)
    assert resp.status == 401
    assert "NTLM" in auth_offers(resp)
    assert await env.unused() == 0


async def test_ntlm_unknown_user(env: Env) -> None:
    resp = await ntlm_request(env.client, env.url(), "scep-nobody", env.a_password)
    assert resp.status == 401
    assert await env.unused() == 0


async def test_ntlmv1_refused(env: Env) -> None:
    resp = await ntlm_request(env.client, env.url(), env.a.username, env.a_password, type3=v1_type3(env.a.username))
    assert resp.status == 401
    assert await env.unused() == 0


async def test_this_username_with_other_integrations_password(env: Env) -> None:
    resp = await ntlm_request(env.client, env.url(), env.a.username, env.b_password)
    assert resp.status == 401
    resp = await basic_request(env.client, env.url(), env.a.username, env.b_password)
    assert resp.status == 401
    assert await env.unused() == 0 and await env.unused(env.b.id) == 0


async def test_other_integrations_credentials_get_no_permission_page(env: Env) -> None:
    for resp in [
        await ntlm_request(env.client, env.url(), env.b.username, env.b_password),
        await basic_request(env.client, env.url(), env.b.username, env.b_password),
    ]:
        assert resp.status == 200
        html = await page_text(resp)
        assert "You do not have sufficient permission to enroll with SCEP.  Please contact" in html
        assert not FLEET_REGEX.search(html)
    assert await env.unused() == 0 and await env.unused(env.b.id) == 0
    # ...while they do work on their own integration's URL.
    assert (await basic_request(env.client, env.url(env.b.id), env.b.username, env.b_password)).status == 200


async def test_type3_on_another_connection_is_refused(env: Env, aiohttp_client: ClientFactory) -> None:
    other = await aiohttp_client(env.client.server)
    resp = await ntlm_request(env.client, env.url(), env.a.username, env.a_password, type3_client=other)
    assert resp.status == 401
    assert await env.unused() == 0


async def test_stale_handshake_expires(env: Env) -> None:
    resp = await ntlm_request(
        env.client, env.url(), env.a.username, env.a_password, before_type3=lambda: env.clock.advance(61)
    )
    assert resp.status == 401
    assert await env.unused() == 0


async def test_type3_replay_is_refused(env: Env) -> None:
    ctx = spnego.client(env.a.username, env.a_password, hostname="127.0.0.1", service="HTTP", protocol="ntlm")
    first = await env.client.get(env.url(), headers={"Authorization": f"NTLM {_b64(step(ctx))}"})
    type2 = base64.b64decode(first.headers["WWW-Authenticate"].split(" ", 1)[1])
    await first.read()
    type3 = {"Authorization": f"NTLM {_b64(step(ctx, type2))}"}
    assert (await env.client.get(env.url(), headers=type3)).status == 200
    assert (await env.client.get(env.url(), headers=type3)).status == 401
    assert await env.unused() == 1


@pytest.mark.parametrize(
    "header",
    [
        "NTLM !!!notbase64",
        "NTLM " + _b64(b"NTLMSSP\x00\x02\x00\x00\x00" + b"\x00" * 40),
        "Negotiate " + _b64(b"\x60\x82\x01\x00kerberos-ish"),
        "Negotiate",
        "Digest username=x",
        "Basic !!!",
    ],
)
async def test_malformed_authorization_gets_401(env: Env, header: str) -> None:
    resp = await env.client.get(env.url(), headers={"Authorization": header})
    assert resp.status == 401
    assert await env.unused() == 0


# -- Basic ----------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["{u}", "EXAMPLE\\{u}", "{u}@example.com"])
async def test_basic_issues_a_challenge(env: Env, form: str) -> None:
    resp = await basic_request(env.client, env.url(), form.format(u=env.a.username), env.a_password)
    assert resp.status == 200
    assert await env.usable(parse_three_ways(await page_text(resp)))


async def test_basic_wrong_password(env: Env) -> None:
    resp = await basic_request(env.client, env.url(), env.a.username, env.a_password.lower())
    assert resp.status == 401
    assert await env.unused() == 0


# -- unknown and deleted integrations ---------------------------------------------------


async def test_unknown_integration(env: Env) -> None:
    url = env.url("nosuchone")
    assert (await env.client.get(url)).status == 401  # credentials first, as IIS does
    assert (await basic_request(env.client, url, env.a.username, env.a_password)).status == 404
    assert (await ntlm_request(env.client, url, env.a.username, env.a_password)).status == 404
    assert (await env.client.get("/challenge/bad.id!/certsrv/mscep_admin/")).status == 404


async def test_deleted_integration(env: Env) -> None:
    await env.store.delete_integration(env.a.id, env.clock())
    assert (await ntlm_request(env.client, env.url(), env.a.username, env.a_password)).status == 404
    assert (await basic_request(env.client, env.url(), env.a.username, env.a_password)).status == 404
    with pytest.raises(IntegrationNotFound):
        await env.service.issue(env.a.id)


# -- rotation ---------------------------------------------------------------------------


async def test_rotation_replaces_both_hashes(env: Env) -> None:
    new = make_credentials(SECRET_KEY, env.a.id)
    await env.store.update_credentials(
        env.a.id,
        username=new.username,
        password_scrypt=new.password_scrypt,
        nt_hash_encrypted=new.nt_hash_encrypted,
    )
    assert (await ntlm_request(env.client, env.url(), env.a.username, env.a_password)).status == 401
    assert (await basic_request(env.client, env.url(), env.a.username, env.a_password)).status == 401
    assert (await ntlm_request(env.client, env.url(), new.username, new.password)).status == 200
    assert (await basic_request(env.client, env.url(), new.username, new.password)).status == 200


async def test_integration_without_credentials_refuses(env: Env) -> None:
    bare = replace(env.a, id="nocreds", username="scep-nocreds", password_scrypt=None, nt_hash_encrypted=None)
    await env.store.create_integration(bare)
    assert (await ntlm_request(env.client, env.url("nocreds"), "scep-nocreds", "x")).status == 401
    assert (await basic_request(env.client, env.url("nocreds"), "scep-nocreds", "x")).status == 401


async def test_wrong_secret_key_is_a_server_error(env: Env) -> None:
    env.service._secret_key = bytes(32)  # as if secret.key had been replaced
    resp = await ntlm_request(env.client, env.url(), env.a.username, env.a_password)
    assert resp.status == 500
    assert await env.unused() == 0


# -- lockout ----------------------------------------------------------------------------


async def test_lockout_answers_429_then_expires(make_env: EnvFactory) -> None:
    cfg = ChallengeConfig(lockout_failures=3, lockout_window_seconds=60, lockout_seconds=120)
    env = await make_env(cfg)
    for _ in range(3):
        assert (await ntlm_request(env.client, env.url(), env.a.username, "wrong")).status == 401
    tripped = await basic_request(env.client, env.url(), env.a.username, "wrong")
    assert tripped.status == 429
    assert tripped.headers["Retry-After"] == "120"
    # Locked: even the right password (any form of the name, either method) gets 429.
    assert (await basic_request(env.client, env.url(), "DOM\\" + env.a.username.upper(), env.a_password)).status == 429
    locked = await ntlm_request(env.client, env.url(), env.a.username, env.a_password)
    assert locked.status == 429
    assert await env.unused() == 0
    # Another client address is not locked.

    class Conn:
        pass

    token = "Basic " + _b64(f"{env.a.username}:{env.a_password}".encode())
    elsewhere = await env.service.handle(ChallengeRequest(env.a.id, token, Conn(), "127.0.0.2", True))
    assert elsewhere.status == 200
    env.clock.advance(121)
    assert (await ntlm_request(env.client, env.url(), env.a.username, env.a_password)).status == 200


async def test_failures_outside_the_window_do_not_lock(make_env: EnvFactory) -> None:
    env = await make_env(ChallengeConfig(lockout_failures=2, lockout_window_seconds=60, lockout_seconds=120))
    for _ in range(4):
        assert (await basic_request(env.client, env.url(), env.a.username, "wrong")).status == 401
        env.clock.advance(31)
    assert (await basic_request(env.client, env.url(), env.a.username, env.a_password)).status == 200


async def test_two_instances_on_one_store_file_share_the_lockout(
    make_env: EnvFactory, tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    """Two workers (two store objects on one SQLite file, two services, two apps): failures
    alternating between them trip the lock at exactly the configured count, and both honour it."""
    cfg = ChallengeConfig(lockout_failures=3, lockout_window_seconds=60, lockout_seconds=120)
    env = await make_env(cfg)
    path = Path((await env.store.info()).extra["path"])
    other_store = SQLiteStore(path)
    await other_store.open()
    try:
        other = ChallengeService(other_store, cfg, env.ca.fingerprint_md5, SECRET_KEY, tls=False, clock=env.clock)
        app = web.Application(middlewares=[client_middleware(TrustedProxies())])
        setup_challenge_routes(app, other)
        other_client = await aiohttp_client(app, connector=aiohttp.TCPConnector(limit=1))
        clients = [env.client, other_client]
        # A success on one instance clears failures counted by the other (two failures: the
        # third would use up the window's three checks, and the success could not be checked).
        for i in range(2):
            assert (await basic_request(clients[i % 2], env.url(), env.a.username, "wrong")).status == 401
        assert (await basic_request(other_client, env.url(), env.a.username, env.a_password)).status == 200
        for i in range(3):
            assert (await ntlm_request(clients[i % 2], env.url(), env.a.username, "wrong")).status == 401
        tripped = await basic_request(other_client, env.url(), env.a.username, "wrong")
        assert (tripped.status, tripped.headers["Retry-After"]) == (429, "120")
        for client in clients:
            assert (await ntlm_request(client, env.url(), env.a.username, env.a_password)).status == 429
            assert (await basic_request(client, env.url(), env.a.username, env.a_password)).status == 429
        assert await env.unused() == 1  # only the page before the lock
        env.clock.advance(121)
        assert (await ntlm_request(env.client, env.url(), env.a.username, env.a_password)).status == 200
    finally:
        await other_store.close()


# -- cache, page options, issue() ---------------------------------------------------------


async def test_cache_full_page(make_env: EnvFactory) -> None:
    env = await make_env(ChallengeConfig(max_unused=2, validity_minutes=30))
    for _ in range(2):
        resp = await basic_request(env.client, env.url(), env.a.username, env.a_password)
        assert "will expire within 30 minutes." in await page_text(resp)
    full = await basic_request(env.client, env.url(), env.a.username, env.a_password)
    assert full.status == 200
    html = await page_text(full)
    assert "<P> The password cache is full. <P>" in html
    assert "cache more than 2 passwords" in html
    assert not FLEET_REGEX.search(html)
    assert await env.service.issue(env.a.id) is None
    assert await env.unused() == 2
    env.clock.advance(31 * 60)  # the two expire
    assert (await env.service.issue(env.a.id)) is not None


async def test_longer_challenges_and_bom(make_env: EnvFactory) -> None:
    env = await make_env(ChallengeConfig(length_bytes=12, utf16_bom=True))
    resp = await basic_request(env.client, env.url(), env.a.username, env.a_password)
    body = await resp.read()
    assert body[:2] == b"\xff\xfe"
    match = FLEET_REGEX.search(body.decode("utf-16"))
    assert match and len(match.group(1)) == 24


async def test_issue_for_the_cli(env: Env) -> None:
    challenge = await env.service.issue(env.a.id)
    assert challenge is not None and await env.usable(challenge)
    with pytest.raises(IntegrationNotFound):
        await env.service.issue("nosuchone")


# -- logging ----------------------------------------------------------------------------


async def test_logs_hold_no_secrets(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    ok = await ntlm_request(env.client, env.url(), env.a.username, env.a_password)
    challenge = parse_three_ways(await page_text(ok))
    await basic_request(env.client, env.url(), env.a.username, "hunter2-wrong")
    # Server-side records only: pyspnego (the test's client) logs its own tokens at DEBUG.
    text = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("spnego"))
    assert env.a.username in text and "127.0.0.1" in text
    for secret in [env.a_password, challenge, "hunter2-wrong", "TlRMTVNT"]:
        assert secret not in text


async def test_connections_without_weak_references(env: Env) -> None:
    """Event loops whose transports cannot be weakly referenced still get NTLM (strong fallback table)."""

    class SlotConn:
        __slots__ = ()

    async def handshake(conn: object, type3_conn: object) -> int:
        ctx = spnego.client(env.a.username, env.a_password, hostname="127.0.0.1", service="HTTP", protocol="ntlm")
        type1 = f"NTLM {_b64(step(ctx))}"
        first = await env.service.handle(ChallengeRequest(env.a.id, type1, conn, "127.0.0.1", host="127.0.0.1"))
        offer = dict(first.headers)["WWW-Authenticate"]
        type2 = base64.b64decode(offer.split(" ", 1)[1])
        token = f"NTLM {_b64(step(ctx, type2))}"
        final = await env.service.handle(ChallengeRequest(env.a.id, token, type3_conn, "127.0.0.1", host="127.0.0.1"))
        return final.status

    conn = SlotConn()
    assert await handshake(conn, conn) == 200
    assert await handshake(conn, SlotConn()) == 401
    assert await env.unused() == 1


# -- behind a trusted proxy -----------------------------------------------------------


async def test_basic_over_plain_http_refused_through_a_trusted_proxy(make_env: EnvFactory) -> None:
    """The test client connects from 127.0.0.1, listed as a proxy: nobody is local through it."""
    env = await make_env(trusted_proxies=("127.0.0.1",))
    for headers in ({}, {"X-Forwarded-For": "127.0.0.1"}, {"X-Client-IP": "127.0.0.1"}):
        bare = await env.client.get(env.url(), headers=headers)
        assert bare.status == 401
        assert 'Basic realm="scep-ca"' not in bare.headers.getall("WWW-Authenticate")
        token = base64.b64encode(f"{env.a.username}:{env.a_password}".encode()).decode("ascii")
        refused = await env.client.get(env.url(), headers={**headers, "Authorization": f"Basic {token}"})
        assert refused.status == 401
    assert await env.unused() == 0
    # Without the proxy listed, the same direct loopback client may use Basic (as before).
    direct = await make_env()
    assert (await basic_request(direct.client, direct.url(), direct.a.username, direct.a_password)).status == 200


async def test_lockout_keyed_by_the_forwarded_client_address(make_env: EnvFactory) -> None:
    """Two clients behind one trusted proxy: one's failures do not lock the other out."""
    cfg = ChallengeConfig(lockout_failures=3, lockout_window_seconds=60, lockout_seconds=120)
    env = await make_env(cfg, trusted_proxies=("127.0.0.1",))
    stranger = {"X-Forwarded-For": "203.0.113.66"}
    mdm = {"X-Forwarded-For": "198.51.100.10"}
    for _ in range(3):
        assert (await ntlm_request(env.client, env.url(), env.a.username, "wrong", headers=stranger)).status == 401
    assert (await ntlm_request(env.client, env.url(), env.a.username, "wrong", headers=stranger)).status == 429
    assert (await ntlm_request(env.client, env.url(), env.a.username, env.a_password, headers=stranger)).status == 429
    # The real MDM, behind the same proxy, still gets its page.
    assert (await ntlm_request(env.client, env.url(), env.a.username, env.a_password, headers=mdm)).status == 200
    # A spoofed left-most entry does not move the stranger to the MDM's key.
    spoofed = {"X-Forwarded-For": "198.51.100.10, 203.0.113.66"}
    assert (await ntlm_request(env.client, env.url(), env.a.username, env.a_password, headers=spoofed)).status == 429
    assert (await ntlm_request(env.client, env.url(), env.a.username, env.a_password, headers=mdm)).status == 200
