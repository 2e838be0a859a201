"""/metrics, /healthz, /readyz and JSON log fields on the real app with a real SQLite store.

Counters are checked for exact values after a known mix of requests: a metric that is
off by one (a double count in a middleware, a failure counted as success) fails here.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterator

import pytest
import spnego
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from challenge.credentials import make_credentials
from challenge.request_client import client_middleware
from challenge.secret_key import load_or_create_secret_key
from config.clients import TrustedProxies
from config.model import LogConfig
from scep_ca.pki.records import Integration
from scep_ca.protocol.client import Reply, build_csr, build_request, open_reply, self_signed_signer
from scep_ca.protocol.dn import parse_dn
from scep_ca.protocol.enums import FailInfo, MessageType, PKIStatus
from scep_ca.server.logsetup import build_handler, log_context_middleware
from scep_ca.server.metrics import CHALLENGE_RESULTS, Metrics
from scep_ca.services.logctx import bind_log_fields
from tests.integration.conftest import Server, ServerFactory

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
WRONG_CHALLENGE = "0123456789ABCDEF"


async def scrape(server: Server) -> Samples:
    resp = await server.client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(await resp.text()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def label_values(samples: Samples, name: str, label: str) -> set[str]:
    return {dict(labels)[label] for (n, labels), _ in samples.items() if n == name}


async def enroll(server: Server, key: rsa.RSAPrivateKey, challenge: str, tid: str) -> Reply:
    signer = self_signed_signer(key)
    csr = build_csr(key, parse_dn("CN=alice,O=Example"), challenge)
    request = build_request(
        csr, signer_cert=signer, signer_key=key, recipient=server.ca.encryption_cert, transaction_id=tid
    )
    resp = await server.client.post(f"{server.url()}?operation=PKIOperation", data=request.der)
    assert resp.status == 200
    return open_reply(await resp.read(), signer, key)


# -- counters ------------------------------------------------------------------------------


async def test_pki_operation_counters_match_enrollments_exactly(server: Server, device_key: rsa.RSAPrivateKey) -> None:
    successes, failures = 3, 2
    for n in range(successes):
        reply = await enroll(server, device_key, await server.challenge(), f"OK-{n}")
        assert reply.status is PKIStatus.SUCCESS
    for n in range(failures):
        reply = await enroll(server, device_key, WRONG_CHALLENGE, f"BAD-{n}")
        assert reply.status is PKIStatus.FAILURE and reply.fail_info is FailInfo.BAD_REQUEST
    samples = await scrape(server)
    pki = "scep_ca_pki_operations_total"
    assert value(samples, pki, worker="0", message_type="PKCSReq", status="SUCCESS", fail_info="none") == successes
    assert value(samples, pki, worker="0", message_type="PKCSReq", status="FAILURE", fail_info="badRequest") == failures
    assert total(samples, pki) == successes + failures
    assert value(samples, "scep_ca_request_seconds_count", worker="0", operation="PKIOperation") == 5
    assert value(samples, "scep_ca_http_responses_total", worker="0", operation="PKIOperation", code="200") == 5
    assert await server.cert_count() == successes


async def test_operation_labels_come_from_a_fixed_set(server: Server) -> None:
    """Client-chosen operations and paths never become label values."""
    client = server.client
    assert (await client.get(f"{server.url()}?operation=GetCACaps")).status == 200
    assert (await client.get(f"{server.url()}/pkiclient.exe?operation=GetCACert")).status == 200
    assert (await client.get(f"{server.url()}?operation=evil-{'x' * 40}")).status == 400
    assert (await client.get("/no/such/path")).status == 404
    await client.get("/healthz")
    await client.get("/readyz")
    samples = await scrape(server)
    seconds = "scep_ca_request_seconds_count"
    assert value(samples, seconds, worker="0", operation="GetCACaps") == 1
    assert value(samples, seconds, worker="0", operation="GetCACert") == 1
    assert value(samples, seconds, worker="0", operation="scep_other") == 1
    assert value(samples, seconds, worker="0", operation="other") == 1
    responses = "scep_ca_http_responses_total"
    assert value(samples, responses, worker="0", operation="scep_other", code="400") == 1
    assert value(samples, responses, worker="0", operation="other", code="404") == 1
    # Probes and scrapes are not timed.
    assert label_values(samples, seconds, "operation") == {"GetCACaps", "GetCACert", "scep_other", "other"}


def _ntlm_negotiate(user: str, password: str) -> str:
    token = spnego.client(user, password, protocol="ntlm").step()
    assert token is not None
    return "NTLM " + base64.b64encode(token).decode()


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_challenge_page_results(make_server: ServerFactory) -> None:
    # More than one failure locks the (user, address) pair out; the failure that trips it gets 429.
    server = await make_server(**{"challenge.lockout_failures": 1})
    creds = make_credentials(load_or_create_secret_key(server.config.data_dir), "metrics")
    await server.store.create_integration(
        Integration(
            id="metrics",
            name="metrics",
            subject_template="CN=$USERID$",
            created_at=dt.datetime.now(dt.UTC),
            validity_days=365,
            username=creds.username,
            password_scrypt=creds.password_scrypt,
            nt_hash_encrypted=creds.nt_hash_encrypted,
        )
    )
    url = "/challenge/metrics/certsrv/mscep_admin/"
    get = server.client.get
    assert (await get(url)).status == 401  # no credentials
    assert (await get(url, headers={"Authorization": _ntlm_negotiate(creds.username, creds.password)})).status == 401
    assert (await get(url, headers={"Authorization": _basic(creds.username, creds.password)})).status == 200
    assert (await get(url, headers={"Authorization": _basic(creds.username, "wrong")})).status == 401
    assert (await get(url, headers={"Authorization": _basic(creds.username, "wrong")})).status == 429
    assert (await get("/challenge/no$such/certsrv/mscep_admin/")).status == 404
    samples = await scrape(server)
    counts = {r: value(samples, "scep_ca_challenge_pages_total", worker="0", result=r) for r in CHALLENGE_RESULTS}
    assert counts == {
        "page": 1,
        "ntlm_challenge": 1,
        "unauthorized": 2,
        "locked_out": 1,
        "not_found": 1,
        "error": 0,
    }
    assert value(samples, "scep_ca_request_seconds_count", worker="0", operation="challenge") == 6


async def test_revocations_and_crl_age_come_from_the_store(server: Server, device_key: rsa.RSAPrivateKey) -> None:
    samples = await scrape(server)
    assert value(samples, "scep_ca_revocations_total") == 0
    assert 0 <= value(samples, "scep_ca_crl_age_seconds", worker="0") < 60
    reply = await enroll(server, device_key, await server.challenge(), "TO-REVOKE")
    serial = format(reply.certificates[0].serial_number, "x")
    # As `scep-ca cert revoke` does from another process: straight into the store.
    assert await server.store.revoke_certificate(serial, "keyCompromise", dt.datetime.now(dt.UTC))
    samples = await scrape(server)
    assert value(samples, "scep_ca_revocations_total") == 1


def test_each_metrics_object_has_its_own_registry() -> None:
    first, second = Metrics(worker=0), Metrics(worker=1)
    first.pki_operation(MessageType.PKCS_REQ, PKIStatus.SUCCESS, None)
    assert first.registry.get_sample_value(
        "scep_ca_pki_operations_total",
        {"worker": "0", "message_type": "PKCSReq", "status": "SUCCESS", "fail_info": "none"},
    )
    assert second.registry.get_sample_value(
        "scep_ca_pki_operations_total",
        {"worker": "1", "message_type": "PKCSReq", "status": "SUCCESS", "fail_info": "none"},
    ) in (None, 0.0)
    # Nothing lands in prometheus-client's process-wide default registry.
    assert not [m for m in REGISTRY.collect() if m.name.startswith("scep_ca")]


def test_unknown_message_types_and_fail_infos_are_bounded() -> None:
    metrics = Metrics()
    metrics.pki_operation(99, PKIStatus.FAILURE, FailInfo.BAD_ALG)
    assert (
        metrics.registry.get_sample_value(
            "scep_ca_pki_operations_total",
            {"worker": "0", "message_type": "other", "status": "FAILURE", "fail_info": "badAlg"},
        )
        == 1
    )


# -- probes --------------------------------------------------------------------------------


async def test_healthz_and_readyz(server: Server) -> None:
    health = await server.client.get("/healthz")
    assert health.status == 200
    assert await health.json() == {"status": "ok", "worker": 0, "pid": os.getpid()}
    ready = await server.client.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["status"] == "ready"


async def test_readyz_is_503_when_the_store_is_unreachable(server: Server) -> None:
    await server.store.close()
    ready = await server.client.get("/readyz")
    assert ready.status == 503
    body = await ready.json()
    assert body["status"] == "unavailable" and body["store"] == "unreachable"
    # Liveness is another question: the process still answers.
    assert (await server.client.get("/healthz")).status == 200


async def test_readyz_is_503_while_draining(server: Server) -> None:
    await server.client.app.shutdown()  # what run_server's cleanup triggers after SIGTERM
    ready = await server.client.get("/readyz")
    assert ready.status == 503
    assert (await ready.json())["status"] == "draining"


# -- JSON logs -----------------------------------------------------------------------------


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = build_handler(LogConfig(format="json"), stream)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def _entries(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_json_log_lines_carry_integration_and_client_never_the_challenge(
    server: Server, device_key: rsa.RSAPrivateKey, json_log: io.StringIO
) -> None:
    await enroll(server, device_key, WRONG_CHALLENGE, "LOG-1")
    entries = _entries(json_log)
    failures = [e for e in entries if e["logger"] == "scep_ca.services.scep" and e["level"] == "WARNING"]
    assert failures, entries
    assert failures[0]["integration"] == server.integration.id
    assert failures[0]["client"] == "127.0.0.1"
    assert WRONG_CHALLENGE not in json_log.getvalue()


async def test_bound_fields_stay_with_their_request(
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]], json_log: io.StringIO
) -> None:
    """A transactionID bound in one request is not in the next one on the same connection."""
    test_log = logging.getLogger("scep_ca.test")

    async def handler(request: web.Request) -> web.Response:
        if "tid" in request.query:
            bind_log_fields(transaction_id=request.query["tid"])
        test_log.info("handled")
        return web.Response(text="ok")

    app = web.Application(middlewares=[client_middleware(TrustedProxies()), log_context_middleware])
    app.router.add_get("/scep/{integration}", handler)
    client = await aiohttp_client(app)
    assert (await client.get("/scep/one?tid=T-1")).status == 200
    assert (await client.get("/scep/two")).status == 200  # same keep-alive connection
    test_log.info("outside any request")
    first, second, outside = (e for e in _entries(json_log) if e["logger"] == "scep_ca.test")
    assert first["transactionID"] == "T-1" and first["integration"] == "one"
    assert "transactionID" not in second and second["integration"] == "two"
    assert not {"transactionID", "integration", "client"} & outside.keys()


METRICS_TOKEN = "metrics-token-0123456789"


async def test_metrics_token_is_required_when_set(make_server: ServerFactory) -> None:
    server = await make_server(**{"server.metrics_token": METRICS_TOKEN})
    missing = await server.client.get("/metrics")
    assert missing.status == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await server.client.get("/metrics", headers={"Authorization": "Bearer wrong"})).status == 401
    assert (await server.client.get("/metrics", headers={"Authorization": f"Basic {METRICS_TOKEN}"})).status == 401
    ok = await server.client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert ok.status == 200 and "scep_ca_connections_open" in await ok.text()


@pytest.mark.parametrize("headers", [{}, {"X-Forwarded-For": "203.0.113.9"}, {"X-Client-IP": "127.0.0.1"}])
async def test_metrics_without_token_refused_through_a_trusted_proxy(
    make_server: ServerFactory, headers: dict[str, str]
) -> None:
    server = await make_server(**{"server.trusted_proxies": ["127.0.0.1"]})
    assert (await server.client.get("/metrics", headers=headers)).status == 403


async def test_metrics_without_token_refuses_loopback_peer_with_proxy_header(server: Server) -> None:
    assert (await server.client.get("/metrics")).status == 200
    assert (await server.client.get("/metrics", headers={"X-Real-IP": "203.0.113.9"})).status == 403
