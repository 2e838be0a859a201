"""The SCEP service: one async method per operation (RFC 8894 section 4).

This is the only place where protocol-core exceptions become failInfo values and
CertReps are built; ``Enroller`` makes the enrollment decisions and handlers in
``scep_ca.server.scep_web`` only decode HTTP. CPU-bound work (RSA) runs inline: one process per
core is the scaling model.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from audit.events import Event
from audit.service import AuditSink, Draft, NoAudit, integration_target
from config.clock import Clock, utc_now
from config.model import ScepConfig
from scep_ca.pki.ca import CAIdentity
from scep_ca.pki.records import Integration
from scep_ca.protocol.certrep import ReplyTo, build_cert_rep, certs_only, crls_only
from scep_ca.protocol.enums import DigestAlg, FailInfo, MessageType, PKIStatus
from scep_ca.protocol.envelope import Decrypted, RecipientKey, decrypt_envelope, encrypt_envelope
from scep_ca.protocol.errors import BadCertId, BadMessageCheck, BadRequest, MalformedRequest, ScepFailure
from scep_ca.protocol.get_cert import read_get_cert, subject_octets
from scep_ca.protocol.message import PKIMessage, decode_pki_message, verify_pki_message
from scep_ca.protocol.signing import SignerIdentity, sign_message
from scep_ca.services.enrollment import Enroller, EnrollmentStore, Outcome, Requester
from scep_ca.services.logctx import bind_log_fields

log = logging.getLogger(__name__)

CA_RA_CERT_CONTENT_TYPE = "application/x-x509-ca-ra-cert"
NEXT_CA_CERT_CONTENT_TYPE = "application/x-x509-next-ca-cert"
PKI_MESSAGE_CONTENT_TYPE = "application/x-pki-message"

CrlSource = Callable[[], Awaitable[bytes]]


class ScepEvents(Protocol):
    """Receives one call per answered PKIOperation (metrics); must not raise or block."""

    def pki_operation(self, message_type: int, status: PKIStatus, fail_info: FailInfo | None) -> None: ...


class NoEvents:
    def pki_operation(self, message_type: int, status: PKIStatus, fail_info: FailInfo | None) -> None:
        return None


_SUPPORTED = frozenset(
    {MessageType.PKCS_REQ, MessageType.RENEWAL_REQ, MessageType.CERT_POLL, MessageType.GET_CERT, MessageType.GET_CRL}
)


def ca_ra_bundle(ca: CAIdentity) -> bytes:
    """GetCACert's answer (RFC 8894 section 4.2.1.2): a certs-only PKCS#7 (section 3.4) with the
    RA(s) first, then the CA, as NDES sends it."""
    return certs_only(list(ca.ca_ra_certs_der))


# Refused enrollments are audit events; a refused poll, GetCert or GetCRL changes nothing and
# is only logged.
_AUDITED_REFUSALS = frozenset({MessageType.PKCS_REQ, MessageType.RENEWAL_REQ})


def _refused(integration_id: str, msg: PKIMessage, ctx: RequestContext, failure: ScepFailure) -> Draft:
    return Draft(
        Event.REQUEST_REFUSED,
        integration_target(integration_id),
        {
            "integration": integration_id,
            "transaction_id": msg.transaction_id,
            "message_type": int(msg.message_type),
            "address": ctx.remote,
            "user_agent": ctx.user_agent,
            "fail_info": failure.fail_info.name,
            "reason": failure.text,
            "detail": failure.detail,
        },
        actor=f"scep:{ctx.remote or 'unknown'}",
    )


class UnknownIntegration(Exception):
    """No live integration at this SCEP URL (HTTP 404)."""


@dataclass(frozen=True)
class RequestContext:
    """Who sent the request, for the audit trail and logs."""

    remote: str | None
    user_agent: str | None


@dataclass(frozen=True)
class _Reply:
    status: PKIStatus
    bag: bytes | None = None  # the degenerate SignedData to envelope on SUCCESS


class ScepService:
    def __init__(
        self,
        store: EnrollmentStore,
        ca: CAIdentity,
        settings: ScepConfig,
        enroller: Enroller,
        clock: Clock = utc_now,
        events: ScepEvents | None = None,
        crl_source: CrlSource | None = None,
        next_ca: CAIdentity | None = None,
        *,
        stand_in_secret: bytes,
        audit: AuditSink | None = None,
    ):
        self._store = store
        self._audit = audit or NoAudit()
        self._settings = settings
        self._clock = clock
        self._events = events or NoEvents()
        self._crl_source = crl_source
        # Derives the stand-in key for a content-encryption key that does not unwrap
        # (``scep_ca.protocol.key_transport``): the same in every worker, so answers repeat.
        self._stand_in_secret = stand_in_secret
        self._enroller = enroller
        self._next_identity = next_ca
        self.use_ca(ca)

    def use_ca(self, ca: CAIdentity) -> None:
        """Serve with ``ca``: at start, and again when its RA certificates were renewed
        (``scep_ca.server.ra_reload``); the CA itself never changes in a running process."""
        self._ca = ca
        # The (signing) RA signs CertReps; the CA key only signs certificates, CRLs and OCSP.
        self._signer = SignerIdentity.from_cert(ca.ra_cert, ca.ra_key)
        # Only encryption RAs decrypt (RFC 8894 section 3.2.2 lets a client pick "the CA or
        # RA certificate"; GetCACert offers the RA for it): a request encrypted to the CA is
        # undecryptable, so no oracle, timing or otherwise, ever runs on the CA key. Clients
        # that cached GetCACert before an RA renewal encrypt to the previous encryption RA,
        # which decrypts until it expires; the current signing RA signs every reply.
        self._recipients = (
            RecipientKey.from_cert(ca.encryption_cert, ca.encryption_key),
            *(RecipientKey.from_cert(cert, key) for cert, key in ca.previous_decryption),
        )
        # Built once per identity: every GetCACert returns it.
        self._ca_ra_bundle = ca_ra_bundle(ca)
        # GetCert compares the requested issuer with the CA's subject, content octets only.
        self._ca_subject = subject_octets(ca.cert_der)
        # GetNextCACert (RFC 8894 section 4.7): the next CA and RA(s), signed by the current RA.
        nxt = self._next_identity
        self._next_ca = sign_message(self._signer, DigestAlg.SHA256, [], ca_ra_bundle(nxt)) if nxt is not None else None

    async def _live_integration(self, integration_id: str) -> Integration:
        integration = await self._store.get_integration(integration_id)
        if integration is None or integration.deleted:
            raise UnknownIntegration(integration_id)
        return integration

    def caps(self) -> list[str]:
        """GetCACaps keywords (RFC 8894 section 3.5.2). A hash keyword is always present: iOS needs one."""
        caps = ["POSTPKIOperation", "SHA-1", "SHA-256", "SHA-512", "AES", "DES3", "SCEPStandard", "Renewal"]
        if self._next_ca is not None:
            caps.append("GetNextCACert")
        return caps

    async def get_ca_caps(self, integration_id: str) -> str:
        """GetCACaps (RFC 8894 section 4.1.2): one keyword a line."""
        await self._live_integration(integration_id)
        return "\n".join(self.caps()) + "\n"

    async def get_ca_cert(self, integration_id: str) -> tuple[bytes, str]:
        """GetCACert (RFC 8894 section 4.2.1.2): RA and CA as a certs-only PKCS#7 (``ca_ra_bundle``)."""
        await self._live_integration(integration_id)
        return self._ca_ra_bundle, CA_RA_CERT_CONTENT_TYPE

    async def get_next_ca_cert(self, integration_id: str) -> tuple[bytes, str]:
        """GetNextCACert (RFC 8894 section 4.7.1); UnknownIntegration (404) when there is no next CA."""
        await self._live_integration(integration_id)
        if self._next_ca is None:
            raise UnknownIntegration(integration_id)
        return self._next_ca, NEXT_CA_CERT_CONTENT_TYPE

    async def pki_operation(self, integration_id: str, der: bytes, ctx: RequestContext) -> bytes:
        """PKIOperation (RFC 8894 section 4.3): always a signed CertRep once the message decodes.

        Raises ``UnknownIntegration`` (404) and ``MalformedRequest`` (400) before that point.
        """
        integration = await self._store.get_integration(integration_id, include_deleted=True)
        if integration is None:
            raise UnknownIntegration(integration_id)
        msg = decode_pki_message(der)
        bind_log_fields(transaction_id=msg.transaction_id)
        reply_to = ReplyTo(msg.transaction_id, msg.sender_nonce, msg.reply_digest())
        try:
            if integration.deleted:
                raise BadRequest("this integration has been deleted")
            signer = verify_pki_message(msg)
            if msg.message_type not in _SUPPORTED:
                raise BadRequest("message type not supported", f"messageType {msg.message_type}")
            decrypted = self._decrypt(msg)
            reply = await self._dispatch(integration, msg, signer, decrypted, ctx)
        except ScepFailure as failure:
            self._events.pki_operation(msg.message_type, PKIStatus.FAILURE, failure.fail_info)
            log.warning(
                "scep failure integration=%s tid=%s type=%s remote=%s failInfo=%s detail=%s",
                integration_id,
                msg.transaction_id,
                msg.message_type,
                ctx.remote,
                failure.fail_info.name,
                failure.detail,
            )
            if msg.message_type in _AUDITED_REFUSALS:
                await self._audit.append(_refused(integration_id, msg, ctx, failure))
            return build_cert_rep(
                self._signer,
                reply_to,
                PKIStatus.FAILURE,
                fail_info=failure.fail_info,
                fail_text=failure.text,
                now=self._clock(),
            )
        self._events.pki_operation(msg.message_type, reply.status, None)
        enveloped = None
        if reply.bag is not None:
            public = signer.public_key()
            assert isinstance(public, rsa.RSAPublicKey)  # verify_pki_message accepts RSA signers only
            enveloped = encrypt_envelope(reply.bag, msg.signer_issuer_and_serial, public, decrypted.cipher)
        return build_cert_rep(self._signer, reply_to, reply.status, enveloped=enveloped, now=self._clock())

    def _decrypt(self, msg: PKIMessage) -> Decrypted:
        if not msg.content:
            raise BadMessageCheck("the request carries no content")
        return decrypt_envelope(
            msg.content, self._recipients, allow_des=self._settings.allow_des, stand_in_secret=self._stand_in_secret
        )

    async def _dispatch(
        self,
        integration: Integration,
        msg: PKIMessage,
        signer: x509.Certificate,
        decrypted: Decrypted,
        ctx: RequestContext,
    ) -> _Reply:
        """Decide what to answer."""
        kind = msg.message_type
        who = Requester(msg.transaction_id, kind, signer, ctx.remote, ctx.user_agent)
        if kind == MessageType.PKCS_REQ:
            checked = self._enroller.check(integration, decrypted.plaintext)
            outcome = await self._enroller.pkcs_req(integration, checked, who)
        elif kind == MessageType.RENEWAL_REQ:
            checked = self._enroller.check(integration, decrypted.plaintext)
            outcome = await self._enroller.renewal_req(integration, checked, who)
        elif kind == MessageType.CERT_POLL:
            outcome = await self._enroller.cert_poll(integration, who)
        elif kind == MessageType.GET_CERT:
            outcome = await self._get_cert(integration, decrypted.plaintext)
        else:
            return _Reply(PKIStatus.SUCCESS, crls_only(await self._current_crl()))
        return self._reply(integration, outcome)

    def _reply(self, integration: Integration, outcome: Outcome) -> _Reply:
        if outcome.cert_der is None:
            return _Reply(outcome.status)
        include_ca = integration.include_ca_in_reply
        if include_ca is None:
            include_ca = self._settings.include_ca_in_reply
        # Issued certificate first: Apple takes the first one as the issued certificate.
        certs = [outcome.cert_der, self._ca.cert_der] if include_ca else [outcome.cert_der]
        return _Reply(PKIStatus.SUCCESS, certs_only(certs))

    async def _get_cert(self, integration: Integration, issuer_and_serial: bytes) -> Outcome:
        """GetCert (RFC 8894 section 3.3.4): a certificate of this integration by issuer and serial."""
        wanted = read_get_cert(issuer_and_serial)
        record = await self._store.get_certificate(wanted.serial_hex)
        if not wanted.issued_by(self._ca_subject) or record is None or record.integration_id != integration.id:
            raise BadCertId("no certificate with this issuer and serial number")
        return Outcome(PKIStatus.SUCCESS, record.der)

    async def _current_crl(self) -> bytes:
        """GetCRL (RFC 8894 section 3.3.5): the current CRL of the CA."""
        if self._crl_source is None:
            raise BadRequest("GetCRL is not available")
        return await self._crl_source()


__all__ = [
    "CA_RA_CERT_CONTENT_TYPE",
    "PKI_MESSAGE_CONTENT_TYPE",
    "MalformedRequest",
    "RequestContext",
    "ScepService",
    "UnknownIntegration",
    "ca_ra_bundle",
]
