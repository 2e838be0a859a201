"""SCEP enrollment end to end: real clients against a real ``scep-ca serve`` process.

micromdm's ``scepclient`` 2.1.0 and certmonger 0.79.17 (its daemon on a private D-Bus bus,
``getcert add-scep-ca`` WITHOUT the CA certificate, so the daemon fetches GetCACaps and
GetCACert itself) enroll over loopback and get a certificate that ``openssl verify`` accepts
with our CA, carrying exactly the integration's subject, RSA 2048, sha256WithRSAEncryption and
EKU clientAuth. A used, a wrong, an expired and another integration's challenge each fail with
badRequest and leave the store's certificate count unchanged; a retry of the same transaction
returns the certificate already issued without a new challenge.

Expiry without waiting: the smallest challenge validity the config accepts is one minute, so
the expired case moves the stored challenge into the past (``backdate_challenges``) instead of
sleeping; the server then decides from the stored times exactly as it would an hour later.
"""

from __future__ import annotations

import base64
import datetime
import re
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from asn1crypto import cms, core, pem
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, SignatureAlgorithmOID

from scep_ca.protocol.client import build_csr, build_request, open_reply, self_signed_signer
from scep_ca.protocol.enums import PKIStatus
from tests.e2e.clients import Certmonger, http_get, openssl_verify, run_scepclient

if TYPE_CHECKING:
    from tests.e2e.conftest import ScepCaServer

# certmonger 0.79.17's scep-submit prints a fixed sentence per failInfo and never shows the
# server's failInfoText: this one is badRequest (2).
CERTMONGER_BAD_REQUEST = "Transaction either is not permitted or is not supported by server."
# Our server's failInfoText for a challenge it refuses (scep_ca/services/enrollment.py).
CHALLENGE_REFUSED_TEXT = "the challenge password is invalid, expired or used"
# RFC 8894 section 3.2.1.4 (ASN.1 module): id-scep-failInfoText ::= { id-pkix 24 1 }.
RFC8894_FAIL_INFO_TEXT_OID = "1.3.6.1.5.5.7.24.1"
SCEP_PKI_STATUS_OID = "2.16.840.1.113733.1.9.3"
SCEP_FAIL_INFO_OID = "2.16.840.1.113733.1.9.4"


def expected_subject(integration: dict[str, Any], user: str) -> x509.Name:
    """The integration's subject with its one variable RDN filled in, most specific RDN first."""
    assert integration["subject"] == "CN=$USERID$,OU=MDM,O=scep-client,C=US"
    return x509.Name(
        [
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COUNTRY_NAME, "US")]),
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "scep-client")]),
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "MDM")]),
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, user)]),
        ]
    )


def check_issued(server: ScepCaServer, integration: dict[str, Any], cert_path: Path, user: str) -> x509.Certificate:
    """openssl accepts the chain; RSA 2048, sha256WithRSAEncryption, EKU clientAuth, exact subject;
    the store lists it under this integration."""
    verify = openssl_verify(cert_path, server.ca_pem)
    assert verify.ok and f"{cert_path}: OK" in verify.stdout, verify.describe()
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    ca = x509.load_pem_x509_certificate(server.ca_pem.read_bytes())
    public_key = cert.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    assert public_key.key_size == 2048
    assert cert.signature_algorithm_oid == SignatureAlgorithmOID.RSA_WITH_SHA256
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    want = expected_subject(integration, user)
    assert cert.subject == want  # attribute types, values and RDN order
    assert cert.subject.rfc4514_string() == integration["subject"].replace("$USERID$", user)
    assert cert.issuer == ca.subject
    listed = {c["serial"]: c for c in server.certificates(integration["id"])}
    record = listed.get(format(cert.serial_number, "x"))
    assert record is not None, listed
    assert record["subject"] == want.rfc4514_string() and record["integration"] == integration["id"]
    return cert


def post_pki_operation(scep_url: str, message: bytes) -> bytes:
    post = urllib.request.Request(
        f"{scep_url}?operation=PKIOperation", data=message, headers={"Content-Type": "application/x-pki-message"}
    )
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(post, timeout=10) as resp:
        body: bytes = resp.read()
    return body


def enroll_csr(
    server: ScepCaServer, integration: dict[str, Any], key: rsa.RSAPrivateKey, csr: bytes
) -> x509.Certificate:
    """A PKCSReq built here, encrypted to the encryption RA; the issued certificate, checked."""
    signer = self_signed_signer(key)
    request = build_request(
        csr,
        signer_cert=signer,
        signer_key=key,
        recipient=x509.load_pem_x509_certificate(server.encryption_pem.read_bytes()),
        transaction_id=f"csr-{key.public_key().public_numbers().n % 10**12}",
    )
    reply = open_reply(post_pki_operation(integration["scep_url"], request.der), signer, key)
    assert reply.status is PKIStatus.SUCCESS, (reply.fail_info, reply.fail_text)
    return reply.certificates[0]


def assert_bad_request_logged(server: ScepCaServer, integration_id: str, since: int) -> None:
    server.wait_log(
        rf"scep failure integration={re.escape(integration_id)} .*failInfo=BAD_REQUEST "
        rf"detail={re.escape(CHALLENGE_REFUSED_TEXT)}",
        since,
    )
    assert "issued serial=" not in server.log(since), server.log(since)


# --------------------------------------------------------------------------------------------
# scepclient
# --------------------------------------------------------------------------------------------


def test_scepclient_enrolls(scep_ca_server: ScepCaServer, tmp_path: Path) -> None:
    server = scep_ca_server
    integration = server.create_integration("scepclient-enroll")
    assert integration["scep_url"] == server.scep_url(integration["id"])  # printed URL is usable as is
    mark = server.log_mark()
    result = run_scepclient(integration["scep_url"], server.challenge(integration["id"]), tmp_path, subject_cn="dave")
    assert result.issued, result.describe()
    cert = check_issued(server, integration, result.cert_path, "dave")
    assert server.certificate_count(integration["id"]) == 1
    server.wait_log(rf"issued serial={cert.serial_number:x} integration={integration['id']} ", mark)


def test_scepclient_retry_returns_the_same_certificate_without_a_challenge(
    scep_ca_server: ScepCaServer, tmp_path: Path
) -> None:
    server = scep_ca_server
    integration = server.create_integration("scepclient-retry")
    mark = server.log_mark()
    first = run_scepclient(integration["scep_url"], server.challenge(integration["id"]), tmp_path, subject_cn="erin")
    assert first.issued, first.describe()
    first_pem = first.cert_path.read_bytes()
    csr = (tmp_path / "csr.pem").read_bytes()
    issued = server.wait_log(rf"issued serial=(\w+) integration={integration['id']} tid=(\S+) ", mark)
    serial, tid = issued.group(1), issued.group(2)
    assert serial == format(x509.load_pem_x509_certificate(first_pem).serial_number, "x")

    # The device lost the answer: same work dir, same key, no certificate yet (an existing
    # certificate would make scepclient send a RenewalReq), and NO challenge this time. The
    # server can only answer SUCCESS by finding the transaction it already completed.
    first.cert_path.rename(tmp_path / "first.pem")
    mark = server.log_mark()
    again = run_scepclient(integration["scep_url"], None, tmp_path, subject_cn="erin")
    assert again.issued, again.describe()
    assert (tmp_path / "csr.pem").read_bytes() == csr  # scepclient reused its CSR
    assert again.cert_path.read_bytes() == first_pem
    assert "issued serial=" not in server.log(mark) and "scep failure" not in server.log(mark), server.log(mark)
    (record,) = server.certificates(integration["id"])
    assert (record["serial"], record["transaction_id"]) == (serial, tid)


@pytest.mark.parametrize("case", ["used", "wrong", "expired", "other-integration"])
def test_scepclient_refused_challenge(scep_ca_server: ScepCaServer, tmp_path: Path, case: str) -> None:
    server = scep_ca_server
    integration = server.create_integration(f"scepclient-{case}")
    iid = integration["id"]
    other: dict[str, Any] | None = None
    if case == "used":
        challenge = server.challenge(iid)
        ok = run_scepclient(integration["scep_url"], challenge, tmp_path / "first", subject_cn="first")
        assert ok.issued, ok.describe()
    elif case == "wrong":
        challenge = "0123456789ABCDEF"  # well-formed, never issued
    elif case == "expired":
        challenge = server.challenge(iid)
        validity = datetime.timedelta(minutes=60)  # the default challenge.validity_minutes
        (row,) = server.challenge_rows(iid)
        assert row["expires_at"] - row["created_at"] == validity
        assert server.backdate_challenges(iid, validity + datetime.timedelta(seconds=1), challenge) == 1
    else:
        other = server.create_integration("scepclient-other")
        challenge = server.challenge(other["id"])
    before = server.certificate_count(iid)
    mark = server.log_mark()

    result = run_scepclient(integration["scep_url"], challenge, tmp_path / "device", subject_cn=f"device-{case}")
    assert not result.issued, result.describe()
    assert result.returncode == 1 and not result.cert_path.exists(), result.describe()
    assert "PKCSReq (19) request failed, failInfo: badRequest (2)" in result.output, result.describe()
    assert_bad_request_logged(server, iid, mark)
    assert server.certificate_count(iid) == before

    if other is not None:
        # The refusal did not consume it: the challenge still enrolls on its own integration.
        assert server.certificate_count(other["id"]) == 0
        own = run_scepclient(other["scep_url"], challenge, tmp_path / "own", subject_cn="owner")
        assert own.issued, own.describe()
        assert server.certificate_count(other["id"]) == 1


# --------------------------------------------------------------------------------------------
# certmonger
# --------------------------------------------------------------------------------------------


def add_ca_without_cert(certmonger: Certmonger, server: ScepCaServer, integration: dict[str, Any]) -> None:
    """``getcert add-scep-ca`` with the SCEP URL only; the daemon fetches caps and RA+CA itself."""
    certmonger.add_scep_ca("scep-ca", integration["scep_url"])
    record = certmonger.ca_record("scep-ca")
    ra = x509.load_pem_x509_certificate(server.encryption_pem.read_bytes())
    ca = x509.load_pem_x509_certificate(server.ca_pem.read_bytes())
    # It sorted GetCACert's PKCS#7 into the encryption RA and the CA (its issuer, the trust anchor).
    assert x509.load_pem_x509_certificate(record["ca_encryption_cert"].encode()) == ra, record
    assert x509.load_pem_x509_certificate(record["ca_encryption_issuer_cert"].encode()) == ca, record
    assert "POSTPKIOperation" in record["ca_capabilities"], record


def test_certmonger_enrolls(scep_ca_server: ScepCaServer, certmonger: Certmonger, tmp_path: Path) -> None:
    server = scep_ca_server
    integration = server.create_integration("certmonger-enroll")
    add_ca_without_cert(certmonger, server, integration)
    cert_path = tmp_path / "carol.pem"
    # getcert -N lists RDNs least specific first (ASN.1 order): this is CN=carol,OU=MDM,O=scep-client,C=US.
    result = certmonger.request(
        "scep-ca",
        tmp_path / "carol.key",
        cert_path,
        server.challenge(integration["id"]),
        "C=US,O=scep-client,OU=MDM,CN=carol",
    )
    assert result.state == "MONITORING", f"{result.stdout}\n{certmonger.daemon_log()[-3000:]}"
    check_issued(server, integration, cert_path, "carol")
    assert server.certificate_count(integration["id"]) == 1


def test_subject_in_either_order_gets_the_template_order(
    scep_ca_server: ScepCaServer, certmonger: Certmonger, tmp_path: Path
) -> None:
    """Issue 11: certmonger's ``-N`` copied from the template string (CN first in the DER) and
    written least specific first, scepclient, and a CSR in each order built here all enroll,
    and every certificate's subject is byte-identical, in the template's order."""
    server = scep_ca_server
    integration = server.create_integration("subject-order")
    add_ca_without_cert(certmonger, server, integration)
    subjects: dict[str, bytes] = {}
    for label, subject in [
        ("certmonger-template-string", "CN=frank,OU=MDM,O=scep-client,C=US"),
        ("certmonger-reverse", "C=US,O=scep-client,OU=MDM,CN=frank"),
    ]:
        cert_path = tmp_path / f"{label}.pem"
        result = certmonger.request(
            "scep-ca", tmp_path / f"{label}.key", cert_path, server.challenge(integration["id"]), subject
        )
        assert result.state == "MONITORING", f"{label}: {result.stdout}\n{certmonger.daemon_log()[-3000:]}"
        subjects[label] = check_issued(server, integration, cert_path, "frank").subject.public_bytes()
    result = run_scepclient(integration["scep_url"], server.challenge(integration["id"]), tmp_path, subject_cn="frank")
    assert result.issued, result.describe()
    subjects["scepclient"] = check_issued(server, integration, result.cert_path, "frank").subject.public_bytes()
    template_order = expected_subject(integration, "frank")
    for label, name in [("csr-der-order", template_order), ("csr-reverse", x509.Name(template_order.rdns[::-1]))]:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        csr = build_csr(key, name, server.challenge(integration["id"]))
        subjects[label] = enroll_csr(server, integration, key, csr).subject.public_bytes()
    assert set(subjects.values()) == {template_order.public_bytes()}, subjects
    assert server.certificate_count(integration["id"]) == len(subjects)


def certrep_signed_attrs(reply: bytes) -> dict[str, Any]:
    """The CertRep's signed attributes by dotted OID, values decoded as universal types."""
    signed = cms.ContentInfo.load(reply)["content"]
    (signer,) = signed["signer_infos"]
    attrs: dict[str, Any] = {}
    for attr in signer["signed_attrs"]:
        (value,) = attr["values"]
        attrs[attr["type"].dotted] = core.Asn1Value.load(value.dump())
    return attrs


def replay_certmonger_request(certmonger: Certmonger, server: ScepCaServer, cert_path: Path, iid: str) -> bytes:
    """Send the pkiMessage certmonger stored for ``cert_path`` again, the way it does (GET), and
    return our server's CertRep (certmonger itself keeps no copy of the answer)."""
    _, _, der = pem.unarmor(certmonger.request_record(cert_path)["scep_req"].encode())
    query = urllib.parse.urlencode({"operation": "PKIOperation", "message": base64.b64encode(der).decode()})
    status, headers, reply = http_get(f"{server.scep_url(iid)}?{query}")
    assert status == 200 and headers["Content-Type"] == "application/x-pki-message", (status, headers, reply)
    return reply


def test_certmonger_wrong_challenge_is_ca_rejected(
    scep_ca_server: ScepCaServer, certmonger: Certmonger, tmp_path: Path
) -> None:
    server = scep_ca_server
    integration = server.create_integration("certmonger-rejected")
    iid = integration["id"]
    add_ca_without_cert(certmonger, server, integration)
    mark = server.log_mark()
    cert_path = tmp_path / "mallory.pem"
    result = certmonger.request(
        "scep-ca", tmp_path / "mallory.key", cert_path, "0123456789ABCDEF", "C=US,O=scep-client,OU=MDM,CN=mallory"
    )
    assert result.state == "CA_REJECTED", result.stdout
    assert result.ca_error == CERTMONGER_BAD_REQUEST, result.stdout
    assert not cert_path.exists()
    assert_bad_request_logged(server, iid, mark)
    assert server.certificate_count(iid) == 0

    # What certmonger was told: a signed FAILURE, badRequest, with our failInfoText.
    attrs = certrep_signed_attrs(replay_certmonger_request(certmonger, server, cert_path, iid))
    assert attrs[SCEP_PKI_STATUS_OID].native == "2"
    assert attrs[SCEP_FAIL_INFO_OID].native == "2"
    texts = [v.native for v in attrs.values() if isinstance(v, core.UTF8String)]
    assert texts == [CHALLENGE_REFUSED_TEXT], attrs
    assert server.certificate_count(iid) == 0


def test_fail_info_text_uses_the_rfc8894_oid(scep_ca_server: ScepCaServer) -> None:
    """RFC 8894's ASN.1 module: id-scep ::= { id-pkix 24 }, id-scep-failInfoText ::= { id-scep 1 }.
    A PKCSReq with a wrong challenge, built with scep_ca.protocol.client and encrypted to the RA."""
    server = scep_ca_server
    integration = server.create_integration("failinfotext-oid")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = build_csr(key, expected_subject(integration, "oid"), "0123456789ABCDEF")
    request = build_request(
        csr,
        signer_cert=self_signed_signer(key),
        signer_key=key,
        recipient=x509.load_pem_x509_certificate(server.encryption_pem.read_bytes()),
        transaction_id="failinfotext-oid",
    )
    attrs = certrep_signed_attrs(post_pki_operation(integration["scep_url"], request.der))
    assert attrs[SCEP_FAIL_INFO_OID].native == "2"
    assert attrs[RFC8894_FAIL_INFO_TEXT_OID].native == CHALLENGE_REFUSED_TEXT, sorted(attrs)
