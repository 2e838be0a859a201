"""The NDES-style challenge service: authentication, lockout, challenge issuance, pages.

Free of aiohttp: ``handle`` takes a ``ChallengeRequest`` (integration id from the
path, the Authorization header, an object identifying the TCP connection, the
peer address) and returns a ``ChallengeResponse`` that ``challenge.web`` sends as
is. ``issue`` is also what ``scep-ca challenge new`` calls.

Answers, in the order they are decided:

* Integration id not of the id form: 404.
* No usable Authorization: 401 with ``WWW-Authenticate: Negotiate``,
  ``WWW-Authenticate: NTLM`` and, where Basic is allowed (``challenge.basic``),
  ``WWW-Authenticate: Basic realm="scep-ca"``. IIS asks for credentials before it
  looks at the resource, and MDM NTLM clients start their handshake from this 401.
* NTLM Type 1 (``NTLM`` or raw NTLMSSP in ``Negotiate``, with or without a prior
  401): 401 carrying our Type 2; the server challenge is remembered for this TCP
  connection only, for at most ``handshake_ttl`` seconds, and used once.
* Credentials (NTLM Type 3 or Basic) for an unknown or deleted integration: 404.
* (user name, client address) locked out: 429 with ``Retry-After`` (see
  ``challenge.lockout`` for the policy; the state is in the store, shared by all
  workers and hosts). The lock is checked before the credentials, so even right
  ones get 429 until it ends.
* Wrong credentials (unknown user, wrong password, this integration's user name
  with another integration's password, NTLMv1 or LM, a bad MIC): 401 as above,
  counted towards the lockout; the failure that trips it gets 429.
* Valid credentials of another integration: NDES's no-permission page (200),
  which is what NDES shows an authenticated account without enrollment rights.
  No challenge is created: one integration's credentials never open another's.
* Valid credentials of this integration: a new challenge on NDES's page (200),
  or NDES's cache-full page (200) when ``max_unused`` unused challenges exist.

Authentication is per request (like IIS with ``authPersistSingleRequest``): a
successful NTLM handshake authenticates the request that carried the Type 3,
not the connection, so a pooling proxy in front cannot hand one client's
authenticated connection to another. go-ntlmssp (Fleet) and Apache HttpClient
(Java MDMs) simply handshake again for the next challenge.

Logs carry the user name, client address, integration id and outcome; never
passwords, challenges, NTLM messages or hashes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import logging
import re
import secrets
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from challenge import ntlm, page
from challenge.basic import basic_allowed, parse_basic
from challenge.credentials import (
    CredentialError,
    bare_username,
    decrypt_nt_hash,
    scrypt_verify,
    username_matches,
)
from challenge.issuer import issue_challenge
from challenge.lockout import Lockout
from config.model import ChallengeConfig
from store.base import Integration, IntegrationNotFound, Store

log = logging.getLogger("challenge")

REALM = "scep-ca"
HANDSHAKE_TTL_SECONDS = 60.0
# Integration ids are short URL-safe strings; anything else cannot exist.
_INTEGRATION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HTML = (("Content-Type", "text/html"), ("Cache-Control", "no-store"))
_TEXT = (("Content-Type", "text/plain; charset=utf-8"),)


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class ChallengeRequest:
    """What the service needs from an HTTP request to the challenge URL."""

    integration_id: str
    authorization: str | None
    # Identifies the TCP connection (the aiohttp transport); held weakly. None: closed.
    connection: object | None
    # The resolved client (config.clients): the lockout key's address, and whether
    # Basic over plain HTTP is allowed by default.
    client_address: str | None
    client_local: bool = False


@dataclass(frozen=True)
class ChallengeResponse:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass(frozen=True)
class _Handshake:
    """An NTLM exchange between our Type 2 and the client's Type 3."""

    scheme: str
    negotiate_raw: bytes
    challenge_raw: bytes
    challenge_flags: int
    server_challenge: bytes
    started: float


class _HandshakeTable:
    """Pending NTLM handshakes per connection, dropped when the connection goes away.

    Connections are held weakly. Transports that cannot be weakly referenced (not
    asyncio's, but possibly other event loops') fall back to a strong table that
    is purged of expired entries on every insert.
    """

    def __init__(self, ttl: float, max_strong: int = 10_000) -> None:
        self._ttl = ttl
        self._max_strong = max_strong
        self._weak: weakref.WeakKeyDictionary[object, _Handshake] = weakref.WeakKeyDictionary()
        self._strong: dict[int, tuple[object, _Handshake]] = {}

    def put(self, connection: object, handshake: _Handshake) -> None:
        try:
            self._weak[connection] = handshake
            return
        except TypeError:
            pass
        now = handshake.started
        for key in [k for k, (_, h) in self._strong.items() if now - h.started > self._ttl]:
            del self._strong[key]
        if len(self._strong) >= self._max_strong:
            del self._strong[next(iter(self._strong))]
        # The stored reference keeps the object alive, so its id() cannot be reused meanwhile.
        self._strong[id(connection)] = (connection, handshake)

    def pop(self, connection: object, now: float) -> _Handshake | None:
        """The connection's pending handshake (removed: a server challenge is used once)."""
        handshake: _Handshake | None
        try:
            handshake = self._weak.pop(connection, None)
        except TypeError:
            entry = self._strong.get(id(connection))
            handshake = None
            if entry is not None and entry[0] is connection:
                del self._strong[id(connection)]
                handshake = entry[1]
        if handshake is None or now - handshake.started > self._ttl:
            return None
        return handshake

    def __len__(self) -> int:
        return len(self._weak) + len(self._strong)


class _Misconfigured(Exception):
    """Stored credentials cannot be used with this server's secret key."""


# A credential check: None when the credentials are right for the integration, else
# a short reason for the log.
_Check = Callable[[Integration], Awaitable[str | None]]


class ChallengeService:
    """Hands out one-time challenges on an NDES ``mscep_admin``-compatible page."""

    def __init__(
        self,
        store: Store,
        cfg: ChallengeConfig,
        ca_md5_hex: str,
        secret_key: bytes,
        tls: bool,
        *,
        clock: Callable[[], dt.datetime] = _utc_now,
        target_names: ntlm.TargetNames | None = None,
        handshake_ttl: float = HANDSHAKE_TTL_SECONDS,
    ) -> None:
        self._store = store
        self._cfg = cfg
        self._thumbprint = page.format_thumbprint(ca_md5_hex)
        self._secret_key = secret_key
        self._tls = tls
        self._clock = clock
        self._names = target_names or ntlm.TargetNames()
        self._handshakes = _HandshakeTable(handshake_ttl)
        # In the store: shared by every worker process and host (challenge.lockout).
        self._lockout = Lockout(
            store,
            cfg.lockout_failures,
            cfg.lockout_window_seconds,
            cfg.lockout_seconds,
            clock=clock,
        )

    def _seconds(self) -> float:
        return self._clock().timestamp()

    # -- issuing ---------------------------------------------------------------------

    async def issue(self, integration_id: str) -> str | None:
        """A new challenge for a live integration, or None when its cache is full.

        Raises IntegrationNotFound for an unknown or deleted integration.
        """
        if await self._store.get_integration(integration_id) is None:
            raise IntegrationNotFound(integration_id)
        return await issue_challenge(self._store, self._cfg, integration_id, now=self._clock())

    async def _page(self, integration: Integration, username: str, address: str) -> ChallengeResponse:
        try:
            challenge = await issue_challenge(self._store, self._cfg, integration.id, now=self._clock())
        except IntegrationNotFound:
            return self._not_found()  # deleted while we were authenticating
        if challenge is None:
            log.warning(
                "challenge cache full: integration=%s user=%s client=%s (max_unused=%d)",
                integration.id,
                username,
                address,
                self._cfg.max_unused,
            )
            html = page.render_cache_full(self._cfg.validity_minutes, self._cfg.max_unused)
        else:
            log.info("challenge issued: integration=%s user=%s client=%s", integration.id, username, address)
            html = page.render_challenge(self._thumbprint, challenge, self._cfg.validity_minutes)
        return self._html(html)

    # -- the request -----------------------------------------------------------------

    async def handle(self, req: ChallengeRequest) -> ChallengeResponse:
        """Answer one request to the challenge URL (see the module docstring)."""
        if not _INTEGRATION_ID.fullmatch(req.integration_id):
            return self._not_found()
        integration = await self._store.get_integration(req.integration_id)
        scheme, _, token = (req.authorization or "").strip().partition(" ")
        token = token.strip()
        kind = scheme.lower()
        if kind in ("ntlm", "negotiate") and token:
            return await self._ntlm(req, integration, "NTLM" if kind == "ntlm" else "Negotiate", token)
        if kind == "basic":
            if self._basic_allowed(integration, req):
                return await self._basic(req, integration, token)
            log.info("basic not allowed here: integration=%s client=%s", req.integration_id, req.client_address)
        return self._unauthorized(integration, req)

    async def _basic(self, req: ChallengeRequest, integration: Integration | None, token: str) -> ChallengeResponse:
        creds = parse_basic(token)
        if creds is None:
            log.info("malformed basic credentials: client=%s", req.client_address)
            return self._unauthorized(integration, req)

        async def check(target: Integration) -> str | None:
            if target.password_scrypt is None:
                return "no-credentials"
            # scrypt takes ~0.1 s and 32 MiB: off the event loop.
            ok = await asyncio.to_thread(scrypt_verify, creds.password, target.password_scrypt)
            return None if ok else "wrong-password"

        return await self._login(req, integration, creds.username, "basic", check)

    async def _ntlm(
        self, req: ChallengeRequest, integration: Integration | None, scheme: str, token: str
    ) -> ChallengeResponse:
        try:
            data = base64.b64decode(token, validate=True)
            kind = ntlm.message_type(data)
        except (binascii.Error, ValueError, ntlm.NTLMError):
            # Kerberos or SPNEGO in Negotiate lands here: the 401 lets the client fall back to NTLM.
            log.info("%s token is not raw NTLMSSP: client=%s", scheme, req.client_address)
            return self._unauthorized(integration, req)
        if req.connection is None:
            return self._unauthorized(integration, req)
        if kind == ntlm.NEGOTIATE:
            return self._ntlm_challenge(req, integration, scheme, data)
        if kind != ntlm.AUTHENTICATE:
            return self._unauthorized(integration, req)
        handshake = self._handshakes.pop(req.connection, self._seconds())
        if handshake is None:
            log.info("NTLM Type 3 without a pending handshake on this connection: client=%s", req.client_address)
            return self._unauthorized(integration, req)
        try:
            auth = ntlm.parse_authenticate(data, handshake.challenge_flags)
        except ntlm.NTLMError as exc:
            log.info("malformed NTLM Type 3 (%s): client=%s", exc, req.client_address)
            return self._unauthorized(integration, req)

        async def check(target: Integration) -> str | None:
            if target.nt_hash_encrypted is None:
                return "no-credentials"
            try:
                nt_hash = decrypt_nt_hash(self._secret_key, target.nt_hash_encrypted)
            except CredentialError as exc:
                raise _Misconfigured(str(exc)) from exc
            verdict = ntlm.verify(
                auth,
                nt_hash,
                handshake.server_challenge,
                handshake.negotiate_raw,
                handshake.challenge_raw,
                handshake.challenge_flags,
            )
            return None if verdict is ntlm.Verdict.OK else verdict.value

        return await self._login(req, integration, auth.user, "ntlm", check)

    def _ntlm_challenge(
        self, req: ChallengeRequest, integration: Integration | None, scheme: str, data: bytes
    ) -> ChallengeResponse:
        try:
            negotiate = ntlm.parse_negotiate(data)
        except ntlm.NTLMError:
            return self._unauthorized(integration, req)
        now = self._seconds()
        server_challenge = secrets.token_bytes(8)
        challenge_raw = ntlm.build_challenge(negotiate.flags, server_challenge, ntlm.filetime(now), self._names)
        assert req.connection is not None
        self._handshakes.put(
            req.connection,
            _Handshake(
                scheme=scheme,
                negotiate_raw=negotiate.raw,
                challenge_raw=challenge_raw,
                challenge_flags=ntlm.challenge_flags_for(negotiate.flags),
                server_challenge=server_challenge,
                started=now,
            ),
        )
        header = f"{scheme} {base64.b64encode(challenge_raw).decode('ascii')}"
        return ChallengeResponse(401, (("WWW-Authenticate", header), *_TEXT), b"401 Unauthorized\n")

    async def _login(
        self,
        req: ChallengeRequest,
        integration: Integration | None,
        presented: str,
        method: str,
        check: _Check,
    ) -> ChallengeResponse:
        address = req.client_address or ""
        if integration is None:
            log.info("credentials for unknown integration %s: client=%s", req.integration_id, address)
            return self._not_found()
        user = bare_username(presented)
        key = Lockout.key(user, address)
        wait = await self._lockout.retry_after(key)
        if wait > 0:
            log.warning("locked out: integration=%s user=%s client=%s", integration.id, user, address)
            return self._too_many(wait)
        target = await self._owner(integration, presented)
        try:
            reason = "unknown-user" if target is None else await check(target)
        except _Misconfigured as exc:
            log.error("cannot use stored credentials of %s: %s", target.id if target else "?", exc)
            return ChallengeResponse(500, _TEXT, b"500 Internal Server Error\n")
        if target is None or reason is not None:
            wait = await self._lockout.record_failure(key)
            log.warning(
                "%s login failed (%s): integration=%s user=%s client=%s%s",
                method,
                reason,
                integration.id,
                user,
                address,
                " - now locked out" if wait > 0 else "",
            )
            return self._too_many(wait) if wait > 0 else self._unauthorized(integration, req)
        if target.id != integration.id:
            log.warning(
                "%s login of integration %s's user on integration %s: no permission; user=%s client=%s",
                method,
                target.id,
                integration.id,
                user,
                address,
            )
            return self._html(page.render_no_permission())
        await self._lockout.record_success(key)
        return await self._page(integration, user, address)

    async def _owner(self, integration: Integration, presented: str) -> Integration | None:
        """The live integration whose user name was presented (this one first)."""
        if username_matches(presented, integration.username):
            return integration
        other = await self._store.find_integration_by_username(bare_username(presented))
        # Re-check: the store's case-insensitive match may be wider than ASCII.
        if other is not None and username_matches(presented, other.username):
            return other
        return None

    # -- answers ---------------------------------------------------------------------

    def _basic_allowed(self, integration: Integration | None, req: ChallengeRequest) -> bool:
        allow = integration.allow_basic if integration is not None else None
        return basic_allowed(allow, self._tls, req.client_local)

    def _unauthorized(self, integration: Integration | None, req: ChallengeRequest) -> ChallengeResponse:
        headers = [("WWW-Authenticate", "Negotiate"), ("WWW-Authenticate", "NTLM")]
        if self._basic_allowed(integration, req):
            headers.append(("WWW-Authenticate", f'Basic realm="{REALM}"'))
        return ChallengeResponse(401, (*headers, *_TEXT), b"401 Unauthorized\n")

    def _html(self, html: str) -> ChallengeResponse:
        return ChallengeResponse(200, _HTML, page.encode_page(html, self._cfg.utf16_bom))

    @staticmethod
    def _not_found() -> ChallengeResponse:
        return ChallengeResponse(404, _TEXT, b"404 Not Found\n")

    @staticmethod
    def _too_many(wait: float) -> ChallengeResponse:
        retry = str(max(1, int(wait + 0.999)))
        return ChallengeResponse(429, (("Retry-After", retry), *_TEXT), b"429 Too Many Requests\n")
