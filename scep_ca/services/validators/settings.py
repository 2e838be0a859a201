"""Per-integration validator settings: the JSON text and the encrypted secret the store keeps.

The secret (Intune client secret, webhook HMAC key) is AES-256-GCM encrypted with the
server's secret key (``challenge.secret_key``), as the challenge URL's NT hashes are, with
its own associated data so that neither blob can stand in for the other.
"""

from __future__ import annotations

import ipaddress
import json
import os
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
_NONCE_BYTES = 12
_AAD = b"scep-ca/validator-secret/v1"
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


def encrypt_secret(key: bytes, secret: bytes) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, secret, _AAD)


def decrypt_secret(key: bytes, blob: bytes | None) -> bytes:
    if blob is None or len(blob) <= _NONCE_BYTES:
        raise SettingsError("the validator secret is missing")
    try:
        return AESGCM(key).decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], _AAD)
    except InvalidTag as exc:
        raise SettingsError("the validator secret does not decrypt with this server's secret key") from exc


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
    data = _load(text)
    notify = data.get("notify_url")
    return WebhookSettings(url=_text(data, "url"), notify_url=notify if isinstance(notify, str) else None)


def dump_intune(settings: IntuneSettings) -> str:
    return json.dumps({"tenant": settings.tenant, "client_id": settings.client_id}, sort_keys=True)


def dump_webhook(settings: WebhookSettings) -> str:
    data: dict[str, str] = {"url": settings.url}
    if settings.notify_url is not None:
        data["notify_url"] = settings.notify_url
    return json.dumps(data, sort_keys=True)


def check_webhook_url(url: str) -> None:
    """HTTPS, or HTTP to a loopback address only: the request carries the challenge."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise SettingsError("the webhook URL needs a host")
    if parts.scheme == "https":
        return
    if parts.scheme == "http":
        host = parts.hostname
        if host == "localhost":
            return
        try:
            if ipaddress.ip_address(host).is_loopback:
                return
        except ValueError:
            pass
        raise SettingsError("a webhook URL must be https:// (http:// only to a loopback address)")
    raise SettingsError("a webhook URL must be https:// (http:// only to a loopback address)")
