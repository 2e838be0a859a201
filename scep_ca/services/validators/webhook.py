"""A webhook as the validator, in step-ca's SCEPCHALLENGE shape, so existing receivers work.

The request is a JSON POST; ``X-Smallstep-Signature`` is the lowercase hex HMAC-SHA256 of
the exact body bytes under the integration's decoded secret, ``X-Smallstep-Webhook-ID``
names the webhook (the integration id). URLs are https only; the receiver's certificate is
checked against the system's trust store, or pinned by its SHA-256 (``tls_pin_sha256``).
Only ``{"allow": true}`` issues. Renewals are not
sent: step-ca calls SCEPCHALLENGE webhooks only to judge a challenge, and a renewal is
authenticated by the certificate it renews. After issuance an optional notification
webhook (``notify_url``) receives the certificate, signed the same way; its failure is
logged and does not withdraw the certificate.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import Mapping

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from config.clock import Clock, utc_now
from config.model import WebhookConfig
from scep_ca.services.validators.base import ALLOW, ValidationRequest, Verdict
from scep_ca.services.validators.http import HttpClient, HttpFailure, pinned
from scep_ca.services.validators.settings import SECRET_BYTES as SECRET_BYTES
from scep_ca.services.validators.settings import WebhookSettings

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Smallstep-Signature"
WEBHOOK_ID_HEADER = "X-Smallstep-Webhook-ID"
_REFUSED = "the request was refused by the integration's webhook"
_NOT_VALIDATED = "the request could not be validated by the integration's webhook"


def sign(secret: bytes, body: bytes) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookValidator:
    kind = "webhook"
    # The notification webhook's failure withdraws nothing: no hold.
    confirm_within: float | None = None

    def __init__(
        self,
        integration_id: str,
        settings: WebhookSettings,
        secret: bytes,
        config: WebhookConfig,
        http: HttpClient,
        clock: Clock = utc_now,
    ) -> None:
        self._id = integration_id
        self._settings = settings
        self._secret = secret
        self._config = config
        self._http = http
        self._clock = clock
        pin = settings.tls_pin_sha256
        self._tls = pinned(pin) if pin is not None else None

    def one_time_challenge(self, challenge: str | None) -> str | None:
        return None

    def _body(self, request: ValidationRequest, **fields: object) -> dict[str, object]:
        """The fields every call carries (step-ca's webhook request), then ``fields``."""
        return {
            "timestamp": self._clock().strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "provisionerName": self._id,
            "scepTransactionID": request.transaction_id,
            **fields,
        }

    def challenge_body(self, request: ValidationRequest) -> dict[str, object]:
        """step-ca's SCEPCHALLENGE request body."""
        return self._body(
            request,
            scepChallenge=request.challenge or "",
            x509CertificateRequest=_csr_fields(request.csr, request.csr_der),
        )

    async def validate(self, request: ValidationRequest) -> Verdict:
        if request.renewal:
            return ALLOW
        try:
            status, data = await self._post(self._settings.url, self.challenge_body(request))
        except HttpFailure as exc:
            return Verdict(False, _NOT_VALIDATED, f"webhook unavailable: {exc}")
        if status >= 400:
            return Verdict(False, _NOT_VALIDATED, f"webhook answered HTTP {status}")
        if not isinstance(data, dict) or data.get("allow") is not True:
            return Verdict(False, _REFUSED, f"webhook refused: {_error_text(data)}")
        return ALLOW

    async def issued(self, request: ValidationRequest, cert: x509.Certificate) -> None:
        if self._settings.notify_url is None:
            return
        body = self._body(
            request,
            event="issued",
            x509Certificate={
                "raw": base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii"),
                "serialNumber": format(cert.serial_number, "x"),
                "subject": cert.subject.rfc4514_string(),
                "notAfter": cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        )
        await self._notify(body, request)

    async def failed(self, request: ValidationRequest, reason: str) -> None:
        if self._settings.notify_url is None:
            return
        body = self._body(request, event="failed", error=reason[:255])
        await self._notify(body, request)

    async def check(self) -> list[str]:
        """A signed test call with a syntactically complete but meaningless request."""
        body = {
            "timestamp": self._clock().strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "provisionerName": self._id,
            "scepChallenge": "",
            "scepTransactionID": "scep-ca-test-validator",
            "x509CertificateRequest": {"raw": ""},
        }
        status, data = await self._post(self._settings.url, body)
        return [f"webhook answered HTTP {status}, allow={isinstance(data, dict) and data.get('allow') is True}"]

    async def _notify(self, body: Mapping[str, object], request: ValidationRequest) -> None:
        assert self._settings.notify_url is not None
        try:
            status, _data = await self._post(self._settings.notify_url, body)
        except HttpFailure as exc:
            log.warning("notification webhook failed integration=%s tid=%s: %s", self._id, request.transaction_id, exc)
            return
        if status >= 400:
            log.warning(
                "notification webhook answered HTTP %s integration=%s tid=%s", status, self._id, request.transaction_id
            )

    async def _post(self, url: str, body: Mapping[str, object]) -> tuple[int, object]:
        raw = json.dumps(body, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self._secret, raw),
            WEBHOOK_ID_HEADER: self._id,
        }
        answer = await self._http.request(
            "POST", url, headers=headers, body=raw, timeout=self._config.timeout_seconds, tls=self._tls
        )
        try:
            data: object = json.loads(answer.body) if answer.body else None
        except ValueError:
            data = None
        return answer.status, data


def _csr_fields(csr: x509.CertificateSigningRequest, der: bytes) -> dict[str, object]:
    """step-ca's x509CertificateRequest: the parsed fields a receiver commonly reads, and ``raw``."""
    fields: dict[str, object] = {
        "raw": base64.b64encode(der).decode("ascii"),
        "subject": {"commonName": _common_name(csr.subject)},
        "publicKeyAlgorithm": "RSA",
        "signatureAlgorithm": csr.signature_algorithm_oid._name,
    }
    try:
        sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return fields
    fields["dnsNames"] = sans.get_values_for_type(x509.DNSName)
    fields["emailAddresses"] = sans.get_values_for_type(x509.RFC822Name)
    fields["uris"] = sans.get_values_for_type(x509.UniformResourceIdentifier)
    return fields


def _common_name(name: x509.Name) -> str:
    values = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(values[0].value) if values else ""


def _error_text(data: object) -> str:
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            return f"code={error.get('code')!s:.64} message={error.get('message')!s:.128}"
    return "allow is not true"
