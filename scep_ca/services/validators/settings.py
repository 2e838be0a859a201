"""Per-integration validator settings: the JSON text and the encrypted secret the store keeps.

The secret (Intune client secret, webhook HMAC key) is AES-256-GCM encrypted with the
server's secret key (``challenge.secret_key``), as the challenge URL's NT hashes are, with
its own associated data so that neither blob can stand in for the other. Since version 2
the associated data also names the integration: a secret copied into another
integration's row does not decrypt there. Version 2 blobs start with ``_V2_MAGIC``; older
blobs (no magic) still decrypt under the version 1 associated data, unbound, and say so
(``Secret.bound``) so that the caller can warn the operator to re-create the integration.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class ValidatorKind(StrEnum):
    """How an integration judges requests; the value is what the store keeps (``Integration.validator``)."""

    NDES = "ndes"  # one-time challenges from the challenge URL or the CLI
    INTUNE = "intune"  # Microsoft Intune's SCEP validation API
    WEBHOOK = "webhook"  # step-ca's SCEPCHALLENGE webhook contract


KINDS = tuple(kind.value for kind in ValidatorKind)
# A webhook's HMAC-SHA256 secret (step-ca's webhooks use 32 random bytes).
SECRET_BYTES = 32
_NONCE_BYTES = 12
_AAD_V1 = b"scep-ca/validator-secret/v1"
_AAD_V2 = b"scep-ca/validator-secret/v2\x00"
# Not a nonce prefix an old blob is likely to have (a 1 in 2**32 chance), and checked
# first: a blob that starts with it is read as version 2 only.
_V2_MAGIC = b"SV2\x00"
_PIN = re.compile(r"[0-9a-f]{64}")
# The URI SAN prefix of Intune device CSRs (iOS, macOS, Windows): the device's SID.
INTUNE_SID_URI_PREFIX = "tag:microsoft.com,2022-09-14:sid:"
INTUNE_SAN_TYPES = (f"uri:{INTUNE_SID_URI_PREFIX}",)


class SettingsError(Exception):
    """Settings or secret unusable (the message never contains the secret)."""


@dataclass(frozen=True)
class IntuneSettings:
    tenant: str
    client_id: str


@dataclass(frozen=True)
class WebhookSettings:
    url: str
    notify_url: str | None = None
    # SHA-256 (lowercase hex) of the receiver's TLS certificate: pinned instead of checked
    # against the system's trust store (a receiver on this host with a self-signed one).
    tls_pin_sha256: str | None = None


@dataclass(frozen=True)
class Secret:
    value: bytes
    # False for a version 1 blob: encrypted before secrets were bound to their integration.
    bound: bool = True


def encrypt_secret(key: bytes, integration_id: str, secret: bytes) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    return _V2_MAGIC + nonce + AESGCM(key).encrypt(nonce, secret, _aad_v2(integration_id))


def decrypt_secret(key: bytes, integration_id: str, blob: bytes | None) -> Secret:
    if blob is None or len(blob) <= _NONCE_BYTES:
        raise SettingsError("the validator secret is missing")
    try:
        if blob.startswith(_V2_MAGIC):
            body = blob[len(_V2_MAGIC) :]
            return Secret(AESGCM(key).decrypt(body[:_NONCE_BYTES], body[_NONCE_BYTES:], _aad_v2(integration_id)))
        return Secret(AESGCM(key).decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], _AAD_V1), bound=False)
    except InvalidTag as exc:
        raise SettingsError(
            "the validator secret does not decrypt with this server's secret key for this integration"
        ) from exc


def _aad_v2(integration_id: str) -> bytes:
    return _AAD_V2 + integration_id.encode("utf-8")


def _load(text: str) -> dict[str, object]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise SettingsError("validator settings are not JSON") from exc
    if not isinstance(value, dict):
        raise SettingsError("validator settings are not a JSON object")
    return value


def _text(data: dict[str, object], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise SettingsError(f"validator setting {name!r} is missing")
    return value


def intune_settings(text: str) -> IntuneSettings:
    data = _load(text)
    return IntuneSettings(tenant=_text(data, "tenant"), client_id=_text(data, "client_id"))


def webhook_settings(text: str) -> WebhookSettings:
    """The stored settings, checked again: a row written before https was required is refused."""
    data = _load(text)
    notify = data.get("notify_url")
    pin = data.get("tls_pin_sha256")
    settings = WebhookSettings(
        url=_text(data, "url"),
        notify_url=notify if isinstance(notify, str) else None,
        tls_pin_sha256=pin if isinstance(pin, str) else None,
    )
    check_webhook_url(settings.url)
    if settings.notify_url is not None:
        check_webhook_url(settings.notify_url)
    if settings.tls_pin_sha256 is not None:
        check_pin(settings.tls_pin_sha256)
    return settings


def dump_intune(settings: IntuneSettings) -> str:
    return json.dumps({"tenant": settings.tenant, "client_id": settings.client_id}, sort_keys=True)


def dump_webhook(settings: WebhookSettings) -> str:
    data: dict[str, str] = {"url": settings.url}
    if settings.notify_url is not None:
        data["notify_url"] = settings.notify_url
    if settings.tls_pin_sha256 is not None:
        data["tls_pin_sha256"] = settings.tls_pin_sha256
    return json.dumps(data, sort_keys=True)


def check_webhook_url(url: str) -> None:
    """HTTPS only, loopback included: the request carries the challenge and the answer
    decides issuance, so whoever holds a plain-HTTP port (any local user, on loopback)
    could read the one and forge the other."""
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise SettingsError("a webhook URL must be https:// (pin a self-signed receiver with its SHA-256)")
    if not parts.hostname:
        raise SettingsError("the webhook URL needs a host")


def check_pin(pin: str) -> None:
    if not _PIN.fullmatch(pin):
        raise SettingsError("a TLS pin is the SHA-256 of the receiver's certificate: 64 lowercase hex digits")
