"""Console accounts, logins and sessions, transport-free.

Passwords: the challenge URL's KDF (``challenge.credentials.scrypt_hash``) and its failed-login
budget (``challenge.lockout.Lockout`` with the ``challenge.lockout_*`` settings), keyed by
(account name, client address), so that a stranger cannot lock an admin out from elsewhere.

Sessions live in the store, so every worker process and host shares them. The cookie carries
a 256-bit random token; the store keeps its SHA-256 only. Each session has its own CSRF token,
put in every form and compared in constant time on every POST. A session ends after
``console.session_idle_seconds`` without a request, ``console.session_max_seconds`` after
login, at logout, and when its account is disabled or its password reset.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from challenge.credentials import UNUSABLE_SCRYPT_HASH, generate_password, scrypt_hash, scrypt_verify
from challenge.lockout import Lockout
from config.clock import Clock, utc_now
from config.model import ChallengeConfig, ConsoleConfig
from store.base import (
    AdminAccount,
    AdminRole,
    AdminStore,
    ConsoleSession,
    LastAdmin,
    SessionStore,
    ThrottleStore,
)

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 1024
_TOKEN_BYTES = 32


class AccountError(ValueError):
    """Bad account input (name, password, unknown account); ``str()`` is fit to show."""


class UnknownAdmin(AccountError):
    """No account has this name."""


class SelfLockout(AccountError):
    """The change would lock the console's admins out: an admin disabling their own account,
    or the last enabled admin account (the console could then no longer manage accounts)."""


class AccountStore(AdminStore, SessionStore, ThrottleStore, Protocol):
    """The store roles this module uses."""


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise AccountError("admin names are 1-64 letters, digits and . _ @ - (starting with a letter or digit)")
    return name


def check_password(password: str) -> str:
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise AccountError(f"a password has {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters")
    return password


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class Accounts:
    """Create and manage admin accounts: ``scep-ca admin ...`` and the console's admins page."""

    def __init__(self, store: AdminStore, clock: Clock = utc_now) -> None:
        self._store = store
        self._clock = clock

    async def accounts(self) -> Sequence[AdminAccount]:
        """Every account, disabled ones included, by name."""
        return await self._store.list_admins()

    async def create(self, name: str, role: AdminRole, password: str | None) -> tuple[AdminAccount, str]:
        """The new account and its password (generated when ``password`` is None: show it once)."""
        check_name(name)
        chosen = generate_password() if password is None else check_password(password)
        hashed = await asyncio.to_thread(scrypt_hash, chosen)
        account = AdminAccount(name=name, role=role, password_scrypt=hashed, created_at=self._clock())
        await self._store.create_admin(account)  # DuplicateAdmin
        return account, chosen

    async def reset_password(self, name: str, password: str | None) -> str:
        """The new password (generated when ``password`` is None: show it once); the account's
        sessions end. ``UnknownAdmin`` when there is no such account."""
        chosen = generate_password() if password is None else check_password(password)
        hashed = await asyncio.to_thread(scrypt_hash, chosen)
        if not await self._store.set_admin_password(name, hashed):
            raise UnknownAdmin(f"no admin named {name!r}")
        return chosen

    async def disable(self, name: str, *, by: str | None = None) -> None:
        """Disable the account and end its sessions. ``by``: the console admin doing it, who may
        not disable their own account nor the last enabled admin (``SelfLockout``; the store
        decides the latter in the update's own transaction); the CLI (``by`` None) may, since it
        needs no account and can create the next one."""
        if by is not None and name == by:
            raise SelfLockout("you cannot disable your own account: another admin (or scep-ca admin disable) can")
        try:
            disabled = await self._store.disable_admin(name, self._clock(), keep_an_admin=by is not None)
        except LastAdmin as exc:
            raise SelfLockout(f"{name!r} is the last enabled admin: create another admin first") from exc
        if not disabled:
            if await self._store.get_admin(name) is None:
                raise UnknownAdmin(f"no admin named {name!r}")
            raise AccountError(f"admin {name!r} is already disabled")

    async def any_enabled(self) -> bool:
        return any(not a.disabled for a in await self._store.list_admins())


@dataclass(frozen=True)
class LoginResult:
    """``token`` set: signed in (the cookie's value). Otherwise refused, with ``retry_after``
    seconds when the failed-login budget is spent (HTTP 429)."""

    token: str | None = None
    account: AdminAccount | None = None
    retry_after: float = 0.0


@dataclass(frozen=True)
class SignedIn:
    """A live session and its account, as each request sees it."""

    session: ConsoleSession
    account: AdminAccount

    def csrf_ok(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(
            presented.encode("utf-8", "surrogatepass"), self.session.csrf_token.encode("ascii")
        )


class Sessions:
    """Logins (with the lockout), session lookup on each request, logout."""

    def __init__(
        self, store: AccountStore, console: ConsoleConfig, challenge: ChallengeConfig, clock: Clock = utc_now
    ) -> None:
        self._store = store
        self._idle = timedelta(seconds=console.session_idle_seconds)
        self._max_age = timedelta(seconds=console.session_max_seconds)
        self._clock = clock
        self._lockout = Lockout(
            store,
            challenge.lockout_failures,
            challenge.lockout_window_seconds,
            challenge.lockout_seconds,
            clock=clock,
        )

    async def login(self, name: str, password: str, address: str) -> LoginResult:
        name = name.strip()[:64]
        account = await self._store.get_admin(name)
        known = account is not None and not account.disabled
        key = Lockout.key("console:" + name, address) if known else Lockout.address_key("console\0" + address)
        attempt = await self._lockout.reserve(key)
        if not attempt.allowed:
            return LoginResult(retry_after=attempt.retry_after)
        stored = account.password_scrypt if account is not None and known else UNUSABLE_SCRYPT_HASH
        # Unknown names cost a full scrypt too: the answer's timing does not tell names apart.
        ok = await asyncio.to_thread(scrypt_verify, password[:MAX_PASSWORD_CHARS], stored) and known
        await self._lockout.release(attempt, failed=not ok)
        if not ok or account is None:
            return LoginResult()
        token = secrets.token_urlsafe(_TOKEN_BYTES)
        now = self._clock()
        await self._store.create_session(
            ConsoleSession(token_hash(token), account.name, secrets.token_urlsafe(_TOKEN_BYTES), now, now, address)
        )
        return LoginResult(token=token, account=account)

    async def resume(self, token: str | None) -> SignedIn | None:
        """The live session of this cookie value (its idle timer restarted), or None."""
        if not token or len(token) > 128:
            return None
        now = self._clock()
        session = await self._store.touch_session(token_hash(token), now, now - self._idle, now - self._max_age)
        if session is None:
            return None
        account = await self._store.get_admin(session.admin)
        if account is None or account.disabled:
            return None
        return SignedIn(session, account)

    async def logout(self, signed_in: SignedIn) -> None:
        await self._store.delete_session(signed_in.session.token_hash)
