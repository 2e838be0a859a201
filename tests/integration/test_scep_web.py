"""The SCEP HTTP surface with a real store: happy paths, quirks, and every bad input.

Each bad input gets its exact answer (HTTP status or failInfo) and leaves the store unchanged.
"""

from __future__ import annotations

import base64
import datetime as dt
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from scep_ca.protocol.client import Reply, build_csr, build_request, open_reply, self_signed_signer
from scep_ca.protocol.dn import parse_dn
from scep_ca.protocol.enums import ContentCipher, DigestAlg, FailInfo, PKIStatus
from tests.integration.conftest import Server, ServerFactory


def _req(
    server: Server,
    key: rsa.RSAPrivateKey,
    challenge: str | None,
    *,
    subject: str = "CN=alice,O=Example",
    tid: str = "TID-1",
    cipher: ContentCipher = ContentCipher.AES128,
    digest: DigestAlg = DigestAlg.SHA256,
    recipient: x509.Certificate | None = None,
) -> tuple[bytes, x509.Certificate]:
    signer = self_signed_signer(key)
    csr = build_csr(key, parse_dn(subject), challenge)
    req = build_request(
        csr,
        signer_cert=signer,
        signer_key=key,
        recipient=recipient or server.ca.encryption_cert,
        transaction_id=tid,
        cipher=cipher,
        digest=digest,
    )
    return req.der, signer


async def _post(server: Server, body: bytes, integration_id: str | None = None) -> tuple[int, bytes, str]:
    resp = await server.client.post(
        f"{server.url(integration_id)}?operation=PKIOperation",
        data=body,
        headers={"Content-Type": "application/x-pki-message"},
    )
    return resp.status, await resp.read(), resp.headers.get("Content-Type", "")


async def _enroll(server: Server, key: rsa.RSAPrivateKey, challenge: str | None, **kw: object) -> Reply:
    body, signer = _req(server, key, challenge, **kw)  # type: ignore[arg-type]
    status, reply, ctype = await _post(server, body)
    assert status == 200 and ctype == "application/x-pki-message"
    return open_reply(reply, signer, key)


async def test_get_ca_caps(server: Server) -> None:
    resp = await server.client.get(f"{server.url()}?operation=GetCACaps")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    caps = (await resp.text()).splitlines()
    assert {"POSTPKIOperation", "SHA-256", "SHA-512", "AES", "SCEPStandard"} <= set(caps)


async def test_get_ca_cert_is_ra_pair_then_ca_without_parameters(server: Server) -> None:
    """The default layout is NDES's: the signing RA (digitalSignature only), the encryption RA
    (keyEncipherment only), then the CA. certmonger needs the CA in the bag as its trust anchor;
    pyscep needs an encryption certificate without digitalSignature; Apple takes the pair."""
    from asn1crypto import cms

    resp = await server.client.get(f"{server.url()}/pkiclient.exe?operation=GetCACert&message=CAIdentifier")
    assert resp.status == 200
    # Apple rejects parameters (such as charset) on this Content-Type.
    assert resp.headers["Content-Type"] == "application/x-x509-ca-ra-cert"
    bag = cms.ContentInfo.load(await resp.read())["content"]
    enc = server.ca.encryption_cert
    assert enc != server.ca.ra_cert
    want = [server.ca.ra_cert_der, enc.public_bytes(serialization.Encoding.DER), server.ca.cert_der]
    assert [c.chosen.dump() for c in bag["certificates"]] == want
    sign_ku = server.ca.ra_cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert sign_ku.digital_signature and not sign_ku.key_encipherment
    enc_ku = enc.extensions.get_extension_for_class(x509.KeyUsage).value
    assert enc_ku.key_encipherment and not enc_ku.digital_signature
    server.ca.ra_cert.verify_directly_issued_by(server.ca.cert)
    enc.verify_directly_issued_by(server.ca.cert)


async def test_enroll_over_post(server: Server, device_key: rsa.RSAPrivateKey) -> None:
    reply = await _enroll(server, device_key, await server.challenge())
    assert reply.status is PKIStatus.SUCCESS
    cert = reply.certificates[0]
    assert cert.subject.rfc4514_string() == "CN=alice,O=Example"
    cert.verify_directly_issued_by(server.ca.cert)
    record = await server.store.get_certificate(format(cert.serial_number, "x"))
    assert record is not None and record.integration_id == server.integration.id
    assert record.requester_address == "127.0.0.1"


@pytest.mark.parametrize("quote_it", [False, True])
async def test_enroll_over_get(server: Server, device_key: rsa.RSAPrivateKey, quote_it: bool) -> None:
    body, signer = _req(server, device_key, await server.challenge())
    b64 = base64.b64encode(body).decode()
    message = quote(b64, safe="") if quote_it else b64  # raw '+' and '/' as macOS sends them
    resp = await server.client.get(f"{server.url()}/cgi-bin/pkiclient.exe?operation=PKIOperation&message={message}")
    assert resp.status == 200
    assert open_reply(await resp.read(), signer, device_key).status is PKIStatus.SUCCESS


async def test_post_with_any_content_type(server: Server, device_key: rsa.RSAPrivateKey) -> None:
    for ctype in ("application/octet-stream", None):
        body, signer = _req(server, device_key, await server.challenge(), tid=f"T-{ctype}")
        headers = {"Content-Type": ctype} if ctype else {}
        resp = await server.client.post(f"{server.url()}?operation=PKIOperation", data=body, headers=headers)
        assert open_reply(await resp.read(), signer, device_key).status is PKIStatus.SUCCESS


async def test_retry_same_transaction_same_key_returns_same_certificate(
    server: Server, device_key: rsa.RSAPrivateKey
) -> None:
    challenge = await server.challenge()
    first = await _enroll(server, device_key, challenge)
    again = await _enroll(server, device_key, challenge)
    assert again.status is PKIStatus.SUCCESS
    assert again.certificates[0].serial_number == first.certificates[0].serial_number
    assert await server.cert_count() == 1


async def test_retry_same_transaction_other_key_is_bad_request(server: Server, device_key: rsa.RSAPrivateKey) -> None:
    await _enroll(server, device_key, await server.challenge())
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    reply = await _enroll(server, other, await server.challenge())
    assert (reply.status, reply.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST)
    assert await server.cert_count() == 1


async def test_failure_reply_fields(server: Server, device_key: rsa.RSAPrivateKey) -> None:
    body, signer = _req(server, device_key, "WRONGWRONG", tid="T-fields", digest=DigestAlg.SHA512)
    _, raw, _ = await _post(server, body)
    reply = open_reply(raw, signer, device_key)
    assert reply.status is PKIStatus.FAILURE and reply.fail_info is FailInfo.BAD_REQUEST
    assert reply.transaction_id == "T-fields"
    assert reply.digest is DigestAlg.SHA512, "the reply uses the request's digest"
    assert reply.fail_text and "challenge" in reply.fail_text
    assert reply.signer_cert_der == server.ca.ra_cert_der, "signed by exactly the GetCACert RA certificate"


# --- challenges ---------------------------------------------------------------------------------


async def test_used_challenge_is_bad_request(server: Server, device_key: rsa.RSAPrivateKey) -> None:
    challenge = await server.challenge()
    assert (await _enroll(server, device_key, challenge, tid="A")).status is PKIStatus.SUCCESS
    reply = await _enroll(server, device_key, challenge, tid="B", subject="CN=bob,O=Example")
    assert (reply.status, reply.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST)
    assert await server.cert_count() == 1


@pytest.mark.parametrize("challenge", [None, "", "0123456789ABCDEF", "x" * 200])
async def test_missing_or_unknown_challenge(
    server: Server, device_key: rsa.RSAPrivateKey, challenge: str | None
) -> None:
    await server.challenge()  # a valid one exists, but is not the one sent
    reply = await _enroll(server, device_key, challenge)
    assert (reply.status, reply.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST)
    assert await server.cert_count() == 0


async def test_expired_challenge(make_server: ServerFactory, device_key: rsa.RSAPrivateKey) -> None:
    server = await make_server()
    from challenge.issuer import issue_challenge

    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=61)
    challenge = await issue_challenge(server.store, server.config.challenge, server.integration.id, now=past)
    assert challenge is not None
    reply = await _enroll(server, device_key, challenge)
    assert (reply.status, reply.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST)
    assert await server.cert_count() == 0


async def test_challenge_of_another_integration(server: Server, device_key: rsa.RSAPrivateKey) -> None:
    challenge = await server.challenge(server.other.id)
    reply = await _enroll(server, device_key, challenge)
    assert (reply.status, reply.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST)
    assert await server.cert_count() == 0
    # ...and it still works where it belongs.
    body, signer = _req(server, device_key, challenge)
    _, raw, _ = await _post(server, body, server.other.id)
    assert open_reply(raw, signer, device_key).status is PKIStatus.SUCCESS


# --- policy ---------------------------------------------------------------------------------------


async def test_wrong_subject_is_bad_request(server: Server, device_key: rsa.RSAPrivateKey) -> None:
    reply = await _enroll(server, device_key, await server.challenge(), subject="CN=alice,O=Evil")
    assert (reply.status, reply.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST)
    assert await server.cert_count() == 0


async def test_small_key_is_bad_alg(server: Server) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    reply = await _enroll(server, small, await server.challenge())
    assert (reply.status, reply.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_ALG)
    assert await server.cert_count() == 0


async def test_des_refused_when_disabled(make_server: ServerFactory, device_key: rsa.RSAPrivateKey) -> None:
    server = await make_server(**{"scep.allow_des": False})
    reply = await _enroll(server, device_key, await server.challenge(), cipher=ContentCipher.DES)
    assert (reply.status, reply.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_ALG)
    assert await server.cert_count() == 0


async def test_envelope_for_another_ca_is_bad_message_check(
    server: Server, device_key: rsa.RSAPrivateKey, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from scep_ca.pki.ca import create_ca

    other = create_ca(
        tmp_path_factory.mktemp("other"), subject="CN=Other", key_size=2048, validity_days=1, passphrase=None
    )
    reply = await _enroll(server, device_key, await server.challenge(), recipient=other.cert)
    assert (reply.status, reply.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_MESSAGE_CHECK)
    assert await server.cert_count() == 0


async def test_bad_signature_is_bad_message_check(server: Server, device_key: rsa.RSAPrivateKey) -> None:
    from asn1crypto import cms

    body, signer = _req(server, device_key, await server.challenge())
    info = cms.ContentInfo.load(body)
    sig = bytearray(info["content"]["signer_infos"][0]["signature"].native)
    sig[-1] ^= 1
    info["content"]["signer_infos"][0]["signature"] = bytes(sig)
    _, raw, _ = await _post(server, info.dump(force=True))
    reply = open_reply(raw, signer, device_key)
    assert (reply.status, reply.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_MESSAGE_CHECK)
    assert await server.cert_count() == 0


async def test_unsupported_message_type_is_bad_request(server: Server, device_key: rsa.RSAPrivateKey) -> None:
    signer = self_signed_signer(device_key)
    req = build_request(
        b"\x30\x00",
        signer_cert=signer,
        signer_key=device_key,
        recipient=server.ca.encryption_cert,
        transaction_id="T",
        message_type=99,  # type: ignore[arg-type]
    )
    _, raw, _ = await _post(server, req.der)
    reply = open_reply(raw, signer, device_key)
    assert (reply.status, reply.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST)


# --- HTTP-level errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"not der", b"\x30\x82\x10\x00\x02\x01", b""])
async def test_not_a_pki_message_is_400(server: Server, body: bytes) -> None:
    status, text, _ = await _post(server, body)
    assert status == 400, text
    assert await server.cert_count() == 0


async def test_truncated_message_is_400(server: Server, device_key: rsa.RSAPrivateKey) -> None:
    body, _ = _req(server, device_key, await server.challenge())
    status, _, _ = await _post(server, body[: len(body) // 2])
    assert status == 400
    assert await server.cert_count() == 0


async def test_bad_base64_is_400(server: Server) -> None:
    resp = await server.client.get(f"{server.url()}?operation=PKIOperation&message=%21%21%21")
    assert resp.status == 400


async def test_unknown_operation_is_400(server: Server) -> None:
    for query in ("operation=Nope", ""):
        resp = await server.client.get(f"{server.url()}?{query}")
        assert resp.status == 400


@pytest.mark.parametrize("operation", ["GetCACaps", "GetCACert", "PKIOperation"])
async def test_unknown_integration_is_404(server: Server, operation: str, device_key: rsa.RSAPrivateKey) -> None:
    body, _ = _req(server, device_key, await server.challenge())
    resp = await server.client.post(f"/scep/nosuchthing?operation={operation}", data=body)
    assert resp.status == 404
    assert await server.cert_count() == 0


async def test_body_over_limit_is_413(server: Server) -> None:
    resp = await server.client.post(f"{server.url()}?operation=PKIOperation", data=b"\x30" * (64 * 1024 + 1))
    assert resp.status == 413
    assert await server.cert_count() == 0


async def test_bad_input_is_logged_without_secrets(
    server: Server, device_key: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    challenge = await server.challenge()
    await _enroll(server, device_key, challenge, subject="CN=alice,O=Evil")
    assert "failInfo=BAD_REQUEST" in caplog.text
    assert challenge not in caplog.text


async def test_an_envelope_to_the_ca_is_undecryptable_like_any_other(
    server: Server, device_key: rsa.RSAPrivateKey
) -> None:
    """Only the encryption RA decrypts (issue 17 item 2): the CA key is never a decryption
    oracle. A request encrypted to the CA, with a good challenge or a bad one, gets the one
    decryption failure, signed by the RA; the challenge stays unused and nothing is issued."""
    challenge = await server.challenge()
    before = await server.cert_count()
    for tid, password in (("to-ca", challenge), ("to-ca-bad", "WRONG")):
        reply = await _enroll(server, device_key, password, recipient=server.ca.cert, tid=tid)
        assert (reply.status, reply.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_MESSAGE_CHECK)
        assert reply.fail_text == "the request cannot be decrypted"
        assert reply.signer_cert_der == server.ca.ra_cert_der
    assert await server.cert_count() == before
    to_ra = await _enroll(server, device_key, challenge, tid="to-ra")
    assert to_ra.status is PKIStatus.SUCCESS, "the challenge was not consumed"
    assert to_ra.signer_cert_der == server.ca.ra_cert_der
