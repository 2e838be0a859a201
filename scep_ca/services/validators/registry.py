"""The validator of each integration, built from its stored kind, settings and secret.

Validators are kept per integration so that Intune tokens and the discovered endpoint
are cached across requests (per process); a changed setting or secret builds a new one.
"""

from __future__ import annotations

import logging

from cryptography import x509

from config.model import IntuneConfig, ValidatorLimitsConfig, WebhookConfig
from scep_ca.pki.records import Integration
from scep_ca.services.validators.base import ValidationRequest, Validator, Verdict
from scep_ca.services.validators.gate import ValidatorGate
from scep_ca.services.validators.http import HttpClient, trusting
from scep_ca.services.validators.intune import IntuneValidator
from scep_ca.services.validators.ndes import NdesValidator
from scep_ca.services.validators.settings import SettingsError, decrypt_secret, intune_settings, webhook_settings
from scep_ca.services.validators.webhook import WebhookValidator

log = logging.getLogger(__name__)

_MISCONFIGURED = "the integration's validator is misconfigured"


class Misconfigured:
    """Stands in for a validator whose settings or secret are unusable: refuses everything."""

    confirm_within: float | None = None

    def __init__(self, kind: str, problem: str) -> None:
        self.kind = kind
        self.problem = problem

    def one_time_challenge(self, challenge: str | None) -> str | None:
        return None

    async def validate(self, request: ValidationRequest) -> Verdict:
        return Verdict(False, _MISCONFIGURED, self.problem)

    async def issued(self, request: ValidationRequest, cert: object) -> None:
        return None

    async def failed(self, request: ValidationRequest, reason: str) -> None:
        return None


class Gated:
    """A validator whose ``validate`` passes the integration's bounds (gate.py) first.

    Only ``validate`` is bounded: ``issued`` and ``failed`` follow a validation that passed,
    so their number is bounded by it, and refusing them would withdraw granted certificates.
    """

    def __init__(self, inner: Validator, gate: ValidatorGate) -> None:
        self.kind = inner.kind
        self.confirm_within = inner.confirm_within
        self._inner = inner
        self._gate = gate

    def one_time_challenge(self, challenge: str | None) -> str | None:
        return self._inner.one_time_challenge(challenge)

    async def validate(self, request: ValidationRequest) -> Verdict:
        async with self._gate.admit(request.integration_id, request.remote):
            return await self._inner.validate(request)

    async def issued(self, request: ValidationRequest, cert: x509.Certificate) -> None:
        await self._inner.issued(request, cert)

    async def failed(self, request: ValidationRequest, reason: str) -> None:
        await self._inner.failed(request, reason)


class Validators:
    def __init__(
        self,
        intune: IntuneConfig,
        webhook: WebhookConfig,
        secret_key: bytes | None,
        ca_subject: str,
        http: HttpClient | None = None,
        limits: ValidatorLimitsConfig | None = None,
    ):
        self._intune = intune
        self._webhook = webhook
        self._secret_key = secret_key
        self._ca_subject = ca_subject
        self._http = http or HttpClient()
        self._intune_tls = trusting(intune.ca_file)
        self._gate = ValidatorGate(limits or ValidatorLimitsConfig())
        self._ndes = NdesValidator()
        self._built: dict[str, tuple[tuple[str, str, bytes | None], Validator]] = {}

    async def close(self) -> None:
        await self._http.close()

    def for_integration(self, integration: Integration) -> Validator:
        """The integration's validator for enrollment: outbound calls bounded per integration."""
        validator = self.unbounded(integration)
        if integration.validator == "ndes" or isinstance(validator, Misconfigured):
            return validator  # no outbound call to bound
        return Gated(validator, self._gate)

    def unbounded(self, integration: Integration) -> Validator:
        """The validator itself, for the operator's ``integration test-validator``."""
        if integration.validator == "ndes":
            return self._ndes
        key = (integration.validator, integration.validator_settings, integration.validator_secret_encrypted)
        cached = self._built.get(integration.id)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            validator = self._build(integration)
        except SettingsError as exc:
            log.error("validator of integration=%s unusable: %s", integration.id, exc)
            return Misconfigured(integration.validator, str(exc))
        self._built[integration.id] = (key, validator)
        return validator

    def _build(self, integration: Integration) -> Validator:
        if self._secret_key is None:
            raise SettingsError("no secret key to decrypt the validator secret")
        secret = decrypt_secret(self._secret_key, integration.id, integration.validator_secret_encrypted)
        if not secret.bound:
            log.warning(
                "validator secret of integration=%s predates binding secrets to their integration;"
                " re-create the integration to bind it",
                integration.id,
            )
        if integration.validator == "intune":
            return IntuneValidator(
                intune_settings(integration.validator_settings),
                secret.value.decode("utf-8"),
                self._intune,
                self._http,
                self._ca_subject,
                tls=self._intune_tls,
            )
        if integration.validator == "webhook":
            return WebhookValidator(
                integration.id,
                webhook_settings(integration.validator_settings),
                secret.value,
                self._webhook,
                self._http,
            )
        raise SettingsError(f"unknown validator kind {integration.validator!r}")
