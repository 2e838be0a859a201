"""Expiry notifications (issue 21, item 6) against a real local HTTP receiver.

Signed as step-ca signs webhooks, retried, deduplicated per day through the store, and
never in the way of an enrollment.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric import rsa

from config import ConfigError, load_config
from config.model import NotifyConfig
from scep_ca.cli.main import main
from scep_ca.pki.ca import CAIdentity, create_ca, load_ca
from scep_ca.pki.ra_renewal import Renewed
from scep_ca.protocol.enums import PKIStatus
from scep_ca.server.app import RaUpkeep, build_app
from scep_ca.services.notify import DailyNotices, Notifier, NotifySecretError, decode_secret
from store.factory import open_store
from tests.integration.conftest import Server, _integration
from tests.integration.test_metrics import enroll

SECRET = b"0123456789abcdef0123456789abcdef"
SECRET_B64 = base64.b64encode(SECRET).decode()


@dataclass
class Receiver:
    url: str
    bodies: list[bytes] = field(default_factory=list)
    signatures: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    # Status codes to answer, in order; 200 once they run out. "hang": never answer.
    script: list[int | str] = field(default_factory=list)

    def events(self) -> list[dict[str, object]]:
        return [json.loads(b) for b in self.bodies]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver("")

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        step = state.script.pop(0) if state.script else 200
        if step == "hang":
            await asyncio.sleep(3600)
        state.bodies.append(body)
        state.signatures.append(request.headers.get("X-Smallstep-Signature", ""))
        state.ids.append(request.headers.get("X-Smallstep-Webhook-ID", ""))
        return web.Response(status=int(step))

    app = web.Application()
    app.router.add_post("/hook", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    state.url = str(server.make_url("/hook"))
    yield state
    await server.close()


def _notifier(url: str, **settings: object) -> Notifier:
    async def no_wait(_: float) -> None:
        return None

    config = NotifyConfig(webhook_url=url, secret_env="X", **settings)  # type: ignore[arg-type]
    return Notifier(config, SECRET, sleep=no_wait)


def _renewed(ca: CAIdentity) -> Renewed:
    return Renewed("encryption", ca.ra_cert, ca.encryption_cert)


async def test_notification_is_signed_like_the_webhook_validator(
    receiver: Receiver, shared_ca: tuple[Path, CAIdentity]
) -> None:
    notifier = _notifier(receiver.url)
    notifier.ra_renewed(_renewed(shared_ca[1]))
    await notifier.drain()
    await notifier.close()
    [body] = receiver.bodies
    assert receiver.signatures == [hmac.new(SECRET, body, hashlib.sha256).hexdigest()]
    assert len(receiver.ids[0]) == 36
    event = json.loads(body)
    assert event["event"] == "ra_renewed" and event["usage"] == "encryption"
    assert event["serialNumber"] == format(shared_ca[1].encryption_cert.serial_number, "x")


async def test_failed_deliveries_are_retried_then_given_up(
    receiver: Receiver, shared_ca: tuple[Path, CAIdentity]
) -> None:
    """Each attempt is one call of the validators' HTTP client, which itself repeats a 5xx once."""
    notifier = _notifier(receiver.url, attempts=3)
    try:
        receiver.script = [500, 503, 502, 500, 500]
        assert await notifier.send("ra_renewed", usage="signing") is True
        assert len(receiver.bodies) == 6
        receiver.script = [500] * 6
        assert await notifier.send("ra_renewed", usage="signing") is False
        assert len(receiver.bodies) == 12
        assert len(set(receiver.signatures[6:])) == 1  # one notification: the same signed body each time
    finally:
        await notifier.close()


async def test_a_hanging_receiver_does_not_hold_up_enrollment(
    receiver: Receiver,
    tmp_path: Path,
    aiohttp_client: Callable[..., Awaitable[TestClient]],  # type: ignore[type-arg]
    device_key: rsa.RSAPrivateKey,
) -> None:
    receiver.script = ["hang"]
    data = tmp_path / "data"
    ca = create_ca(data, subject="CN=Notify CA", key_size=2048, validity_days=3650, passphrase=None)
    config = load_config(None, {}, {"data_dir": str(data)})
    store = open_store(config)
    notifier = _notifier(receiver.url, timeout_seconds=60)
    upkeep = RaUpkeep(lambda: load_ca(data, None), lambda *_: None, renewed_at_start=(_renewed(ca),))
    client = await aiohttp_client(build_app(config, ca, store, ra_upkeep=upkeep, notifier=notifier))
    integration = _integration("intega")
    await store.create_integration(integration)
    server = Server(client, store, config, ca, integration, integration)
    reply = await asyncio.wait_for(enroll(server, device_key, await server.challenge(), "while-hanging"), 10)
    assert reply.status is PKIStatus.SUCCESS
    assert receiver.bodies == []  # the notification is still waiting for the receiver


async def test_daily_notices_once_a_day_across_processes(
    receiver: Receiver, make_server: Callable[..., Awaitable[Server]], device_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    server = await make_server()
    assert (await enroll(server, device_key, await server.challenge(), "d1")).status is PKIStatus.SUCCESS
    # 340 days from now: a 400-day CA has 60 days left (the 90-day notice), the enrolled certificate 25.
    ca_dir = tmp_path / "short-ca"
    create_ca(ca_dir, subject="CN=Short CA", key_size=2048, validity_days=400, passphrase=None)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=340)
    notifier = _notifier(receiver.url)
    notices = DailyNotices(notifier, server.store, lambda: load_ca(ca_dir, None), clock=lambda: later)
    assert await notices.run() is True
    assert await notices.run() is False  # another worker or host, the same day
    await notifier.drain()
    events = {e["event"]: e for e in receiver.events()}
    assert set(events) == {"ca_expiring", "certificates_expiring"}
    assert events["ca_expiring"]["within"] == "90d"
    assert events["ca_expiring"]["daysLeft"] in (59, 60)
    assert len(receiver.bodies) == 2
    summary = events["certificates_expiring"]
    assert (summary["integration"], summary["count"], summary["within7d"]) == ("intega", 1, 0)
    await notifier.close()


def test_notify_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"notify\.secret_env"):
        load_config(None, {}, {"notify.webhook_url": "https://hooks.example/scep"})
    with pytest.raises(ConfigError, match=r"notify\.webhook_url"):
        load_config(None, {}, {"notify.webhook_url": "ftp://x", "notify.secret_env": "S"})
    with pytest.raises(ConfigError, match=r"ra\.renew_before_days"):
        load_config(None, {}, {"ra.validity_days": 30, "ra.renew_before_days": 30})
    with pytest.raises(NotifySecretError):
        decode_secret("not base64!")
    assert decode_secret(SECRET_B64) == SECRET


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "notify.secret_env names SCEP_CA_TEST_NOTIFY_SECRET, which is not set"),
        ("not base64!", "SCEP_CA_TEST_NOTIFY_SECRET: the notification secret must be base64"),
    ],
)
def test_serve_refuses_to_start_without_a_usable_notification_secret(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    value: str | None,
    message: str,
) -> None:
    config = tmp_path / "scep-ca.yaml"
    config.write_text("notify:\n  webhook_url: https://hooks.example/scep\n  secret_env: SCEP_CA_TEST_NOTIFY_SECRET\n")
    if value is None:
        monkeypatch.delenv("SCEP_CA_TEST_NOTIFY_SECRET", raising=False)
    else:
        monkeypatch.setenv("SCEP_CA_TEST_NOTIFY_SECRET", value)
    data = tmp_path / "data"
    assert main(["--config", str(config), "--data-dir", str(data), "serve"]) == 1
    assert message in capsys.readouterr().err
    assert not data.exists()  # refused before anything was created
