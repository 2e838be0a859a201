"""Challenge validators per integration: Intune and webhook against local stand-ins (real app, real store)."""

from __future__ import annotations

import base64
import datetime as dt
import logging
import os
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from challenge.secret_key import load_or_create_secret_key
from config import Config, load_config
from scep_ca.pki.ca import CAIdentity
from scep_ca.pki.records import CertStatus, Integration
from scep_ca.protocol.client import Reply, build_request, open_reply, self_signed_signer
from scep_ca.protocol.enums import FailInfo, PKIStatus
from scep_ca.server.app import build_app
from scep_ca.services.validators.settings import (
    INTUNE_SAN_TYPES,
    INTUNE_SID_URI_PREFIX,
    IntuneSettings,
    WebhookSettings,
    dump_intune,
    dump_webhook,
    encrypt_secret,
)
from store.base import CertificateFilter, Store
from store.factory import open_store
from tests.validator_standins import CLIENT_ID, CLIENT_SECRET, TENANT, IntuneStandIn, WebhookReceiver

SID_URI = f"{INTUNE_SID_URI_PREFIX}S-1-12-1-1111111111-2222222222-3333333333-4444444444"
# Intune's challenge: an opaque signed and encrypted blob of several kilobytes.
BLOB = base64.b64encode(os.urandom(3000)).decode("ascii")
SECRETS = (CLIENT_SECRET, BLOB)


@dataclass
class Env:
    client: TestClient  # type: ignore[type-arg]
    store: Store
    config: Config
    ca: CAIdentity
    integration: Integration


EnvFactory = Callable[..., Awaitable[Env]]


@pytest.fixture
async def standin_server() -> AsyncIterator[Callable[..., Awaitable[str]]]:
    servers: list[TestServer] = []

    async def start(app: object) -> str:
        server = TestServer(app, host="127.0.0.1")  # type: ignore[arg-type]
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def make_env(
    tmp_path: Path,
    shared_ca: tuple[Path, CAIdentity],
    aiohttp_client: Callable[..., Awaitable[TestClient]],  # type: ignore[type-arg]
) -> EnvFactory:
    async def factory(kind: str, settings: str, secret: bytes, overrides: dict[str, object]) -> Env:
        config = load_config(None, {}, {"data_dir": str(tmp_path), **overrides})
        store = open_store(config)
        app = build_app(config, shared_ca[1], store)
        # As run_server sets them: room for a GET query carrying a multi-kilobyte challenge.
        limits = {"max_line_size": config.server.max_line_bytes, "max_field_size": config.server.max_header_field_bytes}
        server = TestServer(app, host="127.0.0.1")
        await server.start_server(**limits)
        client = await aiohttp_client(server)
        key = load_or_create_secret_key(tmp_path)
        integration = Integration(
            id="intune1",
            name="intune1",
            subject_template="CN=$USERID$",
            created_at=dt.datetime.now(dt.UTC),
            validity_days=365,
            username="scep-intune1",
            validator=kind,
            validator_settings=settings,
            validator_secret_encrypted=encrypt_secret(key, secret),
            allowed_san_types=INTUNE_SAN_TYPES if kind == "intune" else (),
        )
        await store.create_integration(integration)
        return Env(client, store, config, shared_ca[1], integration)

    return factory


async def _intune_env(make_env: EnvFactory, start: Callable[..., Awaitable[str]], standin: IntuneStandIn) -> Env:
    base = await start(standin.app())
    standin.base = base
    overrides = {"intune.login_url": f"{base}/", "intune.graph_url": f"{base}/", "intune.timeout_seconds": 2}
    settings = dump_intune(IntuneSettings(tenant=TENANT, client_id=CLIENT_ID))
    return await make_env("intune", settings, CLIENT_SECRET.encode(), overrides)


def _device_csr(key: rsa.RSAPrivateKey, challenge: str, cn: str = "device-1") -> bytes:
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)]))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(SID_URI)]), critical=False)
        .add_attribute(x509.oid.AttributeOID.CHALLENGE_PASSWORD, challenge.encode())
    )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


async def _pkcs_req(env: Env, key: rsa.RSAPrivateKey, csr: bytes, tid: str, *, get: bool = False) -> Reply:
    signer = self_signed_signer(key)
    req = build_request(csr, signer_cert=signer, signer_key=key, recipient=env.ca.encryption_cert, transaction_id=tid)
    url = f"/scep/{env.integration.id}"
    if get:
        # As certmonger does: GET only, the pkiMessage base64 in the query.
        message = urllib.parse.quote(base64.b64encode(req.der).decode("ascii"), safe="")
        resp = await env.client.get(f"{url}?operation=PKIOperation&message={message}")
    else:
        resp = await env.client.post(f"{url}?operation=PKIOperation", data=req.der)
    assert resp.status == 200
    return open_reply(await resp.read(), signer, key)


def _no_secrets(caplog: pytest.LogCaptureFixture) -> None:
    text = caplog.text
    for secret in SECRETS:
        assert secret not in text
    assert "tok-" not in text


@pytest.mark.parametrize("get", [False, True], ids=["post", "get"])
async def test_intune_enrolls_with_a_multi_kilobyte_challenge(
    make_env: EnvFactory, standin_server: Callable[..., Awaitable[str]], get: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    standin = IntuneStandIn()
    env = await _intune_env(make_env, standin_server, standin)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = _device_csr(key, BLOB)
    reply = await _pkcs_req(env, key, csr, "TID-INTUNE-1", get=get)
    assert reply.status is PKIStatus.SUCCESS, reply.fail_text
    cert = reply.certificates[0]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [SID_URI]
    assert standin.names() == [
        "token:https://graph.microsoft.com/.default",
        "discovery",
        "token:https://api.manage.microsoft.com//.default",
        "validateRequest",
        "successNotification",
    ]
    validate = standin.calls[3]
    assert validate.body["request"] == {
        "transactionId": "TID-INTUNE-1",
        "certificateRequest": base64.b64encode(csr).decode("ascii"),
        "callerInfo": "scep-ca",
    }
    assert validate.headers["api-version"] == "2018-02-20"
    note = standin.calls[4].body["notification"]
    assert isinstance(note, dict)
    assert note["transactionId"] == "TID-INTUNE-1"
    assert note["certificateThumbprint"] == cert.fingerprint(hashes.SHA1()).hex()
    assert note["certificateSerialNumber"] == format(cert.serial_number, "x")
    assert note["certificateExpirationDateUtc"] == cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    record = await env.store.get_certificate(format(cert.serial_number, "x"))
    assert record is not None and record.status is CertStatus.ISSUED
    _no_secrets(caplog)


async def test_intune_challenge_expired_is_bad_request_and_stores_nothing(
    make_env: EnvFactory, standin_server: Callable[..., Awaitable[str]], caplog: pytest.LogCaptureFixture
) -> None:
    standin = IntuneStandIn(validate_code="ChallengeExpired")
    env = await _intune_env(make_env, standin_server, standin)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    reply = await _pkcs_req(env, key, _device_csr(key, BLOB), "TID-EXPIRED")
    assert (reply.status, reply.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST)
    assert reply.fail_text == "Microsoft Intune refused the request: ChallengeExpired"
    assert await env.store.count_certificates() == 0
    assert await env.store.get_transaction(env.integration.id, "TID-EXPIRED") is None
    assert standin.names()[-1] == "validateRequest"
    _no_secrets(caplog)


async def test_intune_failed_success_notification_leaves_no_valid_certificate(
    make_env: EnvFactory, standin_server: Callable[..., Awaitable[str]]
) -> None:
    standin = IntuneStandIn(success_status=500, success_code="InternalError")
    env = await _intune_env(make_env, standin_server, standin)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = _device_csr(key, BLOB)
    reply = await _pkcs_req(env, key, csr, "TID-NOTIFY")
    assert (reply.status, reply.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST)
    assert reply.certificates == []
    # Two successNotification attempts (one retry on 5xx), then the certificate is revoked.
    assert standin.names()[-2:] == ["successNotification", "successNotification"]
    records = await env.store.list_certificates(CertificateFilter())
    assert [r.status for r in records] == [CertStatus.REVOKED]
    # A resend of the same transaction does not deliver it either.
    again = await _pkcs_req(env, key, csr, "TID-NOTIFY")
    assert (again.status, again.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST)


async def test_intune_down_is_bad_request_not_500(make_env: EnvFactory, caplog: pytest.LogCaptureFixture) -> None:
    # Nothing listens on port 9 of loopback: the token call fails (and is retried once).
    overrides = {"intune.login_url": "http://127.0.0.1:9/", "intune.graph_url": "http://127.0.0.1:9/"}
    settings = dump_intune(IntuneSettings(tenant=TENANT, client_id=CLIENT_ID))
    env = await make_env("intune", settings, CLIENT_SECRET.encode(), overrides)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    reply = await _pkcs_req(env, key, _device_csr(key, BLOB), "TID-DOWN")
    assert (reply.status, reply.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST)
    assert reply.fail_text == "the request could not be validated with Microsoft Intune"
    assert await env.store.count_certificates() == 0
    assert "intune unavailable: token" in caplog.text
    _no_secrets(caplog)


async def test_intune_timeout_is_bad_request(
    make_env: EnvFactory, standin_server: Callable[..., Awaitable[str]]
) -> None:
    standin = IntuneStandIn(delay_seconds=3)
    env = await _intune_env(make_env, standin_server, standin)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    reply = await _pkcs_req(env, key, _device_csr(key, BLOB), "TID-SLOW")
    assert (reply.status, reply.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST)
    assert await env.store.count_certificates() == 0


# --- webhook ----------------------------------------------------------------------------------


async def _webhook_env(
    make_env: EnvFactory, start: Callable[..., Awaitable[str]], receiver: WebhookReceiver, secret: bytes
) -> Env:
    base = await start(receiver.app())
    settings = dump_webhook(WebhookSettings(url=f"{base}/scepchallenge"))
    return await make_env("webhook", settings, secret, {"webhook.timeout_seconds": 1})


@pytest.mark.parametrize("allow", [True, False])
async def test_webhook_allow_and_deny(
    make_env: EnvFactory, standin_server: Callable[..., Awaitable[str]], allow: bool
) -> None:
    secret = os.urandom(32)
    receiver = WebhookReceiver(secret=secret, allow=allow)
    env = await _webhook_env(make_env, standin_server, receiver, secret)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = _device_csr(key, "hook-challenge")
    reply = await _pkcs_req(env, key, csr, "TID-HOOK")
    seen = receiver.seen[0]
    assert seen["webhook_id"] == env.integration.id
    assert (seen["provisionerName"], seen["scepChallenge"], seen["scepTransactionID"]) == (
        env.integration.id,
        "hook-challenge",
        "TID-HOOK",
    )
    request = seen["x509CertificateRequest"]
    assert isinstance(request, dict) and base64.b64decode(str(request["raw"])) == csr
    if allow:
        assert reply.status is PKIStatus.SUCCESS
        assert await env.store.count_certificates() == 1
    else:
        assert (reply.status, reply.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST)
        assert reply.fail_text == "the request was refused by the integration's webhook"
        assert await env.store.count_certificates() == 0


async def test_webhook_receiver_detects_a_wrong_secret(
    make_env: EnvFactory, standin_server: Callable[..., Awaitable[str]]
) -> None:
    receiver = WebhookReceiver(secret=os.urandom(32))
    env = await _webhook_env(make_env, standin_server, receiver, os.urandom(32))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    reply = await _pkcs_req(env, key, _device_csr(key, "x"), "TID-WRONG")
    assert receiver.bad_signatures == 1 and receiver.seen == []
    assert (reply.status, reply.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST)
    assert await env.store.count_certificates() == 0


async def test_webhook_slow_receiver_times_out_into_a_refusal(
    make_env: EnvFactory, standin_server: Callable[..., Awaitable[str]], caplog: pytest.LogCaptureFixture
) -> None:
    secret = os.urandom(32)
    receiver = WebhookReceiver(secret=secret, delay_seconds=3)
    env = await _webhook_env(make_env, standin_server, receiver, secret)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    reply = await _pkcs_req(env, key, _device_csr(key, "x"), "TID-SLOW")
    assert (reply.status, reply.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST)
    assert reply.fail_text == "the request could not be validated by the integration's webhook"
    assert await env.store.count_certificates() == 0
    assert "webhook unavailable: timed out" in caplog.text
    assert base64.b64encode(secret).decode() not in caplog.text
