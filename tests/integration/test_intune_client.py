"""The Intune client's token cache and endpoint rediscovery, counted call by call at the stand-in.

The validator runs against tests/validator_standins.py's IntuneStandIn over real HTTP on
loopback, with a clock the test moves (``monotonic``), so expiry is exact and nothing sleeps.
Tokens are cached per scope until ``min(300 s, expires_in / 2)`` before they expire; the
discovered ScepRequestValidationFEService endpoint is kept until a call to it fails.
"""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa

from config.model import IntuneConfig
from scep_ca.protocol.client import build_csr
from scep_ca.services.validators.base import ConfirmationFailed, ValidationRequest
from scep_ca.services.validators.http import HttpClient, trusting
from scep_ca.services.validators.intune import IntuneValidator
from scep_ca.services.validators.settings import IntuneSettings
from tests.validator_standins import CLIENT_ID, CLIENT_SECRET, TENANT, IntuneStandIn, StandInTls

GRAPH_TOKEN = "token:https://graph.microsoft.com/.default"
INTUNE_TOKEN = "token:https://api.manage.microsoft.com//.default"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    standin: IntuneStandIn
    validator: IntuneValidator
    clock: Clock
    request: ValidationRequest
    base: str  # the stand-in's URL

    def new_calls(self, since: int) -> list[str]:
        return self.standin.names()[since:]


@pytest.fixture
async def make_rig(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Rig]]]:
    servers: list[TestServer] = []
    https: list[HttpClient] = []
    tls = StandInTls.create(tmp_path)

    async def factory(standin: IntuneStandIn) -> Rig:
        server = TestServer(standin.app(), host="127.0.0.1")
        await server.start_server(ssl=tls.server_context())
        servers.append(server)
        base = str(server.make_url("")).rstrip("/")
        standin.base = standin.base or base
        http = HttpClient(retry_delay=0.0)
        https.append(http)
        clock = Clock()
        config = IntuneConfig(login_url=f"{base}/", graph_url=f"{base}/", timeout_seconds=10, ca_file=tls.ca_file)
        validator = IntuneValidator(
            IntuneSettings(tenant=TENANT, client_id=CLIENT_ID),
            CLIENT_SECRET,
            config,
            http,
            "CN=scep-ca",
            clock,
            tls=trusting(config.ca_file),
        )
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        csr_der = build_csr(key, x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "device")]), "blob")
        request = ValidationRequest(
            integration_id="intune1",
            csr_der=csr_der,
            csr=x509.load_der_x509_csr(csr_der),
            challenge="blob",
            transaction_id="TID-CACHE",
            message_type=19,
            remote="127.0.0.1",
            user_agent=None,
        )
        return Rig(standin, validator, clock, request, base)

    yield factory
    for http in https:
        await http.close()
    for server in servers:
        await server.close()


async def validate_ok(rig: Rig) -> list[str]:
    before = len(rig.standin.calls)
    verdict = await rig.validator.validate(rig.request)
    assert verdict.allowed, verdict
    return rig.new_calls(before)


async def test_tokens_are_reused_until_five_minutes_before_expiry(make_rig: Callable[..., Awaitable[Rig]]) -> None:
    rig = await make_rig(IntuneStandIn())  # expires_in 3599: refreshed 300 s early, at 3299 s
    start = rig.clock.now
    assert await validate_ok(rig) == [GRAPH_TOKEN, "discovery", INTUNE_TOKEN, "validateRequest"]
    assert await validate_ok(rig) == ["validateRequest"]
    rig.clock.now = start + 3298.9
    assert await validate_ok(rig) == ["validateRequest"]
    # Only the Intune scope is asked for again: the endpoint is cached, so Graph is not needed.
    rig.clock.now = start + 3299.0
    assert await validate_ok(rig) == [INTUNE_TOKEN, "validateRequest"]
    assert await validate_ok(rig) == ["validateRequest"]
    # The Graph token expired meanwhile too: a fresh discovery (integration test-validator's
    # check) fetches it, while the Intune token fetched at 3299 s is still good.
    before = len(rig.standin.calls)
    await rig.validator.check()
    assert rig.new_calls(before) == [GRAPH_TOKEN, "discovery"]
    before = len(rig.standin.calls)
    await rig.validator.check()
    assert rig.new_calls(before) == ["discovery"]


async def test_a_short_lived_token_is_refreshed_at_half_its_lifetime(
    make_rig: Callable[..., Awaitable[Rig]],
) -> None:
    rig = await make_rig(IntuneStandIn(token_lifetime=100))  # margin min(300, 50) = 50 s
    start = rig.clock.now
    assert await validate_ok(rig) == [GRAPH_TOKEN, "discovery", INTUNE_TOKEN, "validateRequest"]
    rig.clock.now = start + 49.9
    assert await validate_ok(rig) == ["validateRequest"]
    rig.clock.now = start + 50.0
    assert await validate_ok(rig) == [INTUNE_TOKEN, "validateRequest"]


async def test_an_intune_endpoint_answering_an_error_is_rediscovered(
    make_rig: Callable[..., Awaitable[Rig]],
) -> None:
    standin = IntuneStandIn(success_status=500, success_code="InternalError")
    rig = await make_rig(standin)
    cert = _any_certificate()
    with pytest.raises(ConfirmationFailed):
        await rig.validator.issued(rig.request, cert)
    # One retry of the 5xx, then the endpoint is dropped.
    assert standin.names() == [GRAPH_TOKEN, "discovery", INTUNE_TOKEN, "successNotification", "successNotification"]
    standin.success_status, standin.success_code = 200, "Success"
    # Discovery again (tokens still cached), then the endpoint is kept once more.
    assert await validate_ok(rig) == ["discovery", "validateRequest"]
    assert await validate_ok(rig) == ["validateRequest"]


async def test_an_unreachable_intune_endpoint_is_rediscovered(make_rig: Callable[..., Awaitable[Rig]]) -> None:
    # Discovery first names an endpoint where nothing listens.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"https://127.0.0.1:{sock.getsockname()[1]}"
    standin = IntuneStandIn(base=dead)
    rig = await make_rig(standin)
    verdict = await rig.validator.validate(rig.request)
    assert not verdict.allowed
    assert verdict.reason is not None and verdict.reason.startswith("intune unavailable: validateRequest:")
    assert standin.names() == [GRAPH_TOKEN, "discovery", INTUNE_TOKEN]
    # The service moved back to the stand-in: the next request discovers it again.
    standin.base = rig.base
    assert await validate_ok(rig) == ["discovery", "validateRequest"]
    assert await validate_ok(rig) == ["validateRequest"]


def _any_certificate() -> x509.Certificate:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "device")])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
