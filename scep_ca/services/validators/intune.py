"""Microsoft Intune as the validator (README "Validators"; Microsoft's reference library
microsoft/Intune-Resource-Access, src/CsrValidation).

Order: validateRequest before issuing, successNotification after the certificate is
recorded and before it is returned, failureNotification when issuance fails after Intune
validated. The challenge inside the CSR is an opaque blob that Intune signed and
encrypted; the CA passes the whole CSR on and never reads the blob. Renewals are asked
too, as the reference does for every request.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from config.model import IntuneConfig
from scep_ca.services.validators.base import ConfirmationFailed, ValidationRequest, Verdict
from scep_ca.services.validators.http import RETRY_DELAY_SECONDS, HttpAnswer, HttpClient, HttpFailure, TlsCheck
from scep_ca.services.validators.settings import IntuneSettings

log = logging.getLogger(__name__)

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
# The reference's resource constant "https://api.manage.microsoft.com/" plus "/.default".
INTUNE_SCOPE = "https://api.manage.microsoft.com//.default"
INTUNE_APP_ID = "0000000a-0000-0000-c000-000000000000"
SERVICE_NAME = "ScepRequestValidationFEService"
API_VERSION = "2018-02-20"
CALLER_INFO = "scep-ca"
# hResult of a failureNotification: E_FAIL, as the reference's examples send.
E_FAIL = 0x80004005
_TOKEN_MARGIN_SECONDS = 300
_RETRY_STATUS = frozenset({429})
_NOT_VALIDATED = "the request could not be validated with Microsoft Intune"
# HTTP calls a successNotification may take: Graph token, discovery, Intune token, the action.
_CALLS_PER_NOTIFICATION = 4


class IntuneError(Exception):
    """A step of the exchange failed; the message names the step, never a secret."""


@dataclass
class _Token:
    value: str
    expires_at: float  # monotonic seconds


class IntuneValidator:
    kind = "intune"

    def __init__(
        self,
        settings: IntuneSettings,
        client_secret: str,
        config: IntuneConfig,
        http: HttpClient,
        ca_subject: str,
        monotonic: Callable[[], float] = time.monotonic,
        tls: TlsCheck = None,
    ) -> None:
        self._settings = settings
        self._secret = client_secret
        self._config = config
        self._http = http
        self._tls = tls
        self._ca_subject = ca_subject
        self._monotonic = monotonic
        self._tokens: dict[str, _Token] = {}
        self._endpoint: str | None = None
        # Each call: a timeout, the retry delay and the retry's timeout.
        self.confirm_within: float | None = _CALLS_PER_NOTIFICATION * (2 * config.timeout_seconds + RETRY_DELAY_SECONDS)

    def one_time_challenge(self, challenge: str | None) -> str | None:
        return None

    # -- the three ScepActions -------------------------------------------------------

    async def validate(self, request: ValidationRequest) -> Verdict:
        body = {
            "request": {
                "transactionId": request.transaction_id,
                "certificateRequest": _b64(request.csr_der),
                "callerInfo": CALLER_INFO,
            }
        }
        try:
            code, description = await self._action("validateRequest", body)
        except IntuneError as exc:
            return Verdict(False, _NOT_VALIDATED, f"intune unavailable: {exc}")
        if code != "Success":
            # Intune's code (ChallengeExpired, SubjectNameMismatch, ...) tells the admin what to fix.
            return Verdict(False, f"Microsoft Intune refused the request: {code}", f"intune code={code} {description}")
        return Verdict(True)

    async def issued(self, request: ValidationRequest, cert: x509.Certificate) -> None:
        body = {
            "notification": {
                "transactionId": request.transaction_id,
                "certificateRequest": _b64(request.csr_der),
                "certificateThumbprint": cert.fingerprint(hashes.SHA1()).hex(),
                "certificateSerialNumber": format(cert.serial_number, "x"),
                "certificateExpirationDateUtc": cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                "issuingCertificateAuthority": cert.issuer.rfc4514_string(),
                "callerInfo": CALLER_INFO,
                "caConfiguration": self._ca_subject,
                "certificateAuthority": self._ca_subject,
            }
        }
        try:
            code, description = await self._action("successNotification", body)
        except IntuneError as exc:
            raise ConfirmationFailed(f"successNotification failed: {exc}") from exc
        if code != "Success":
            raise ConfirmationFailed(f"successNotification answered code={code} {description}")

    async def failed(self, request: ValidationRequest, reason: str) -> None:
        body = {
            "notification": {
                "transactionId": request.transaction_id,
                "certificateRequest": _b64(request.csr_der),
                "hResult": E_FAIL,
                "errorDescription": reason[:255],
                "callerInfo": CALLER_INFO,
            }
        }
        try:
            code, _description = await self._action("failureNotification", body)
        except IntuneError as exc:
            log.warning("intune failureNotification failed tid=%s: %s", request.transaction_id, exc)
            return
        if code != "Success":
            log.warning("intune failureNotification answered code=%s tid=%s", code, request.transaction_id)

    # -- token and discovery (also `integration test-validator`) ----------------------

    async def check(self) -> list[str]:
        """Token for Graph, discovery, token for Intune: what worked, step by step; raises IntuneError."""
        done = []
        await self._token(GRAPH_SCOPE)
        done.append("token for Microsoft Graph")
        uri = await self._discover(refresh=True)
        done.append(f"discovery: {SERVICE_NAME} at {uri}")
        await self._token(INTUNE_SCOPE)
        done.append("token for Intune")
        return done

    async def _action(self, action: str, body: Mapping[str, object]) -> tuple[str, str]:
        endpoint = await self._discover()
        token = await self._token(INTUNE_SCOPE)
        headers = {
            "Authorization": f"Bearer {token}",
            "client-request-id": str(uuid.uuid4()),
            "api-version": API_VERSION,
            "content-type": "application/json",
            "accept": "application/json",
        }
        url = f"{endpoint.rstrip('/')}/ScepActions/{action}"
        try:
            answer = await self._request("POST", url, headers, json.dumps(body).encode())
        except HttpFailure as exc:
            self._endpoint = None  # rediscover next time: the service may have moved
            raise IntuneError(f"{action}: {exc}") from exc
        if answer.status == 401:
            self._tokens.pop(INTUNE_SCOPE, None)
        if not 200 <= answer.status < 300:
            self._endpoint = None
            raise IntuneError(f"{action}: HTTP {answer.status}")
        data = _json_object(answer.body, action)
        code = data.get("code")
        if not isinstance(code, str):
            raise IntuneError(f"{action}: answer without a code")
        description = data.get("errorDescription")
        return code, description if isinstance(description, str) else ""

    async def _token(self, scope: str) -> str:
        cached = self._tokens.get(scope)
        if cached is not None and self._monotonic() < cached.expires_at:
            return cached.value
        url = f"{self._config.login_url}{self._settings.tenant}/oauth2/v2.0/token"
        form = urlencode(
            {
                "grant_type": "client_credentials",
                "client_id": self._settings.client_id,
                "client_secret": self._secret,
                "scope": scope,
            }
        ).encode()
        try:
            answer = await self._request(
                "POST", url, {"content-type": "application/x-www-form-urlencoded", "accept": "application/json"}, form
            )
        except HttpFailure as exc:
            raise IntuneError(f"token: {exc}") from exc
        if answer.status != 200:
            # Entra's error body names the problem (AADSTS codes) and holds no secret.
            raise IntuneError(f"token: HTTP {answer.status} {_error_code(answer.body)}")
        data = _json_object(answer.body, "token")
        value = data.get("access_token")
        lifetime = data.get("expires_in")
        if not isinstance(value, str) or not value:
            raise IntuneError("token: answer without access_token")
        seconds = _seconds(lifetime)
        # Refreshed shortly before expiry, so a token never runs out in the middle of a call.
        margin = min(_TOKEN_MARGIN_SECONDS, seconds / 2)
        self._tokens[scope] = _Token(value, self._monotonic() + seconds - margin)
        return value

    async def _discover(self, *, refresh: bool = False) -> str:
        if self._endpoint is not None and not refresh:
            return self._endpoint
        token = await self._token(GRAPH_SCOPE)
        url = f"{self._config.graph_url}v1.0/servicePrincipals/appId={INTUNE_APP_ID}/endpoints"
        try:
            answer = await self._request("GET", url, {"Authorization": f"Bearer {token}", "accept": "application/json"})
        except HttpFailure as exc:
            raise IntuneError(f"discovery: {exc}") from exc
        if answer.status == 401:
            self._tokens.pop(GRAPH_SCOPE, None)
        if answer.status != 200:
            raise IntuneError(f"discovery: HTTP {answer.status}")
        entries = _json_object(answer.body, "discovery").get("value")
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict):
                continue
            name, uri = entry.get("providerName"), entry.get("uri")
            if isinstance(name, str) and name.casefold() == SERVICE_NAME.casefold() and isinstance(uri, str):
                if not uri.startswith("https://"):
                    # The bearer token and the device's CSR go there.
                    raise IntuneError(f"discovery: the {SERVICE_NAME} endpoint is not https")
                self._endpoint = uri
                return uri
        raise IntuneError(f"discovery: no {SERVICE_NAME} endpoint (is the tenant licensed for Intune?)")

    async def _request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None = None
    ) -> HttpAnswer:
        """One call to Entra ID, Graph or Intune: the configured timeout and TLS trust, 429 retried."""
        return await self._http.request(
            method,
            url,
            headers=headers,
            body=body,
            timeout=self._config.timeout_seconds,
            retry_status=_RETRY_STATUS,
            tls=self._tls,
        )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _json_object(body: bytes, step: str) -> dict[str, object]:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise IntuneError(f"{step}: answer is not JSON") from exc
    if not isinstance(data, dict):
        raise IntuneError(f"{step}: answer is not a JSON object")
    return data


def _error_code(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, str) else ""


def _seconds(value: object) -> float:
    """expires_in: a number of seconds (a string in older Entra answers); unusable means 0."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return max(float(value), 0.0)
    if isinstance(value, str) and value.isdigit():
        return float(value)
    return 0.0
