"""Challenge validators end to end: real SCEP clients, a real ``scep-ca serve``, and the Intune
stand-in and webhook receiver of tests/validator_standins.py on loopback (issue 13).

The stand-ins run in a thread of the test process with their own event loop, so the tests read
the calls they recorded directly. The server runs one worker (``server.workers: 1``): the Intune
tokens and the discovered endpoint are cached per process and per integration, so with one
process and a fresh integration per test the stand-in sees an exact, ordered sequence of calls.

What the real clients can and cannot send:

* micromdm ``scepclient`` 2.1.0 carries a 4,000-character challenge: it writes it into the CSR
  as one PrintableString of 4,000 bytes (PKCS#9's ub-challenge-password of 255 is not enforced
  by it, nor by us: Intune's challenges are this long). It has no option for a SAN.
* certmonger 0.79.17 (``getcert request -L``) is a GET-only client: its PKIOperation goes in the
  query string: with a 4 KB challenge a request line of about 9.6 KB, above aiohttp's default
  limit of 8190 bytes (server.max_line_bytes defaults to 96 KiB for this). Its SAN options are Kerberos
  principal, DNS, e-mail and IP (``-K -D -E -A``), no URI.
* The Intune URI SAN therefore comes from the in-repo client (scep_ca.protocol.client) over real
  HTTP to the real server.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import AttributeOID, NameOID

from scep_ca.protocol.client import Reply, build_request, open_reply, self_signed_signer
from scep_ca.protocol.enums import PKIStatus
from scep_ca.services.validators.settings import INTUNE_SID_URI_PREFIX
from tests.e2e import clients
from tests.e2e.clients import Certmonger, run_scepclient
from tests.e2e.conftest import DEFAULT_SUBJECT, SCEP_CA
from tests.e2e.test_revocation_real_clients import ocsp_status
from tests.validator_standins import CLIENT_ID, CLIENT_SECRET, TENANT, IntuneStandIn, StandInTls, WebhookReceiver

if TYPE_CHECKING:
    from tests.e2e.conftest import ScepCaServer, ScepCaServerFactory

T = TypeVar("T")
GRAPH_TOKEN = "token:https://graph.microsoft.com/.default"
INTUNE_TOKEN = "token:https://api.manage.microsoft.com//.default"
FIRST_CALLS = [GRAPH_TOKEN, "discovery", INTUNE_TOKEN]
SID_URI = f"{INTUNE_SID_URI_PREFIX}S-1-5-21-1004336348-1177238915-682003330-512"
SCEPCLIENT_BAD_REQUEST = "PKCSReq (19) request failed, failInfo: badRequest (2)"
# certmonger 0.79.17's scep-submit sentence for failInfo badRequest (it never shows failInfoText).
CERTMONGER_BAD_REQUEST = "Transaction either is not permitted or is not supported by server."


def intune_blob() -> str:
    """An opaque base64 blob of 4,000 characters, the size of Intune's signed, encrypted challenge."""
    return base64.b64encode(os.urandom(3000)).decode("ascii")


# --------------------------------------------------------------------------------------------
# The stand-ins on loopback, in a thread with their own event loop
# --------------------------------------------------------------------------------------------


class LoopThread:
    """An event loop of its own in a daemon thread: the stand-ins and the relay run on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="standins", daemon=True)
        self._cleanups: list[Callable[[], Coroutine[Any, Any, None]]] = []

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def serve_app(self, app: web.Application, tls: ssl.SSLContext) -> str:
        """Serve ``app`` over https on a socket bound here (no port race); returns its base URL."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((clients.LOOPBACK, 0))
        runner = web.AppRunner(app, access_log=None)

        async def start() -> None:
            await runner.setup()
            await web.SockSite(runner, sock, ssl_context=tls).start()

        self.run(start())
        self._cleanups.append(runner.cleanup)
        return f"https://{clients.LOOPBACK}:{sock.getsockname()[1]}"

    def relay(self, target_port: int) -> RequestLineRelay:
        relay = RequestLineRelay(target_port)
        self.run(relay.start())
        self._cleanups.append(relay.stop)
        return relay

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for cleanup in reversed(self._cleanups):
            self.run(cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        self.loop.close()


class RequestLineRelay:
    """A loopback TCP relay to the server that records the HTTP request line each connection
    opens with, to see how a client sent its request (method, length), byte for byte."""

    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._server: asyncio.Server | None = None
        self.request_lines: list[bytes] = []
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, clients.LOOPBACK, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(clients.LOOPBACK, self._target_port)
        head = b""
        try:
            while b"\r\n" not in head and (data := await reader.read(65536)):
                head += data
                up_writer.write(data)
            self.request_lines.append(head.split(b"\r\n", 1)[0])
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True)
        finally:
            writer.transport.abort()
            up_writer.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()


def intune_section(intune: IntuneStandIn, tls: StandInTls, timeout_seconds: float) -> dict[str, object]:
    """The server's ``intune`` settings for the stand-in: its URLs, its CA trusted."""
    return {
        "login_url": f"{intune.base}/",
        "graph_url": f"{intune.base}/",
        "timeout_seconds": timeout_seconds,
        "ca_file": str(tls.ca_file),
    }


@dataclass
class Rig:
    server: ScepCaServer
    intune: IntuneStandIn
    webhook: WebhookReceiver
    webhook_url: str
    loop: LoopThread
    # SHA-256 of the webhook receiver's certificate, for --webhook-pin-sha256.
    webhook_pin: str


@pytest.fixture(scope="module")
def rig_base(
    scep_ca_module_server_factory: ScepCaServerFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Rig]:
    intune = IntuneStandIn()
    # The HMAC key is set per test from what `integration create --validator webhook` printed.
    webhook = WebhookReceiver(secret=b"")
    # Both stand-ins serve https with a certificate of a test CA: Intune's is trusted through
    # intune.ca_file, the webhook receiver's is pinned by the integration.
    tls = StandInTls.create(tmp_path_factory.mktemp("standin-tls"))
    with LoopThread() as loop:
        intune.base = loop.serve_app(intune.app(), tls.server_context())
        webhook_url = loop.serve_app(webhook.app(), tls.server_context())
        server = scep_ca_module_server_factory(
            server={"workers": 1},
            intune=intune_section(intune, tls, timeout_seconds=10),
            webhook={"timeout_seconds": 10},
            # DEBUG, so that the "nothing secret in the log" checks see everything the server says.
            log={"level": "DEBUG"},
        )
        yield Rig(server, intune, webhook, f"{webhook_url}/scepchallenge", loop, tls.pin)
        server.stop()


@pytest.fixture
def rig(rig_base: Rig) -> Rig:
    """The module's rig with the stand-ins back to their defaults and their call logs empty."""
    defaults = IntuneStandIn()
    rig_base.intune.validate_code = defaults.validate_code
    rig_base.intune.success_code = defaults.success_code
    rig_base.intune.success_status = defaults.success_status
    rig_base.intune.calls.clear()
    rig_base.webhook.allow = True
    rig_base.webhook.seen.clear()
    rig_base.webhook.bad_signatures = 0
    return rig_base


def create_integration(
    server: ScepCaServer, name: str, *args: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """``scep-ca integration create NAME --subject DEFAULT ARGS --json`` with extra environment
    (``ScepCaServer.cli`` strips every SCEP_CA_* variable, the Intune secret's among them)."""
    argv = [str(SCEP_CA), "--config", str(server.config_path), "--data-dir", str(server.data_dir)]
    argv += ["integration", "create", name, "--subject", DEFAULT_SUBJECT, *args, "--json"]
    base_env = {k: v for k, v in clients.clean_env().items() if not k.startswith("SCEP_CA_")}
    result = subprocess.run(
        argv, env={**base_env, **(env or {})}, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    created: dict[str, Any] = json.loads(result.stdout)
    return created


def create_intune(server: ScepCaServer, name: str) -> dict[str, Any]:
    created = create_integration(
        server,
        name,
        "--validator",
        "intune",
        "--intune-tenant",
        TENANT,
        "--intune-client-id",
        CLIENT_ID,
        env={"SCEP_CA_INTUNE_CLIENT_SECRET": CLIENT_SECRET},
    )
    assert created["validator"] == "intune" and CLIENT_SECRET not in json.dumps(created), created
    return created


def assert_nothing_secret_logged(server: ScepCaServer, mark: int, *secrets: str) -> None:
    log = server.log(mark)
    for secret in (CLIENT_SECRET, "tok-", "Bearer", *secrets):
        assert secret not in log, f"{secret[:40]!r} in the server log:\n{log[-3000:]}"


def scepclient_tid(output: str) -> str:
    """The transactionID scepclient says it sent (its -debug line ``creating SCEP CSR request``)."""
    match = re.search(r'msg="creating SCEP CSR request" transaction_id="([^"]+)"', output)
    assert match is not None, output
    return match.group(1)


def challenge_of(csr: x509.CertificateSigningRequest) -> str:
    value = csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD).value
    return value.decode() if isinstance(value, bytes) else value


def intune_call_body(rig: Rig, name: str) -> dict[str, Any]:
    (call,) = [c for c in rig.intune.calls if c.name == name]
    key = "request" if name == "validateRequest" else "notification"
    body = call.body[key]
    assert isinstance(body, dict)
    return body


def assert_notified(rig: Rig, cert: x509.Certificate, tid: str, csr_der: bytes) -> None:
    """successNotification names the certificate the client holds: SHA-1 thumbprint, serial, expiry."""
    note = intune_call_body(rig, "successNotification")
    assert note["transactionId"] == tid
    assert note["certificateRequest"] == base64.b64encode(csr_der).decode("ascii")
    assert note["certificateThumbprint"] == cert.fingerprint(hashes.SHA1()).hex()
    assert note["certificateSerialNumber"] == format(cert.serial_number, "x")
    assert note["certificateExpirationDateUtc"] == cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert note["issuingCertificateAuthority"] == cert.issuer.rfc4514_string()


def listed(server: ScepCaServer, integration_id: str) -> list[tuple[str, str, str | None]]:
    return [(c["serial"], c["status"], c["revocation_reason"]) for c in server.certificates(integration_id)]


# --------------------------------------------------------------------------------------------
# Intune
# --------------------------------------------------------------------------------------------


def test_scepclient_enrolls_with_a_4kb_intune_challenge(rig: Rig, tmp_path: Path) -> None:
    server = rig.server
    integration = create_intune(server, "intune-scepclient")
    blob = intune_blob()
    mark = server.log_mark()
    result = run_scepclient(integration["scep_url"], blob, tmp_path, subject_cn="device-1", timeout=60)
    assert result.issued, result.describe()
    cert = x509.load_pem_x509_certificate(result.cert_path.read_bytes())
    # scepclient leaves the CSR it sent in its working directory.
    csr = x509.load_pem_x509_csr((tmp_path / "csr.pem").read_bytes())
    csr_der = csr.public_bytes(serialization.Encoding.DER)
    assert challenge_of(csr) == blob
    tid = scepclient_tid(result.output)

    assert rig.intune.names() == [*FIRST_CALLS, "validateRequest", "successNotification"]
    assert intune_call_body(rig, "validateRequest") == {
        "transactionId": tid,
        "certificateRequest": base64.b64encode(csr_der).decode("ascii"),
        "callerInfo": "scep-ca",
    }
    assert_notified(rig, cert, tid, csr_der)
    assert listed(server, integration["id"]) == [(format(cert.serial_number, "x"), "valid", None)]
    assert_nothing_secret_logged(server, mark, blob)


def test_certmonger_get_only_enrolls_with_a_4kb_intune_challenge(
    rig: Rig, certmonger: Certmonger, tmp_path: Path
) -> None:
    server = rig.server
    integration = create_intune(server, "intune-certmonger")
    # certmonger reaches the server through a relay that records each request line.
    relay = rig.loop.relay(server.port)
    scep_path = f"/scep/{integration['id']}"
    certmonger.add_scep_ca("scep-ca", f"http://{clients.LOOPBACK}:{relay.port}{scep_path}")
    blob = intune_blob()
    mark = server.log_mark()
    cert_path = tmp_path / "device-2.pem"
    result = certmonger.request(
        "scep-ca", tmp_path / "device-2.key", cert_path, blob, "C=US,O=scep-client,OU=MDM,CN=device-2", 60
    )
    assert result.state == "MONITORING", f"{result.stdout}\n{certmonger.daemon_log()[-3000:]}"
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())

    # GET only, even though GetCACaps offers POSTPKIOperation: the whole pkiMessage in the query,
    # a request line longer than aiohttp's default limit of 8190 bytes.
    operations = [line for line in relay.request_lines if b"operation=PKIOperation" in line]
    assert len(operations) == 1, [line[:80] for line in relay.request_lines]
    (line,) = operations
    assert line.startswith(f"GET {scep_path}?operation=PKIOperation&message=".encode()), line[:120]
    assert line.endswith(b" HTTP/1.1")
    assert len(line) > 8190, len(line)

    assert rig.intune.names() == [*FIRST_CALLS, "validateRequest", "successNotification"]
    validate = intune_call_body(rig, "validateRequest")
    csr_der = base64.b64decode(validate["certificateRequest"])
    csr = x509.load_der_x509_csr(csr_der)
    assert challenge_of(csr) == blob
    assert csr.public_key() == cert.public_key()
    tid = validate["transactionId"]
    assert isinstance(tid, str) and tid
    assert_notified(rig, cert, tid, csr_der)
    assert listed(server, integration["id"]) == [(format(cert.serial_number, "x"), "valid", None)]
    assert_nothing_secret_logged(server, mark, blob)


def post_pki_operation(url: str, der: bytes) -> bytes:
    request = urllib.request.Request(
        f"{url}?operation=PKIOperation",
        data=der,
        headers={"Content-Type": "application/x-pki-message"},
        method="POST",
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=60) as resp:
        assert resp.status == 200
        body: bytes = resp.read()
        return body


def intune_device_csr(key: rsa.RSAPrivateKey, blob: str) -> bytes:
    """A device CSR as Intune's profiles make it: CN, the SID URI SAN, the challenge blob."""
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "device-3"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "MDM"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "scep-client"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        ]
    )
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(SID_URI)]), critical=False)
        .add_attribute(AttributeOID.CHALLENGE_PASSWORD, blob.encode())
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )


def enroll_device_csr(server: ScepCaServer, url: str, blob: str, tid: str) -> tuple[Reply, bytes]:
    """A device CSR (``intune_device_csr``) sent as a PKCSReq by the in-repo client over HTTP."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = intune_device_csr(key, blob)
    signer = self_signed_signer(key)
    recipient = x509.load_pem_x509_certificate(server.encryption_pem.read_bytes())
    request = build_request(csr, signer_cert=signer, signer_key=key, recipient=recipient, transaction_id=tid)
    return open_reply(post_pki_operation(url, request.der), signer, key), csr


def test_intune_uri_san_reaches_the_certificate(rig: Rig) -> None:
    server = rig.server
    integration = create_intune(server, "intune-san")
    reply, csr_der = enroll_device_csr(server, integration["scep_url"], intune_blob(), "TID-SAN-1")
    assert reply.status is PKIStatus.SUCCESS, reply.fail_text
    cert = reply.certificates[0]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [SID_URI]
    assert list(san) == [x509.UniformResourceIdentifier(SID_URI)]
    assert rig.intune.names() == [*FIRST_CALLS, "validateRequest", "successNotification"]
    assert intune_call_body(rig, "validateRequest")["certificateRequest"] == base64.b64encode(csr_der).decode()
    assert_notified(rig, cert, "TID-SAN-1", csr_der)


def test_challenge_expired_is_bad_request_and_stores_nothing(rig: Rig, tmp_path: Path) -> None:
    server = rig.server
    rig.intune.validate_code = "ChallengeExpired"
    integration = create_intune(server, "intune-expired")
    blob = intune_blob()
    mark = server.log_mark()
    result = run_scepclient(integration["scep_url"], blob, tmp_path, subject_cn="device-4", timeout=60)
    assert result.returncode == 1 and not result.issued, result.describe()
    assert SCEPCLIENT_BAD_REQUEST in result.command.stdout, result.describe()
    assert not result.cert_path.exists()
    assert rig.intune.names() == [*FIRST_CALLS, "validateRequest"]
    assert server.certificates(integration["id"]) == []
    server.wait_log(r"intune code=ChallengeExpired", since=mark, timeout=10)
    assert_nothing_secret_logged(server, mark, blob)


def test_challenge_expired_is_ca_rejected_for_certmonger(rig: Rig, certmonger: Certmonger, tmp_path: Path) -> None:
    server = rig.server
    rig.intune.validate_code = "ChallengeExpired"
    integration = create_intune(server, "intune-expired-cm")
    certmonger.add_scep_ca("scep-ca", integration["scep_url"])
    cert_path = tmp_path / "device-5.pem"
    result = certmonger.request(
        "scep-ca", tmp_path / "device-5.key", cert_path, intune_blob(), "C=US,O=scep-client,OU=MDM,CN=device-5", 60
    )
    assert result.state == "CA_REJECTED", result.stdout
    assert result.ca_error == CERTMONGER_BAD_REQUEST, result.stdout
    assert not cert_path.exists()
    assert rig.intune.names() == [*FIRST_CALLS, "validateRequest"]
    assert server.certificates(integration["id"]) == []


def test_failed_success_notification_leaves_no_valid_certificate(rig: Rig, tmp_path: Path) -> None:
    server = rig.server
    rig.intune.success_status, rig.intune.success_code = 500, "InternalError"
    integration = create_intune(server, "intune-notify-fails")
    mark = server.log_mark()
    result = run_scepclient(integration["scep_url"], intune_blob(), tmp_path, subject_cn="device-6", timeout=60)
    assert result.returncode == 1 and not result.issued, result.describe()
    assert SCEPCLIENT_BAD_REQUEST in result.command.stdout, result.describe()
    assert not result.cert_path.exists()
    # One retry of the 5xx answer, then the certificate is revoked before anything is returned.
    assert rig.intune.names() == [*FIRST_CALLS, "validateRequest", "successNotification", "successNotification"]
    ((serial, status, reason),) = listed(server, integration["id"])
    assert (status, reason) == ("revoked", "cessationOfOperation")
    notified = rig.intune.calls[-1].body["notification"]
    assert isinstance(notified, dict) and notified["certificateSerialNumber"] == serial
    # The certificate the device never got is revoked for relying parties too: OCSP says so.
    shown = json.loads(server.cli("cert", "show", serial, "--hex", "--pem", "--json").stdout)
    cert_path = tmp_path / "undelivered.pem"
    cert_path.write_text(shown["pem"])
    ocsp = ocsp_status(server, cert_path)
    assert (ocsp.status, ocsp.reason) == ("revoked", "cessationOfOperation"), ocsp.result.describe()
    assert_nothing_secret_logged(server, mark)


# --------------------------------------------------------------------------------------------
# webhook
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("allow", [True, False], ids=["allow", "deny"])
def test_webhook_with_scepclient(rig: Rig, tmp_path: Path, allow: bool) -> None:
    server = rig.server
    rig.webhook.allow = allow
    integration = create_integration(
        server,
        f"webhook-{'allow' if allow else 'deny'}",
        "--validator",
        "webhook",
        "--webhook-url",
        rig.webhook_url,
        "--webhook-pin-sha256",
        rig.webhook_pin,
    )
    secret = integration["webhook_secret"]
    rig.webhook.secret = base64.b64decode(secret)
    mark = server.log_mark()
    challenge = "hook-" + hashlib.sha256(os.urandom(16)).hexdigest()
    result = run_scepclient(integration["scep_url"], challenge, tmp_path, subject_cn="router-1", timeout=60)

    assert rig.webhook.bad_signatures == 0
    (seen,) = rig.webhook.seen
    assert seen["webhook_id"] == integration["id"]
    assert seen["scepChallenge"] == challenge
    assert seen["scepTransactionID"] == scepclient_tid(result.output)
    request = seen["x509CertificateRequest"]
    assert isinstance(request, dict)
    csr = x509.load_pem_x509_csr((tmp_path / "csr.pem").read_bytes())
    assert base64.b64decode(str(request["raw"])) == csr.public_bytes(serialization.Encoding.DER)
    if allow:
        assert result.issued, result.describe()
        cert = x509.load_pem_x509_certificate(result.cert_path.read_bytes())
        assert listed(server, integration["id"]) == [(format(cert.serial_number, "x"), "valid", None)]
    else:
        assert result.returncode == 1 and not result.issued, result.describe()
        assert SCEPCLIENT_BAD_REQUEST in result.command.stdout, result.describe()
        assert server.certificates(integration["id"]) == []
    assert_nothing_secret_logged(server, mark, secret)


# --------------------------------------------------------------------------------------------
# A worker killed while Intune's successNotification is in flight (issue 17 item 6)
# --------------------------------------------------------------------------------------------


def test_a_server_killed_before_intune_confirmed_leaves_no_valid_certificate(
    scep_ca_server_factory: ScepCaServerFactory, tmp_path: Path
) -> None:
    # The notification hangs; the server is killed (SIGKILL, the whole process group) after
    # recording the certificate and before Intune answered. intune.timeout_seconds 2: a hold
    # older than 4 * (2 * 2 + 1) = 20 s is a confirmation that will never come.
    # The notification is answered after 20 s, long after the kill (and before the stand-in stops).
    intune = IntuneStandIn(success_delay_seconds=20)
    tls = StandInTls.create(tmp_path / "tls")
    with LoopThread() as loop:
        intune.base = loop.serve_app(intune.app(), tls.server_context())
        server = scep_ca_server_factory(
            server={"workers": 1},
            intune=intune_section(intune, tls, timeout_seconds=2),
            validators={"queue_seconds": 1},
        )
        integration = create_intune(server, "intune-killed")
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        csr = intune_device_csr(key, intune_blob())
        signer = self_signed_signer(key)
        recipient = x509.load_pem_x509_certificate(server.encryption_pem.read_bytes())

        def send() -> Reply:
            request = build_request(csr, signer_cert=signer, signer_key=key, recipient=recipient, transaction_id="T-K")
            return open_reply(post_pki_operation(integration["scep_url"], request.der), signer, key)

        def quietly() -> None:
            # The connection dies with the server: no answer is the expected outcome.
            with contextlib.suppress(OSError):
                send()

        first = threading.Thread(target=quietly)
        first.start()
        deadline = time.monotonic() + 60
        while "successNotification" not in intune.names():
            assert time.monotonic() < deadline, server.log()[-3000:]
            time.sleep(0.05)
        os.killpg(server.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        first.join(timeout=30)
        server.stop()

        # Recorded in the issuing transaction, on hold: not a valid certificate.
        ((serial, status, reason),) = listed(server, integration["id"])
        assert (status, reason) == ("revoked", "certificateHold")
        server.start()
        # A resend while the confirmation could still come: PENDING, nothing delivered.
        again = send()
        assert (again.status, again.certificates) == (PKIStatus.PENDING, [])
        shown = json.loads(server.cli("cert", "show", serial, "--hex", "--pem", "--json").stdout)
        cert_path = tmp_path / "held.pem"
        cert_path.write_text(shown["pem"])
        ocsp = ocsp_status(server, cert_path)
        assert (ocsp.status, ocsp.reason) == ("revoked", "certificateHold"), ocsp.result.describe()
        # Past the bound, the next start's recovery revokes it before anyone asks ...
        time.sleep(max(0.0, 21 - (time.monotonic() - killed_at)))
        server.stop()
        mark = server.log_mark()
        server.start()
        assert listed(server, integration["id"]) == [(serial, "revoked", "cessationOfOperation")]
        server.wait_log(r"revoked 1 certificate\(s\) left on hold unconfirmed by a stopped worker", since=mark)
        # ... and the resend is refused.
        final = send()
        assert (final.status, final.certificates) == (PKIStatus.FAILURE, [])
        assert final.fail_text == "the certificate was not confirmed by the integration's validator"
        assert listed(server, integration["id"]) == [(serial, "revoked", "cessationOfOperation")]
        ocsp = ocsp_status(server, cert_path)
        assert (ocsp.status, ocsp.reason) == ("revoked", "cessationOfOperation"), ocsp.result.describe()
