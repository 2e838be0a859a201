"""CRL, OCSP and the status API over HTTP, on a real SQLite store in a temporary directory."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import secrets
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509 import ocsp

from challenge.request_client import client_middleware
from config.clients import TrustedProxies
from scep_ca.pki.ca import CAIdentity
from scep_ca.pki.ca_set import ca_id
from scep_ca.pki.crl_shards import shard_of
from scep_ca.pki.records import Integration
from scep_ca.server.revocation_web import setup_revocation_routes
from scep_ca.services.revocation import RevocationService
from store.base import IntegrationNotFound, IssuanceRequest
from store.sqlite import SQLiteStore
from tests.revocation_helpers import issue_cert, pem, record_for

TOKEN = "s3cret-token"
PUBLIC_URL = "http://ca.example:8080"
Client = TestClient[web.Request, web.Application]


class Clock:
    """A settable clock, so CRL refresh can be tested without waiting."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass
class Env:
    client: Client
    store: SQLiteStore
    service: RevocationService
    ca: CAIdentity
    clock: Clock
    db: Path
    certs: list[x509.Certificate]

    async def crl(self) -> x509.CertificateRevocationList:
        resp = await self.client.get("/crl/ca.crl")
        assert resp.status == 200
        assert resp.content_type == "application/pkix-crl"
        crl = x509.load_der_x509_crl(await resp.read())
        assert crl.is_signature_valid(self.ca.public_key)
        return crl

    async def ocsp_post(self, cert: x509.Certificate) -> ocsp.OCSPResponse:
        resp = await self.client.post(
            "/ocsp", data=_ocsp_request(cert, self.ca), headers={"Content-Type": "application/ocsp-request"}
        )
        assert resp.status == 200 and resp.content_type == "application/ocsp-response"
        return ocsp.load_der_ocsp_response(await resp.read())


def _ocsp_request(cert: x509.Certificate, ca: CAIdentity) -> bytes:
    return (
        ocsp.OCSPRequestBuilder()
        .add_certificate(cert, ca.cert, hashes.SHA1())
        .add_extension(x509.OCSPNonce(secrets.token_bytes(16)), critical=False)
        .build()
        .public_bytes(serialization.Encoding.DER)
    )


def _integration(integration_id: str) -> Integration:
    return Integration(
        id=integration_id,
        name=integration_id,
        subject_template="CN=$USERID$",
        created_at=dt.datetime.now(dt.UTC),
        validity_days=365,
        username=f"user-{integration_id}",
    )


@web.middleware
async def _test_remote(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    # The test client always connects from 127.0.0.1; this lets a test play a remote client.
    remote = request.headers.get("X-Test-Remote")
    if remote is not None:
        request = request.clone(remote=remote)
    return await handler(request)


@pytest.fixture(scope="module")
def module_ca(tmp_path_factory: pytest.TempPathFactory) -> CAIdentity:
    from scep_ca.pki.ca import create_ca

    return create_ca(
        Path(tmp_path_factory.mktemp("ca")),
        subject="CN=Revocation CA,O=scep-ca",
        key_size=2048,
        validity_days=3650,
        passphrase=None,
    )


@pytest.fixture(scope="module")
def device_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


EnvFactory = Callable[..., Awaitable[Env]]


@pytest.fixture
async def make_env(
    tmp_path: Path,
    module_ca: CAIdentity,
    device_key: rsa.RSAPrivateKey,
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> AsyncIterator[EnvFactory]:
    stores: list[SQLiteStore] = []

    async def factory(
        token: str | None = None, certificates: int = 3, trusted_proxies: tuple[str, ...] = (), shards: int = 0
    ) -> Env:
        db = tmp_path / "scep-ca.sqlite3"
        store = SQLiteStore(db)
        await store.open()
        stores.append(store)
        await store.create_integration(_integration("intega"))
        await store.create_integration(_integration("integb"))
        certs: list[x509.Certificate] = []
        now = dt.datetime.now(dt.UTC)
        for i in range(certificates):
            cert = issue_cert(
                module_ca, device_key, secrets.randbits(159), cn=f"dev{i}", not_before=now - dt.timedelta(hours=1)
            )
            # The last one belongs to the other integration.
            owner = "integb" if i == certificates - 1 else "intega"
            record = record_for(module_ca, cert, owner)
            if shards:
                record = dataclasses.replace(record, crl_shard=shard_of(cert.serial_number, shards))
            await store.record_issuance(IssuanceRequest(record, None, now))
            certs.append(cert)
        clock = Clock()
        service = RevocationService(store, module_ca, crl_next_update_hours=24, clock=clock, public_url=PUBLIC_URL)
        app = web.Application(middlewares=[_test_remote, client_middleware(TrustedProxies.parse(trusted_proxies))])
        setup_revocation_routes(app, service, token)
        client = await aiohttp_client(app)
        return Env(client, store, service, module_ca, clock, db, certs)

    yield factory
    for store in stores:
        await store.close()


@pytest.fixture
async def env(make_env: EnvFactory) -> Env:
    return await make_env()


def _number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


# -- CRL -------------------------------------------------------------------------------


async def test_crl_is_cached_until_a_revocation(env: Env) -> None:
    first = await env.crl()
    assert len(first) == 0
    again = await env.crl()
    assert _number(again) == _number(first)  # served from the cache: no new number

    assert await env.service.revoke(format(env.certs[0].serial_number, "x"), "keyCompromise")
    after = await env.crl()
    assert _number(after) == _number(first) + 1
    entry = after.get_revoked_certificate_by_serial_number(env.certs[0].serial_number)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is x509.ReasonFlags.key_compromise


async def test_crl_sees_changes_made_by_another_process(env: Env) -> None:
    """The CLI revokes through its own store connection; the server's cache must notice."""
    await env.crl()
    other = SQLiteStore(env.db)
    await other.open()
    try:
        cli = RevocationService(other, env.ca)
        assert await cli.revoke(format(env.certs[1].serial_number, "x"), "superseded")
    finally:
        await other.close()
    crl = await env.crl()
    assert crl.get_revoked_certificate_by_serial_number(env.certs[1].serial_number) is not None


async def test_crl_rebuilt_before_next_update(env: Env) -> None:
    first = await env.crl()
    env.clock.now += dt.timedelta(hours=11)
    assert _number(await env.crl()) == _number(first)
    env.clock.now += dt.timedelta(hours=2)  # past half of the 24 h validity
    refreshed = await env.crl()
    assert _number(refreshed) == _number(first) + 1
    assert refreshed.next_update_utc is not None and refreshed.next_update_utc > first.next_update_utc  # type: ignore[operator]


async def test_concurrent_fetches_build_once(env: Env) -> None:
    before = _number(await env.crl())
    await env.service.revoke(format(env.certs[0].serial_number, "x"))
    bodies = await asyncio.gather(*(env.service.current_crl() for _ in range(8)))
    assert len(set(bodies)) == 1
    assert _number(x509.load_der_x509_crl(bodies[0])) == before + 1


async def test_unknown_crl_name(env: Env) -> None:
    assert (await env.client.get("/crl/other.crl")).status == 404


# -- CRL shards (RFC 5280 section 5.2.5) ----------------------------------------------------


async def _shard(env: Env, shard: int) -> x509.CertificateRevocationList:
    path = f"/crl/{ca_id(env.ca)}/{shard}.crl"
    resp = await env.client.get(path)
    assert resp.status == 200 and resp.content_type == "application/pkix-crl"
    assert resp.headers["Cache-Control"] == "no-cache"
    crl = x509.load_der_x509_crl(await resp.read())
    assert crl.is_signature_valid(env.ca.public_key)
    idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint)
    assert idp.critical and idp.value.full_name == [x509.UniformResourceIdentifier(PUBLIC_URL + path)]
    return crl


async def test_a_revoked_certificate_is_in_its_shard_only_and_in_the_full_crl(make_env: EnvFactory) -> None:
    env = await make_env(certificates=6, shards=2)
    target = env.certs[0]
    own, other = target.serial_number % 2, 1 - target.serial_number % 2
    assert len(await _shard(env, own)) == 0
    assert await env.service.revoke(format(target.serial_number, "x"), "keyCompromise")
    in_shard = await _shard(env, own)
    assert [r.serial_number for r in in_shard] == [target.serial_number]
    assert len(await _shard(env, other)) == 0
    assert (await env.crl()).get_revoked_certificate_by_serial_number(target.serial_number) is not None
    # The full CRL has no issuingDistributionPoint: its scope is every certificate of the CA.
    with pytest.raises(x509.ExtensionNotFound):
        (await env.crl()).extensions.get_extension_for_class(x509.IssuingDistributionPoint)


async def test_a_deleted_integrations_certificates_are_in_their_shards(make_env: EnvFactory) -> None:
    """Deletion writes nothing per certificate (store/revocation_rule.py); the shards a relying
    party fetches over HTTP still list each certificate, cessationOfOperation at the deletion."""
    env = await make_env(certificates=5, shards=2)
    for shard in (0, 1):
        assert len(await _shard(env, shard)) == 0  # cached: the deletion must invalidate them
    result = await env.service.delete_integration("intega")
    assert result.revoked == 4
    listed = {}
    for shard in (0, 1):
        for entry in await _shard(env, shard):
            assert entry.serial_number % 2 == shard
            reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
            listed[entry.serial_number] = (entry.revocation_date_utc, reason)
    when = result.deleted_at.replace(microsecond=0)
    assert listed == {c.serial_number: (when, x509.ReasonFlags.cessation_of_operation) for c in env.certs[:4]}


async def test_an_expired_certificate_leaves_its_shard_one_crl_period_after_not_after(make_env: EnvFactory) -> None:
    """RFC 5280 section 3.3: an entry stays until a CRL issued after the certificate's notAfter
    listed it; one nextUpdate period (24 h here) after notAfter it leaves the shard, at the
    shard's next rebuild (a revocation, or half a period after the last build). The full CRL
    keeps it."""
    env = await make_env(certificates=2, shards=1)
    target = env.certs[0]
    assert await env.service.revoke(format(target.serial_number, "x"), "keyCompromise")
    not_after = target.not_valid_after_utc
    env.clock.now = not_after + dt.timedelta(hours=23)
    assert [r.serial_number for r in await _shard(env, 0)] == [target.serial_number]
    env.clock.now = not_after + dt.timedelta(hours=25)
    assert len(await _shard(env, 0)) == 1  # the shard built at +23 h is served until +35 h
    env.clock.now = not_after + dt.timedelta(hours=36)
    assert len(await _shard(env, 0)) == 0
    assert (await env.crl()).get_revoked_certificate_by_serial_number(target.serial_number) is not None


@pytest.mark.parametrize(
    "path",
    [
        "/crl/ca/0.crl",  # shards are named by the CA id their certificates carry
        "/crl/0000000000000000/0.crl",  # no such CA
        "/crl/{id}/01.crl",  # one spelling per shard
        "/crl/{id}/-1.crl",
        "/crl/{id}/+1.crl",
        "/crl/{id}/%201.crl",
        "/crl/{id}/\u0661.crl",  # an Arabic-Indic digit one: isdigit() but not ASCII
        "/crl/{id}/4096.crl",  # beyond the most shards a configuration may have
        "/crl/{id}/99999999999999999999.crl",
        "/crl/{id}/x.crl",
    ],
)
async def test_a_url_that_names_no_shard_is_404(make_env: EnvFactory, path: str) -> None:
    env = await make_env(certificates=1, shards=2)
    before = await env.store.next_crl_number(env.ca.fingerprint_sha256)
    resp = await env.client.get(path.replace("{id}", ca_id(env.ca)))
    assert (resp.status, await resp.text()) == (404, "no such CRL\n")
    # Nothing was built or signed: the CRL number did not move.
    assert await env.store.next_crl_number(env.ca.fingerprint_sha256) == before + 1


async def test_the_highest_shard_is_served(make_env: EnvFactory) -> None:
    env = await make_env(certificates=1, shards=2)
    assert len(await _shard(env, 4095)) == 0


async def test_ca_certificate_at_the_ca_issuers_path(env: Env) -> None:
    """``/ca/<ca id>.crt`` (and ``/ca/ca.crt``): the CA as one DER certificate, RFC 2585's type."""
    for name in (ca_id(env.ca), "ca"):
        resp = await env.client.get(f"/ca/{name}.crt")
        assert resp.status == 200 and resp.content_type == "application/pkix-cert"
        assert await resp.read() == env.ca.cert_der
    resp = await env.client.get("/ca/0123456789abcdef.crt")
    assert resp.status == 404 and await resp.text() == "no such CA\n"


async def test_delete_integration_is_visible_everywhere(env: Env) -> None:
    await env.crl()  # warm the cache: deletion must invalidate it
    result = await env.service.delete_integration("intega")
    assert result.revoked == 2
    crl = await env.crl()
    for cert in env.certs[:2]:
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        assert entry is not None
        reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        assert reason is x509.ReasonFlags.cessation_of_operation
        assert entry.revocation_date_utc == result.deleted_at.replace(microsecond=0)
        assert (await env.ocsp_post(cert)).certificate_status is ocsp.OCSPCertStatus.REVOKED
        status = await (await env.client.get(f"/api/v1/certificates/{cert.serial_number:x}")).json()
        assert status["status"] == "revoked" and status["revocation_reason"] == "cessationOfOperation"
    # The other integration's certificate is untouched.
    assert crl.get_revoked_certificate_by_serial_number(env.certs[2].serial_number) is None
    assert (await env.ocsp_post(env.certs[2])).certificate_status is ocsp.OCSPCertStatus.GOOD
    with pytest.raises(IntegrationNotFound):
        await env.service.delete_integration("intega")


# -- OCSP ------------------------------------------------------------------------------


async def test_ocsp_post_good_then_revoked(env: Env) -> None:
    cert = env.certs[0]
    good = await env.ocsp_post(cert)
    assert good.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert good.certificate_status is ocsp.OCSPCertStatus.GOOD
    await env.service.revoke(f"0x{cert.serial_number:x}", "key-compromise")
    revoked = await env.ocsp_post(cert)
    assert revoked.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert revoked.revocation_reason is x509.ReasonFlags.key_compromise


@pytest.mark.parametrize("form", ["raw", "percent", "urlsafe"])
async def test_ocsp_get(env: Env, form: str) -> None:
    der = _ocsp_request(env.certs[0], env.ca)
    b64 = base64.b64encode(der).decode()
    path = {
        "raw": b64,
        "percent": urllib.parse.quote(b64, safe=""),
        "urlsafe": base64.urlsafe_b64encode(der).decode().rstrip("="),
    }[form]
    resp = await env.client.get(f"/ocsp/{path}")
    assert resp.status == 200 and resp.content_type == "application/ocsp-response"
    assert resp.headers["Cache-Control"] == "no-cache"
    answer = ocsp.load_der_ocsp_response(await resp.read())
    assert answer.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert answer.serial_number == env.certs[0].serial_number


async def test_ocsp_get_with_slashes_in_base64(env: Env) -> None:
    # Find a request whose base64 contains '/': the path then has several segments.
    for _ in range(200):
        der = _ocsp_request(env.certs[0], env.ca)
        b64 = base64.b64encode(der).decode()
        if "/" in b64 and "+" in b64:
            break
    else:
        pytest.skip("no base64 with / and + drawn")
    resp = await env.client.get(f"/ocsp/{b64}")
    answer = ocsp.load_der_ocsp_response(await resp.read())
    assert answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL


async def test_ocsp_unknown_and_other_issuer(env: Env, device_key: rsa.RSAPrivateKey) -> None:
    stranger = issue_cert(env.ca, device_key, 424242)
    assert (await env.ocsp_post(stranger)).certificate_status is ocsp.OCSPCertStatus.UNKNOWN
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    # replace(), not CAIdentity(...): only cert and key matter here, whatever else the identity holds.
    other_ca = dataclasses.replace(env.ca, cert=issue_cert(env.ca, other_key, 7, cn="Other CA"), key=other_key)
    foreign = issue_cert(other_ca, device_key, env.certs[0].serial_number, signing_key=other_key)
    resp = await env.client.post("/ocsp", data=_ocsp_request(foreign, other_ca))
    answer = ocsp.load_der_ocsp_response(await resp.read())
    assert answer.response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED


async def test_ocsp_malformed_and_oversize(env: Env) -> None:
    for resp in (await env.client.post("/ocsp", data=b"junk"), await env.client.get("/ocsp/!!!")):
        assert resp.status == 200
        answer = ocsp.load_der_ocsp_response(await resp.read())
        assert answer.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    assert (await env.client.post("/ocsp", data=b"\x30" * 20_000)).status == 413


# -- status API ------------------------------------------------------------------------


async def test_status_by_serial_forms(env: Env) -> None:
    cert = env.certs[0]
    hex_serial = format(cert.serial_number, "x")
    colon = ":".join(f"{cert.serial_number:x}".zfill(40)[i : i + 2] for i in range(0, 40, 2))
    for text in (hex_serial, hex_serial.upper(), f"0x{hex_serial}", urllib.parse.quote(colon)):
        resp = await env.client.get(f"/api/v1/certificates/{text}")
        assert resp.status == 200, text
        data = await resp.json()
        assert data["serial"] == hex_serial and data["integration"] == "intega"
        assert data["status"] == "valid" and data["revoked"] is False
    decimal = await env.client.get(f"/api/v1/certificates/{cert.serial_number}?base=dec")
    assert decimal.status == 200 and (await decimal.json())["serial"] == hex_serial
    assert (await env.client.get("/api/v1/certificates/abcdef0123")).status == 404
    assert (await env.client.get("/api/v1/certificates/not-a-serial")).status == 400
    assert (await env.client.get(f"/api/v1/certificates/{hex_serial}?base=oct")).status == 400


async def test_status_api_loopback_only_without_token(env: Env) -> None:
    path = f"/api/v1/certificates/{env.certs[0].serial_number:x}"
    assert (await env.client.get(path)).status == 200
    assert (await env.client.get(path, headers={"X-Test-Remote": "203.0.113.9"})).status == 403
    assert (await env.client.get(path, headers={"X-Test-Remote": "::1"})).status == 200
    # Behind a proxy everyone looks like loopback: refuse rather than guess.
    assert (await env.client.get(path, headers={"X-Forwarded-For": "203.0.113.9"})).status == 403
    verify = await env.client.post("/api/v1/verify", data=pem(env.certs[0]), headers={"X-Test-Remote": "10.0.0.1"})
    assert verify.status == 403
    # CRL and OCSP stay public.
    assert (await env.client.get("/crl/ca.crl", headers={"X-Test-Remote": "203.0.113.9"})).status == 200


@pytest.mark.parametrize(
    "headers", [{}, {"X-Client-IP": "127.0.0.1"}, {"True-Client-IP": "127.0.0.1"}, {"X-Forwarded-For": "127.0.0.1"}]
)
async def test_status_api_refuses_everyone_through_a_trusted_loopback_proxy(
    make_env: EnvFactory, headers: dict[str, str]
) -> None:
    """A same-host proxy listed in server.trusted_proxies: its clients never get loopback trust,
    whatever header it sends or drops (nginx's default proxy_pass sends none)."""
    env = await make_env(trusted_proxies=("127.0.0.1",))
    path = f"/api/v1/certificates/{env.certs[0].serial_number:x}"
    assert (await env.client.get(path, headers=headers)).status == 403
    assert (await env.client.post("/api/v1/verify", data=pem(env.certs[0]), headers=headers)).status == 403


@pytest.mark.parametrize("header", ["X-Client-IP", "True-Client-IP", "X-Real-IP", "Forwarded"])
async def test_status_api_refuses_loopback_peer_with_any_proxy_header(env: Env, header: str) -> None:
    """No trusted proxies: a loopback peer sending a proxy header is most likely an unlisted proxy."""
    path = f"/api/v1/certificates/{env.certs[0].serial_number:x}"
    assert (await env.client.get(path, headers={header: "127.0.0.1"})).status == 403


async def test_status_api_with_token_through_a_trusted_proxy(make_env: EnvFactory) -> None:
    env = await make_env(token=TOKEN, trusted_proxies=("127.0.0.1",))
    path = f"/api/v1/certificates/{env.certs[0].serial_number:x}"
    ok = {"Authorization": f"Bearer {TOKEN}", "X-Forwarded-For": "203.0.113.9"}
    assert (await env.client.get(path, headers=ok)).status == 200
    assert (await env.client.get(path, headers={"X-Forwarded-For": "203.0.113.9"})).status == 401


async def test_status_api_with_token(make_env: EnvFactory) -> None:
    env = await make_env(token=TOKEN)
    path = f"/api/v1/certificates/{env.certs[0].serial_number:x}"
    missing = await env.client.get(path)
    assert missing.status == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await env.client.get(path, headers={"Authorization": "Bearer wrong"})).status == 401
    assert (await env.client.get(path, headers={"Authorization": f"Basic {TOKEN}"})).status == 401
    ok = {"Authorization": f"Bearer {TOKEN}"}
    assert (await env.client.get(path, headers=ok)).status == 200
    # With a token, a remote client is served too.
    assert (await env.client.get(path, headers={**ok, "X-Test-Remote": "203.0.113.9"})).status == 200
    verify = await env.client.post("/api/v1/verify", data=pem(env.certs[0]), headers=ok)
    assert verify.status == 200
    assert (await env.client.post("/api/v1/verify", data=pem(env.certs[0]))).status == 401


async def test_verify(env: Env, device_key: rsa.RSAPrivateKey) -> None:
    cert = env.certs[0]
    resp = await env.client.post("/api/v1/verify", data=pem(cert), headers={"Content-Type": "application/x-pem-file"})
    data = await resp.json()
    assert resp.status == 200 and data["status"] == "trusted" and data["integration"] == "intega"

    await env.service.revoke(format(cert.serial_number, "x"), "superseded")
    data = await (await env.client.post("/api/v1/verify", data=pem(cert))).json()
    assert data["status"] == "revoked" and data["revocation_reason"] == "superseded"

    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = issue_cert(env.ca, device_key, env.certs[1].serial_number, signing_key=other_key)
    data = await (await env.client.post("/api/v1/verify", data=pem(forged))).json()
    assert data["status"] == "unknown-issuer" and data["integration"] is None

    assert (await env.client.post("/api/v1/verify", data=b"not a certificate")).status == 400
    assert (await env.client.post("/api/v1/verify", data=b"x" * (70 * 1024))).status == 413


async def test_revoke_rules(env: Env) -> None:
    serial = format(env.certs[0].serial_number, "x")
    assert not await env.service.revoke("abcdef0123", "keyCompromise")  # unknown serial
    assert await env.service.revoke(serial, "unspecified")
    assert not await env.service.revoke(serial, "keyCompromise")  # already revoked
    record = await env.store.get_certificate(serial)
    assert record is not None and record.revocation_reason == "unspecified"
    crl = await env.crl()
    entry = crl.get_revoked_certificate_by_serial_number(env.certs[0].serial_number)
    assert entry is not None and len(entry.extensions) == 0  # RFC 5280 §5.3.1: no "unspecified"
