"""Prove the real-client harness (tests/e2e/clients.py) against micromdm's ``scepserver``.

These tests pin down how the real clients behave so that the e2e tests against our own server
can rely on the harness, and they record what certmonger needs from a SCEP server.

What certmonger 0.79.17 does when it is NOT handed the CA certificate
----------------------------------------------------------------------
``getcert add-scep-ca -c NAME -u URL`` without ``-N`` makes the daemon fetch GetCACaps and
GetCACert itself (``scep-submit`` with CERTMONGER_OPERATION=FETCH_SCEP_CA_CERTS/_CAPS). It
sorts the certificates it got into a *leaf* (the RA: the one that issued no other; it prefers
one with keyEncipherment) and a *top* (the one no other issued). With a single self-signed
certificate the leaf and the top are the same certificate, and certmonger stores it only as
``ca_encryption_cert`` (the RA) and stores no ``ca_encryption_issuer_cert`` (the CA).

For PKIOperation the daemon then runs scep-submit with CERTMONGER_SCEP_RA_CERTIFICATE only.
scep-submit builds the trust store for ``PKCS7_verify`` from the CA certificate alone
(CERTMONGER_SCEP_CA_CERTIFICATE / ``-N``); the RA certificate is only an untrusted
intermediate. So micromdm's CertRep, signed by its self-signed CA, fails chain building with
X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT (18, "self-signed certificate"), reported as
``Error: failed to verify signature on server response. error:10800075:PKCS7
routines::certificate verify error`` and state CA_UNREACHABLE.

The hypothesis "PKCS7_verify's default purpose (smimesign) rejects a signer without
digitalSignature" is REFUTED for certmonger: scep-submit installs a verify callback that
ignores X509_V_ERR_INVALID_PURPOSE (26) and X509_V_ERR_KEYUSAGE_NO_DIGITAL_SIGNATURE. Under gdb
(breakpoint on that callback): without ``-N`` the only error is 18 at depth 0; with ``-N`` the
callback sees error 26 at depth 0, returns 1, and verification succeeds. (Plain ``openssl smime
-verify -CAfile ca.pem`` does reject such a signer with "unsuitable certificate purpose", and
accepts it with ``-purpose any``, so other OpenSSL-based clients may still care.)

Consequences for a server that certmonger should enroll against without manual CA handling:
GetCACert must return at least two certificates, an RA (leaf, digitalSignature +
keyEncipherment) and the CA that issued it, as a certs-only PKCS#7; certmonger takes both
``application/x-x509-ca-ra-cert`` and ``application/x-x509-ca-cert`` (for the latter, with
``message=0``, it also walks ``message=1, 2, ...`` Dogtag-style until a duplicate, a non-200
or another content type). The CA is then passed to scep-submit as CERTMONGER_SCEP_CA_CERTIFICATE
and requests are encrypted to the RA (both asserted below with a stub). A CertRep signed by the
CA then verifies (shown with -N against micromdm); one signed by the RA should verify through
RA -> CA, which no server here can show yet: the first e2e run against scep-ca will.

With ``-N CA`` against micromdm the signature check passes, but the reply's envelope is
DES-CBC, which certmonger cannot decrypt on OpenSSL 3 ("digital envelope routines::unsupported"
in the daemon log); the request ends in NEED_GUIDANCE, without ca-error. Starting the daemon
with OPENSSL_CONF activating OpenSSL's legacy provider did not change that (same error).

Cipher and digest certmonger sends (it talks GET only, ``message=`` percent-encoded base64,
about 3.4 kB for RSA-2048, even when POSTPKIOperation is advertised): content encryption
AES-256-CBC when caps name AES (and when caps are empty or name no cipher), DES-EDE3-CBC when
they name DES3 but not AES, DES-CBC if they name only DES (which OpenSSL 3 then refuses, so no
request is sent at all). The signature digest is SHA-256 whatever the caps say (SHA-512-only
and SHA-1-only servers get SHA-256 too).
"""

from __future__ import annotations

import base64
import datetime
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest
from asn1crypto import cms, pem
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from tests.e2e.clients import (
    SCEP_SUBMIT_STATUS,
    Certmonger,
    ProbeScepServer,
    ScepServerProcess,
    free_port,
    openssl_verify,
    run_scep_submit,
    run_scepclient,
)

VERIFY_FAILURE = "failed to verify signature on server response"

# ------------------------------------------------------------------------------------------
# scepclient
# ------------------------------------------------------------------------------------------


def test_scepclient_enrolls_and_openssl_verifies(micromdm_scepserver: ScepServerProcess, tmp_path: Path) -> None:
    result = run_scepclient(
        micromdm_scepserver.url,
        "secret",
        tmp_path,
        subject_cn="harness-device-1",
        organization="Example",
        ou="Devices",
        country="DE",
    )
    assert result.issued, result.describe()
    assert result.returncode == 0
    verify = openssl_verify(result.cert_path, micromdm_scepserver.ca_cert_path)
    assert verify.ok, verify.describe()
    cert = x509.load_pem_x509_certificate(result.cert_path.read_bytes())
    assert cert.subject.rfc4514_string() == "CN=harness-device-1,OU=Devices,O=Example,C=DE"
    # scepclient writes its CSR into its working directory: it must have run in tmp_path.
    assert (tmp_path / "csr.pem").exists()


def test_scepclient_wrong_challenge_is_reported(micromdm_scepserver: ScepServerProcess, tmp_path: Path) -> None:
    result = run_scepclient(micromdm_scepserver.url, "not-the-challenge", tmp_path, subject_cn="harness-bad")
    assert not result.issued, result.describe()
    assert result.returncode == 1, result.describe()
    assert "failInfo: badRequest" in result.output, result.describe()


def test_scepclient_unreachable_server_fails_fast(tmp_path: Path) -> None:
    result = run_scepclient(f"http://127.0.0.1:{free_port()}/scep", "secret", tmp_path, timeout=15)
    assert not result.issued
    assert result.returncode == 1 and not result.command.timed_out, result.describe()
    assert "connection refused" in result.output, result.describe()


# ------------------------------------------------------------------------------------------
# certmonger: the private daemon itself
# ------------------------------------------------------------------------------------------


def test_certmonger_private_daemon_keeps_state_in_its_dir(certmonger: Certmonger) -> None:
    assert certmonger.name_has_owner()
    cas = certmonger.list_cas()
    assert cas.ok and "CA 'local'" in cas.stdout, cas.describe()
    # The built-in CAs were written to our directory, not /var/lib/certmonger.
    assert any(certmonger.cas_dir.iterdir())
    assert str(certmonger.root) in certmonger.env["CERTMONGER_CAS_DIR"]


def test_certmonger_request_reaches_monitoring_with_local_ca(certmonger: Certmonger, tmp_path: Path) -> None:
    """The success path of Certmonger.request, without SCEP: certmonger's built-in local CA
    (its CERTMONGER_LOCAL_CA_DIR is redirected too)."""
    result = certmonger.request("local", tmp_path / "k.pem", tmp_path / "c.pem", None, "CN=harness-local", 30)
    assert result.state == "MONITORING", result.stdout
    assert (tmp_path / "c.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert any((certmonger.root / "local").iterdir())


# ------------------------------------------------------------------------------------------
# certmonger against micromdm's scepserver
# ------------------------------------------------------------------------------------------


def _pem_to_der(text: str) -> bytes:
    _, _, der = pem.unarmor(text.strip().encode())
    return bytes(der)


@dataclass(frozen=True)
class PkiMessageInfo:
    digest: str  # signer digest, asn1crypto name: "sha256"
    cipher: str  # content encryption of the inner EnvelopedData: "aes256_cbc"
    recipient_serial: int  # serial of the certificate the envelope is encrypted to
    message_type: str


def _inspect_pkimessage(der: bytes) -> PkiMessageInfo:
    signed = cms.ContentInfo.load(der)["content"]
    signer = signed["signer_infos"][0]
    message_type = ""
    for attr in signer["signed_attrs"]:
        if attr["type"].dotted == "2.16.840.1.113733.1.9.2":
            message_type = attr["values"][0].native
    inner = signed["encap_content_info"]["content"].native
    enveloped = cms.ContentInfo.load(inner)["content"]
    rid = enveloped["recipient_infos"][0].chosen["rid"].chosen
    return PkiMessageInfo(
        digest=signer["digest_algorithm"]["algorithm"].native,
        cipher=enveloped["encrypted_content_info"]["content_encryption_algorithm"]["algorithm"].native,
        recipient_serial=rid["serial_number"].native,
        message_type=message_type,
    )


def test_certmonger_without_ca_cert_fails_signature_check(
    certmonger: Certmonger, micromdm_scepserver: ScepServerProcess, tmp_path: Path
) -> None:
    """Expected failure, asserted: see the module docstring for the why."""
    server = micromdm_scepserver
    certmonger.add_scep_ca("micromdm-noca", server.url)
    record = certmonger.ca_record("micromdm-noca")
    ca_pem = server.ca_cert_path.read_text()
    # The one self-signed certificate became the RA (encryption) certificate only ...
    assert _pem_to_der(record["ca_encryption_cert"]) == _pem_to_der(ca_pem)
    # ... and no CA certificate is known, so scep-submit has no trust anchor.
    assert "ca_encryption_issuer_cert" not in record, record

    cert_path = tmp_path / "cert.pem"
    result = certmonger.request("micromdm-noca", tmp_path / "key.pem", cert_path, "secret", "CN=harness-cm-noca")
    assert result.state == "CA_UNREACHABLE", result.stdout
    assert VERIFY_FAILURE in result.ca_error, result.stdout
    assert "certificate verify error" in result.ca_error, result.stdout
    assert not cert_path.exists()

    # What certmonger sent, given micromdm's caps (AES, SHA-256, ...): AES-256-CBC, SHA-256,
    # encrypted to the certificate it took as RA.
    sent = _inspect_pkimessage(_pem_to_der(certmonger.request_record(cert_path)["scep_req"]))
    ca = x509.load_pem_x509_certificate(ca_pem.encode())
    assert (sent.digest, sent.cipher, sent.message_type) == ("sha256", "aes256_cbc", "19")
    assert sent.recipient_serial == ca.serial_number

    # The same request through scep-submit by hand isolates the cause: only the trust anchor
    # (-N) differs between failure and success of the signature check.
    message = tmp_path / "pkcsreq.pem"
    message.write_text(certmonger.request_record(cert_path)["scep_req"] + "\n")
    no_anchor = run_scep_submit(server.url, "PKIOperation", ra_cert=server.ca_cert_path, message_file=message)
    assert SCEP_SUBMIT_STATUS[no_anchor.returncode] == "UNREACHABLE", no_anchor.describe()
    assert VERIFY_FAILURE in no_anchor.stdout, no_anchor.describe()
    with_anchor = run_scep_submit(
        server.url,
        "PKIOperation",
        ra_cert=server.ca_cert_path,
        signing_ca=server.ca_cert_path,
        message_file=message,
    )
    assert VERIFY_FAILURE not in with_anchor.output, with_anchor.describe()
    # ISSUED (prints the still-encrypted reply) or REJECTED (micromdm refused the re-sent
    # transaction): either way the CertRep's signature was accepted.
    assert SCEP_SUBMIT_STATUS[with_anchor.returncode] in {"ISSUED", "REJECTED"}, with_anchor.describe()


def test_certmonger_with_ca_cert_verifies_but_cannot_decrypt_des_reply(
    certmonger: Certmonger, micromdm_scepserver: ScepServerProcess, tmp_path: Path
) -> None:
    """Expected failure, asserted: the signature now verifies, the DES-CBC reply envelope does
    not decrypt on OpenSSL 3. Against a server that answers with AES this is the path that
    issues."""
    certmonger.add_scep_ca("micromdm-ca", micromdm_scepserver.url, ca_cert_path=micromdm_scepserver.ca_cert_path)
    cert_path = tmp_path / "cert.pem"
    result = certmonger.request("micromdm-ca", tmp_path / "key.pem", cert_path, "secret", "CN=harness-cm-ca")
    assert result.state == "NEED_GUIDANCE", result.stdout
    assert VERIFY_FAILURE not in result.stdout
    assert result.ca_error == "", result.stdout
    log = certmonger.daemon_log()
    assert "Error decrypting PKCS#7 with pkey" in log, log[-3000:]
    assert "digital envelope routines::unsupported" in log, log[-3000:]
    assert not cert_path.exists()


# ------------------------------------------------------------------------------------------
# certmonger against a recording stub: what GetCACert content and caps do
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: x509.Certificate
    ra: x509.Certificate


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "harness"), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    )


@pytest.fixture(scope="module")
def pki() -> Pki:
    """A CA shaped like micromdm's (KeyUsage keyCertSign+cRLSign only) and an RA it issued."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ra_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("harness CA"))
        .issuer_name(_name("harness CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ra = (
        x509.CertificateBuilder()
        .subject_name(_name("harness RA"))
        .issuer_name(ca.subject)
        .public_key(ra_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ra_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return Pki(ca=ca, ra=ra)


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _certs_only(*certs: x509.Certificate) -> bytes:
    return pkcs7.serialize_certificates(list(certs), serialization.Encoding.DER)


def _stored(record: dict[str, str], key: str) -> bytes | None:
    return _pem_to_der(record[key]) if key in record else None


@pytest.mark.parametrize(
    ("body", "content_type", "expect_ra", "expect_ca"),
    [
        # One DER certificate (micromdm's answer): RA only, no CA -> no trust anchor later.
        ("ca-der", "application/x-x509-ca-cert", "ca", None),
        # A PKCS#7 holding only the CA changes nothing.
        ("p7-ca", "application/x-x509-ca-ra-cert", "ca", None),
        # NDES-style RA + CA: the RA encrypts, the CA becomes the trust anchor.
        ("p7-ra-ca", "application/x-x509-ca-ra-cert", "ra", "ca"),
        # The same bag under the single-cert content type is sorted the same way.
        ("p7-ra-ca", "application/x-x509-ca-cert", "ra", "ca"),
    ],
)
def test_certmonger_getcacert_classification(
    certmonger: Certmonger,
    pki: Pki,
    tmp_path: Path,
    body: str,
    content_type: str,
    expect_ra: str,
    expect_ca: str | None,
) -> None:
    bodies = {
        "ca-der": _der(pki.ca),
        "p7-ca": _certs_only(pki.ca),
        "p7-ra-ca": _certs_only(pki.ra, pki.ca),
    }
    with ProbeScepServer(cacert_body=bodies[body], cacert_content_type=content_type) as probe:
        certmonger.add_scep_ca("probe", probe.url)
        record = certmonger.ca_record("probe")
        by_name = {"ca": _der(pki.ca), "ra": _der(pki.ra)}
        assert _stored(record, "ca_encryption_cert") == by_name[expect_ra], record
        assert _stored(record, "ca_encryption_issuer_cert") == (by_name[expect_ca] if expect_ca else None), record
        getcacert = [r.message for r in probe.requests if r.operation == "GetCACert"]
        if content_type == "application/x-x509-ca-cert":
            # Dogtag-style walk: it asks message=1 after message=0 (stops at the duplicate).
            assert getcacert[:2] == ["0", "1"], probe.requests
        else:
            assert getcacert == ["0"], probe.requests

        if expect_ca is not None:
            # With a CA known, scep-submit gets it as CERTMONGER_SCEP_CA_CERTIFICATE (its trust
            # anchor) and the request is encrypted to the RA.
            cert_path = tmp_path / "cert.pem"
            result = certmonger.request("probe", tmp_path / "key.pem", cert_path, "secret", "CN=probe", 20)
            assert result.state == "CA_UNREACHABLE", result.stdout  # the stub answers 503
            assert 'Setting "CERTMONGER_SCEP_CA_CERTIFICATE"' in certmonger.daemon_log()
            (sent,) = probe.pkioperations()
            der = base64.b64decode(urllib.parse.unquote(sent.message))
            assert _inspect_pkimessage(der).recipient_serial == pki.ra.serial_number


def test_certmonger_rejects_other_getcacert_content_type(certmonger: Certmonger, pki: Pki) -> None:
    body = _certs_only(pki.ra, pki.ca)
    with ProbeScepServer(cacert_body=body, cacert_content_type="application/pkcs7-mime") as probe:
        certmonger.add_scep_ca("probe", probe.url, wait_ca_data=None)
        marker = "('probe').encryption_certs server unreachable"
        deadline = time.monotonic() + 10
        while marker not in certmonger.daemon_log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker in certmonger.daemon_log(), certmonger.daemon_log()[-3000:]
        assert "ca_encryption_cert" not in certmonger.ca_record("probe")
        # The daemon only logs "unreachable"; the helper run by hand says why.
        direct = run_scep_submit(probe.url, "GetCACert")
        assert SCEP_SUBMIT_STATUS[direct.returncode] == "UNREACHABLE", direct.describe()
        assert 'Server reply was of unexpected MIME type "application/pkcs7-mime"' in direct.stdout


@pytest.mark.parametrize(
    ("caps", "cipher", "digest"),
    [
        ("POSTPKIOperation\nSHA-256\nAES\nSCEPStandard\n", "aes256_cbc", "sha256"),
        ("SHA-512\nSHA-256\nAES\nDES3\n", "aes256_cbc", "sha256"),  # SHA-512 is not taken
        ("DES3\nSHA-1\n", "tripledes_3key", "sha256"),  # SHA-1 is not taken either
        ("SHA-512\n", "aes256_cbc", "sha256"),
        ("", "aes256_cbc", "sha256"),  # nothing advertised: certmonger's defaults
    ],
)
def test_certmonger_cipher_and_digest_from_getcacaps(
    certmonger: Certmonger, pki: Pki, tmp_path: Path, caps: str, cipher: str, digest: str
) -> None:
    with ProbeScepServer(
        caps=caps, cacert_body=_certs_only(pki.ra, pki.ca), cacert_content_type="application/x-x509-ca-ra-cert"
    ) as probe:
        certmonger.add_scep_ca("probe", probe.url, need_caps=bool(caps.strip()))
        result = certmonger.request("probe", tmp_path / "key.pem", tmp_path / "cert.pem", "secret", "CN=probe", 20)
        assert result.state == "CA_UNREACHABLE", result.stdout
        (sent,) = probe.pkioperations()
    # GET only, whatever the caps say; the message is percent-encoded base64 (no raw "+").
    assert sent.method == "GET" and sent.body == b""
    assert "+" not in sent.message
    der = base64.b64decode(urllib.parse.unquote(sent.message))
    info = _inspect_pkimessage(der)
    assert (info.cipher, info.digest, info.message_type) == (cipher, digest, "19")
    assert 3000 < len(sent.message) < 4500 and sent.raw_target_length < 8190, len(sent.message)
