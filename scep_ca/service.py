"""The SCEP service: one async method per operation (RFC 8894 section 4).

This is the only place where protocol-core exceptions become failInfo values and
where the store is consulted. Handlers in ``scep_ca.web`` only decode HTTP.
CPU-bound work (RSA) runs inline: one process per core is the scaling model.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from challenge.codes import hash_challenge
from config.model import Config
from scep_ca.ca import CAIdentity
from scep_ca.certrep import ReplyTo, build_cert_rep, certs_only
from scep_ca.csr import CheckedCsr, CsrPolicy, check_csr
from scep_ca.dn import DNError, parse_dn
from scep_ca.enums import ContentCipher, FailInfo, MessageType, PKIStatus
from scep_ca.envelope import RecipientKey, decrypt_envelope, encrypt_envelope
from scep_ca.errors import BadMessageCheck, BadRequest, MalformedRequest, ScepFailure
from scep_ca.issue import Profile, issue_certificate, random_serial
from scep_ca.message import PKIMessage, decode_pki_message, verify_pki_message
from scep_ca.signing import SignerIdentity
from store.base import (
    CertificateRecord,
    ChallengeRejected,
    DuplicateSerial,
    DuplicateTransaction,
    Integration,
    IntegrationNotFound,
    IssuanceRequest,
    Store,
)

log = logging.getLogger("scep_ca.scep")

CA_RA_CERT_CONTENT_TYPE = "application/x-x509-ca-ra-cert"
PKI_MESSAGE_CONTENT_TYPE = "application/x-pki-message"
_SERIAL_ATTEMPTS = 3


class ScepEvents(Protocol):
    """Receives one call per answered PKIOperation (metrics); must not raise or block."""

    def pki_operation(self, message_type: int, status: PKIStatus, fail_info: FailInfo | None) -> None: ...


class NoEvents:
    def pki_operation(self, message_type: int, status: PKIStatus, fail_info: FailInfo | None) -> None:
        return None


class UnknownIntegration(Exception):
    """No live integration at this SCEP URL (HTTP 404)."""


@dataclass(frozen=True)
class RequestContext:
    """Who sent the request, for the audit trail and logs."""

    remote: str | None
    user_agent: str | None


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ScepService:
    def __init__(
        self,
        store: Store,
        ca: CAIdentity,
        config: Config,
        clock: Callable[[], dt.datetime] = utcnow,
        events: ScepEvents | None = None,
    ):
        self._store = store
        self._events = events or NoEvents()
        self._ca = ca
        self._config = config
        self._clock = clock
        # The RA decrypts requests and signs CertReps; the CA key only signs certificates.
        self._signer = SignerIdentity.from_cert(ca.ra_cert, ca.ra_key)
        self._recipient = RecipientKey.from_cert(ca.ra_cert, ca.ra_key)
        self._ca_ra_bundle = ca.ca_ra_bundle
        self._templates: dict[str, x509.Name] = {}
        public = config.server.public_url
        self._profile_urls = (
            (f"{public.rstrip('/')}/crl/ca.crl", f"{public.rstrip('/')}/ocsp") if public else (None, None)
        )

    async def _live_integration(self, integration_id: str) -> Integration:
        integration = await self._store.get_integration(integration_id)
        if integration is None or integration.deleted:
            raise UnknownIntegration(integration_id)
        return integration

    def caps(self) -> list[str]:
        """GetCACaps keywords (RFC 8894 section 3.5.2). A hash keyword is always present: iOS needs one."""
        caps = ["POSTPKIOperation", "SHA-1", "SHA-256", "SHA-512", "AES", "DES3", "SCEPStandard"]
        return caps

    async def get_ca_caps(self, integration_id: str) -> str:
        """GetCACaps (RFC 8894 section 4.1.2): one keyword a line."""
        await self._live_integration(integration_id)
        return "\n".join(self.caps()) + "\n"

    async def get_ca_cert(self, integration_id: str) -> tuple[bytes, str]:
        """GetCACert (RFC 8894 section 4.2.1.2): RA and CA as a certs-only PKCS#7 (see ``scep_ca.ca``)."""
        await self._live_integration(integration_id)
        return self._ca_ra_bundle, CA_RA_CERT_CONTENT_TYPE

    async def pki_operation(self, integration_id: str, der: bytes, ctx: RequestContext) -> bytes:
        """PKIOperation (RFC 8894 section 4.3): always a signed CertRep once the message decodes.

        Raises ``UnknownIntegration`` (404) and ``MalformedRequest`` (400) before that point.
        """
        integration = await self._store.get_integration(integration_id, include_deleted=True)
        if integration is None:
            raise UnknownIntegration(integration_id)
        msg = decode_pki_message(der)
        reply_to = ReplyTo(msg.transaction_id, msg.sender_nonce, msg.reply_digest())
        try:
            if integration.deleted:
                raise BadRequest("this integration has been deleted")
            signer = verify_pki_message(msg)
            reply = await self._dispatch(integration, msg, signer, reply_to, ctx)
            self._events.pki_operation(msg.message_type, PKIStatus.SUCCESS, None)
            return reply
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
            return build_cert_rep(
                self._signer,
                reply_to,
                PKIStatus.FAILURE,
                fail_info=failure.fail_info,
                fail_text=failure.text,
                now=self._clock(),
            )

    async def _dispatch(
        self,
        integration: Integration,
        msg: PKIMessage,
        signer: x509.Certificate,
        reply_to: ReplyTo,
        ctx: RequestContext,
    ) -> bytes:
        if msg.message_type == MessageType.PKCS_REQ:
            return await self._pkcs_req(integration, msg, signer, reply_to, ctx)
        raise BadRequest("message type not supported", f"messageType {msg.message_type}")

    def _template(self, integration: Integration) -> x509.Name:
        template = self._templates.get(integration.subject_template)
        if template is None:
            try:
                template = parse_dn(integration.subject_template)
            except DNError as exc:
                raise BadRequest("the integration's subject template is invalid") from exc
            self._templates[integration.subject_template] = template
        return template

    def _decrypt_csr(self, integration: Integration, msg: PKIMessage) -> tuple[CheckedCsr, ContentCipher]:
        if not msg.content:
            raise BadMessageCheck("the request carries no content")
        decrypted = decrypt_envelope(msg.content, self._recipient, allow_des=self._config.scep.allow_des)
        policy = CsrPolicy(
            key_sizes=self._config.certificate.key_sizes,
            subject_template=self._template(integration),
            allowed_san_types=integration.allowed_san_types,
        )
        return check_csr(decrypted.plaintext, policy), decrypted.cipher

    async def _pkcs_req(
        self,
        integration: Integration,
        msg: PKIMessage,
        signer: x509.Certificate,
        reply_to: ReplyTo,
        ctx: RequestContext,
    ) -> bytes:
        """PKCSReq (RFC 8894 section 3.3.1): check, issue, record, reply."""
        checked, cipher = self._decrypt_csr(integration, msg)
        existing = await self._store.get_transaction(integration.id, msg.transaction_id)
        if existing is not None:
            return await self._retry(existing.pubkey_sha256, existing.serial, checked, msg, signer, reply_to, cipher)
        if not checked.challenge:
            raise BadRequest("a challenge password is required", "no challengePassword in the CSR")
        now = self._clock()
        challenge_hash = hash_challenge(checked.challenge)
        if not await self._store.challenge_usable(integration.id, challenge_hash, now):
            raise BadRequest("the challenge password is invalid, expired or used")
        if checked.dropped_sans:
            log.info(
                "dropped SANs not allowed by integration=%s tid=%s types=%s",
                integration.id,
                msg.transaction_id,
                ",".join(checked.dropped_sans),
            )
        crl_url, ocsp_url = self._profile_urls
        profile = Profile(validity_days=integration.validity_days, crl_url=crl_url, ocsp_url=ocsp_url)
        for _attempt in range(_SERIAL_ATTEMPTS):
            serial = random_serial()
            cert = issue_certificate(
                self._ca,
                subject=checked.subject,
                public_key=checked.public_key,
                sans=checked.sans,
                profile=profile,
                serial=serial,
                now=now,
            )
            cert_der = cert.public_bytes(serialization.Encoding.DER)
            record = CertificateRecord(
                serial=format(serial, "x"),
                integration_id=integration.id,
                issuer_fingerprint=self._ca.fingerprint_sha256,
                subject=checked.subject.rfc4514_string(),
                not_before=cert.not_valid_before_utc,
                not_after=cert.not_valid_after_utc,
                der=cert_der,
                transaction_id=msg.transaction_id,
                pubkey_sha256=checked.pubkey_sha256,
                message_type=msg.message_type,
                requester_address=ctx.remote,
                user_agent=ctx.user_agent,
                created_at=now,
            )
            try:
                await self._store.record_issuance(IssuanceRequest(record, challenge_hash, now))
            except DuplicateSerial:
                continue
            except ChallengeRejected as exc:
                raise BadRequest("the challenge password is invalid, expired or used") from exc
            except IntegrationNotFound as exc:
                raise BadRequest("this integration has been deleted") from exc
            except DuplicateTransaction:
                # A concurrent retry of the same transaction won the race: answer as a retry.
                existing = await self._store.get_transaction(integration.id, msg.transaction_id)
                if existing is None:
                    raise
                return await self._retry(
                    existing.pubkey_sha256, existing.serial, checked, msg, signer, reply_to, cipher
                )
            log.info(
                "issued serial=%s integration=%s tid=%s subject=%s remote=%s",
                record.serial,
                integration.id,
                msg.transaction_id,
                record.subject,
                ctx.remote,
            )
            return self._success(cert_der, integration, msg, signer, reply_to, cipher)
        raise BadRequest("could not allocate a unique serial number")

    async def _retry(
        self,
        pubkey_sha256: str,
        serial: str | None,
        checked: CheckedCsr,
        msg: PKIMessage,
        signer: x509.Certificate,
        reply_to: ReplyTo,
        cipher: ContentCipher,
    ) -> bytes:
        """A resent PKCSReq (RFC 8894 section 3.3.1): same transactionID and key get the same certificate."""
        if pubkey_sha256 != checked.pubkey_sha256:
            raise BadRequest("transactionID already used with another key")
        record = await self._store.get_certificate(serial) if serial else None
        if record is None:
            raise BadRequest("the earlier request of this transaction was not issued")
        integration = await self._store.get_integration(record.integration_id, include_deleted=True)
        assert integration is not None
        log.info("retry serial=%s tid=%s", record.serial, msg.transaction_id)
        return self._success(record.der, integration, msg, signer, reply_to, cipher)

    def _success(
        self,
        cert_der: bytes,
        integration: Integration,
        msg: PKIMessage,
        signer: x509.Certificate,
        reply_to: ReplyTo,
        cipher: ContentCipher,
    ) -> bytes:
        """CertRep SUCCESS: certs-only bag, issued certificate first, enveloped to the requester's signer."""
        include_ca = integration.include_ca_in_reply
        if include_ca is None:
            include_ca = self._config.scep.include_ca_in_reply
        bag = certs_only([cert_der, self._ca.cert_der] if include_ca else [cert_der])
        public = signer.public_key()
        assert isinstance(public, rsa.RSAPublicKey)  # verify_pki_message accepts RSA signers only
        enveloped = encrypt_envelope(bag, msg.signer_issuer_and_serial, public, cipher)
        return build_cert_rep(self._signer, reply_to, PKIStatus.SUCCESS, enveloped=enveloped, now=self._clock())


__all__ = [
    "CA_RA_CERT_CONTENT_TYPE",
    "PKI_MESSAGE_CONTENT_TYPE",
    "MalformedRequest",
    "RequestContext",
    "ScepService",
    "UnknownIntegration",
]
