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
* Basic credentials while this process already runs and queues as many scrypt checks as
  ``basic_check_concurrency`` + ``basic_check_queue`` allow: 503 with ``Retry-After: 1``
  (``challenge.gate``), before anything is counted.
* Before any credential is checked the attempt is reserved in the store, keyed by (user
  name, client address), or by the address alone for a user name that is no live
  integration's (see ``challenge.lockout`` for the policy; the state is in the store, shared
  by all workers and hosts). Key locked out, or its window's checks used up: 429 with
  ``Retry-After``, even for right credentials. Checks of the key still in flight holding the
  rest of the budget: 429 with ``Retry-After: 1``.
* Wrong credentials (unknown user, wrong password, this integration's user name with
  another integration's password, NTLMv1 or LM, a bad MIC): 401 as above, counted towards
  the lockout. An unknown user name costs the same work as a wrong password (scrypt against
  an unusable hash for Basic, NTLMv2 against a random NT hash for NTLM), so the answer's
  timing does not tell them apart.
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
passwords, challenges, NTLM messages or hashes. A user name is logged as is only when it
has our form (``scep-<integration id>``); anything else (a password typed into the user
name field, say) is logged as its length and a hash keyed with the server's secret.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import re
import secrets
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from audit.events import Event
from audit.service import AuditSink, Draft, NoAudit, integration_target
from challenge import ntlm, page
from challenge.basic import basic_allowed, parse_basic
from challenge.credentials import (
    NT_HASH_BYTES,
    UNUSABLE_SCRYPT_HASH,
    USERNAME_PREFIX,
    CredentialError,
    bare_username,
    decrypt_nt_hash,
    encrypt_nt_hash,
    scrypt_verify,
    username_matches,
)
from challenge.gate import WorkGate
from challenge.issuer import issue_challenge
from challenge.lockout import Attempt, Lockout
from config.clock import Clock, utc_now
from config.model import ChallengeConfig
from scep_ca.pki.records import Integration
from store.base import ChallengeStore, IntegrationNotFound, IntegrationStore, ThrottleStore

log = logging.getLogger(__name__)


class ChallengeServiceStore(IntegrationStore, ChallengeStore, ThrottleStore, Protocol):
    """The store roles the challenge URL uses."""


REALM = "scep-ca"
HANDSHAKE_TTL_SECONDS = 60.0
# Integration ids are short URL-safe strings; anything else cannot exist.
_INTEGRATION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HTML = (("Content-Type", "text/html"), ("Cache-Control", "no-store"))
_TEXT = (("Content-Type", "text/plain; charset=utf-8"),)
# Retry-After of a Basic login refused because the process's scrypt queue is full.
BUSY_RETRY_SECONDS = 1


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
    # The Host header as sent: names this server when ``server.public_url`` is not set.
    host: str | None = None


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


# A credential check: None when the credentials are right for the integration, else a short
# reason for the log. Given None (the user name is no live integration's) it does the same
# work against unusable material, so that the answer takes as long, and refuses.
_Check = Callable[[Integration | None], Awaitable[str | None]]


class ChallengeService:
    """Hands out one-time challenges on an NDES ``mscep_admin``-compatible page."""

    def __init__(
        self,
        store: ChallengeServiceStore,
        cfg: ChallengeConfig,
        ca_md5_hex: str,
        secret_key: bytes,
        tls: bool,
        *,
        clock: Clock = utc_now,
        target_names: ntlm.TargetNames | None = None,
        handshake_ttl: float = HANDSHAKE_TTL_SECONDS,
        public_url: str | None = None,
        tls_end_point: bytes | None = None,
        audit: AuditSink | None = None,
    ) -> None:
        """``tls_end_point``: ``tls-server-end-point:`` + hash of the certificate this
        server presents (``challenge.tls_binding``), None when it does not terminate TLS.
        ``public_url``: ``server.public_url``; its host is the one NTLM target names must
        name, and an https one without ``tls_end_point`` means TLS ends at a proxy."""
        self._store = store
        self._audit = audit or NoAudit()
        self._cfg = cfg
        self._thumbprint = page.format_thumbprint(ca_md5_hex)
        self._secret_key = secret_key
        self._tls = tls
        self._clock = clock
        self._names = target_names or ntlm.TargetNames()
        self._handshakes = _HandshakeTable(handshake_ttl)
        public = urlsplit(public_url) if public_url else None
        self._public_host = ntlm.normalize_host(public.netloc.rpartition("@")[2]) if public else None
        self._channel_bindings = ntlm.channel_bindings_hash(tls_end_point) if tls_end_point is not None else None
        # TLS reaches the client but we hold no certificate to bind to (a TLS-terminating proxy).
        self._tls_offloaded = tls_end_point is None and (tls or (public is not None and public.scheme == "https"))
        # In the store: shared by every worker process and host (challenge.lockout).
        self._lockout = Lockout(
            store,
            cfg.lockout_failures,
            cfg.lockout_window_seconds,
            cfg.lockout_seconds,
            clock=clock,
        )
        self._scrypt_gate = WorkGate(cfg.basic_check_concurrency, cfg.basic_check_queue)
        # NTLM's stand-in for user names without an NT hash: a random one, so nobody can
        # answer for it (and the answer is refused anyway).
        self._unusable_nt_blob = encrypt_nt_hash(secret_key, secrets.token_bytes(NT_HASH_BYTES))

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
        issued = Draft(
            Event.CHALLENGE_ISSUED,
            integration_target(integration.id),
            {"integration": integration.id, "user": username, "address": address},
            actor=f"challenge:{username}",
        )
        try:
            with self._audit.recording(issued) as seal:
                challenge = await issue_challenge(self._store, self._cfg, integration.id, now=self._clock(), audit=seal)
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

        async def check(target: Integration | None) -> str | None:
            stored = target.password_scrypt if target is not None else None
            async with self._scrypt_gate.slot():
                # scrypt takes ~0.1 s and 32 MiB: off the event loop.
                ok = await asyncio.to_thread(scrypt_verify, creds.password, stored or UNUSABLE_SCRYPT_HASH)
            if target is None:
                return "unknown-user"
            if stored is None:
                return "no-credentials"
            return None if ok else "wrong-password"

        if integration is None:
            return await self._login(req, integration, creds.username, "basic", check)  # 404, nothing checked
        if not self._scrypt_gate.admit():
            log.warning(
                "basic login refused, password checks busy (%d running or waiting): integration=%s client=%s",
                self._scrypt_gate.admitted,
                req.integration_id,
                req.client_address,
            )
            return self._busy()
        try:
            return await self._login(req, integration, creds.username, "basic", check)
        finally:
            self._scrypt_gate.leave()

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
        # The name this server goes by: the public URL's host when configured (a relaying
        # attacker chooses the Host header), else the Host header.
        host = self._public_host or (ntlm.normalize_host(req.host) if req.host else None)
        expected = ntlm.Expected(
            target_hosts=frozenset({host} if host else ()),
            channel_bindings=self._channel_bindings,
            tls_offloaded=self._tls_offloaded,
        )

        async def check(target: Integration | None) -> str | None:
            blob = target.nt_hash_encrypted if target is not None else None
            try:
                nt_hash = decrypt_nt_hash(self._secret_key, blob or self._unusable_nt_blob)
            except CredentialError as exc:
                if blob is None:
                    return "unknown-user" if target is None else "no-credentials"
                raise _Misconfigured(str(exc)) from exc
            verdict = ntlm.verify(
                auth,
                nt_hash,
                handshake.server_challenge,
                handshake.negotiate_raw,
                handshake.challenge_raw,
                handshake.challenge_flags,
                expected,
            )
            if target is None:
                return "unknown-user"
            if blob is None:
                return "no-credentials"
            if verdict is ntlm.Verdict.TARGET_MISMATCH:
                name = ntlm.client_av_pairs(auth)[ntlm.AvId.TARGET_NAME].decode("utf-16-le")
                log.info("NTLM target name %r does not name %s: client=%s", name[:100], host, req.client_address)
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
        user = self._user_for_log(bare_username(presented))
        target = await self._owner(integration, presented)
        # User names that are no live integration's share one key per address (and one row).
        key = Lockout.address_key(address) if target is None else Lockout.key(target.username, address)
        attempt = await self._lockout.reserve(key)
        if not attempt.allowed:
            self._log_refused(attempt, method, integration, user, address)
            if attempt.tripped:
                await self._audit.append(self._login_event(Event.LOCKOUT_STARTED, method, integration, user, address))
            return self._too_many(attempt.retry_after)
        failed = True
        try:
            reason = await check(target)
            failed = reason is not None
        except _Misconfigured as exc:
            log.error("cannot use stored credentials of %s: %s", target.id if target else "?", exc)
            return ChallengeResponse(500, _TEXT, b"500 Internal Server Error\n")
        finally:
            # Shielded: a cancelled request must still give its reservation back (as a
            # failure: the check may have run), or it would hold a slot until the window ends.
            await asyncio.shield(self._lockout.release(attempt, failed=failed))
        if target is None or reason is not None:
            log.warning(
                "%s login failed (%s): integration=%s user=%s client=%s",
                method,
                reason,
                integration.id,
                user,
                address,
            )
            await self._audit.append(self._login_event(Event.LOGIN_FAILED, method, integration, user, address))
            return self._unauthorized(integration, req)
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
        return await self._page(integration, user, address)

    @staticmethod
    def _login_event(event: Event, method: str, integration: Integration, user: str, address: str) -> Draft:
        return Draft(
            event,
            integration_target(integration.id),
            {"integration": integration.id, "user": user, "address": address, "method": method},
            actor=f"challenge:{user}",
        )

    @staticmethod
    def _log_refused(attempt: Attempt, method: str, integration: Integration, user: str, address: str) -> None:
        if attempt.tripped:
            log.warning(
                "%s login refused, too many failures - now locked out for %ds: integration=%s user=%s client=%s",
                method,
                round(attempt.retry_after),
                integration.id,
                user,
                address,
            )
        elif attempt.locked:
            log.warning("locked out: integration=%s user=%s client=%s", integration.id, user, address)
        else:
            log.warning(
                "%s login refused, checks in flight hold the budget: integration=%s user=%s client=%s",
                method,
                integration.id,
                user,
                address,
            )

    def _user_for_log(self, name: str) -> str:
        """A user name as the log may show it: ours (``scep-<integration id>``) as is, anything
        else (a password typed into the user name field, say) as its length and a keyed hash."""
        if name.startswith(USERNAME_PREFIX) and _INTEGRATION_ID.fullmatch(name[len(USERNAME_PREFIX) :]):
            return name
        # Keyed with the server's secret: equal names still correlate in the log, but a log
        # reader cannot test guesses against a plain hash.
        digest = hmac.new(self._secret_key, b"log-user\0" + name.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return f"<unknown len={len(name)} hmac:{digest.hexdigest()[:8]}>"

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
    def _busy() -> ChallengeResponse:
        headers = (("Retry-After", str(BUSY_RETRY_SECONDS)), *_TEXT)
        return ChallengeResponse(503, headers, b"503 Service Unavailable\n")

    @staticmethod
    def _too_many(wait: float) -> ChallengeResponse:
        retry = str(max(1, int(wait + 0.999)))
        return ChallengeResponse(429, (("Retry-After", retry), *_TEXT), b"429 Too Many Requests\n")
