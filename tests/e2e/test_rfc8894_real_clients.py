"""The rest of RFC 8894 end to end: renewal, manual approval, RA-signed CertReps and CA rollover,
with micromdm's ``scepclient`` 2.1.0 and certmonger 0.79.17 against a real ``scep-ca serve``.

What the clients really send is recorded by :class:`RecordingProxy`, a loopback HTTP proxy that
the clients are pointed at and that forwards every request to the server unchanged; the tests
decode the recorded pkiMessages and CertReps with asn1crypto and check signatures with
``openssl cms -verify``.

Findings about the clients, asserted below:

* certmonger has no RenewalReq. Its SCEP code knows message types 19-22 only (its ``scep.h``).
  For ``getcert rekey`` the daemon prepares two PKCSReqs for the new key: one signed with the
  previously issued certificate and its key, one signed with a self-signed certificate for the
  new key; when GetCACaps lists ``Renewal``, scep-submit sends the first (the renewal of the
  pre-RFC SCEP drafts). So a certmonger renewal is a PKCSReq (19) signed by the old certificate,
  and it carries the challenge password stored with the request (used by then). scep-ca answers
  such a PKCSReq as a renewal when its signer is exactly a certificate it issued (type 17).
* certmonger does not poll with GetCertInitial. While a request is pending it re-sends its
  PKCSReq with the same transactionID and key (the daemon asks scep-submit to POLL, the helper
  has no stored messages and exits 16, the daemon regenerates them and submits again), and only
  on its own schedule: 604800 s after a PENDING answer. ``getcert refresh`` makes it poll now.
  The GetCertInitial (20) it prepares (``scep_gic``) is sent here with ``scep-submit -g``, the
  helper's own polling mode.
* scepclient renews with a RenewalReq (17) signed by its certificate, for the same key and CSR,
  and its transactionID is derived from the public key, so it is the transactionID of the
  PKCSReq that enrolled that key (see :func:`test_scepclient_renews_with_its_key_and_certificate`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import pytest
from asn1crypto import cms, core
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from scep_ca.protocol.dn import parse_dn
from scep_ca.protocol.enums import FailInfo, PKIStatus
from tests.e2e import pyscep_rule
from tests.e2e.clients import (
    LOOPBACK,
    SCEP_SUBMIT,
    Certmonger,
    CommandResult,
    http_get,
    openssl_verify,
    parse_getcert_list,
    require_binary,
    run_command,
    run_scepclient,
)
from tests.e2e.conftest import DEFAULT_SUBJECT
from tests.e2e.test_revocation_real_clients import (
    assert_crl_accepts,
    assert_crl_rejects,
    crl_reason,
    fetch_crl,
    ocsp_status,
    verify_api,
)

if TYPE_CHECKING:
    from tests.e2e.conftest import ScepCaServer, ScepCaServerFactory

OPENSSL = "openssl"

# SCEP signed attributes (RFC 8894 section 3.2.1) and failInfoText (id-scep-failInfoText).
MESSAGE_TYPE = "2.16.840.1.113733.1.9.2"
PKI_STATUS = "2.16.840.1.113733.1.9.3"
FAIL_INFO = "2.16.840.1.113733.1.9.4"
TRANSACTION_ID = "2.16.840.1.113733.1.9.7"
FAIL_INFO_TEXT = "1.3.6.1.5.5.7.24.1"
RENEWAL_REQ, PKCS_REQ, CERT_POLL = "17", "19", "20"
SUCCESS, FAILURE, PENDING = "0", "2", "3"
BAD_REQUEST = "2"

# certmonger 0.79.17's fixed sentence for failInfo badRequest; it never shows failInfoText.
CERTMONGER_BAD_REQUEST = "Transaction either is not permitted or is not supported by server."
CHALLENGE_REFUSED = "the challenge password is invalid, expired or used"
REJECTED_TEXT = "the request was rejected by the CA operator"
IDENTITY_CHANGED = "a renewal must keep the certificate's subject and subjectAltName"
# certmonger's waiting time after a PENDING answer (its CM_DELAY_CA_POLL), from its debug log.
CERTMONGER_POLL_DELAY = "Will revisit Request1('{id}') in 604800 seconds."

# Renewal needs the certificate inside scep.renewal_days of its expiry: a 365-day certificate
# is inside a 400-day window from the moment it is issued.
RENEWAL_CONFIG = {"scep": {"renewal_days": 400}}
VALIDITY_DAYS = 365

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --------------------------------------------------------------------------------------------
# A recording proxy between the clients and the server
# --------------------------------------------------------------------------------------------


def _attributes(der: bytes) -> tuple[dict[str, Any], cms.SignerInfo, Any]:
    """The one signer's signed attributes (dotted OID -> native value), the SignerInfo and the
    SignedData of a pkiMessage or CertRep."""
    signed = cms.ContentInfo.load(der)["content"]
    (signer,) = signed["signer_infos"]
    attrs: dict[str, Any] = {}
    for attr in signer["signed_attrs"]:
        (value,) = attr["values"]
        attrs[attr["type"].dotted] = core.Asn1Value.load(value.dump()).native
    return attrs, signer, signed


@dataclass(frozen=True)
class PkiExchange:
    """One PKIOperation that passed the proxy: the client's pkiMessage and the server's CertRep."""

    method: str
    request: bytes
    status: int
    content_type: str
    reply: bytes

    @property
    def request_attrs(self) -> dict[str, Any]:
        return _attributes(self.request)[0]

    @property
    def reply_attrs(self) -> dict[str, Any]:
        return _attributes(self.reply)[0]

    @property
    def message_type(self) -> str:
        return str(self.request_attrs[MESSAGE_TYPE])

    @property
    def transaction_id(self) -> str:
        return str(self.request_attrs[TRANSACTION_ID])

    @property
    def pki_status(self) -> str:
        return str(self.reply_attrs[PKI_STATUS])

    @property
    def signer_serial(self) -> int:
        """The serial in the request's SignerInfo sid (issuerAndSerialNumber)."""
        serial: int = _attributes(self.request)[1]["sid"].chosen["serial_number"].native
        return serial

    def recipient_serials(self) -> set[int]:
        """Serials of the certificates the request's pkcsPKIEnvelope is encrypted to."""
        signed = cms.ContentInfo.load(self.request)["content"]
        inner = signed["encap_content_info"]["content"].native
        enveloped = cms.ContentInfo.load(inner)["content"]
        return {ri.chosen["rid"].chosen["serial_number"].native for ri in enveloped["recipient_infos"]}


@dataclass
class RecordingProxy:
    """A loopback HTTP proxy that forwards every request to ``upstream`` (which a test may change
    after a server restart) and records each PKIOperation with its answer."""

    upstream: str
    exchanges: list[PkiExchange] = field(default_factory=list)
    port: int = 0
    _server: ThreadingHTTPServer | None = field(default=None, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)

    def scep_url(self, integration_id: str) -> str:
        return f"http://{LOOPBACK}:{self.port}/scep/{integration_id}"

    def start(self) -> Self:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = urllib.request.Request(
                    proxy.upstream + self.path, data=body if method == "POST" else None, method=method
                )
                for name in ("Content-Type", "User-Agent"):
                    if name in self.headers:
                        request.add_header(name, self.headers[name])
                try:
                    with _OPENER.open(request, timeout=30) as resp:
                        status, ctype, reply = resp.status, resp.headers.get("Content-Type", ""), resp.read()
                except urllib.error.HTTPError as exc:
                    status, ctype, reply = exc.code, exc.headers.get("Content-Type", ""), exc.read()
                query = urllib.parse.urlsplit(self.path).query
                params = {k.lower(): v for k, _, v in (kv.partition("=") for kv in query.split("&"))}
                if params.get("operation") == "PKIOperation":
                    message = body or base64.b64decode(urllib.parse.unquote(params["message"]))
                    proxy.exchanges.append(PkiExchange(method, message, status, ctype, reply))
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def do_GET(self) -> None:
                self._forward("GET")

            def do_POST(self) -> None:
                self._forward("POST")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="scep-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def cms_signer(signed_der: bytes, workdir: Path, ca_pem: Path | None) -> x509.Certificate:
    """``openssl cms -verify`` of a SignedData: with ``ca_pem`` the signer must chain to it, without
    (``-noverify``) only the signature is checked. Returns the signer certificate (``-signer``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    src, signer = workdir / "signed.der", workdir / "signer.pem"
    src.write_bytes(signed_der)
    trust = ["-CAfile", str(ca_pem)] if ca_pem is not None else ["-noverify"]
    result = run_command(
        [
            require_binary(OPENSSL),
            "cms",
            "-verify",
            "-inform",
            "DER",
            "-in",
            str(src),
            *trust,
            "-signer",
            str(signer),
            "-binary",
            "-out",
            str(workdir / "content.der"),
        ],
        timeout=10,
    )
    assert result.ok and "CMS Verification successful" in result.stderr, result.describe()
    return load_cert(signer)


def assert_verifies(cert_path: Path, ca_pem: Path) -> None:
    result = openssl_verify(cert_path, ca_pem)
    assert result.ok and result.stdout.strip() == f"{cert_path}: OK", result.describe()


def assert_does_not_verify(cert_path: Path, ca_pem: Path) -> None:
    result = openssl_verify(cert_path, ca_pem)
    assert result.returncode == 2 and "unable to get local issuer certificate" in result.stderr, result.describe()


def cert_show(server: ScepCaServer, serial: int) -> dict[str, Any]:
    shown: dict[str, Any] = json.loads(server.cli("cert", "show", format(serial, "x"), "--json").stdout)
    return shown


def wait_status(certmonger: Certmonger, cert_path: Path, states: set[str], timeout: float = 20.0) -> dict[str, str]:
    """Poll ``getcert list -f CERT`` until its status is one of ``states``."""
    deadline = time.monotonic() + timeout
    while True:
        info = parse_getcert_list(certmonger.list(cert_path).stdout)
        if info.get("status") in states:
            return info
        if time.monotonic() >= deadline:
            raise AssertionError(f"certmonger status {info.get('status')!r}, not {states}:\n{info}")
        time.sleep(0.05)


def create_flagged_integration(server: ScepCaServer, name: str, *flags: str) -> dict[str, Any]:
    """``integration create NAME --subject ... FLAGS --json`` (flags without values, which
    ``ScepCaServer.create_integration`` cannot pass)."""
    created: dict[str, Any] = json.loads(
        server.cli("integration", "create", name, "--subject", DEFAULT_SUBJECT, *flags, "--json").stdout
    )
    return created


def scep_submit_poll(url: str, gic_pem: Path, server: ScepCaServer) -> CommandResult:
    """certmonger's helper in its polling mode (``-g``) with a stored GetCertInitial message."""
    return run_command(
        [
            require_binary(SCEP_SUBMIT),
            "-u",
            url,
            "-g",
            "-r",
            str(server.ra_pem),
            "-N",
            str(server.ca_pem),
            "-v",
            str(gic_pem),
        ],
        timeout=20,
    )


def pem_message_der(pem_text: str) -> bytes:
    body = "".join(line for line in pem_text.strip().splitlines() if not line.startswith("-----"))
    return base64.b64decode(body)


def dn(cn: str) -> str:
    """certmonger's -N for the integration subject (least specific RDN first)."""
    return f"C=US,O=scep-client,OU=MDM,CN={cn}"


@pytest.fixture(scope="module")
def renewal_server(scep_ca_module_server_factory: ScepCaServerFactory) -> ScepCaServer:
    """A server whose renewal window (400 days) is longer than the certificates (365 days)."""
    return scep_ca_module_server_factory(**RENEWAL_CONFIG)


# --------------------------------------------------------------------------------------------
# Renewal
# --------------------------------------------------------------------------------------------


def test_certmonger_rekey_is_a_pkcsreq_signed_by_its_certificate(
    renewal_server: ScepCaServer, certmonger: Certmonger, tmp_path: Path
) -> None:
    """``getcert rekey``: certmonger sends PKCSReq (19), never RenewalReq (17), and scep-ca renews.

    certmonger 0.79.17 has no RenewalReq. With ``Renewal`` in GetCACaps, scep-submit picks the
    PKCSReq for the new key that is signed by the previously issued certificate and its key
    (the renewal of the pre-RFC drafts) and carries the challenge password stored with the
    request, which is used by now. scep-ca answers a PKCSReq whose challenge does not work but
    whose signer is exactly a certificate it issued as a renewal, under the renewal rules
    (same integration, unrevoked, unexpired, inside ``scep.renewal_days``): so the unattended
    rekey gets a new certificate for the new key, recorded as message type 17.
    """
    server = renewal_server
    integration = server.create_integration("certmonger-rekey", validity_days=VALIDITY_DAYS)
    iid = integration["id"]
    cert_path, key_path = tmp_path / "dave.pem", tmp_path / "dave.key"
    with RecordingProxy(server.base_url) as proxy:
        certmonger.add_scep_ca("scep-ca", proxy.scep_url(iid))
        assert "Renewal" in certmonger.ca_record("scep-ca")["ca_capabilities"].split(",")
        first = certmonger.request(
            "scep-ca", key_path, cert_path, server.challenge(iid), dn("dave"), extra_args=["-I", "dave"]
        )
        assert first.state == "MONITORING", first.stdout
        old = load_cert(cert_path)
        assert cert_show(server, old.serial_number)["message_type"] == 19

        # The rekey as certmonger does it unattended: the stored challenge, already used.
        sent_before = len(proxy.exchanges)
        mark = server.log_mark()
        rekey = certmonger.getcert("rekey", "-s", "-i", "dave", "-w", "--wait-timeout", "20", timeout=40)
        assert rekey.ok, rekey.describe()
        info = wait_status(certmonger, cert_path, {"MONITORING"})
        assert "ca-error" not in info, info
        (sent,) = proxy.exchanges[sent_before:]

    new = load_cert(cert_path)
    assert_verifies(cert_path, server.ca_pem)
    assert new.serial_number != old.serial_number
    assert spki(new) != spki(old)  # a new key ...
    new_key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert new_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == spki(new)  # ... which certmonger stored in place of the old one
    assert new.subject == old.subject
    # What went over the wire: PKCSReq signed by the previously issued certificate, answered SUCCESS.
    assert sent.message_type == PKCS_REQ and sent.pki_status == SUCCESS
    assert cms_signer(sent.request, tmp_path / "sent", None) == old
    assert sent.signer_serial == old.serial_number
    shown = cert_show(server, new.serial_number)
    assert (shown["message_type"], shown["transaction_id"], shown["integration"]) == (17, sent.transaction_id, iid)
    server.wait_log(
        rf"issued serial={new.serial_number:x} integration={iid} tid={re.escape(sent.transaction_id)} type=17 ", mark
    )
    # The old certificate stays valid (the integration has no --revoke-superseded).
    assert cert_show(server, old.serial_number)["status"] == "valid"


def test_scepclient_renews_with_its_key_and_certificate(renewal_server: ScepCaServer, tmp_path: Path) -> None:
    """scepclient run again in its work dir (key.pem, csr.pem and cert.pem present) sends a
    RenewalReq (17) signed by its certificate, for the same key and CSR, with the transactionID of
    the PKCSReq that enrolled that key (scepclient derives it from the public key).

    scep-ca treats a request of another message type under a known transactionID as a new
    transaction (recorded under an ID derived from the request and the renewed certificate), so
    the renewal rules run and a new certificate is issued and recorded as type 17.
    """
    server = renewal_server
    integration = server.create_integration("scepclient-renew", validity_days=VALIDITY_DAYS)
    iid = integration["id"]
    first = run_scepclient(integration["scep_url"], server.challenge(iid), tmp_path, subject_cn="erin")
    assert first.issued, first.describe()
    old = load_cert(first.cert_path)
    (record,) = server.certificates(iid)
    assert record["message_type"] == 19
    csr = (tmp_path / "csr.pem").read_bytes()

    mark = server.log_mark()
    with RecordingProxy(server.base_url) as proxy:
        again = run_scepclient(proxy.scep_url(iid), None, tmp_path, subject_cn="erin")
    assert again.returncode == 0, again.describe()
    assert (tmp_path / "csr.pem").read_bytes() == csr  # same CSR, same key
    (sent,) = proxy.exchanges
    assert sent.method == "POST" and sent.message_type == RENEWAL_REQ
    assert cms_signer(sent.request, tmp_path / "sent", None) == old  # signed by its certificate
    assert sent.transaction_id == record["transaction_id"]  # the enrollment's transactionID
    assert sent.pki_status == SUCCESS
    renewed = load_cert(first.cert_path)
    assert_verifies(first.cert_path, server.ca_pem)
    assert spki(renewed) == spki(old)

    assert renewed.serial_number != old.serial_number
    assert cert_show(server, renewed.serial_number)["message_type"] == 17
    server.wait_log(rf"issued serial={renewed.serial_number:x} integration={iid} .* type=17 ", mark)


def test_scepclient_renewalreq_of_a_certmonger_certificate(
    renewal_server: ScepCaServer, certmonger: Certmonger, tmp_path: Path
) -> None:
    """A real RenewalReq (17) that scep-ca renews: scepclient with the key and certificate that
    certmonger enrolled (the key converted to the PKCS#1 PEM scepclient reads). Its transactionID
    (from the key) is new to the server, so this is a renewal: a new certificate for the same key,
    no challenge, recorded as type 17; the old certificate stays valid."""
    server = renewal_server
    integration = server.create_integration("cross-client-renew", validity_days=VALIDITY_DAYS)
    iid = integration["id"]
    certmonger.add_scep_ca("scep-ca", integration["scep_url"])
    cm_cert, cm_key = tmp_path / "cm.pem", tmp_path / "cm.key"
    enrolled = certmonger.request("scep-ca", cm_key, cm_cert, server.challenge(iid), dn("frank"))
    assert enrolled.state == "MONITORING", enrolled.stdout
    old = load_cert(cm_cert)

    device = tmp_path / "device"
    device.mkdir()
    converted = run_command(
        [require_binary(OPENSSL), "rsa", "-in", str(cm_key), "-traditional", "-out", str(device / "key.pem")],
        timeout=10,
    )
    assert converted.ok, converted.describe()
    (device / "cert.pem").write_bytes(cm_cert.read_bytes())
    mark = server.log_mark()
    with RecordingProxy(server.base_url) as proxy:
        renewal = run_scepclient(proxy.scep_url(iid), None, device, subject_cn="frank")
    assert renewal.issued, renewal.describe()
    (sent,) = proxy.exchanges
    assert sent.message_type == RENEWAL_REQ and sent.pki_status == SUCCESS
    assert cms_signer(sent.request, tmp_path / "sent", None) == old

    new = load_cert(renewal.cert_path)
    assert_verifies(renewal.cert_path, server.ca_pem)
    assert new.serial_number != old.serial_number and spki(new) == spki(old) and new.subject == old.subject
    shown = cert_show(server, new.serial_number)
    assert (shown["message_type"], shown["transaction_id"]) == (17, sent.transaction_id)
    server.wait_log(rf"issued serial={new.serial_number:x} integration={iid} tid=\S+ type=17 ", mark)
    assert cert_show(server, old.serial_number)["status"] == "valid"
    assert server.certificate_count(iid) == 2


def test_scepclient_renewalreq_for_another_cn_is_refused(renewal_server: ScepCaServer, tmp_path: Path) -> None:
    """A certificate renews its own identity only: scepclient, run again with the key and the
    certificate it enrolled for CN=grace but ``-cn mallory`` (its csr.pem removed, so it builds a
    new CSR), sends a RenewalReq (17) signed by grace's certificate for another subject. scep-ca
    answers FAILURE badRequest with a failInfoText, issues nothing and logs why."""
    server = renewal_server
    integration = server.create_integration("scepclient-other-cn", validity_days=VALIDITY_DAYS)
    iid = integration["id"]
    first = run_scepclient(integration["scep_url"], server.challenge(iid), tmp_path, subject_cn="grace")
    assert first.issued, first.describe()
    old_pem = first.cert_path.read_bytes()
    old = load_cert(first.cert_path)
    (tmp_path / "csr.pem").unlink()

    mark = server.log_mark()
    with RecordingProxy(server.base_url) as proxy:
        other = run_scepclient(proxy.scep_url(iid), None, tmp_path, subject_cn="mallory")
    assert not other.issued, other.describe()
    assert first.cert_path.read_bytes() == old_pem
    (sent,) = proxy.exchanges
    assert sent.message_type == RENEWAL_REQ
    assert cms_signer(sent.request, tmp_path / "sent", None) == old  # signed by grace's certificate
    assert (sent.pki_status, sent.reply_attrs[FAIL_INFO]) == (FAILURE, BAD_REQUEST)
    assert sent.reply_attrs[FAIL_INFO_TEXT] == IDENTITY_CHANGED
    server.wait_log(
        rf"scep failure integration={iid} .*type=17 .*failInfo=BAD_REQUEST detail=subject '[^']*CN=mallory", mark
    )
    assert server.certificate_count(iid) == 1
    assert cert_show(server, old.serial_number)["status"] == "valid"


# --------------------------------------------------------------------------------------------
# Manual approval: PENDING, then SUCCESS or FAILURE
# --------------------------------------------------------------------------------------------


def queue_certmonger_request(
    server: ScepCaServer, certmonger: Certmonger, proxy: RecordingProxy, iid: str, name: str, tmp_path: Path
) -> tuple[Path, str]:
    """certmonger asks, the server answers PENDING; returns the cert path and the request id
    (INTEGRATION:TRANSACTION) that ``request list`` shows."""
    cert_path = tmp_path / f"{name}.pem"
    mark = server.log_mark()
    pending = certmonger.request(
        "scep-ca", tmp_path / f"{name}.key", cert_path, server.challenge(iid), dn(name), extra_args=["-I", name]
    )
    assert pending.state == "CA_WORKING", pending.stdout
    assert not cert_path.exists()
    (sent,) = proxy.exchanges
    assert (sent.message_type, sent.pki_status) == (PKCS_REQ, PENDING)
    tid = certmonger.request_record(cert_path)["scep_tx"]
    assert sent.transaction_id == tid
    server.wait_log(rf"queued for approval integration={iid} tid={tid} ", mark)
    queued = json.loads(server.cli("request", "list", "--integration", iid, "--json").stdout)
    assert [(q["id"], q["status"]) for q in queued] == [(f"{iid}:{tid}", "pending")], queued
    assert server.certificate_count(iid) == 0
    # certmonger would only ask again in a week.
    assert CERTMONGER_POLL_DELAY.format(id=name) in certmonger.daemon_log()
    return cert_path, f"{iid}:{tid}"


def test_certmonger_pending_until_approved(
    scep_ca_server: ScepCaServer, certmonger: Certmonger, tmp_path: Path
) -> None:
    """An integration created with --require-approval answers PENDING (certmonger: CA_WORKING);
    certmonger's GetCertInitial gets PENDING from scep-submit too; ``request approve`` issues it;
    the next poll (certmonger re-sends its PKCSReq, same transactionID) gets the certificate."""
    server = scep_ca_server
    integration = create_flagged_integration(server, "approval", "--require-approval")
    iid = integration["id"]
    assert integration["require_approval"] is True
    with RecordingProxy(server.base_url) as proxy:
        certmonger.add_scep_ca("scep-ca", proxy.scep_url(iid))
        cert_path, request_id = queue_certmonger_request(server, certmonger, proxy, iid, "pat", tmp_path)
        tid = request_id.split(":", 1)[1]

        # certmonger's prepared GetCertInitial, sent by its helper's polling mode (-g).
        gic = tmp_path / "gic.pem"
        gic.write_text(certmonger.request_record(cert_path)["scep_gic"])
        gic_attrs = _attributes(pem_message_der(gic.read_text()))[0]
        assert (gic_attrs[MESSAGE_TYPE], gic_attrs[TRANSACTION_ID]) == (CERT_POLL, tid)
        poll = scep_submit_poll(integration["scep_url"], gic, server)
        assert poll.returncode == 1 and 'SCEP status is "pending"' in poll.stderr, poll.describe()

        approved = server.cli("request", "approve", request_id)
        issued = re.fullmatch(
            rf"approved {re.escape(request_id)}: issued ([0-9a-f]+) \(CN=pat,OU=MDM,O=scep-client,C=US\); "
            r"the client gets it on its next poll\n",
            approved.stdout,
        )
        assert issued is not None, approved.stdout
        serial = issued.group(1)
        assert json.loads(server.cli("request", "list", "--integration", iid, "--json").stdout) == []

        poll = scep_submit_poll(integration["scep_url"], gic, server)
        assert poll.returncode == 0 and poll.stdout.startswith("-----BEGIN PKCS7-----"), poll.describe()

        refresh = certmonger.getcert("refresh", "-s", "-i", "pat")
        assert refresh.ok, refresh.describe()
        wait_status(certmonger, cert_path, {"MONITORING"})
        resent = proxy.exchanges[1:]

    assert [(e.message_type, e.transaction_id, e.pki_status) for e in resent] == [(PKCS_REQ, tid, SUCCESS)]
    assert_verifies(cert_path, server.ca_pem)
    cert = load_cert(cert_path)
    assert format(cert.serial_number, "x") == serial
    shown = cert_show(server, cert.serial_number)
    assert (shown["transaction_id"], shown["message_type"], shown["integration"]) == (tid, 19, iid)
    assert server.certificate_count(iid) == 1


def test_certmonger_rejected_request_fails_with_the_reason(
    scep_ca_server: ScepCaServer, certmonger: Certmonger, tmp_path: Path
) -> None:
    """``request reject``: the next poll gets FAILURE badRequest with failInfoText "the request was
    rejected by the CA operator"; certmonger ends in CA_REJECTED (it shows its own sentence for
    badRequest, never the server's text, which is checked on the recorded CertRep)."""
    server = scep_ca_server
    integration = create_flagged_integration(server, "rejection", "--require-approval")
    iid = integration["id"]
    with RecordingProxy(server.base_url) as proxy:
        certmonger.add_scep_ca("scep-ca", proxy.scep_url(iid))
        cert_path, request_id = queue_certmonger_request(server, certmonger, proxy, iid, "rex", tmp_path)
        tid = request_id.split(":", 1)[1]

        rejected = server.cli("request", "reject", request_id)
        assert rejected.stdout == f"rejected {request_id}; the client's next poll gets FAILURE\n"
        mark = server.log_mark()
        refresh = certmonger.getcert("refresh", "-s", "-i", "rex")
        assert refresh.ok, refresh.describe()
        info = wait_status(certmonger, cert_path, {"CA_REJECTED"})
        (answer,) = proxy.exchanges[1:]

    assert info.get("ca-error") == CERTMONGER_BAD_REQUEST, info
    assert (answer.message_type, answer.transaction_id) == (PKCS_REQ, tid)
    assert (answer.pki_status, answer.reply_attrs[FAIL_INFO]) == (FAILURE, BAD_REQUEST)
    assert answer.reply_attrs[FAIL_INFO_TEXT] == REJECTED_TEXT
    server.wait_log(rf"scep failure integration={iid} tid={tid} type=19 .*detail={REJECTED_TEXT}", mark)
    listed = json.loads(server.cli("request", "list", "--all", "--integration", iid, "--json").stdout)
    assert [(r["id"], r["status"]) for r in listed] == [(request_id, "rejected")]
    assert not cert_path.exists() and server.certificate_count(iid) == 0


# --------------------------------------------------------------------------------------------
# The RA signs CertReps
# --------------------------------------------------------------------------------------------


def enroll_both_clients(
    server: ScepCaServer, certmonger: Certmonger, iid: str, tmp_path: Path
) -> tuple[PkiExchange, PkiExchange]:
    """scepclient and certmonger each enroll once through the proxy; their exchanges."""
    with RecordingProxy(server.base_url) as proxy:
        scepclient = run_scepclient(proxy.scep_url(iid), server.challenge(iid), tmp_path / "sc", subject_cn="ra-sc")
        assert scepclient.issued, scepclient.describe()
        assert_verifies(scepclient.cert_path, server.ca_pem)
        certmonger.add_scep_ca("scep-ca", proxy.scep_url(iid))
        cert_path = tmp_path / "cm.pem"
        enrolled = certmonger.request("scep-ca", tmp_path / "cm.key", cert_path, server.challenge(iid), dn("ra-cm"))
        assert enrolled.state == "MONITORING", enrolled.stdout
        assert_verifies(cert_path, server.ca_pem)
    by_client = {e.method: e for e in proxy.exchanges}
    assert sorted(by_client) == ["GET", "POST"], proxy.exchanges  # certmonger GETs, scepclient POSTs
    return by_client["POST"], by_client["GET"]


def assert_signed_by_ra(exchange: PkiExchange, ra: x509.Certificate, server: ScepCaServer, workdir: Path) -> None:
    """``openssl cms -verify -CAfile ca.pem -signer out.pem`` on the CertRep: out.pem is the RA;
    the reply carries exactly that certificate and one signer."""
    assert exchange.status == 200 and exchange.content_type == "application/x-pki-message"
    assert exchange.pki_status == SUCCESS
    assert cms_signer(exchange.reply, workdir, server.ca_pem) == ra
    _, signer, signed = _attributes(exchange.reply)
    assert [c.dump() for c in signed["certificates"]] == [der(ra)]
    assert signer["sid"].chosen["serial_number"].native == ra.serial_number


def pyscep_enrolls(server: ScepCaServer, iid: str, cn: str) -> pyscep_rule.PyscepEnrollment:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return pyscep_rule.enroll(server.scep_url(iid), server.challenge(iid), key, subject_of(cn))


def subject_of(cn: str) -> x509.Name:
    return parse_dn(DEFAULT_SUBJECT.replace("$USERID$", cn))


def test_default_ra_pair_serves_every_client(
    scep_ca_server: ScepCaServer, certmonger: Certmonger, tmp_path: Path
) -> None:
    """A default ``serve`` (NDES's pair): GetCACert lists the signing RA, the encryption RA and the
    CA; scepclient, certmonger and pyscep's selection rule encrypt to the encryption RA, and every
    CertRep is signed by the signing RA (DATA_DIR/ra.pem), which pyscep's rule verifies it with."""
    server = scep_ca_server
    iid = server.create_integration("ra-pair")["id"]
    signing, encryption, ca = (load_cert(server.data_dir / f) for f in ("ra.pem", "ra-enc.pem", "ca.pem"))
    assert len({der(signing), der(encryption), der(ca)}) == 3
    assert signing.issuer == ca.subject and encryption.issuer == ca.subject

    status, headers, body = http_get(f"{server.scep_url(iid)}?operation=GetCACert")
    assert status == 200 and headers["Content-Type"] == "application/x-x509-ca-ra-cert"
    bundle = [c.dump() for c in cms.ContentInfo.load(body)["content"]["certificates"]]
    assert bundle == [der(signing), der(encryption), der(ca)]

    scepclient, cm = enroll_both_clients(server, certmonger, iid, tmp_path)
    assert encryption.serial_number in scepclient.recipient_serials()
    assert cm.recipient_serials() == {encryption.serial_number}
    record = certmonger.ca_record("scep-ca")
    assert x509.load_pem_x509_certificate(record["ca_encryption_cert"].encode()) == encryption
    for exchange, name in ((scepclient, "scepclient"), (cm, "certmonger")):
        assert_signed_by_ra(exchange, signing, server, tmp_path / name)

    enrolled = pyscep_enrolls(server, iid, "ra-pyscep")
    assert (enrolled.recipient, enrolled.signer) == (encryption, signing)
    assert enrolled.reply.status is PKIStatus.SUCCESS and enrolled.reply.signer_cert_der == der(signing)
    issued = enrolled.reply.certificates[0]
    issued.verify_directly_issued_by(ca)
    assert issued.subject == subject_of("ra-pyscep")


def test_combined_ra_on_request_and_why_it_is_not_the_default(
    scep_ca_server_factory: ScepCaServerFactory, certmonger: Certmonger, tmp_path: Path
) -> None:
    """``scep-ca ra create`` (no ``--pair``) and a restart: GetCACert lists the combined RA and the
    CA; scepclient and certmonger encrypt to it and get CertReps it signed; the retired pair signs
    nothing any more. pyscep's rule fails against this layout, as pyscep 0.0.14 does: it encrypts
    to the CA, which only the encryption RA may decrypt for, so it gets the RA-signed FAILURE."""
    server = scep_ca_server_factory()
    old_signing = load_cert(server.ra_pem)
    server.stop()
    created = server.cli("ra", "create")
    assert created.stdout.startswith("issued one combined RA (ra.pem), signing and encryption under CN=scep-ca")
    server.start()
    (retired,) = (server.data_dir / "retired").iterdir()
    assert load_cert(retired / "ra.pem") == old_signing and (retired / "ra-enc.pem").exists()
    assert not (server.data_dir / "ra-enc.pem").exists()
    combined, ca = load_cert(server.ra_pem), load_cert(server.ca_pem)
    ku = combined.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.key_encipherment
    iid = server.create_integration("ra-combined")["id"]

    status, headers, body = http_get(f"{server.scep_url(iid)}?operation=GetCACert")
    assert status == 200 and headers["Content-Type"] == "application/x-x509-ca-ra-cert"
    bundle = [c.dump() for c in cms.ContentInfo.load(body)["content"]["certificates"]]
    assert bundle == [der(combined), der(ca)]

    scepclient, cm = enroll_both_clients(server, certmonger, iid, tmp_path)
    assert combined.serial_number in scepclient.recipient_serials()
    assert cm.recipient_serials() == {combined.serial_number}
    for exchange, name in ((scepclient, "scepclient"), (cm, "certmonger")):
        assert_signed_by_ra(exchange, combined, server, tmp_path / name)

    before = server.certificate_count(iid)
    refused = pyscep_enrolls(server, iid, "ra-pyscep")
    assert (refused.recipient, refused.signer) == (ca, combined)
    assert (refused.reply.status, refused.reply.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_MESSAGE_CHECK)
    assert refused.reply.fail_text == "the request cannot be decrypted"
    assert server.certificate_count(iid) == before


# --------------------------------------------------------------------------------------------
# CA rollover
# --------------------------------------------------------------------------------------------


def get_caps(server: ScepCaServer, iid: str) -> list[str]:
    status, _, body = http_get(f"{server.scep_url(iid)}?operation=GetCACaps")
    assert status == 200, (status, body)
    return body.decode().split()


def test_ca_rollover(scep_ca_server_factory: ScepCaServerFactory, tmp_path: Path) -> None:
    """``ca rollover`` (restart): GetCACaps adds GetNextCACert, which answers the next RA and CA
    signed by the current RA; issuance is unchanged. ``ca activate-next`` (restart): new
    enrollments chain to the new CA; the old CA's certificates still verify against
    previous/<id>/ca.pem, and its CRL (/crl/<id>.crl) and OCSP answers (issuer: the old CA) keep
    reporting them, including a revocation made after the switch."""
    server = scep_ca_server_factory()
    iid = server.create_integration("rollover")["id"]

    def enroll(name: str) -> Path:
        result = run_scepclient(server.scep_url(iid), server.challenge(iid), tmp_path / name, subject_cn=name)
        assert result.issued, result.describe()
        return result.cert_path

    old_ca_pem = server.ca_pem.read_bytes()
    old_ca = x509.load_pem_x509_certificate(old_ca_pem)
    old_ra = load_cert(server.ra_pem)
    old_id = hashlib.sha256(der(old_ca)).hexdigest()[:16]
    kept, compromised = enroll("kept"), enroll("compromised")
    server.cli("cert", "revoke", format(load_cert(compromised).serial_number, "x"), "--reason", "keyCompromise")
    assert "GetNextCACert" not in get_caps(server, iid)

    # Rollover: announced, not yet issuing.
    server.stop()
    rolled = server.cli("ca", "rollover")
    assert "GetNextCACert announces it once `scep-ca serve` restarts" in rolled.stdout
    server.start()
    next_ca, next_ra = load_cert(server.data_dir / "next" / "ca.pem"), load_cert(server.data_dir / "next" / "ra.pem")
    assert next_ca != old_ca and next_ra.issuer == next_ca.subject
    assert get_caps(server, iid)[-1] == "GetNextCACert"
    status, headers, body = http_get(f"{server.scep_url(iid)}?operation=GetNextCACert")
    assert status == 200 and headers["Content-Type"] == "application/x-x509-next-ca-cert"
    assert cms_signer(body, tmp_path / "next", server.ca_pem) == old_ra
    announced = cms.ContentInfo.load((tmp_path / "next" / "content.der").read_bytes())["content"]["certificates"]
    next_enc = load_cert(server.data_dir / "next" / "ra-enc.pem")  # the next CA gets the default pair too
    assert [c.dump() for c in announced] == [der(next_ra), der(next_enc), der(next_ca)]
    between = enroll("between")
    assert_verifies(between, server.ca_pem)  # still the old CA
    assert load_cert(between).issuer == old_ca.subject

    # Activation: the next CA issues.
    server.stop()
    activated = server.cli("ca", "activate-next")
    assert f"the previous CA ({old_id}) keeps serving its CRL at /crl/{old_id}.crl" in activated.stdout
    server.start()
    previous_pem = server.data_dir / "previous" / old_id / "ca.pem"
    assert previous_pem.read_bytes() == old_ca_pem
    assert load_cert(server.ca_pem) == next_ca and load_cert(server.ra_pem) == next_ra
    assert "GetNextCACert" not in get_caps(server, iid)
    assert http_get(f"{server.scep_url(iid)}?operation=GetNextCACert")[:3:2] == (404, b"unknown SCEP integration\n")

    new = enroll("new")
    assert_verifies(new, server.ca_pem)
    assert_does_not_verify(new, previous_pem)
    assert (
        cert_show(server, load_cert(new).serial_number)["issuer_fingerprint"]
        == hashlib.sha256(der(next_ca)).hexdigest()
    )
    for path in (kept, compromised, between):
        assert_verifies(path, previous_pem)
        assert_does_not_verify(path, server.ca_pem)

    # The old CA's CRL and OCSP still answer for its certificates, also for a revocation made now.
    server.cli("cert", "revoke", format(load_cert(between).serial_number, "x"), "--reason", "superseded")
    old_crl_pem, old_crl = fetch_crl(server, tmp_path / "old-crl", name=old_id)
    old_key = old_ca.public_key()
    assert isinstance(old_key, rsa.RSAPublicKey) and old_crl.is_signature_valid(old_key)
    assert crl_reason(old_crl, load_cert(compromised).serial_number) == x509.ReasonFlags.key_compromise
    assert crl_reason(old_crl, load_cert(between).serial_number) == x509.ReasonFlags.superseded
    assert_crl_rejects(compromised, old_crl_pem, previous_pem)
    assert_crl_rejects(between, old_crl_pem, previous_pem)
    assert_crl_accepts(kept, old_crl_pem, previous_pem)
    expected = {kept: ("good", None), compromised: ("revoked", "keyCompromise"), between: ("revoked", "superseded")}
    for path, (state, reason) in expected.items():
        got = ocsp_status(server, path, issuer=previous_pem)
        assert (got.status, got.reason) == (state, reason), got.result.describe()
    new_crl_pem, new_crl = fetch_crl(server, tmp_path / "new-crl")
    assert new_crl.issuer == next_ca.subject and len(list(new_crl)) == 0
    assert_crl_accepts(new, new_crl_pem, server.ca_pem)
    assert ocsp_status(server, new).status == "good"
    assert verify_api(server, kept.read_bytes())["status"] == "trusted"
    assert verify_api(server, between.read_bytes())["status"] == "revoked"
    assert verify_api(server, new.read_bytes())["status"] == "trusted"
