"""Enrollment decisions: PKCSReq, RenewalReq, CertPoll and operator approval (RFC 8894 section 3.3).

``Enroller`` decides and records; it returns ``Outcome`` values and raises
``ScepFailure`` subclasses. Building and signing the CertRep is ``ScepService``'s job,
so the same decisions serve the HTTP path and the operator CLI (``request approve``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from audit.events import SYSTEM, Event
from audit.service import AuditSink, Draft, NoAudit, certificate_target, der_text, integration_target
from config.clock import Clock
from config.model import ScepConfig
from scep_ca.pki.certificate_factory import CertificateFactory
from scep_ca.pki.reasons import Reason
from scep_ca.pki.records import CertificateRecord, CertStatus, Integration, Transaction, TransactionStatus
from scep_ca.protocol.csr import CheckedCsr, CsrPolicy, check_csr, spki_sha256
from scep_ca.protocol.enums import MessageType, PKIStatus
from scep_ca.protocol.errors import BadRequest
from scep_ca.services.renewal import identity_mismatch
from scep_ca.services.validators.base import ConfirmationFailed, ValidationRequest, Validator
from store.base import (
    HOLD,
    CertificateFilter,
    CertificateStore,
    ChallengeRejected,
    DuplicateSerial,
    DuplicateTransaction,
    IntegrationNotFound,
    IntegrationStore,
    IssuanceRequest,
    IssuanceStore,
    RenewalPending,
    RenewalRefused,
    RevocationStore,
)

log = logging.getLogger(__name__)

_SERIAL_ATTEMPTS = 3
_CHALLENGE_REJECTED = "the challenge password is invalid, expired or used"
_ALREADY_RENEWED = "this certificate has already been renewed"
_IDENTITY_CHANGED = "a renewal must keep the certificate's subject and subjectAltName"
_RENEWAL_PENDING = "a renewal of this certificate is already waiting for approval"
_NOT_CONFIRMED = "the certificate was not confirmed by the integration's validator"
# Why a certificate the validator did not confirm is revoked at once (RFC 5280 section 5.3.1).
_UNCONFIRMED_REASON = Reason.CESSATION_OF_OPERATION.rfc_name


@dataclass(frozen=True)
class Requester:
    """What the request says about who asks, for decisions and the audit trail."""

    transaction_id: str
    message_type: int
    signer: x509.Certificate
    remote: str | None
    user_agent: str | None


@dataclass(frozen=True)
class Outcome:
    """SUCCESS with the issued certificate, or PENDING (certificate None)."""

    status: PKIStatus
    cert_der: bytes | None = None


PENDING = Outcome(PKIStatus.PENDING)


class EnrollmentStore(IntegrationStore, IssuanceStore, CertificateStore, RevocationStore, Protocol):
    """The store roles enrollment (and the SCEP service around it) uses; revocation for a
    certificate whose issuance a validator did not confirm."""


class ValidatorSource(Protocol):
    """The validator of each integration (``scep_ca.services.validators.registry.Validators``)."""

    def for_integration(self, integration: Integration) -> Validator: ...


class Enroller:
    def __init__(
        self,
        store: EnrollmentStore,
        certificates: CertificateFactory,
        validators: ValidatorSource,
        scep: ScepConfig,
        key_sizes: tuple[int, ...],
        clock: Clock,
        audit: AuditSink | None = None,
    ) -> None:
        self._store = store
        self._audit = audit or NoAudit()
        self._certificates = certificates
        self._validators = validators
        self._scep = scep
        self._key_sizes = key_sizes
        self._clock = clock

    # -- policy --------------------------------------------------------------------

    def check(self, integration: Integration, csr_der: bytes) -> CheckedCsr:
        """The integration's issuance policy applied to a CSR (RFC 8894 section 3.3.1)."""
        policy = CsrPolicy(
            key_sizes=self._key_sizes,
            subject_template=self._certificates.subject_template(integration),
            allowed_san_types=integration.allowed_san_types,
        )
        checked = check_csr(csr_der, policy)
        if checked.dropped_sans:
            log.info(
                "dropped SANs not allowed by integration=%s types=%s", integration.id, ",".join(checked.dropped_sans)
            )
        return checked

    # -- PKCSReq -------------------------------------------------------------------

    async def pkcs_req(self, integration: Integration, checked: CheckedCsr, who: Requester) -> Outcome:
        """PKCSReq (RFC 8894 section 3.3.1): a one-time challenge, then issue or queue for approval."""
        now = self._clock()
        validator = self._validators.for_integration(integration)
        challenge_hash = validator.one_time_challenge(checked.challenge)
        state = await self._store.enrollment_state(integration.id, who.transaction_id, challenge_hash, now)
        if state.transaction is not None:
            return await self._resend(state.transaction, checked.pubkey_sha256)
        # Judged before any RSA work, so bad challenges cost no signature.
        request = _validation_request(integration, checked, who, challenge_usable=state.challenge_usable)
        verdict = await validator.validate(request)
        if not verdict.allowed:
            if verdict.try_renewal and await self._issued_here(who.signer) is not None:
                # certmonger re-keys with a PKCSReq signed by the certificate it renews, carrying the
                # challenge it already used: a renewal by another name, under the same rules.
                return await self._renew(integration, checked, who, who.transaction_id)
            raise BadRequest(verdict.fail_text, verdict.reason)
        if integration.require_approval:
            return await self._queue(integration, checked, who, challenge_hash, now)
        return await self._issue(integration, checked, who, challenge_hash=challenge_hash, hooks=(validator, request))

    async def _queue(
        self,
        integration: Integration,
        checked: CheckedCsr,
        who: Requester,
        challenge_hash: str | None,
        now: dt.datetime,
        renews: str | None = None,
    ) -> Outcome:
        txn = Transaction(
            integration_id=integration.id,
            transaction_id=who.transaction_id,
            pubkey_sha256=checked.pubkey_sha256,
            status=TransactionStatus.PENDING,
            created_at=now,
            message_type=who.message_type,
            csr_der=checked.der,
            renews=renews,
        )
        pending = Draft(
            Event.REQUEST_PENDING,
            integration_target(integration.id),
            {**_requester_details(integration, who), "subject": checked.csr.subject.rfc4514_string(), "renews": renews},
            actor=_actor(who),
        )
        # A pending request older than this has expired (``_transaction_outcome``) and no longer
        # holds its certificate's one pending renewal.
        open_since = now - dt.timedelta(hours=self._scep.pending_expiry_hours)
        try:
            with _refusals(), self._audit.recording(pending) as seal:
                await self._store.record_pending(txn, challenge_hash, now, open_since=open_since, audit=seal)
        except DuplicateTransaction:
            return await self._lost_race(integration, who, checked)
        except RenewalPending:
            # One pending renewal per certificate: else a certificate could fill the approval queue.
            return await self._resend_or(integration, who, checked, BadRequest(_RENEWAL_PENDING, f"renews {renews}"))
        log.info("queued for approval integration=%s tid=%s remote=%s", integration.id, who.transaction_id, who.remote)
        return PENDING

    async def _lost_race(self, integration: Integration, who: Requester, checked: CheckedCsr) -> Outcome:
        """A concurrent resend of the same transaction was recorded first: answer as a resend."""
        existing = await self._store.get_transaction(integration.id, who.transaction_id)
        if existing is None:
            raise BadRequest("the transaction changed while it was being recorded")
        return await self._resend(existing, checked.pubkey_sha256)

    async def _resend_or(
        self, integration: Integration, who: Requester, checked: CheckedCsr, refusal: BadRequest
    ) -> Outcome:
        """The answer to a resend when this very transaction was recorded concurrently; else ``refusal``."""
        if await self._store.get_transaction(integration.id, who.transaction_id) is None:
            raise refusal
        return await self._lost_race(integration, who, checked)

    async def _resend(self, txn: Transaction, key_hash: str) -> Outcome:
        """A resent request of a known transaction: same key gets the same answer (RFC 8894 section 3.3.1)."""
        if txn.pubkey_sha256 != key_hash:
            raise BadRequest("transactionID already used with another key")
        log.info(
            "resent transaction integration=%s tid=%s status=%s", txn.integration_id, txn.transaction_id, txn.status
        )
        return await self._transaction_outcome(txn)

    async def _transaction_outcome(self, txn: Transaction) -> Outcome:
        if txn.status is TransactionStatus.PENDING:
            if self._clock() - txn.created_at > dt.timedelta(hours=self._scep.pending_expiry_hours):
                raise BadRequest("the request expired before it was approved")
            return PENDING
        if txn.status is TransactionStatus.REJECTED:
            raise BadRequest("the request was rejected by the CA operator")
        record = await self._store.get_certificate(txn.serial) if txn.serial else None
        if record is None:
            raise BadRequest("the transaction has no certificate")
        if record.status is CertStatus.REVOKED and record.revocation_reason == HOLD:
            record = await self._held(record)
            if record is None:
                return PENDING
        if record.status is CertStatus.REVOKED and record.revocation_reason == _UNCONFIRMED_REASON:
            # Revoked because the validator did not confirm it (or its integration is gone): a
            # resend must not deliver what the first answer withheld.
            raise BadRequest(_NOT_CONFIRMED)
        return Outcome(PKIStatus.SUCCESS, record.der)

    async def end_stale_holds(self) -> int:
        """Recovery at start: revoke every certificate on hold whose confirmation can no
        longer come (its worker died); holds still within their bound are left to the worker
        confirming them, or to a resend. The number revoked."""
        ended = 0
        for record in await self._store.list_certificates(CertificateFilter(on_hold=True)):
            after = await self._held(record)
            ended += after is not None and after.revocation_reason == _UNCONFIRMED_REASON
        return ended

    async def _held(self, record: CertificateRecord) -> CertificateRecord | None:
        """A resend or poll of a certificate on hold: None (answer PENDING) while its
        validator's confirmation may still come; past that, the worker that issued it died
        between recording and confirming: the hold ends as a revocation, and the record
        as it then is (released or revoked, whichever won) is returned."""
        integration = await self._store.get_integration(record.integration_id)
        within = None
        if integration is not None:
            within = self._validators.for_integration(integration).confirm_within
        now = self._clock()
        # A hold is recorded with its start (revoked_at); a row without one cannot be waited for.
        started = record.revoked_at
        if within is not None and started is not None and now - started <= dt.timedelta(seconds=within):
            return None
        revoked = _unconfirmed_revocation(
            record, record.integration_id, "no confirmation from the validator in time (its worker stopped)"
        )
        with self._audit.recording(revoked) as seal:
            ended = await self._store.end_hold(record.serial, _UNCONFIRMED_REASON, now, audit=seal)
        if ended:
            log.warning(
                "unconfirmed certificate revoked serial=%s integration=%s tid=%s: no confirmation within %ss",
                record.serial,
                record.integration_id,
                record.transaction_id,
                within,
            )
        return await self._store.get_certificate(record.serial) or record

    # -- RenewalReq ----------------------------------------------------------------

    async def renewal_req(self, integration: Integration, checked: CheckedCsr, who: Requester) -> Outcome:
        """RenewalReq (RFC 8894 section 3.3.1.2): signed by a valid certificate we issued; no challenge."""
        transaction_id = who.transaction_id
        existing = await self._store.get_transaction(integration.id, transaction_id)
        if existing is not None and existing.message_type != who.message_type:
            # scepclient derives the transactionID from the key, so a renewal for the same key
            # reuses the ID of the PKCSReq that enrolled it. That is a new transaction, not a
            # resend: record it under an ID derived from the request and the certificate renewed.
            transaction_id = f"{who.transaction_id}/renewal/{who.signer.serial_number:x}"
            existing = await self._store.get_transaction(integration.id, transaction_id)
        if existing is not None:
            return await self._resend(existing, checked.pubkey_sha256)
        return await self._renew(integration, checked, who, transaction_id)

    async def _renew(
        self, integration: Integration, checked: CheckedCsr, who: Requester, transaction_id: str
    ) -> Outcome:
        """A renewal by RenewalReq or by certmonger's re-key PKCSReq: the same rules for both."""
        old = await self._renewable(integration, who.signer)
        _require_same_identity(who.signer, checked)
        who = dataclasses.replace(who, transaction_id=transaction_id, message_type=MessageType.RENEWAL_REQ)
        validator = self._validators.for_integration(integration)
        request = _validation_request(integration, checked, who, renewal=True)
        verdict = await validator.validate(request)
        if not verdict.allowed:
            raise BadRequest(verdict.fail_text, verdict.reason)
        if integration.require_approval:
            return await self._queue(integration, checked, who, None, self._clock(), renews=old.serial)
        supersedes = old.serial if integration.revoke_superseded else None
        return await self._issue(
            integration,
            checked,
            who,
            challenge_hash=None,
            supersedes=supersedes,
            renews=old.serial,
            hooks=(validator, request),
        )

    async def _issued_here(self, signer: x509.Certificate) -> CertificateRecord | None:
        """The record of ``signer`` when it is exactly a certificate this CA issued (any integration)."""
        record = await self._store.get_certificate(format(signer.serial_number, "x"))
        # The exact certificate must be ours: a look-alike with a known serial is not.
        if record is None or record.der != signer.public_bytes(serialization.Encoding.DER):
            return None
        return record

    async def _renewable(self, integration: Integration, signer: x509.Certificate) -> CertificateRecord:
        record = await self._issued_here(signer)
        if record is None:
            raise BadRequest("renewal must be signed by a certificate this CA issued")
        if record.integration_id != integration.id:
            raise BadRequest("renewal must be signed by a certificate of this integration")
        # Before the revocation check: with revoke_superseded the renewed certificate is also
        # revoked, and "already renewed" is the reason that tells the client what happened.
        if record.superseded_by is not None:
            raise BadRequest(_ALREADY_RENEWED, f"superseded by {record.superseded_by}")
        if record.status is CertStatus.REVOKED:
            raise BadRequest("the certificate to renew is revoked")
        now = self._clock()
        if now >= record.not_after:
            raise BadRequest("the certificate to renew has expired")
        window = dt.timedelta(days=self._scep.renewal_days)
        if now < record.not_after - window:
            raise BadRequest(
                f"renewal opens {self._scep.renewal_days} days before expiry",
                f"not_after {record.not_after.isoformat()}",
            )
        return record

    # -- CertPoll ------------------------------------------------------------------

    async def cert_poll(self, integration: Integration, who: Requester) -> Outcome:
        """CertPoll / GetCertInitial (RFC 8894 section 3.3.3): matched by transactionID and the requester's key."""
        txn = await self._store.get_transaction(integration.id, who.transaction_id)
        if txn is None:
            raise BadRequest("unknown transaction")
        key_hash = spki_sha256(who.signer.public_key())
        if txn.renews is not None and key_hash != txn.pubkey_sha256:
            # A renewing client may sign its polls as it signed the request: with the renewed
            # certificate, whose key is not the new one.
            renewed = await self._store.get_certificate(txn.renews)
            if renewed is not None and renewed.pubkey_sha256 == key_hash:
                key_hash = txn.pubkey_sha256
        return await self._resend(txn, key_hash)

    # -- approval (operator) -------------------------------------------------------

    async def approve(self, integration_id: str, transaction_id: str, *, actor: str = SYSTEM) -> CertificateRecord:
        """Issue the queued request; the client's next CertPoll receives the certificate."""
        integration = await self._store.get_integration(integration_id)
        txn = await self._store.get_transaction(integration_id, transaction_id)
        if integration is None or txn is None or txn.status is not TransactionStatus.PENDING or not txn.csr_der:
            raise BadRequest("no pending request with this id")
        checked = self.check(integration, txn.csr_der)
        supersedes = None
        if txn.renews is not None:
            supersedes = await self._approvable_renewal(integration, txn.renews, checked)

        async def resolve(record: CertificateRecord) -> bool:
            approved = Draft(
                Event.REQUEST_APPROVED,
                certificate_target(record.serial),
                {**_certificate_details(record), "renews": txn.renews, "supersedes": supersedes},
                actor=actor,
            )
            with self._audit.recording(approved) as seal:
                return await self._store.resolve_pending(
                    integration_id, transaction_id, record, self._clock(), supersedes=supersedes, audit=seal
                )

        try:
            record, resolved = await _with_unique_serial(
                lambda: self._certificates.sign(integration, checked, transaction_id, txn.message_type, None, None),
                resolve,
            )
        except RenewalRefused as exc:
            raise BadRequest("the certificate to renew was renewed or revoked while the request waited") from exc
        if not resolved:
            raise BadRequest("the request is no longer pending")
        log.info("approved serial=%s integration=%s tid=%s", record.serial, integration_id, transaction_id)
        return record

    async def _approvable_renewal(self, integration: Integration, serial: str, checked: CheckedCsr) -> str | None:
        """Check a queued renewal again at approval; the serial to revoke as superseded, if any.

        The store's mark decides "renewed once" atomically; these reads only give the operator
        the precise reason before any signing.
        """
        old = await self._store.get_certificate(serial)
        if old is None:
            raise BadRequest("the certificate to renew is unknown")
        if old.superseded_by is not None:
            raise BadRequest(_ALREADY_RENEWED, f"superseded by {old.superseded_by}")
        if old.status is CertStatus.REVOKED:
            raise BadRequest("the certificate to renew is revoked")
        _require_same_identity(x509.load_der_x509_certificate(old.der), checked)
        return old.serial if integration.revoke_superseded else None

    async def reject(self, integration_id: str, transaction_id: str, *, actor: str = SYSTEM) -> None:
        rejected = Draft(
            Event.REQUEST_REJECTED,
            integration_target(integration_id),
            {"integration": integration_id, "transaction_id": transaction_id},
            actor=actor,
        )
        with self._audit.recording(rejected) as seal:
            resolved = await self._store.resolve_pending(
                integration_id, transaction_id, None, self._clock(), audit=seal
            )
        if not resolved:
            raise BadRequest("no pending request with this id")
        log.info("rejected integration=%s tid=%s", integration_id, transaction_id)

    # -- issuance ------------------------------------------------------------------

    async def _issue(
        self,
        integration: Integration,
        checked: CheckedCsr,
        who: Requester,
        *,
        challenge_hash: str | None,
        supersedes: str | None = None,
        renews: str | None = None,
        hooks: tuple[Validator, ValidationRequest] | None = None,
    ) -> Outcome:
        if hooks is None:
            outcome, _ = await self._record_once(integration, checked, who, challenge_hash, supersedes, renews)
            return outcome
        validator, request = hooks
        # A validator that confirms (Intune) gets the certificate recorded on hold in the
        # issuing transaction: until it confirmed, a resend gets PENDING, OCSP and the CRL say
        # certificateHold, and a worker killed before confirming leaves nothing valid behind.
        hold = validator.confirm_within is not None
        try:
            outcome, record = await self._record_once(
                integration, checked, who, challenge_hash, supersedes, renews, hold=hold
            )
        except Exception as exc:
            # Issuance failed after the validator allowed it: tell it (Intune's failureNotification).
            await validator.failed(request, exc.text if isinstance(exc, BadRequest) else type(exc).__name__)
            raise
        if record is None:
            return outcome
        try:
            await validator.issued(request, x509.load_der_x509_certificate(record.der))
        except ConfirmationFailed as exc:
            # Nothing the validator did not confirm may be in use: revoked before anyone saw it.
            revoked = _unconfirmed_revocation(record, integration.id, "not confirmed by the validator")
            with self._audit.recording(revoked) as seal:
                if hold:
                    await self._store.end_hold(record.serial, _UNCONFIRMED_REASON, self._clock(), audit=seal)
                else:
                    await self._store.revoke_certificate(record.serial, _UNCONFIRMED_REASON, self._clock(), audit=seal)
            raise BadRequest(_NOT_CONFIRMED, f"serial {record.serial} revoked: {exc}") from exc
        if hold:
            confirmed = Draft(
                Event.CERT_CONFIRMED,
                certificate_target(record.serial),
                {"serial": record.serial, "integration": integration.id, "validator": integration.validator},
            )
            with self._audit.recording(confirmed) as seal:
                released = await self._store.end_hold(record.serial, None, self._clock(), audit=seal)
            if not released:
                # The confirmation came after confirm_within and a resend revoked the certificate.
                raise BadRequest(_NOT_CONFIRMED, f"serial {record.serial} revoked before it was confirmed")
        return outcome

    async def _record_once(
        self,
        integration: Integration,
        checked: CheckedCsr,
        who: Requester,
        challenge_hash: str | None,
        supersedes: str | None,
        renews: str | None,
        *,
        hold: bool = False,
    ) -> tuple[Outcome, CertificateRecord | None]:
        """Sign and record (on hold when ``hold``); the record is None when a concurrent
        resend answered instead."""

        def sign() -> CertificateRecord:
            record = self._certificates.sign(
                integration, checked, who.transaction_id, who.message_type, who.remote, who.user_agent
            )
            if not hold:
                return record
            return dataclasses.replace(
                record, status=CertStatus.REVOKED, revoked_at=self._clock(), revocation_reason=HOLD
            )

        async def record_issuance(record: CertificateRecord) -> None:
            request = IssuanceRequest(record, challenge_hash, self._clock(), supersedes=supersedes, renews=renews)
            issued = Draft(
                Event.CERT_ISSUED if renews is None else Event.CERT_RENEWED,
                certificate_target(record.serial),
                {
                    **_requester_details(integration, who),
                    **_certificate_details(record),
                    "validator": integration.validator,
                    "verdict": "allowed",
                    # Held (certificateHold) until the validator confirms it: scep.confirmed follows.
                    "on_hold": hold,
                    "old_serial": renews,
                    "supersedes": supersedes,
                },
                actor=_actor(who),
            )
            with self._audit.recording(issued) as seal:
                await self._store.record_issuance(request, audit=seal)

        try:
            with _refusals():
                record, _ = await _with_unique_serial(sign, record_issuance)
        except DuplicateTransaction:
            return await self._lost_race(integration, who, checked), None
        except RenewalRefused:
            # Another renewal signed by the same certificate committed first. If it was this
            # very transaction (a concurrent resend), answer as a resend; else refuse.
            refusal = BadRequest(_ALREADY_RENEWED, f"renews {renews}")
            return await self._resend_or(integration, who, checked, refusal), None
        log.info(
            "issued serial=%s integration=%s tid=%s type=%s subject=%s remote=%s",
            record.serial,
            integration.id,
            who.transaction_id,
            who.message_type,
            record.subject,
            who.remote,
        )
        return Outcome(PKIStatus.SUCCESS, record.der), record


T = TypeVar("T")


async def _with_unique_serial(
    sign: Callable[[], CertificateRecord], write: Callable[[CertificateRecord], Awaitable[T]]
) -> tuple[CertificateRecord, T]:
    """Sign and write, signing again under a new random serial when the store already holds
    the serial (a 64-bit random draw colliding: RFC 5280 section 4.1.2.2 wants it unique)."""
    for _attempt in range(_SERIAL_ATTEMPTS):
        record = sign()
        try:
            return record, await write(record)
        except DuplicateSerial:
            continue
    raise BadRequest("could not allocate a unique serial number")


@contextmanager
def _refusals() -> Iterator[None]:
    """The store's refusals of a request, as the client's answer (failInfo badRequest)."""
    try:
        yield
    except ChallengeRejected as exc:
        raise BadRequest(_CHALLENGE_REJECTED) from exc
    except IntegrationNotFound as exc:
        raise BadRequest("this integration has been deleted") from exc


def _validation_request(
    integration: Integration,
    checked: CheckedCsr,
    who: Requester,
    *,
    renewal: bool = False,
    challenge_usable: bool = False,
) -> ValidationRequest:
    return ValidationRequest(
        integration_id=integration.id,
        csr_der=checked.der,
        csr=checked.csr,
        challenge=checked.challenge,
        transaction_id=who.transaction_id,
        message_type=who.message_type,
        remote=who.remote,
        user_agent=who.user_agent,
        renewal=renewal,
        challenge_usable=challenge_usable,
    )


def _actor(who: Requester) -> str:
    """A SCEP requester as an audit actor: its address (the signer is self-signed, or a
    certificate of ours for a renewal, whose serial the details carry)."""
    return f"scep:{who.remote or 'unknown'}"


def _requester_details(integration: Integration, who: Requester) -> dict[str, object]:
    return {
        "integration": integration.id,
        "transaction_id": who.transaction_id,
        "message_type": int(who.message_type),
        "address": who.remote,
        "user_agent": who.user_agent,
    }


def _certificate_details(record: CertificateRecord) -> dict[str, object]:
    """What rebuilds the list of issued certificates from the log alone: the certificate itself."""
    return {
        "serial": record.serial,
        "subject": record.subject,
        "integration": record.integration_id,
        "not_after": record.not_after.isoformat(),
        "certificate": der_text(record.der),
    }


def _unconfirmed_revocation(record: CertificateRecord, integration_id: str, why: str) -> Draft:
    """The audit event of a certificate revoked because its validator did not confirm it."""
    return Draft(
        Event.CERT_REVOKED,
        certificate_target(record.serial),
        {"serial": record.serial, "integration": integration_id, "reason": _UNCONFIRMED_REASON, "why": why},
    )


def _require_same_identity(renewed: x509.Certificate, checked: CheckedCsr) -> None:
    """Threat model: a certificate holder renews that identity only (same subject and SANs)."""
    reason = identity_mismatch(renewed, checked)
    if reason is not None:
        raise BadRequest(_IDENTITY_CHANGED, reason)
