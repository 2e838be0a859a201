"""The console's operations, transport-free: what each page reads and each form does.

Every action checks the actor's role first (``Forbidden`` before anything changes) and then
records an audit event with the admin's name and address (``ConsoleAuditSink``). The reads
are the store's indexed queries (``OverviewStore``), so the dashboard and the search stay
fast at a million certificates.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509

from audit.events import Event
from audit.service import AuditSink, Draft, NoAudit, integration_target
from challenge.issuer import issue_challenge
from challenge.urls import challenge_url
from config.clock import Clock, utc_now
from config.model import Config
from scep_ca.console.accounts import AccountError, Accounts, UnknownAdmin, check_name
from scep_ca.console.audit import AuditReader, ConsoleAuditSink, ConsoleEvent
from scep_ca.console.roles import Forbidden, Permission, allows
from scep_ca.pki.ca_set import CASet
from scep_ca.pki.cert_format import colon_fingerprint
from scep_ca.pki.reasons import ReasonError, parse_reason
from scep_ca.pki.records import CertificateRecord, Integration, Transaction, TransactionStatus
from scep_ca.protocol.errors import ScepFailure
from scep_ca.services.enrollment import Enroller
from scep_ca.services.integrations import CreatedIntegration, IntegrationService, IntegrationSpec
from scep_ca.services.revocation import RevocationService
from store.base import (
    AdminAccount,
    AdminRole,
    CertificateSearch,
    CertificateStore,
    ChallengeStore,
    DuplicateAdmin,
    IntegrationCounts,
    IntegrationNotFound,
    IntegrationStore,
    IssuanceStore,
    OverviewStore,
)

PAGE_SIZE = 50


class ConsoleStore(IntegrationStore, ChallengeStore, IssuanceStore, CertificateStore, OverviewStore, Protocol):
    """The store roles the console's operations use."""


class ActionRefused(ValueError):
    """The action cannot be done as asked (unknown object, wrong confirmation); ``str()`` is fit to show."""


class NotFound(ActionRefused):
    """The object the action names does not exist (HTTP 404)."""


@dataclass(frozen=True)
class Actor:
    name: str
    role: AdminRole
    address: str

    def may(self, permission: Permission) -> bool:
        return allows(self.role, permission)

    @property
    def audit_name(self) -> str:
        """The actor the audit log names for this admin's actions (``os:<user>`` for the CLI)."""
        return f"console:{self.name}"


@dataclass(frozen=True)
class CertInfo:
    """A CA or RA certificate on the dashboard."""

    label: str
    subject: str
    not_after: dt.datetime
    days_left: int


@dataclass(frozen=True)
class Dashboard:
    counts: Sequence[IntegrationCounts]
    names: dict[str, str]  # integration id -> name (deleted ones included)
    certificates: Sequence[CertInfo]
    crl_next_update: dt.datetime | None
    expiring_days: int


@dataclass(frozen=True)
class MdmValues:
    """The five values an MDM admin pastes, plus the CA fingerprint."""

    scep_url: str
    subject: str
    challenge_url: str
    username: str
    ca_fingerprint: str


class ConsoleService:
    def __init__(
        self,
        config: Config,
        store: ConsoleStore,
        cas: CASet,
        integrations: IntegrationService,
        revocation: RevocationService,
        enroller: Enroller,
        audit: ConsoleAuditSink,
        audit_reader: AuditReader | None = None,
        clock: Clock = utc_now,
        audit_log: AuditSink | None = None,
        *,
        accounts: Accounts,
    ) -> None:
        # Where actions that change the store write their event, in their own transaction.
        self._audit = audit_log or NoAudit()
        self._config = config
        self._store = store
        self._cas = cas
        self._integrations = integrations
        self._revocation = revocation
        self._enroller = enroller
        self.audit_sink = audit
        self.audit_reader = audit_reader
        self._clock = clock
        self._accounts = accounts

    # -- reads ---------------------------------------------------------------------------

    async def dashboard(self) -> Dashboard:
        now = self._clock()
        days = self._config.console.expiring_days
        counts = await self._store.integration_counts(now, now + dt.timedelta(days=days))
        names = {i.id: i.name for i in await self._store.list_integrations(include_deleted=True)}
        crl = x509.load_der_x509_crl(await self._revocation.current_crl())
        return Dashboard(counts, names, self._ca_certificates(now), crl.next_update_utc, days)

    def _ca_certificates(self, now: dt.datetime) -> list[CertInfo]:
        def info(label: str, cert: x509.Certificate) -> CertInfo:
            left = cert.not_valid_after_utc - now
            return CertInfo(label, cert.subject.rfc4514_string(), cert.not_valid_after_utc, left.days)

        ca = self._cas.current
        found = [info("CA", ca.cert), info("RA (signing)" if ca.enc_cert else "RA", ca.ra_cert)]
        if ca.enc_cert is not None:
            found.append(info("RA (encryption)", ca.enc_cert))
        if self._cas.next is not None:
            found.append(info("next CA", self._cas.next.cert))
        found += [info("previous CA", p.cert) for p in self._cas.previous]
        return found

    async def integrations(self) -> Sequence[Integration]:
        return await self._store.list_integrations()

    async def integration(self, integration_id: str) -> Integration | None:
        return await self._store.get_integration(integration_id)

    def mdm_values(self, integration: Integration) -> MdmValues:
        base = self._config.base_url
        return MdmValues(
            scep_url=f"{base}/scep/{integration.id}",
            subject=integration.subject_template,
            challenge_url=challenge_url(base, integration.id),
            username=integration.username,
            ca_fingerprint=colon_fingerprint(self._cas.current.fingerprint_sha256),
        )

    async def certificate_count(self, integration_id: str) -> int:
        return await self._store.count_certificates(integration_id)

    async def search(self, search: CertificateSearch) -> Sequence[CertificateRecord]:
        return await self._store.search_certificates(search)

    async def certificate(self, serial: str) -> CertificateRecord | None:
        return await self._store.get_certificate(serial)

    async def pending(self) -> Sequence[Transaction]:
        return await self._store.list_transactions(TransactionStatus.PENDING)

    # -- actions ---------------------------------------------------------------------------

    async def create_integration(self, actor: Actor, spec: IntegrationSpec) -> CreatedIntegration:
        _require(actor, Permission.MANAGE)
        created = await self._integrations.create(spec, actor=actor.audit_name)  # IntegrationInputError: nothing stored
        i = created.integration
        await self._record(actor, ConsoleEvent.INTEGRATION_CREATE, i.id, name=i.name, validator=i.validator)
        return created

    async def rotate_password(self, actor: Actor, integration_id: str) -> str:
        _require(actor, Permission.MANAGE)
        creds = await self._integrations.rotate_password(integration_id, actor=actor.audit_name)
        if creds is None:
            raise ActionRefused("no such integration")
        await self._record(actor, ConsoleEvent.INTEGRATION_ROTATE, integration_id)
        return creds.password

    async def delete_integration(self, actor: Actor, integration_id: str, typed_name: str) -> int:
        """Delete after the operator typed the integration's name; returns how many certificates were revoked."""
        _require(actor, Permission.MANAGE)
        integration = await self._store.get_integration(integration_id)
        if integration is None:
            raise ActionRefused("no such integration")
        if typed_name.strip() != integration.name:
            raise ActionRefused("type the integration's name exactly to confirm")
        try:
            result = await self._revocation.delete_integration(integration_id, actor=actor.audit_name)
        except IntegrationNotFound as exc:
            raise ActionRefused("no such integration") from exc
        await self._record(actor, ConsoleEvent.INTEGRATION_DELETE, integration_id, revoked=result.revoked)
        return result.revoked

    async def issue_challenge(self, actor: Actor, integration_id: str) -> str:
        _require(actor, Permission.OPERATE)
        integration = await self._store.get_integration(integration_id)
        if integration is None:
            raise ActionRefused("no such integration")
        if integration.validator != "ndes":
            raise ActionRefused("this integration's requests are judged by its validator, not by one-time challenges")
        issued = Draft(
            Event.CHALLENGE_ISSUED,
            integration_target(integration_id),
            {"integration": integration_id, "address": actor.address},
            actor=actor.audit_name,
        )
        with self._audit.recording(issued) as seal:
            password = await issue_challenge(self._store, self._config.challenge, integration_id, audit=seal)
        if password is None:
            raise ActionRefused(
                f"the challenge cache is full ({self._config.challenge.max_unused} unused): use them or let them expire"
            )
        await self._record(actor, ConsoleEvent.CHALLENGE_ISSUE, integration_id)
        return password

    async def revoke(self, actor: Actor, serial: str, reason: str) -> None:
        _require(actor, Permission.OPERATE)
        try:
            parsed = parse_reason(reason)
        except ReasonError as exc:
            raise ActionRefused(str(exc)) from exc
        record = await self._store.get_certificate(serial)
        if record is None:
            raise ActionRefused("no such certificate")
        if not await self._revocation.revoke(record.serial, parsed, base="hex", actor=actor.audit_name):
            raise ActionRefused("the certificate is already revoked")
        await self._record(actor, ConsoleEvent.CERTIFICATE_REVOKE, record.serial, reason=parsed.rfc_name)

    async def approve(self, actor: Actor, integration_id: str, transaction_id: str) -> CertificateRecord:
        _require(actor, Permission.OPERATE)
        try:
            record = await self._enroller.approve(integration_id, transaction_id, actor=actor.audit_name)
        except ScepFailure as exc:
            raise ActionRefused(exc.text) from exc
        await self._record(
            actor, ConsoleEvent.REQUEST_APPROVE, f"{integration_id}:{transaction_id}", serial=record.serial
        )
        return record

    async def reject(self, actor: Actor, integration_id: str, transaction_id: str) -> None:
        _require(actor, Permission.OPERATE)
        try:
            await self._enroller.reject(integration_id, transaction_id, actor=actor.audit_name)
        except ScepFailure as exc:
            raise ActionRefused(exc.text) from exc
        await self._record(actor, ConsoleEvent.REQUEST_REJECT, f"{integration_id}:{transaction_id}")

    # -- admin accounts (the same Accounts service as `scep-ca admin`) ---------------------

    async def admins(self, actor: Actor) -> Sequence[AdminAccount]:
        """Every account. Admins only: names and roles tell an attacker which account to aim at."""
        _require(actor, Permission.MANAGE)
        return await self._accounts.accounts()

    async def create_admin(self, actor: Actor, name: str, role: str) -> tuple[AdminAccount, str]:
        """The new account and its generated password (shown once, never stored or logged)."""
        _require(actor, Permission.MANAGE)
        try:
            chosen = AdminRole(role)
        except ValueError:
            raise ActionRefused(f"role: one of {', '.join(r.value for r in AdminRole)}") from None
        try:
            account, password = await self._accounts.create(name.strip(), chosen, None)
        except (AccountError, DuplicateAdmin) as exc:
            raise ActionRefused(str(exc)) from exc
        await self._record(actor, ConsoleEvent.ADMIN_CREATE, _admin_object(account.name), role=chosen.value)
        return account, password

    async def disable_admin(self, actor: Actor, name: str) -> None:
        """Disable the account and end its sessions; not the actor's own nor the last admin."""
        _require(actor, Permission.MANAGE)
        try:
            await self._accounts.disable(_known_name(name), by=actor.name)
        except UnknownAdmin as exc:
            raise NotFound("no such admin") from exc
        except AccountError as exc:
            raise ActionRefused(str(exc)) from exc
        await self._record(actor, ConsoleEvent.ADMIN_DISABLE, _admin_object(name))

    async def reset_admin_password(self, actor: Actor, name: str) -> str:
        """A new generated password (shown once); the account's sessions end."""
        _require(actor, Permission.MANAGE)
        try:
            password = await self._accounts.reset_password(_known_name(name), None)
        except UnknownAdmin as exc:
            raise NotFound("no such admin") from exc
        await self._record(actor, ConsoleEvent.ADMIN_RESET_PASSWORD, _admin_object(name))
        return password

    async def _record(self, actor: Actor, event: ConsoleEvent, obj: str, **details: object) -> None:
        await self.audit_sink.record(actor.name, actor.address, event, obj, details)


def _known_name(name: str) -> str:
    """``name`` if it could name an account: any other text (markup, a megabyte) is simply unknown."""
    try:
        return check_name(name)
    except AccountError:
        raise NotFound("no such admin") from None


def _admin_object(name: str) -> str:
    # The audit target reads console/admin/<name>, apart from integration ids (console/<id>).
    return f"admin/{name}"


def _require(actor: Actor, permission: Permission) -> None:
    if not actor.may(permission):
        raise Forbidden(f"role {actor.role.value} may not {permission.value}")
