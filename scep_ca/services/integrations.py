"""Creating integrations and replacing their credentials: the CLI's and the console's one way.

Transport-free: the caller gives checked-or-not input, gets the new integration and the
secrets to show once (the challenge-URL password, a webhook's HMAC key), or an
``IntegrationInputError`` naming what is wrong before anything is stored.
"""

from __future__ import annotations

import base64
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass

from audit.events import SYSTEM, Event
from audit.service import AuditSink, Draft, NoAudit, integration_target
from challenge.credentials import Credentials, make_credentials
from config.clock import Clock, utc_now
from scep_ca.pki.records import Integration
from scep_ca.protocol.dn import DNError, parse_dn
from scep_ca.services.validators.settings import (
    INTUNE_SAN_TYPES,
    KINDS,
    SECRET_BYTES,
    IntuneSettings,
    SettingsError,
    ValidatorKind,
    WebhookSettings,
    dump_intune,
    dump_webhook,
    encrypt_secret,
    webhook_settings,
)
from store.base import IntegrationStore

DEFAULT_SUBJECT = "CN=$USERID$"
MAX_NAME_CHARS = 200
MAX_SECRET_CHARS = 1024
_ID_ALPHABET = string.ascii_lowercase + string.digits


class IntegrationInputError(ValueError):
    """A bad value: ``field`` names the input (None: several), ``problem`` says what is wrong;
    ``str()`` is both, fit to show the operator."""

    def __init__(self, field: str | None, problem: str) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field
        self.problem = problem


def new_integration_id() -> str:
    """Short, URL-safe, lowercase (MDM forms and URLs keep it intact); never reused after delete."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(10))


@dataclass(frozen=True)
class ValidatorInput:
    """How requests of the integration are judged (design.md section 9), as an operator typed it."""

    kind: str = "ndes"
    intune_tenant: str | None = None
    intune_client_id: str | None = None
    intune_client_secret: str | None = None
    webhook_url: str | None = None
    webhook_notify_url: str | None = None
    # SHA-256 of the receiver's certificate (hex, colons allowed): trusted instead of the CAs.
    webhook_pin_sha256: str | None = None


@dataclass(frozen=True)
class ValidatorFields:
    """What the store keeps for the chosen validator, and what is shown once."""

    kind: str = "ndes"
    settings: str = "{}"
    secret_encrypted: bytes | None = None
    allowed_san_types: tuple[str, ...] = ()
    shown: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class IntegrationSpec:
    name: str
    subject: str | None = None
    validity_days: int | None = None  # None: certificate.validity_days
    allow_basic: bool | None = None
    require_approval: bool = False
    revoke_superseded: bool = False
    include_ca_in_reply: bool | None = None
    validator: ValidatorInput = ValidatorInput()


@dataclass(frozen=True)
class CreatedIntegration:
    integration: Integration
    password: str  # the challenge-URL password: shown now, never again
    shown: tuple[tuple[str, str], ...]  # the validator's secrets shown once


def validator_fields(
    given: ValidatorInput, require_approval: bool, secret_key: bytes, integration_id: str
) -> ValidatorFields:
    """Check the chosen validator's settings; its secret is encrypted, bound to the
    integration's id, before anything is stored."""
    try:
        kind = ValidatorKind(given.kind)
    except ValueError:
        raise IntegrationInputError("validator", f"one of {', '.join(KINDS)}") from None
    intune_opts = (given.intune_tenant, given.intune_client_id, given.intune_client_secret)
    webhook_opts = (given.webhook_url, given.webhook_notify_url, given.webhook_pin_sha256)
    if kind is not ValidatorKind.INTUNE and any(intune_opts):
        raise IntegrationInputError(None, "the Intune settings need the intune validator")
    if kind is not ValidatorKind.WEBHOOK and any(webhook_opts):
        raise IntegrationInputError(None, "the webhook settings need the webhook validator")
    if kind is not ValidatorKind.NDES and require_approval:
        # Approval issues hours later: Intune's transaction would have expired.
        raise IntegrationInputError(None, "approval works with the ndes validator only")
    return _FIELDS[kind](given, secret_key, integration_id)


def _ndes_fields(given: ValidatorInput, secret_key: bytes, integration_id: str) -> ValidatorFields:
    return ValidatorFields()


def _intune_fields(given: ValidatorInput, secret_key: bytes, integration_id: str) -> ValidatorFields:
    if not given.intune_tenant or not given.intune_client_id:
        raise IntegrationInputError(None, "the intune validator needs a tenant and a client id")
    secret = (given.intune_client_secret or "").strip()
    if not secret:
        raise IntegrationInputError("intune_client_secret", "the intune validator needs it")
    if len(secret) > MAX_SECRET_CHARS:
        raise IntegrationInputError("intune_client_secret", "too long")
    settings = IntuneSettings(tenant=given.intune_tenant, client_id=given.intune_client_id)
    return ValidatorFields(
        ValidatorKind.INTUNE,
        dump_intune(settings),
        encrypt_secret(secret_key, integration_id, secret.encode("utf-8")),
        INTUNE_SAN_TYPES,
    )


def _webhook_fields(given: ValidatorInput, secret_key: bytes, integration_id: str) -> ValidatorFields:
    if not given.webhook_url:
        raise IntegrationInputError("webhook_url", "the webhook validator needs a webhook URL")
    pin = given.webhook_pin_sha256.replace(":", "").lower() if given.webhook_pin_sha256 else None
    webhook = WebhookSettings(url=given.webhook_url, notify_url=given.webhook_notify_url, tls_pin_sha256=pin)
    try:
        # The stored form read back: the same checks (https, the pin) as when the server loads it.
        webhook_settings(dump_webhook(webhook))
    except SettingsError as exc:
        raise IntegrationInputError(None, str(exc)) from exc
    hmac_key = secrets.token_bytes(SECRET_BYTES)
    shown = base64.b64encode(hmac_key).decode("ascii")
    return ValidatorFields(
        ValidatorKind.WEBHOOK,
        dump_webhook(webhook),
        encrypt_secret(secret_key, integration_id, hmac_key),
        (),
        (("webhook_secret", shown),),
    )


# Each kind's factory: what an integration of that kind stores (the CLI and the console).
_FIELDS: dict[ValidatorKind, Callable[[ValidatorInput, bytes, str], ValidatorFields]] = {
    ValidatorKind.NDES: _ndes_fields,
    ValidatorKind.INTUNE: _intune_fields,
    ValidatorKind.WEBHOOK: _webhook_fields,
}


class IntegrationService:
    """Create integrations and rotate their challenge-URL passwords in ``store``; each is an
    audit event written in the transaction of the change."""

    def __init__(
        self,
        store: IntegrationStore,
        secret_key: bytes,
        default_validity_days: int,
        clock: Clock = utc_now,
        audit: AuditSink | None = None,
    ) -> None:
        self._audit = audit or NoAudit()
        self._store = store
        self._key = secret_key
        self._default_validity = default_validity_days
        self._clock = clock

    async def create(self, spec: IntegrationSpec, *, actor: str = SYSTEM) -> CreatedIntegration:
        name = spec.name.strip()
        if not name or len(name) > MAX_NAME_CHARS or not name.isprintable():
            raise IntegrationInputError("name", f"1 to {MAX_NAME_CHARS} printable characters")
        subject = spec.subject or DEFAULT_SUBJECT
        try:
            parse_dn(subject)
        except DNError as exc:
            raise IntegrationInputError("subject", str(exc)) from exc
        if spec.validity_days is not None and not 0 < spec.validity_days <= 36500:
            raise IntegrationInputError("validity_days", "1 to 36500 days")
        integration_id = new_integration_id()
        fields = validator_fields(spec.validator, spec.require_approval, self._key, integration_id)
        # scrypt takes ~0.1 s: done before the store is asked, nothing is held meanwhile.
        creds = make_credentials(self._key, integration_id)
        integration = Integration(
            id=integration_id,
            name=name,
            subject_template=subject,
            created_at=self._clock(),
            validity_days=spec.validity_days or self._default_validity,
            username=creds.username,
            password_scrypt=creds.password_scrypt,
            nt_hash_encrypted=creds.nt_hash_encrypted,
            allow_basic=spec.allow_basic,
            require_approval=spec.require_approval,
            revoke_superseded=spec.revoke_superseded,
            include_ca_in_reply=spec.include_ca_in_reply,
            validator=fields.kind,
            validator_settings=fields.settings,
            validator_secret_encrypted=fields.secret_encrypted,
            allowed_san_types=fields.allowed_san_types,
        )
        created = Draft(
            Event.INTEGRATION_CREATED,
            integration_target(integration.id),
            {"integration": integration.id, "name": integration.name, "subject": subject, "validator": fields.kind},
            actor=actor,
        )
        with self._audit.recording(created) as seal:
            await self._store.create_integration(integration, audit=seal)
        return CreatedIntegration(integration, creds.password, fields.shown)

    async def rotate_password(self, integration_id: str, *, actor: str = SYSTEM) -> Credentials | None:
        """New credentials (the old password stops working at once); None when no live integration has the id."""
        integration = await self._store.get_integration(integration_id)
        if integration is None or integration.deleted:
            return None
        creds = make_credentials(self._key, integration_id)
        rotated = Draft(
            Event.PASSWORD_ROTATED,
            integration_target(integration_id),
            {"integration": integration_id, "username": creds.username},
            actor=actor,
        )
        with self._audit.recording(rotated) as seal:
            await self._store.update_credentials(
                integration_id,
                username=creds.username,
                password_scrypt=creds.password_scrypt,
                nt_hash_encrypted=creds.nt_hash_encrypted,
                audit=seal,
            )
        return creds
