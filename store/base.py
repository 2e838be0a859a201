"""The persistence contract: the async ``Store`` protocol, split into the roles services ask for.

Every backend (SQLite, PostgreSQL) implements ``Store`` and passes the same
contract suite in ``tests/store``. The records themselves are ``scep_ca.pki.records``.
The store never holds private keys. Serials are stored as lowercase hexadecimal text
(159-bit values do not fit a 64-bit integer column). Times are timezone-aware UTC datetimes.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from scep_ca.pki.reasons import Reason
from scep_ca.pki.records import (
    CertificateRecord,
    CertStatus,
    Integration,
    RevokedEntry,
    Transaction,
    TransactionStatus,
)

# The revocation reason of a certificate recorded before its validator confirmed it
# (Intune's successNotification): not valid until ``end_hold`` releases it. Operators
# cannot put a certificate on hold (scep_ca.pki.reasons), so the reason marks exactly these.
HOLD = Reason.CERTIFICATE_HOLD.rfc_name

# Leases live in the meta table under this prefix (no schema change): value = expiry, microseconds.
LEASE_KEY_PREFIX = "lease:"


class StoreError(Exception):
    """Base class of errors a store raises on purpose."""


class StoreUnavailable(StoreError):
    """The store cannot do its work now: disk full, I/O error, a lock held past the timeout,
    the database server down or the connection lost. A fault of the environment, not of
    the request or of this code; the unit of work it interrupted changed nothing.

    ``str(exc)`` is for operators (it may name a host, never a password); ``reason`` is a
    short phrase with no host, path or secret in it, fit for an unauthenticated caller.
    """

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(f"{reason} ({detail})" if detail else reason)
        self.reason = reason


class ChallengeRejected(StoreError):
    """The challenge is unknown, expired, already used or of another integration."""


class DuplicateTransaction(StoreError):
    """A transaction with this (integration, transactionID) already exists."""


class DuplicateSerial(StoreError):
    """A certificate with this serial already exists (the caller draws a new serial)."""


class IntegrationNotFound(StoreError):
    """No live integration has this id."""


class RenewalRefused(StoreError):
    """The certificate to renew is already superseded (renewed once), revoked, or of another integration."""


class RenewalPending(StoreError):
    """Another renewal of the same certificate waits for approval: one at a time per certificate."""


class DuplicateIntegration(StoreError):
    """An integration with this id, or a live one with this username, already exists."""


@dataclass(frozen=True)
class EnrollmentState:
    """What a PKCSReq needs to know before any signing, read in one query."""

    transaction: Transaction | None  # the transaction already recorded under this ID, if any
    challenge_usable: bool  # the challenge exists for the integration, unused and unexpired


@dataclass(frozen=True)
class IssuanceRequest:
    """Everything ``Store.record_issuance`` writes in one transaction."""

    certificate: CertificateRecord
    # SHA-256 hex of the challenge password to consume; None when no challenge applies (renewal).
    challenge_hash: str | None
    now: datetime
    # Serial of a certificate of the same integration to revoke as superseded, in the same transaction.
    supersedes: str | None = None
    # Serial of the certificate this issuance renews: marked superseded by the new one in the same
    # transaction, unless it is already superseded, revoked or of another integration
    # (RenewalRefused, nothing changed). This is what makes "renewed once" atomic.
    renews: str | None = None

    def __post_init__(self) -> None:
        # A renewal is authorised by the renewed certificate, never by a challenge; the stores'
        # lock order (store/postgres.py) relies on a renewal taking no challenge row.
        if self.renews is not None and self.challenge_hash is not None:
            raise ValueError("a renewal consumes no challenge")


@dataclass(frozen=True)
class CertificateFilter:
    integration_id: str | None = None
    status: CertStatus | None = None
    # Only certificates whose not_after is before this (for "expired" listings).
    expired_before: datetime | None = None
    issued_only_unexpired_at: datetime | None = None
    # Only certificates on hold (``HOLD``): recorded, their validator's confirmation pending.
    on_hold: bool = False
    # Only certificates whose not_after is at or before this (``cert list --expiring``).
    expires_by: datetime | None = None
    limit: int | None = None


@dataclass(frozen=True)
class ChallengeAdd:
    integration_id: str
    challenge_hash: str
    now: datetime
    expires_at: datetime
    max_unused: int


@dataclass(frozen=True)
class DeleteResult:
    revoked: int
    deleted_at: datetime


class AuthVerdict(enum.StrEnum):
    """The answer to an attempt reservation (``Store.auth_reserve``)."""

    ALLOWED = "allowed"  # a check may run; report its outcome with auth_release
    LOCKED = "locked"  # the key is locked out until ``locked_until``
    BUSY = "busy"  # checks still in flight hold the rest of the window's budget


@dataclass(frozen=True)
class AuthReservation:
    verdict: AuthVerdict
    # The window the reservation belongs to: pass it back to auth_release, which applies to
    # that window only.
    window_start: datetime
    locked_until: datetime | None = None


@dataclass(frozen=True)
class AuditRecord:
    """One row of ``audit_events``: an event of one writer's chain, sealed by its MAC.

    ``details`` is a JSON object (str keys; str, int, bool, None, lists and objects of them).
    The MAC and its canonical encoding are the ``audit`` package's business; the store keeps
    the row exactly as given and returns it exactly as kept.

    ``details_json``: ``details`` as JSON text when the sealer has encoded them already (its
    canonical form, ``audit.encoding``); a store writes that text rather than encode the details
    a second time (an issuance's details carry the certificate: a second encoding costs about
    2% of an enrollment's instructions besides RSA, bench/enroll_instructions.py). Not part of
    the record's value: it never takes part in comparisons.
    """

    writer: str
    seq: int
    at: datetime
    actor: str
    event: str
    target: str  # the object it acts on (column ``object``): ``certificate/<serial>``, ``integration/<id>``
    details: Mapping[str, object]
    prev_mac: str
    mac: str
    details_json: str | None = field(default=None, compare=False, repr=False)

    def details_text(self) -> str:
        """The details column's text: the sealer's when it has one, else the details encoded here."""
        if self.details_json is not None:
            return self.details_json
        return json.dumps(self.details, separators=(",", ":"))


class AuditSeal(Protocol):
    """The audit rows of an action, asked for inside the action's own transaction.

    A store write method that takes ``audit`` calls it exactly once, after the action's
    statements and before COMMIT, and inserts what it returns in the same transaction; so no
    action commits without its events and no event outlives a rolled-back action. ``outcome``
    carries facts only the transaction knows (``delete_integration``: ``revoked``).
    """

    def __call__(self, outcome: Mapping[str, int]) -> Sequence[AuditRecord]: ...


@dataclass(frozen=True)
class AuditFilter:
    since: datetime | None = None
    until: datetime | None = None
    event: str | None = None
    actor: str | None = None
    writer: str | None = None
    limit: int | None = None
    # The newest first (the console's latest events: a range on the ``at`` index).
    newest_first: bool = False


@dataclass(frozen=True)
class CertificateCounts:
    """One integration's certificates (``scep_ca_certificates``, ``scep_ca_certificates_expiring``).

    ``valid``: issued, not revoked, not expired. ``expiring[i]``: those of ``valid`` whose
    notAfter falls within the i-th horizon asked for."""

    integration_id: str
    valid: int
    revoked: int
    expiring: tuple[int, ...]


@dataclass
class StoreInfo:
    schema_version: int
    backend: str
    extra: dict[str, str] = field(default_factory=dict)


# The store in roles: each service asks for the roles it uses (``scep_ca.services.enrollment``
# asks for integrations, issuance and certificates; ``challenge.lockout`` for throttle only),
# and ``Store``, their union plus the lifecycle, is what the backends and the factory provide.
# Each method is one atomic unit of work. A write method's ``audit`` (AuditSeal) puts the
# action's audit events into that unit of work; add_challenge's only when a challenge is added.


class IntegrationStore(Protocol):
    """Integrations: created, looked up, credentials replaced, deleted (with their certificates)."""

    async def create_integration(self, integration: Integration, *, audit: AuditSeal | None = None) -> None: ...

    async def get_integration(self, integration_id: str, *, include_deleted: bool = False) -> Integration | None: ...

    async def find_integration_by_username(self, username: str) -> Integration | None:
        """The live integration whose username matches exactly (case-insensitive), if any."""

    async def list_integrations(self, *, include_deleted: bool = False) -> Sequence[Integration]: ...

    async def update_credentials(
        self,
        integration_id: str,
        *,
        username: str,
        password_scrypt: str,
        nt_hash_encrypted: bytes,
        audit: AuditSeal | None = None,
    ) -> None:
        """Replace an integration's credentials; the old ones stop working at once."""

    async def delete_integration(
        self, integration_id: str, now: datetime, *, audit: AuditSeal | None = None
    ) -> DeleteResult:
        """Mark deleted, which revokes every issued or held certificate of it (cessationOfOperation,
        revocationDate = ``now``) without a write per certificate (``store/revocation_rule.py``),
        and kill its challenges. ``DeleteResult.revoked`` counts the certificates so revoked.

        All or nothing. Raises IntegrationNotFound if there is no live integration with this id.
        """


class ChallengeStore(Protocol):
    """One-time challenges of the challenge URL."""

    async def add_challenge(self, add: ChallengeAdd, *, audit: AuditSeal | None = None) -> bool:
        """Purge expired challenges of the integration, then insert one unless
        ``max_unused`` unused unexpired ones exist already. Returns False when the cache is full."""

    async def challenge_usable(self, integration_id: str, challenge_hash: str, now: datetime) -> bool:
        """Read-only check: the challenge exists for this integration, is unused and unexpired."""

    async def count_unused_challenges(self, integration_id: str, now: datetime) -> int: ...


class IssuanceStore(Protocol):
    """Enrollment transactions and the issuance that consumes a challenge."""

    async def record_issuance(self, req: IssuanceRequest, *, audit: AuditSeal | None = None) -> None:
        """In one transaction: consume the challenge (if any), insert the certificate and its
        transaction, and mark ``req.renews`` superseded. Raises ChallengeRejected,
        DuplicateTransaction, DuplicateSerial, IntegrationNotFound or RenewalRefused and then
        changes nothing."""

    async def get_transaction(self, integration_id: str, transaction_id: str) -> Transaction | None: ...

    async def enrollment_state(
        self, integration_id: str, transaction_id: str, challenge_hash: str | None, now: datetime
    ) -> EnrollmentState:
        """``get_transaction`` and ``challenge_usable`` (False when ``challenge_hash`` is None) in one read."""

    async def record_pending(
        self,
        txn: Transaction,
        challenge_hash: str | None,
        now: datetime,
        *,
        open_since: datetime | None = None,
        audit: AuditSeal | None = None,
    ) -> None:
        """In one transaction: consume the challenge (if any) and insert a PENDING transaction with its CSR.

        A renewal (``txn.renews``) is refused with RenewalPending while another transaction renewing
        the same certificate is pending and was created at or after ``open_since`` (older ones have
        expired; None: every pending one counts). Atomic: of concurrent renewals of one
        certificate, exactly one is recorded. Raises ChallengeRejected, DuplicateTransaction,
        IntegrationNotFound or RenewalPending and then changes nothing."""

    async def list_transactions(
        self, status: TransactionStatus | None = None, integration_id: str | None = None
    ) -> Sequence[Transaction]: ...

    async def resolve_pending(
        self,
        integration_id: str,
        transaction_id: str,
        certificate: CertificateRecord | None,
        now: datetime,
        *,
        supersedes: str | None = None,
        audit: AuditSeal | None = None,
    ) -> bool:
        """Approve (insert ``certificate``, mark the transaction issued) or reject (``certificate`` None).

        Approving a renewal (the transaction's ``renews``) marks the renewed certificate superseded
        in the same transaction, as ``record_issuance`` does, and ``supersedes`` is revoked as
        superseded. False when the transaction is not pending (already resolved, or unknown).
        Raises DuplicateSerial, RenewalRefused (nothing changed) and IntegrationNotFound for a
        deleted integration."""


class CertificateStore(Protocol):
    """Reads of issued certificates."""

    async def get_certificate(self, serial: str) -> CertificateRecord | None: ...

    async def list_certificates(self, flt: CertificateFilter) -> Sequence[CertificateRecord]: ...

    async def count_certificates(self, integration_id: str | None = None) -> int: ...


class CertificateStatsStore(Protocol):
    """Aggregate counts for metrics and ``scep-ca status``: one scan, no rows returned."""

    async def certificate_counts(self, now: datetime, horizons: Sequence[timedelta]) -> Sequence[CertificateCounts]:
        """Per integration (deleted ones too) that has certificates: valid, revoked and expiring counts."""


class LeaseStore(Protocol):
    """Named leases: work that must happen once across every process and host (RA renewal)."""

    async def acquire_lease(self, name: str, now: datetime, ttl: timedelta) -> int | None:
        """Take the lease ``name`` until ``now + ttl`` unless another holder's has not run out yet.

        Returns a token for ``release_lease``, or None when the lease is held."""

    async def release_lease(self, name: str, token: int) -> None:
        """Give the lease back, if it is still the one ``token`` took."""


class RevocationStore(Protocol):
    """Revocation of single certificates and what the CRL is built from."""

    async def revoke_certificate(
        self, serial: str, reason: str, now: datetime, *, audit: AuditSeal | None = None
    ) -> bool:
        """Revoke one issued certificate; False when unknown or already revoked."""

    async def end_hold(
        self, serial: str, revoke_reason: str | None, now: datetime, *, audit: AuditSeal | None = None
    ) -> bool:
        """End the certificateHold of a certificate recorded on hold until its validator
        confirmed it: released to issued (``revoke_reason`` None) or revoked for good with
        that reason at ``now``. False when it is not on hold (any more): nothing changed, and
        ``audit`` is not written."""

    async def revoked_entries(self, issuer_fingerprint: str) -> Sequence[RevokedEntry]: ...

    async def revoked_shard_entries(
        self, issuer_fingerprint: str, shard: int, expired_before: datetime
    ) -> Sequence[RevokedEntry]:
        """The revoked certificates of one CRL shard of this issuer, except those whose
        notAfter is before ``expired_before`` (they have left the shard: README "Revocation")."""

    async def next_crl_number(self, issuer_fingerprint: str, *, audit: AuditSeal | None = None) -> int:
        """Atomically increment and return the CRL number of this issuer (starts at 1); the
        audit outcome carries it as ``number``."""

    async def revocation_epoch(self) -> int:
        """A counter that changes whenever any revocation or deletion happens (cache key)."""


class ThrottleStore(Protocol):
    """Failed-login throttling (challenge URL; policy in challenge/lockout.py, arithmetic in
    store/throttle.py). ``key`` is an opaque string (the caller hashes what it throttles into
    it). An attempt is reserved before its credentials are checked, so the budget of
    ``max_attempts`` checks per key and window holds however many run at once, in any
    process or host."""

    async def auth_locked_until(self, key: str, now: datetime) -> datetime | None:
        """End of the key's lock if it is locked at ``now``, else None. Read-only."""

    async def auth_reserve(
        self, key: str, now: datetime, window: timedelta, max_attempts: int, lockout: timedelta
    ) -> AuthReservation:
        """Atomically reserve one credential check for ``key``.

        LOCKED while a lock runs (nothing counted, the lock not extended). Otherwise, in the
        current fixed window (a new one when there is none, it ended, or a lock ended): ALLOWED
        and counted as in flight while failures + in-flight checks < ``max_attempts``; else, if
        the failures alone reached ``max_attempts``, the key is locked until ``now + lockout``
        (a new window starts with it) and LOCKED is returned; else BUSY (checks in flight hold
        the budget). Also deletes a bounded number of other keys' rows whose window and lock
        are both over."""

    async def auth_release(self, key: str, window_start: datetime, now: datetime, *, failed: bool) -> None:
        """Report the outcome of an ALLOWED reservation made in the window ``window_start``.

        Failed: the in-flight check becomes a failure of that window. Succeeded: the in-flight
        check is released and the key's failures are forgotten; a running lock is kept. A
        release whose window is over (or was replaced by a lock) moves no counts of the
        current window, apart from a success forgetting failures."""


class AuditStore(Protocol):
    """The audit log (``audit_events``): append only; no method deletes or changes a row."""

    async def append_audit(self, seal: AuditSeal) -> None:
        """Insert ``seal({})``'s rows in a transaction of their own (events with no other write)."""

    async def list_audit(self, flt: AuditFilter) -> Sequence[AuditRecord]:
        """Rows matching ``flt``, ordered by time, then writer and seq."""

    async def audit_page(self, after: tuple[str, int] | None, limit: int) -> Sequence[AuditRecord]:
        """Up to ``limit`` rows after (writer, seq) ``after`` (from the start: None), ordered by
        writer and seq: what ``audit verify`` reads, page by page."""

    async def audit_heads(self) -> Sequence[tuple[str, int, str]]:
        """(writer, seq, mac) of each chain's last row: what a checkpoint signs."""

    async def audit_empty(self) -> bool: ...


class AdminRole(enum.StrEnum):
    """A console account's role (scep_ca.console.roles says what each may do)."""

    ADMIN = "admin"
    OPERATOR = "operator"
    AUDITOR = "auditor"


class DuplicateAdmin(StoreError):
    """An admin account with this name already exists (names are never reused)."""


class LastAdmin(StoreError):
    """Disabling this account would leave no enabled admin (``disable_admin(keep_an_admin=True)``)."""


@dataclass(frozen=True)
class AdminAccount:
    name: str
    role: AdminRole
    password_scrypt: str  # challenge.credentials.scrypt_hash
    created_at: datetime
    disabled_at: datetime | None = None

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None


@dataclass(frozen=True)
class ConsoleSession:
    """A console login. Only the SHA-256 of the cookie's token is stored: a copy of the
    database does not hand out live sessions."""

    token_hash: str
    admin: str
    csrf_token: str
    created_at: datetime
    last_seen: datetime
    address: str


@dataclass(frozen=True)
class IntegrationCounts:
    """One integration's certificates as the console's dashboard shows them."""

    integration_id: str
    valid: int  # issued and unexpired
    revoked: int
    expiring: int  # valid and expiring before the dashboard's horizon
    pending: int  # requests waiting for approval


class CertSearchStatus(enum.StrEnum):
    VALID = "valid"
    REVOKED = "revoked"
    EXPIRED = "expired"


@dataclass(frozen=True)
class CertificateSearch:
    """A page of the console's certificate search, sorted by expiry (soonest first).

    ``text`` matches the start of the subject (when it starts with an attribute, ``CN=...``) or of
    its leading CN value, ASCII letters in any case, or a serial prefix (hex): ``store.search``.
    """

    now: datetime
    text: str | None = None
    integration_id: str | None = None
    status: CertSearchStatus | None = None
    # Only valid certificates expiring before this.
    expiring_before: datetime | None = None
    limit: int = 50
    offset: int = 0
    # Keyset paging (``cert list``): only certificates sorted after this (notAfter, serial), the
    # last row of the previous page. Each page is then one index range, however deep.
    after: tuple[datetime, str] | None = None


class AdminStore(Protocol):
    """Console accounts (scep-ca admin ...). Accounts are disabled, never deleted."""

    async def create_admin(self, account: AdminAccount) -> None:
        """Raises DuplicateAdmin when the name exists."""

    async def get_admin(self, name: str) -> AdminAccount | None: ...

    async def list_admins(self) -> Sequence[AdminAccount]: ...

    async def set_admin_password(self, name: str, password_scrypt: str) -> bool:
        """Replace the password and end the account's sessions; False when there is no such account."""

    async def disable_admin(self, name: str, now: datetime, *, keep_an_admin: bool = False) -> bool:
        """Disable the account and end its sessions; False when unknown or already disabled.

        ``keep_an_admin``: raise ``LastAdmin`` instead when the account is the last enabled admin,
        decided in the same transaction as the update, so that two admins disabling each other at
        once cannot both succeed."""


class SessionStore(Protocol):
    """Console sessions, in the database so that every worker and host shares them."""

    async def create_session(self, session: ConsoleSession) -> None: ...

    async def touch_session(
        self, token_hash: str, now: datetime, idle_after: datetime, created_after: datetime
    ) -> ConsoleSession | None:
        """The live session with this token hash, its ``last_seen`` moved to ``now``. A session
        last seen at or before ``idle_after``, created at or before ``created_after``, or whose
        admin is disabled, is deleted and None returned."""

    async def delete_session(self, token_hash: str) -> None: ...


class OverviewStore(Protocol):
    """The console's indexed reads: dashboard counts and the certificate search."""

    async def integration_counts(self, now: datetime, expiring_before: datetime) -> Sequence[IntegrationCounts]:
        """Counts for every integration that has certificates or pending requests."""

    async def search_certificates(self, search: CertificateSearch) -> Sequence[CertificateRecord]: ...


class Store(
    IntegrationStore,
    ChallengeStore,
    IssuanceStore,
    CertificateStore,
    CertificateStatsStore,
    RevocationStore,
    ThrottleStore,
    AuditStore,
    LeaseStore,
    AdminStore,
    SessionStore,
    OverviewStore,
    Protocol,
):
    """Every role, plus the lifecycle: what a backend implements and ``store.factory`` returns."""

    async def open(self) -> None:
        """Connect and apply pending migrations."""

    async def close(self) -> None: ...

    async def info(self) -> StoreInfo: ...
