"""Revocation end to end: real clients and relying-party tools against a real ``scep-ca serve``.

The fleet (a module fixture on the session server): micromdm's ``scepclient`` enrolls two devices
under integration A and two under B (one work dir per device: scepclient writes ``csr.pem`` into
its current directory), A's MDM fetches one more challenge from A's challenge URL with curl's NTLM
client (200, NDES's page), the operator makes one more with ``scep-ca challenge new``, a private
certmonger daemon learns A's SCEP CA (GetCACaps, GetCACert), and then
``scep-ca integration delete A --yes`` runs. What each test then shows:

* the CLI says how many certificates it revoked (two);
* every certificate names the server's listen address as its public URL (no server.public_url
  configured, nothing stored: a defaulted public URL follows the listen address): the CRL shard
  fetched from its CDP URL (``/crl/<ca id>/<serial mod 128>.crl``, with a critical
  issuingDistributionPoint naming that URL, so ``openssl verify -crl_check`` accepts its scope),
  ``openssl ocsp`` at its AIA OCSP URL and the CA at its caIssuers URL all
  answer, and show A's revoked, B's not;
* ``openssl ocsp`` (the relying party's OCSP client, response signature checked against the CA):
  A's certificates revoked, reason cessationOfOperation, all at one revocation time; B's good;
* ``openssl verify -crl_check`` with the CRL served at ``/crl/ca.crl`` (DER, turned into PEM with
  ``openssl crl -inform DER``): A's certificates fail with "certificate revoked", B's pass;
* the status API (``GET /api/v1/certificates/<serial>`` from loopback) and ``scep-ca cert list
  --json`` give the same record for every certificate: A's revoked, B's valid;
* A's challenges issued before the delete are gone: scepclient with the challenge-URL one stops at
  GetCACert (HTTP 404 "unknown SCEP integration"), certmonger, which still knows A's RA, sends its
  PKCSReq with the CLI one and gets a signed FAILURE badRequest ("this integration has been
  deleted"); A's credentials get 404 from the challenge URL (NTLM and Basic) where they got the
  page before; A's SCEP URL answers 404 to GetCACaps and GetCACert;
* B keeps enrolling;
* ``scep-ca cert revoke SERIAL --reason keyCompromise`` shows in the next CRL with its reason and
  in the next OCSP answer;
* ``POST /api/v1/verify`` says revoked for A's PEM and trusted for B's.

One certificate per ``openssl ocsp`` call: the responder answers requests with one CertID only
(RFC 5019 §2.1.1) and gives ``malformedRequest`` to a request listing several.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import re
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import AuthorityInformationAccessOID

from tests.e2e.clients import (
    Certmonger,
    CommandResult,
    http_get,
    openssl_verify,
    require_binary,
    run_command,
    run_scepclient,
)

if TYPE_CHECKING:
    from tests.e2e.conftest import ScepCaServer

CURL = "curl"
OPENSSL = "openssl"

# certmonger 0.79.17's fixed sentence for failInfo badRequest (2); it never shows failInfoText.
CERTMONGER_BAD_REQUEST = "Transaction either is not permitted or is not supported by server."
# What our server answers where an integration is gone (scep_ca/server/scep_web.py, challenge/service.py).
UNKNOWN_INTEGRATION_BODY = b"unknown SCEP integration\n"
CHALLENGE_URL_NOT_FOUND_BODY = b"404 Not Found\n"
# scepclient 2.1.0 stops at GetCACert when the SCEP URL answers 404.
SCEPCLIENT_GETCACERT_404 = "http request failed with status 404 Not Found, msg: unknown SCEP integration"
# NDES's page: "The enrollment challenge password is: <B> 0123456789ABCDEF </B>" (UTF-16LE).
PAGE_CHALLENGE = re.compile(r"challenge password is: <B> ([0-9A-F]{16}) ")
# revocation.crl_shards by default (config/model.py).
CRL_SHARDS = 128
# openssl verify's message for X509_V_ERR_CERT_REVOKED.
OPENSSL_CERT_REVOKED = "error 23 at 0 depth lookup: certificate revoked"

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --------------------------------------------------------------------------------------------
# Relying-party tools
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OcspStatus:
    """One certificate's status as ``openssl ocsp`` printed it after the response verified."""

    status: str  # good | revoked | unknown
    reason: str | None
    revocation_time: str | None
    result: CommandResult


def ocsp_status(
    server: ScepCaServer, cert_path: Path, issuer: Path | None = None, url: str | None = None
) -> OcspStatus:
    """``openssl ocsp -issuer CA -cert CERT -url .../ocsp -CAfile CA -resp_text``; the response
    must verify against the CA ("Response verify OK")."""
    issuer = issuer or server.ca_pem
    result = run_command(
        [
            require_binary(OPENSSL),
            "ocsp",
            "-issuer",
            str(issuer),
            "-cert",
            str(cert_path),
            "-url",
            url or f"{server.base_url}/ocsp",
            "-CAfile",
            str(issuer),
            "-resp_text",
        ],
        timeout=15,
    )
    assert result.ok and "Response verify OK" in result.stderr, result.describe()
    block = re.search(rf"^{re.escape(str(cert_path))}: (\w+)\n((?:\t.*\n)*)", result.stdout, re.MULTILINE)
    assert block is not None, result.describe()
    fields = dict(line.strip().split(": ", 1) for line in block.group(2).splitlines())
    return OcspStatus(block.group(1), fields.get("Reason"), fields.get("Revocation Time"), result)


def fetch_crl(
    server: ScepCaServer, workdir: Path, name: str = "ca", url: str | None = None
) -> tuple[Path, x509.CertificateRevocationList]:
    """GET ``/crl/<name>.crl`` (or ``url``; DER), converted to PEM with ``openssl crl -inform DER``."""
    status, headers, der = http_get(url or f"{server.base_url}/crl/{name}.crl")
    assert status == 200 and headers["Content-Type"] == "application/pkix-crl", (status, headers)
    workdir.mkdir(parents=True, exist_ok=True)
    der_path, pem_path = workdir / f"{name}.crl.der", workdir / f"{name}.crl.pem"
    der_path.write_bytes(der)
    converted = run_command(
        [require_binary(OPENSSL), "crl", "-inform", "DER", "-in", str(der_path), "-out", str(pem_path)], timeout=10
    )
    assert converted.ok, converted.describe()
    return pem_path, x509.load_der_x509_crl(der)


def crl_verify(cert_path: Path, crl_pem: Path, ca_pem: Path) -> CommandResult:
    """``openssl verify -crl_check -CRLfile CRL -CAfile CA CERT``."""
    return run_command(
        [
            require_binary(OPENSSL),
            "verify",
            "-crl_check",
            "-CRLfile",
            str(crl_pem),
            "-CAfile",
            str(ca_pem),
            str(cert_path),
        ],
        timeout=10,
    )


def assert_crl_rejects(cert_path: Path, crl_pem: Path, ca_pem: Path) -> None:
    result = crl_verify(cert_path, crl_pem, ca_pem)
    assert result.returncode == 2 and OPENSSL_CERT_REVOKED in result.stderr, result.describe()
    assert f"error {cert_path}: verification failed" in result.stderr, result.describe()


def assert_crl_accepts(cert_path: Path, crl_pem: Path, ca_pem: Path) -> None:
    result = crl_verify(cert_path, crl_pem, ca_pem)
    assert result.ok and result.stdout.strip() == f"{cert_path}: OK", result.describe()


def crl_reason(crl: x509.CertificateRevocationList, serial: int) -> x509.ReasonFlags | None:
    """The CRL entry's reasonCode for ``serial``; raises if the serial is not listed."""
    entry = crl.get_revoked_certificate_by_serial_number(serial)
    assert entry is not None, f"serial {serial:x} not in the CRL"
    with contextlib.suppress(x509.ExtensionNotFound):
        return entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    return None


def assert_is_shard_of(crl: x509.CertificateRevocationList, url: str, ca: x509.Certificate) -> None:
    """A shard (RFC 5280 section 5.2.5): signed by the CA, with a critical issuingDistributionPoint
    naming ``url`` (the CDP it was fetched from) and only user certificates in scope."""
    ca_key = ca.public_key()
    assert isinstance(ca_key, rsa.RSAPublicKey)
    assert crl.issuer == ca.subject and crl.is_signature_valid(ca_key)
    idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint)
    assert idp.critical
    assert idp.value.full_name == [x509.UniformResourceIdentifier(url)], idp
    assert idp.value.only_contains_user_certs and not idp.value.indirect_crl


def crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def serial_of(cert_path: Path) -> int:
    return x509.load_pem_x509_certificate(cert_path.read_bytes()).serial_number


def status_api(server: ScepCaServer, serial: int) -> dict[str, Any]:
    status, headers, body = http_get(f"{server.base_url}/api/v1/certificates/{serial:x}")
    assert status == 200 and headers["Content-Type"].startswith("application/json"), (status, body)
    data: dict[str, Any] = json.loads(body)
    return data


def verify_api(server: ScepCaServer, pem: bytes) -> dict[str, Any]:
    request = urllib.request.Request(f"{server.base_url}/api/v1/verify", data=pem, method="POST")
    with _OPENER.open(request, timeout=10) as resp:
        assert resp.status == 200
        data: dict[str, Any] = json.loads(resp.read())
    return data


@dataclass(frozen=True)
class RevocationUrls:
    crl: str  # the CRL distribution point (RFC 5280 section 4.2.1.13)
    ocsp: str  # AIA id-ad-ocsp (RFC 5280 section 4.2.2.1)
    ca_issuers: str  # AIA id-ad-caIssuers


def revocation_urls(cert_path: Path) -> RevocationUrls:
    """The one CDP URI and the AIA's OCSP and caIssuers URIs a certificate carries."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    (point,) = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert point.full_name is not None and len(point.full_name) == 1, point
    aia = {
        d.access_method: d.access_location.value
        for d in cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    }
    return RevocationUrls(
        crl=point.full_name[0].value,
        ocsp=aia[AuthorityInformationAccessOID.OCSP],
        ca_issuers=aia[AuthorityInformationAccessOID.CA_ISSUERS],
    )


@dataclass(frozen=True)
class CurlPage:
    status: int
    body: bytes
    result: CommandResult


def curl_page(url: str, user: str, password: str, auth: str, out: Path) -> CurlPage:
    """``curl --ntlm|--basic -u USER:PASS URL``: the final status and body."""
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [require_binary(CURL), "-s", "-o", str(out), "-w", "%{http_code}", f"--{auth}", "-u", f"{user}:{password}"]
    result = run_command([*argv, url], timeout=15)
    assert result.ok, result.describe()
    return CurlPage(int(result.stdout), out.read_bytes(), result)


# --------------------------------------------------------------------------------------------
# The fleet: four devices, then integration A is deleted
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fleet:
    server: ScepCaServer
    a: dict[str, Any]
    b: dict[str, Any]
    a_certs: dict[str, Path]
    b_certs: dict[str, Path]
    a_page_challenge: str  # from A's challenge URL (NTLM), before the delete, unused
    a_cli_challenge: str  # from `scep-ca challenge new A`, before the delete, unused
    a_page_before: CurlPage  # A's challenge URL with A's credentials, before the delete
    a_ocsp_before: OcspStatus  # A's first certificate, asked at its own AIA OCSP URL before the delete
    delete: subprocess.CompletedProcess[str]
    certmonger: Certmonger  # knows A's SCEP CA (RA, CA, caps) from before the delete
    workdir: Path


@pytest.fixture(scope="module")
def fleet(scep_ca_server: ScepCaServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    server = scep_ca_server
    workdir = tmp_path_factory.mktemp("revocation")
    a = server.create_integration("revocation-A")
    b = server.create_integration("revocation-B")
    a_certs: dict[str, Path] = {}
    b_certs: dict[str, Path] = {}
    for name, integration, certs in (("a1", a, a_certs), ("a2", a, a_certs), ("b1", b, b_certs), ("b2", b, b_certs)):
        enrolled = run_scepclient(
            integration["scep_url"], server.challenge(integration["id"]), workdir / name, subject_cn=name
        )
        assert enrolled.issued, enrolled.describe()
        certs[name] = enrolled.cert_path

    # A's MDM gets a challenge the NDES way; the operator makes one more.
    page = curl_page(a["challenge_url"], a["username"], a["password"], "ntlm", workdir / "page-before.html")
    assert page.status == 200, page.result.describe()
    match = PAGE_CHALLENGE.search(page.body.decode("utf-16-le"))
    assert match is not None, page.body
    cli_challenge = server.challenge(a["id"])
    assert server.unused_challenges(a["id"]) == 2

    a_ocsp_before = ocsp_status(server, a_certs["a1"], url=revocation_urls(a_certs["a1"]).ocsp)

    with Certmonger(workdir / "certmonger") as certmonger:
        certmonger.add_scep_ca("revoked-a", a["scep_url"])
        delete = server.cli("integration", "delete", a["id"], "--yes")
        yield Fleet(
            server=server,
            a=a,
            b=b,
            a_certs=a_certs,
            b_certs=b_certs,
            a_page_challenge=match.group(1),
            a_cli_challenge=cli_challenge,
            a_page_before=page,
            a_ocsp_before=a_ocsp_before,
            delete=delete,
            certmonger=certmonger,
            workdir=workdir,
        )
    assert not certmonger.leftovers, certmonger.leftovers
    assert not certmonger.system_changes, certmonger.system_changes


# --------------------------------------------------------------------------------------------
# After the delete
# --------------------------------------------------------------------------------------------


def test_urls_in_the_certificates_answer_and_show_the_delete(fleet: Fleet) -> None:
    """A default ``serve`` (no server.public_url configured) puts its listen address into every
    certificate and stores none (a defaulted public URL follows the listen address): the CRL
    fetched from each certificate's own CDP URL makes ``openssl verify -crl_check`` reject A's and
    accept B's; ``openssl ocsp`` at each one's AIA OCSP URL said good for A before the delete and
    says revoked now, good for B; the caIssuers URL serves the CA (DER)."""
    server = fleet.server
    ca = x509.load_pem_x509_certificate(server.ca_pem.read_bytes())
    ca_id = hashlib.sha256(ca.public_bytes(serialization.Encoding.DER)).hexdigest()[:16]
    assert not (server.data_dir / "public_url").exists()
    public = server.base_url
    assert fleet.a_ocsp_before.status == "good", fleet.a_ocsp_before.result.describe()
    for name, path in {**fleet.a_certs, **fleet.b_certs}.items():
        urls = revocation_urls(path)
        # The CDP names the certificate's CRL shard: its serial modulo revocation.crl_shards (128).
        shard = serial_of(path) % CRL_SHARDS
        assert urls == RevocationUrls(
            crl=f"{public}/crl/{ca_id}/{shard}.crl", ocsp=f"{public}/ocsp", ca_issuers=f"{public}/ca/{ca_id}.crt"
        ), urls
        crl_pem, crl = fetch_crl(server, fleet.workdir / f"cdp-{name}", url=urls.crl)
        assert_is_shard_of(crl, urls.crl, ca)
        answer = ocsp_status(server, path, url=urls.ocsp)
        if name in fleet.a_certs:
            # openssl checks the shard's scope: its issuingDistributionPoint names the CDP.
            assert_crl_rejects(path, crl_pem, server.ca_pem)
            assert crl_reason(crl, serial_of(path)) == x509.ReasonFlags.cessation_of_operation
            assert (answer.status, answer.reason) == ("revoked", "cessationOfOperation"), answer.result.describe()
        else:
            assert crl.get_revoked_certificate_by_serial_number(serial_of(path)) is None
            assert_crl_accepts(path, crl_pem, server.ca_pem)
            assert answer.status == "good", answer.result.describe()
        status, headers, body = http_get(urls.ca_issuers)
        assert status == 200 and headers["Content-Type"] == "application/pkix-cert", (status, headers)
        assert x509.load_der_x509_certificate(body) == ca


def test_delete_prints_how_many_it_revoked(fleet: Fleet) -> None:
    assert fleet.delete.stdout == (
        f"deleted integration {fleet.a['id']}; revoked 2 certificate(s) (cessationOfOperation)\n"
    ), fleet.delete
    shown = json.loads(fleet.server.cli("integration", "show", fleet.a["id"], "--json").stdout)
    assert shown["deleted_at"] is not None and shown["certificates"] == 2
    live = {i["id"] for i in json.loads(fleet.server.cli("integration", "list", "--json").stdout)}
    assert fleet.a["id"] not in live and fleet.b["id"] in live


def test_ocsp_says_a_revoked_cessation_of_operation_and_b_good(fleet: Fleet) -> None:
    times = set()
    for path in fleet.a_certs.values():
        got = ocsp_status(fleet.server, path)
        assert (got.status, got.reason) == ("revoked", "cessationOfOperation"), got.result.describe()
        times.add(got.revocation_time)
    assert len(times) == 1, times  # one revocation time for the whole integration
    for path in fleet.b_certs.values():
        got = ocsp_status(fleet.server, path)
        assert (got.status, got.reason, got.revocation_time) == ("good", None, None), got.result.describe()


def test_served_crl_rejects_a_and_accepts_b(fleet: Fleet) -> None:
    server = fleet.server
    crl_pem, crl = fetch_crl(server, fleet.workdir / "crl-after-delete")
    ca = x509.load_pem_x509_certificate(server.ca_pem.read_bytes())
    ca_key = ca.public_key()
    assert isinstance(ca_key, rsa.RSAPublicKey)
    assert crl.issuer == ca.subject and crl.is_signature_valid(ca_key)
    for path in fleet.a_certs.values():
        assert crl_reason(crl, serial_of(path)) == x509.ReasonFlags.cessation_of_operation
        assert_crl_rejects(path, crl_pem, server.ca_pem)
    for path in fleet.b_certs.values():
        assert crl.get_revoked_certificate_by_serial_number(serial_of(path)) is None
        assert_crl_accepts(path, crl_pem, server.ca_pem)


def test_status_api_and_cli_agree(fleet: Fleet) -> None:
    server = fleet.server
    listed = {c["serial"]: c for c in server.certificates()}
    for integration, paths, status in ((fleet.a, fleet.a_certs, "revoked"), (fleet.b, fleet.b_certs, "valid")):
        by_integration = {c["serial"] for c in server.certificates(integration["id"])}
        assert by_integration == {format(serial_of(p), "x") for p in paths.values()}
        for path in paths.values():
            serial = serial_of(path)
            api = status_api(server, serial)
            cli = listed[format(serial, "x")]
            assert api == cli, (api, cli)
            assert api["integration"] == integration["id"] and api["status"] == status, api
            if status == "revoked":
                assert api["revoked"] is True and api["revocation_reason"] == "cessationOfOperation", api
                assert api["revoked_at"] is not None
            else:
                assert api["revoked"] is False and api["revocation_reason"] is None and api["revoked_at"] is None
    # The listing filtered by status agrees too.
    revoked = {c["serial"] for c in json.loads(server.cli("cert", "list", "--status", "revoked", "--json").stdout)}
    issued = {c["serial"] for c in json.loads(server.cli("cert", "list", "--status", "issued", "--json").stdout)}
    for path in fleet.a_certs.values():
        assert format(serial_of(path), "x") in revoked and format(serial_of(path), "x") not in issued
    for path in fleet.b_certs.values():
        assert format(serial_of(path), "x") in issued and format(serial_of(path), "x") not in revoked


def test_a_challenges_no_longer_enroll(fleet: Fleet, tmp_path: Path) -> None:
    server, a = fleet.server, fleet.a
    # The delete removed them from the store, and the CLI makes no new ones.
    assert server.challenge_rows(a["id"]) == []
    refused = server.cli("challenge", "new", a["id"], check=False)
    assert (refused.returncode, refused.stdout) == (1, ""), refused
    assert refused.stderr == f"scep-ca: no live integration {a['id']!r}\n"

    # scepclient with the challenge A's MDM fetched: GetCACert is already 404.
    before = server.certificate_count(a["id"])
    mark = server.log_mark()
    result = run_scepclient(a["scep_url"], fleet.a_page_challenge, tmp_path / "scepclient", subject_cn="late")
    assert not result.issued and result.returncode == 1, result.describe()
    assert SCEPCLIENT_GETCACERT_404 in result.output, result.describe()

    # certmonger already holds A's RA, so its PKCSReq reaches the server: a signed FAILURE.
    cert_path = tmp_path / "late.pem"
    answer = fleet.certmonger.request(
        "revoked-a", tmp_path / "late.key", cert_path, fleet.a_cli_challenge, "C=US,O=scep-client,OU=MDM,CN=late"
    )
    assert answer.state == "CA_REJECTED" and answer.ca_error == CERTMONGER_BAD_REQUEST, answer.stdout
    assert not cert_path.exists()
    server.wait_log(
        rf"scep failure integration={a['id']} tid=\S+ type=19 remote=127\.0\.0\.1 failInfo=BAD_REQUEST "
        r"detail=this integration has been deleted",
        mark,
    )
    assert "issued serial=" not in server.log(mark)
    assert server.certificate_count(a["id"]) == before == 2


def test_a_credentials_no_longer_open_the_challenge_url(fleet: Fleet, tmp_path: Path) -> None:
    a = fleet.a
    assert fleet.a_page_before.status == 200  # the same credentials worked before the delete
    for auth in ("ntlm", "basic"):
        got = curl_page(a["challenge_url"], a["username"], a["password"], auth, tmp_path / f"{auth}.html")
        assert (got.status, got.body) == (404, CHALLENGE_URL_NOT_FOUND_BODY), got.result.describe()
    assert fleet.server.challenge_rows(a["id"]) == []  # and no challenge was made


def test_a_scep_url_answers_404(fleet: Fleet) -> None:
    for operation in ("GetCACaps", "GetCACert"):
        status, _, body = http_get(f"{fleet.a['scep_url']}?operation={operation}")
        assert (status, body) == (404, UNKNOWN_INTEGRATION_BODY), (operation, status, body)
    status, _, body = http_get(f"{fleet.b['scep_url']}?operation=GetCACaps")
    assert status == 200 and b"Renewal" in body


def test_b_keeps_enrolling(fleet: Fleet, tmp_path: Path) -> None:
    server, b = fleet.server, fleet.b
    before = server.certificate_count(b["id"])
    result = run_scepclient(b["scep_url"], server.challenge(b["id"]), tmp_path / "b3", subject_cn="b3")
    assert result.issued, result.describe()
    verified = openssl_verify(result.cert_path, server.ca_pem)
    assert verified.ok, verified.describe()
    crl_pem, _ = fetch_crl(server, tmp_path / "crl")
    assert_crl_accepts(result.cert_path, crl_pem, server.ca_pem)
    assert ocsp_status(server, result.cert_path).status == "good"
    assert server.certificate_count(b["id"]) == before + 1


def test_key_compromise_shows_in_the_next_crl_and_ocsp(fleet: Fleet, tmp_path: Path) -> None:
    server, b = fleet.server, fleet.b
    result = run_scepclient(b["scep_url"], server.challenge(b["id"]), tmp_path / "lost", subject_cn="lost")
    assert result.issued, result.describe()
    path, serial = result.cert_path, serial_of(result.cert_path)
    _, crl = fetch_crl(server, tmp_path / "before")
    assert crl.get_revoked_certificate_by_serial_number(serial) is None
    shard_url = revocation_urls(path).crl
    shard_pem, shard = fetch_crl(server, tmp_path / "shard-before", url=shard_url)
    assert shard.get_revoked_certificate_by_serial_number(serial) is None
    assert_crl_accepts(path, shard_pem, server.ca_pem)
    assert ocsp_status(server, path).status == "good"

    record = status_api(server, serial)
    revoked = server.cli("cert", "revoke", record["serial_colon"], "--reason", "keyCompromise")  # openssl's form
    assert revoked.stdout == (
        f"revoked {serial:x} (keyCompromise); the CRL and OCSP show it from the next request\n"
    ), revoked

    next_pem, next_crl = fetch_crl(server, tmp_path / "after")
    assert crl_number(next_crl) > crl_number(crl)
    assert crl_reason(next_crl, serial) == x509.ReasonFlags.key_compromise
    listed = run_command([require_binary(OPENSSL), "crl", "-in", str(next_pem), "-noout", "-text"], timeout=10)
    entry = re.search(rf"Serial Number: 0*{serial:X}\n\s+Revocation Date: .*\n(?:\s+.*\n){{2}}\s+(.*)\n", listed.stdout)
    assert entry is not None and entry.group(1) == "Key Compromise", listed.stdout
    assert_crl_rejects(path, next_pem, server.ca_pem)
    # Its shard, fetched from its own CDP, lists it too, and openssl rejects it with the shard.
    shard_pem, shard = fetch_crl(server, tmp_path / "shard-after", url=shard_url)
    assert_is_shard_of(shard, shard_url, x509.load_pem_x509_certificate(server.ca_pem.read_bytes()))
    assert crl_reason(shard, serial) == x509.ReasonFlags.key_compromise
    assert_crl_rejects(path, shard_pem, server.ca_pem)
    got = ocsp_status(server, path)
    assert (got.status, got.reason) == ("revoked", "keyCompromise"), got.result.describe()
    after = status_api(server, serial)
    assert (after["status"], after["revocation_reason"]) == ("revoked", "keyCompromise")
    revoked_at = datetime.datetime.fromisoformat(after["revoked_at"])
    assert abs(datetime.datetime.now(datetime.UTC) - revoked_at) < datetime.timedelta(minutes=1)
    # B's other certificates are untouched.
    for other in fleet.b_certs.values():
        assert ocsp_status(server, other).status == "good"


def test_verify_api_a_revoked_b_trusted(fleet: Fleet) -> None:
    for path in fleet.a_certs.values():
        got = verify_api(fleet.server, path.read_bytes())
        assert (got["status"], got["trusted"]) == ("revoked", False), got
        assert got["integration"] == fleet.a["id"] and got["revocation_reason"] == "cessationOfOperation", got
        assert got["serial"] == format(serial_of(path), "x")
    for path in fleet.b_certs.values():
        got = verify_api(fleet.server, path.read_bytes())
        assert (got["status"], got["trusted"], got["revoked_at"]) == ("trusted", True, None), got
        assert got["integration"] == fleet.b["id"]
