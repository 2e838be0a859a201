"""Real-client quirks, one named regression test each, through the HTTP app.

Every test sends what a real client sends, over the in-process aiohttp app on a real SQLite
store, and fails if the server's handling of that quirk were removed. GET targets are sent
with ``yarl.URL(..., encoded=True)`` so the bytes on the wire are exactly the ones written
here (a raw ``+`` stays a ``+``, ``%0A`` stays ``%0A``).

Some of these exist at the unit level in tests/unit/test_web_decode.py; these go through HTTP.
The last group replays every real-client request vector under tests/vectors with the
transport that client used, against an app whose RA is the key the vector was encrypted to.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import os
import re
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import AttributeOID, NameOID
from yarl import URL

from challenge.codes import hash_challenge
from config import load_config
from scep_ca.asn1 import der, oids
from scep_ca.asn1.ber import encode_tlv, issuer_and_serial, read_tlv
from scep_ca.pki.ca import CAIdentity
from scep_ca.pki.records import Integration
from scep_ca.protocol.algorithms import CIPHER_OIDS, DIGEST_ALGORITHMS
from scep_ca.protocol.client import Reply, build_csr, build_request, open_reply, self_signed_signer
from scep_ca.protocol.dn import parse_dn
from scep_ca.protocol.enums import ContentCipher, DigestAlg, MessageType, PKIStatus
from scep_ca.protocol.envelope import encrypt_envelope
from scep_ca.protocol.message import decode_pki_message, hash_algorithm
from scep_ca.protocol.signing import SignerIdentity, attribute, sign_message
from scep_ca.server.app import build_app
from scep_ca.services.scep import ca_ra_bundle
from store.base import ChallengeAdd
from store.factory import open_store
from tests.integration.conftest import Server, ServerFactory
from tests.unit.test_vector_walk import Vector, discover

SUBJECT = "CN=alice,O=Example"
TID_ATTR = "2.16.840.1.113733.1.9.7"


# --- helpers ---------------------------------------------------------------------------------------


def _signer(key: rsa.RSAPrivateKey) -> x509.Certificate:
    return self_signed_signer(key)


def _request(
    server: Server,
    key: rsa.RSAPrivateKey,
    challenge: str | None,
    *,
    tid: str = "TID-1",
    signer: x509.Certificate | None = None,
    csr: bytes | None = None,
    subject: str = SUBJECT,
) -> tuple[bytes, x509.Certificate]:
    signer = signer or _signer(key)
    request = build_request(
        csr if csr is not None else build_csr(key, parse_dn(subject), challenge),
        signer_cert=signer,
        signer_key=key,
        recipient=server.ca.encryption_cert,
        transaction_id=tid,
        cipher=ContentCipher.AES128,
        digest=DigestAlg.SHA256,
    )
    return request.der, signer


async def _get(server: Server, target: str) -> tuple[int, bytes, str]:
    """GET exactly ``target`` (path and query, already encoded) on the wire."""
    resp = await server.client.get(URL(target, encoded=True))
    return resp.status, await resp.read(), resp.headers.get("Content-Type", "")


async def _get_pki(server: Server, message: str, suffix: str = "") -> bytes:
    status, body, ctype = await _get(server, f"{server.url()}{suffix}?operation=PKIOperation&message={message}")
    assert status == 200, body
    assert ctype == "application/x-pki-message"
    return body


async def _post(
    server: Server, body: bytes, *, content_type: str | None = "application/x-pki-message", suffix: str = ""
) -> bytes:
    headers = {"Content-Type": content_type} if content_type is not None else {}
    resp = await server.client.post(
        f"{server.url()}{suffix}?operation=PKIOperation",
        data=body,
        headers=headers,
        # With no Content-Type given, aiohttp would add application/octet-stream: leave it out.
        skip_auto_headers=["Content-Type"] if content_type is None else (),
    )
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"] == "application/x-pki-message"
    return await resp.read()


def _assert_issued(reply: Reply, key: rsa.RSAPrivateKey, subject: str = SUBJECT) -> x509.Certificate:
    assert reply.status is PKIStatus.SUCCESS, (reply.fail_info, reply.fail_text)
    cert = reply.certificates[0]
    assert cert.public_key() == key.public_key()
    assert cert.subject.rfc4514_string() == subject
    return cert


def _b64_with(
    server: Server, key: rsa.RSAPrivateKey, challenge: str, wanted: Callable[[str], bool]
) -> tuple[str, x509.Certificate]:
    """A request whose standard base64 satisfies ``wanted``; transaction IDs of different lengths
    change the message length (and so the padding), fresh nonces and keys change the characters."""
    for i in range(40):
        body, signer = _request(server, key, challenge, tid="T" * (1 + i % 3) + str(i))
        text = base64.b64encode(body).decode()
        if wanted(text):
            return text, signer
    raise AssertionError("no request with the wanted base64 shape")


# --- GET encodings ------------------------------------------------------------------------------


async def test_macos_get_with_raw_plus_and_slash(server: Server, device_key: rsa.RSAPrivateKey) -> None:
    """macOS/iOS leave '+' and '/' unescaped: a form decoder would turn '+' into a space."""
    b64, signer = _b64_with(server, device_key, await server.challenge(), lambda t: "+" in t and "/" in t)
    reply = open_reply(await _get_pki(server, b64), signer, device_key)
    _assert_issued(reply, device_key)


@pytest.mark.parametrize("escaped", [True, False], ids=["all-escaped", "only-newlines-escaped"])
async def test_sscep_get_with_percent_0a_line_breaks(
    server: Server, device_key: rsa.RSAPrivateKey, escaped: bool
) -> None:
    """sscep sends PEM-style base64 with a line break every 64 characters, escaped as %0A."""
    b64, signer = _b64_with(server, device_key, await server.challenge(), lambda t: "+" in t)
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    wrapped = "%0A".join(quote(line, safe="") if escaped else line for line in lines) + "%0A"
    assert wrapped.count("%0A") > 10
    reply = open_reply(await _get_pki(server, wrapped), signer, device_key)
    _assert_issued(reply, device_key)


@pytest.mark.parametrize("pad", ["=", "=="])
async def test_get_with_missing_base64_padding(server: Server, device_key: rsa.RSAPrivateKey, pad: str) -> None:
    b64, signer = _b64_with(
        server, device_key, await server.challenge(), lambda t: t.endswith(pad) and not t.endswith(pad + "=")
    )
    message = quote(b64.rstrip("="), safe="")
    assert len(b64.rstrip("=")) % 4 != 0
    reply = open_reply(await _get_pki(server, message), signer, device_key)
    _assert_issued(reply, device_key)


@pytest.mark.parametrize("padded", [True, False])
async def test_get_with_url_safe_base64(server: Server, device_key: rsa.RSAPrivateKey, padded: bool) -> None:
    b64, signer = _b64_with(
        server, device_key, await server.challenge(), lambda t: "+" in t and "/" in t and t.endswith("=")
    )
    urlsafe = b64.replace("+", "-").replace("/", "_")
    message = urlsafe.replace("=", "%3D") if padded else urlsafe.rstrip("=")
    reply = open_reply(await _get_pki(server, message), signer, device_key)
    _assert_issued(reply, device_key)


# --- the outer signer ---------------------------------------------------------------------------


def _windows_signer(key: rsa.RSAPrivateKey) -> x509.Certificate:
    """A transient signer as Windows' SCEP client makes it: AuthorityKeyIdentifier marked critical
    (RFC 5280 says it MUST NOT be), an issuer name unlike its subject."""
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "DESKTOP-1234$")]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Windows SCEP transient issuer")]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=True)
        .sign(key, hashes.SHA256())
    )


async def test_windows_signer_with_critical_authority_key_identifier(
    server: Server, device_key: rsa.RSAPrivateKey
) -> None:
    signer = _windows_signer(device_key)
    assert signer.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).critical
    body, _ = _request(server, device_key, await server.challenge(), signer=signer)
    reply = open_reply(await _post(server, body), signer, device_key)
    _assert_issued(reply, device_key)


SHA256_WITH_RSA = bytes.fromhex("2a864886f70d01010b")
SHA1_WITH_RSA = bytes.fromhex("2a864886f70d010105")


def _apple_signer(key: rsa.RSAPrivateKey) -> x509.Certificate:
    """Apple's temporary signer: CN=<random UUID>, self-signed with SHA-1.

    cryptography refuses to sign a certificate with SHA-1, so the SHA-256 certificate it makes is
    re-signed here: the signature OID in the TBS and outside it becomes sha1WithRSAEncryption."""
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(uuid.uuid4()).upper())])
    sha256_cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    tbs = sha256_cert.tbs_certificate_bytes
    assert tbs.count(SHA256_WITH_RSA) == 1
    tbs = tbs.replace(SHA256_WITH_RSA, SHA1_WITH_RSA)
    signature = key.sign(tbs, padding.PKCS1v15(), hashes.SHA1())
    cert_der = der.seq(tbs, der.algorithm("1.2.840.113549.1.1.5"), encode_tlv(0x03, b"\x00" + signature))
    cert = x509.load_der_x509_certificate(cert_der)
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA1)
    return cert


async def test_apple_signer_subject_unlike_the_csr_subject(server: Server, device_key: rsa.RSAPrivateKey) -> None:
    """The signer is CN=<UUID>, the CSR asks for CN=alice,O=Example: the issued certificate carries
    the CSR's subject and the reply is encrypted to the UUID signer. The transaction ID is Apple's:
    upper-case hex SHA-1 of the public key."""
    signer = _apple_signer(device_key)
    spki = device_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    tid = hashlib.sha1(spki).hexdigest().upper()
    body, _ = _request(server, device_key, await server.challenge(), signer=signer, tid=tid)
    reply = open_reply(await _post(server, body), signer, device_key)
    cert = _assert_issued(reply, device_key)
    assert cert.subject != signer.subject
    assert reply.transaction_id == tid


def _sign_with_ski(
    key: rsa.RSAPrivateKey, signer: x509.Certificate, digest: DigestAlg, attrs: list[bytes], content: bytes
) -> bytes:
    """A SignedData whose SignerInfo names its signer by subjectKeyIdentifier (version 3, RFC 5652 5.3)."""
    digest_value = hashlib.new(digest.value, content).digest()
    signed_attrs = der.set_of(
        attribute(oids.CONTENT_TYPE, oids.DATA),
        *attrs,
        attribute(oids.MESSAGE_DIGEST, der.octet_string(digest_value)),
    )
    signature = key.sign(signed_attrs, padding.PKCS1v15(), hash_algorithm(digest))
    ski = signer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    signer_info = der.seq(
        der.integer(3),
        der.implicit_primitive(0, ski),
        DIGEST_ALGORITHMS[digest],
        b"\xa0" + signed_attrs[1:],
        oids.RSA_ENCRYPTION,
        der.octet_string(signature),
    )
    signed_data = der.seq(
        der.integer(3),
        der.set_of(DIGEST_ALGORITHMS[digest]),
        der.seq(oids.DATA, der.explicit(0, der.octet_string(content))),
        der.explicit(0, signer.public_bytes(serialization.Encoding.DER)),
        der.set_of(signer_info),
    )
    return der.seq(oids.SIGNED_DATA, der.explicit(0, signed_data))


def _scep_attrs(tid: str) -> list[bytes]:
    return [
        attribute(oids.MESSAGE_TYPE, der.printable_string(str(int(MessageType.PKCS_REQ)))),
        attribute(oids.TRANSACTION_ID, der.printable_string(tid)),
        attribute(oids.SENDER_NONCE, der.octet_string(os.urandom(16))),
    ]


async def test_signer_identified_by_subject_key_identifier(server: Server, device_key: rsa.RSAPrivateKey) -> None:
    """SignerInfo sid [0] subjectKeyIdentifier instead of issuerAndSerialNumber (CNG-based clients)."""
    signer = _windows_signer(device_key)
    public = server.ca.encryption_cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    csr = build_csr(device_key, parse_dn(SUBJECT), await server.challenge())
    enveloped = encrypt_envelope(csr, issuer_and_serial(_der(server.ca.encryption_cert)), public, ContentCipher.AES128)
    body = _sign_with_ski(device_key, signer, DigestAlg.SHA256, _scep_attrs("T-ski"), enveloped)
    reply = open_reply(await _post(server, body), signer, device_key)
    _assert_issued(reply, device_key)


def _envelope_to_ski(plaintext: bytes, recipient: x509.Certificate) -> bytes:
    """An EnvelopedData (version 2) whose KeyTransRecipientInfo (version 2) names the recipient by
    [0] subjectKeyIdentifier (RFC 5652 section 6.2.1), AES-128-CBC, PKCS#1 v1.5 key transport."""
    cek, iv = os.urandom(16), os.urandom(16)
    padder = sym_padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padder.update(plaintext) + padder.finalize()) + encryptor.finalize()
    public = recipient.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    ski = recipient.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    ktri = der.seq(
        der.integer(2),
        der.implicit_primitive(0, ski),
        oids.RSA_ENCRYPTION,
        der.octet_string(public.encrypt(cek, padding.PKCS1v15())),
    )
    eci = der.seq(
        oids.DATA,
        der.algorithm(CIPHER_OIDS[ContentCipher.AES128], der.octet_string(iv)),
        der.implicit_primitive(0, ciphertext),
    )
    return der.seq(oids.ENVELOPED_DATA, der.explicit(0, der.seq(der.integer(2), der.set_of(ktri), eci)))


async def test_envelope_recipient_identified_by_subject_key_identifier(
    server: Server, device_key: rsa.RSAPrivateKey
) -> None:
    """KeyTransRecipientInfo rid [0] subjectKeyIdentifier naming the RA, instead of issuerAndSerialNumber."""
    csr = build_csr(device_key, parse_dn(SUBJECT), await server.challenge())
    enveloped = _envelope_to_ski(csr, server.ca.encryption_cert)
    signer = _signer(device_key)
    body = sign_message(SignerIdentity.from_cert(signer, device_key), DigestAlg.SHA256, _scep_attrs("T-rid"), enveloped)
    reply = open_reply(await _post(server, body), signer, device_key)
    _assert_issued(reply, device_key)


# --- challengePassword string types -------------------------------------------------------------


def _csr_with_challenge(key: rsa.RSAPrivateKey, challenge: str, tag: _ASN1Type) -> bytes:
    encodings = {
        _ASN1Type.BMPString: "utf-16-be",
        _ASN1Type.UniversalString: "utf-32-be",
    }
    value = challenge.encode(encodings.get(tag, "utf-8"))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(parse_dn(SUBJECT))
        .add_attribute(AttributeOID.CHALLENGE_PASSWORD, value, _tag=tag)
        .sign(key, hashes.SHA256())
    )
    assert csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD)._type == tag.value
    return csr.public_bytes(serialization.Encoding.DER)


async def _add_challenge(server: Server, password: str) -> None:
    now = dt.datetime.now(dt.UTC)
    added = await server.store.add_challenge(
        ChallengeAdd(server.integration.id, hash_challenge(password), now, now + dt.timedelta(minutes=10), 5)
    )
    assert added


@pytest.mark.parametrize(
    "tag",
    [
        _ASN1Type.UTF8String,
        _ASN1Type.PrintableString,
        _ASN1Type.BMPString,
        _ASN1Type.UniversalString,
        _ASN1Type.T61String,
        _ASN1Type.IA5String,
    ],
    ids=lambda t: t.name,
)
async def test_challenge_password_string_types(server: Server, device_key: rsa.RSAPrivateKey, tag: _ASN1Type) -> None:
    """An NDES-style (upper-case hex) challenge in each string type a client may choose."""
    challenge = await server.challenge()
    body, signer = _request(server, device_key, None, csr=_csr_with_challenge(device_key, challenge, tag))
    _assert_issued(open_reply(await _post(server, body), signer, device_key), device_key)
    assert await server.cert_count() == 1


@pytest.mark.parametrize(
    "tag", [_ASN1Type.UTF8String, _ASN1Type.BMPString, _ASN1Type.UniversalString], ids=lambda t: t.name
)
async def test_non_ascii_challenge_password_string_types(
    server: Server, device_key: rsa.RSAPrivateKey, tag: _ASN1Type
) -> None:
    """The same password text in each Unicode-capable type decodes to the same string."""
    password = "Grüße-€-𝄞-1234"
    await _add_challenge(server, password)
    body, signer = _request(server, device_key, None, csr=_csr_with_challenge(device_key, password, tag))
    _assert_issued(open_reply(await _post(server, body), signer, device_key), device_key)


# --- GetCACert / GetCACaps ----------------------------------------------------------------------


@pytest.mark.parametrize("operation", ["GetCACert", "GetCACaps"])
@pytest.mark.parametrize("message", ["CAIdentifier", "0", "1", "", "My%20CA", "scep-ca"])
async def test_message_with_a_ca_identifier_is_ignored(server: Server, operation: str, message: str) -> None:
    """certmonger asks GetCACert with message=0 and message=1; others send a CA name."""
    plain = await _get(server, f"{server.url()}?operation={operation}")
    with_message = await _get(server, f"{server.url()}?operation={operation}&message={message}")
    assert plain[0] == 200
    assert with_message == plain


SUFFIXES = ["", "/pkiclient.exe", "/cgi-bin/pkiclient.exe", "/anything/at/all"]


@pytest.mark.parametrize("suffix", SUFFIXES)
async def test_any_path_suffix_after_the_scep_url(server: Server, device_key: rsa.RSAPrivateKey, suffix: str) -> None:
    status, caps, _ = await _get(server, f"{server.url()}{suffix}?operation=GetCACaps")
    assert status == 200 and b"POSTPKIOperation" in caps
    status, bag, ctype = await _get(server, f"{server.url()}{suffix}?operation=GetCACert")
    assert (status, ctype) == (200, "application/x-x509-ca-ra-cert")
    assert bag == ca_ra_bundle(server.ca)
    body, signer = _request(server, device_key, await server.challenge(), tid="T-get")
    got = open_reply(
        await _get_pki(server, quote(base64.b64encode(body).decode(), safe=""), suffix), signer, device_key
    )
    _assert_issued(got, device_key)
    body, signer = _request(server, device_key, await server.challenge(), tid="T-post", subject="CN=bob,O=Example")
    posted = open_reply(await _post(server, body, suffix=suffix), signer, device_key)
    _assert_issued(posted, device_key, "CN=bob,O=Example")


async def test_get_ca_caps_lines_split_on_crlf_or_lf(server: Server) -> None:
    """Apple splits GetCACaps on CR or LF and matches each line exactly; it needs a hash keyword.

    RFC 8894 section 3.5.2 allows <CR><LF> or <LF> between keywords; whichever way a client splits,
    every line must be one bare keyword (no CR left over, no spaces, no duplicates)."""
    status, body, ctype = await _get(server, f"{server.url()}?operation=GetCACaps")
    assert status == 200 and ctype.startswith("text/plain")
    text = body.decode("ascii")
    keywords = {"POSTPKIOperation", "SHA-1", "SHA-256", "SHA-512", "AES", "DES3", "SCEPStandard", "Renewal"}
    splits = {
        "LF": text.split("\n"),
        "CRLF-aware (LF, then drop a trailing CR)": [line.removesuffix("\r") for line in text.split("\n")],
        "CR or LF (Apple)": re.split(r"[\r\n]", text),
        "splitlines": text.splitlines(),
    }
    for how, lines in splits.items():
        present = [line for line in lines if line]
        for line in present:
            assert line == line.strip() and " " not in line, f"{how}: {line!r} is not a bare keyword"
        assert {"SHA-256", "SHA-512"} <= set(present), how
        assert keywords <= set(present), how
        assert len(present) == len(set(present)), f"{how}: duplicate keywords"


# --- POST content types -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [None, "application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x", "application/json"],
    ids=lambda c: c or "none",
)
async def test_post_with_no_or_a_wrong_content_type(
    server: Server, device_key: rsa.RSAPrivateKey, content_type: str | None
) -> None:
    body, signer = _request(server, device_key, await server.challenge())
    reply = open_reply(await _post(server, body, content_type=content_type), signer, device_key)
    _assert_issued(reply, device_key)


# --- the certs-only reply -----------------------------------------------------------------------


@pytest.mark.parametrize("config_value", [False, True], ids=["config-off", "config-on"])
@pytest.mark.parametrize("flag", [None, True, False], ids=["integration-default", "integration-on", "integration-off"])
async def test_ca_in_reply_is_a_per_integration_switch_and_issued_comes_first(
    make_server: ServerFactory, device_key: rsa.RSAPrivateKey, flag: bool | None, config_value: bool
) -> None:
    server = await make_server(**{"scep.include_ca_in_reply": config_value})
    integration = dataclasses.replace(
        server.integration, id="cabag", name="cabag", username="scep-cabag", include_ca_in_reply=flag
    )
    await server.store.create_integration(integration)
    server = dataclasses.replace(server, integration=integration)
    # A long CN makes the issued certificate sort after the CA under DER SET OF ordering, so a
    # sorted bag would put the CA first.
    subject = f"CN={'device-' * 9},O=Example"
    body, signer = _request(server, device_key, await server.challenge(), subject=subject)
    raw = await _post(server, body)
    reply = open_reply(raw, signer, device_key)
    issued = _assert_issued(reply, device_key, subject)
    include = config_value if flag is None else flag
    issued_der = issued.public_bytes(serialization.Encoding.DER)
    if include:
        assert [c.public_bytes(serialization.Encoding.DER) for c in reply.certificates] == [
            issued_der,
            server.ca.cert_der,
        ]
        assert sorted([issued_der, server.ca.cert_der])[0] == server.ca.cert_der, "the test must tell order apart"
    else:
        assert reply.certificates == [issued]


# --- BER -----------------------------------------------------------------------------------------


def _parts(content: bytes) -> list[bytes]:
    """The raw TLVs (header included) that make up a constructed value's content."""
    out, pos = [], 0
    while pos < len(content):
        end = read_tlv(content, pos).end
        out.append(content[pos:end])
        pos = end
    return out


def _indef(tag: int, *parts: bytes) -> bytes:
    """A constructed value with the indefinite length form (X.690 8.1.3.6)."""
    return bytes([tag, 0x80]) + b"".join(parts) + b"\x00\x00"


def _indef_alg(alg: bytes) -> bytes:
    return _indef(0x30, *_parts(read_tlv(alg).content))


def _segments(tag: int, value: bytes, size: int = 500) -> bytes:
    """An OCTET STRING (or [0] IMPLICIT one) as constructed, indefinite-length segments."""
    return _indef(tag, *[encode_tlv(0x04, value[i : i + size]) for i in range(0, len(value), size)])


def ber_envelope(enveloped: bytes) -> bytes:
    """An EnvelopedData ContentInfo re-encoded as Apple and scepclient send BER: indefinite lengths
    everywhere and a segmented encryptedContent. Names and IssuerAndSerialNumber stay as they were."""
    oid, wrapped = _parts(read_tlv(enveloped).content)
    (env,) = _parts(read_tlv(wrapped).content)
    version, recipient_infos, eci = _parts(read_tlv(env).content)
    ktris = []
    for ri in _parts(read_tlv(recipient_infos).content):
        ri_version, rid, alg, key = _parts(read_tlv(ri).content)
        ktris.append(_indef(0x30, ri_version, rid, _indef_alg(alg), key))
    content_type, content_alg, encrypted = _parts(read_tlv(eci).content)
    new_eci = _indef(0x30, content_type, _indef_alg(content_alg), _segments(0xA0, read_tlv(encrypted).content))
    return _indef(0x30, oid, _indef(0xA0, _indef(0x30, version, _indef(0x31, *ktris), new_eci)))


def ber_signed_data(message: bytes) -> bytes:
    """A pkiMessage re-encoded with indefinite lengths and a segmented eContent; certificates and
    signedAttrs (which the signature covers as DER) are copied unchanged."""
    oid, wrapped = _parts(read_tlv(message).content)
    (sd,) = _parts(read_tlv(wrapped).content)
    version, digest_algs, encap, certs, signer_infos = _parts(read_tlv(sd).content)
    e_oid, e_wrapped = _parts(read_tlv(encap).content)
    (e_octets,) = _parts(read_tlv(e_wrapped).content)
    new_encap = _indef(0x30, e_oid, _indef(0xA0, _segments(0x24, read_tlv(e_octets).content)))
    infos = []
    for si in _parts(read_tlv(signer_infos).content):
        si_version, sid, digest_alg, signed_attrs, sig_alg, signature = _parts(read_tlv(si).content)
        infos.append(
            _indef(0x30, si_version, sid, _indef_alg(digest_alg), signed_attrs, _indef_alg(sig_alg), signature)
        )
    new_sd = _indef(
        0x30,
        version,
        _indef(0x31, *[_indef_alg(a) for a in _parts(read_tlv(digest_algs).content)]),
        new_encap,
        _indef(0xA0, *_parts(read_tlv(certs).content)),
        _indef(0x31, *infos),
    )
    return _indef(0x30, oid, _indef(0xA0, new_sd))


def _ber_request(server: Server, key: rsa.RSAPrivateKey, challenge: str, tid: str) -> tuple[bytes, x509.Certificate]:
    signer = _signer(key)
    public = server.ca.encryption_cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    csr = build_csr(key, parse_dn(SUBJECT), challenge)
    enveloped = ber_envelope(
        encrypt_envelope(csr, issuer_and_serial(_der(server.ca.encryption_cert)), public, ContentCipher.DES3)
    )
    message = sign_message(SignerIdentity.from_cert(signer, key), DigestAlg.SHA1, _scep_attrs(tid), enveloped)
    ber = ber_signed_data(message)
    # Indefinite lengths from the outermost SEQUENCE down, and it decodes to the same message.
    assert ber.startswith(b"\x30\x80\x06") and ber.endswith(b"\x00\x00") and read_tlv(ber).end == len(ber)
    assert decode_pki_message(ber).transaction_id == tid
    return ber, signer


@pytest.mark.parametrize("transport", ["POST", "GET"])
async def test_ber_indefinite_length_request(server: Server, device_key: rsa.RSAPrivateKey, transport: str) -> None:
    """Apple sends indefinite-length BER (SignedData and EnvelopedData, 3DES + SHA-1 like its polls)."""
    ber, signer = _ber_request(server, device_key, await server.challenge(), "T-ber")
    if transport == "POST":
        raw = await _post(server, ber)
    else:
        raw = await _get_pki(server, base64.b64encode(ber).decode())
    reply = open_reply(raw, signer, device_key)
    _assert_issued(reply, device_key)
    assert (reply.cipher, reply.digest) == (ContentCipher.DES3, DigestAlg.SHA1)
    assert cms.ContentInfo.load(raw).dump(force=True) == raw, "the reply to BER is DER"


# --- transaction IDs ----------------------------------------------------------------------------

TRANSACTION_IDS = {
    "hex-lower": hashlib.sha1(b"scep").hexdigest(),
    "hex-upper-apple": hashlib.sha1(b"apple").hexdigest().upper(),
    "base64-scepclient": base64.b64encode(hashlib.sha1(b"go").digest()).decode(),
    "decimal-77-certmonger": str(int.from_bytes(hashlib.sha256(b"certmonger").digest(), "big")).rjust(77, "1"),
    "guid-upper": str(uuid.UUID(int=7)).upper(),
}


def _reply_tid_tlv(raw: bytes) -> tuple[int, bytes]:
    """(tag octet, value) of the transactionID attribute of a CertRep."""
    signed = cms.ContentInfo.load(raw)["content"]
    for attr in signed["signer_infos"][0]["signed_attrs"]:
        if attr["type"].dotted == TID_ATTR:
            value = attr["values"][0].dump()
            return value[0], read_tlv(value).content
    raise AssertionError("no transactionID in the CertRep")


@pytest.mark.parametrize("name", sorted(TRANSACTION_IDS))
@pytest.mark.parametrize("outcome", ["success", "failure"])
async def test_transaction_id_is_echoed_unchanged(
    server: Server, device_key: rsa.RSAPrivateKey, name: str, outcome: str
) -> None:
    tid = TRANSACTION_IDS[name]
    if name.startswith("decimal"):
        assert len(tid) == 77 and tid.isdigit()
    challenge = await server.challenge() if outcome == "success" else "0000"
    body, signer = _request(server, device_key, challenge, tid=tid)
    raw = await _post(server, body)
    reply = open_reply(raw, signer, device_key)
    assert reply.status is (PKIStatus.SUCCESS if outcome == "success" else PKIStatus.FAILURE)
    assert reply.transaction_id == tid
    assert _reply_tid_tlv(raw) == (0x13, tid.encode("ascii")), "PrintableString, byte for byte"


# --- real-client vectors, replayed with their own transport -------------------------------------

# How each real client sent its PKIOperation (tests/vectors READMEs): method, Content-Type, query.
TRANSPORTS = {
    "scepclient": ("POST", "application/octet-stream", ""),
    "certmonger": ("GET", None, None),
    "pyscep": ("POST", "application/x-pki-message", "&message="),
    "scepreq": ("POST", "application/x-pki-message", "&message="),
}
REAL_VECTORS = [v for v in discover() if v.path.name.split("-")[0] in TRANSPORTS]


@pytest.fixture
async def vector_server(
    tmp_path: Path,
    shared_ca: tuple[Path, CAIdentity],
    aiohttp_client: Callable[..., Awaitable[TestClient]],  # type: ignore[type-arg]
) -> Callable[[Vector], Awaitable[Server]]:
    """An app whose RA is the certificate and key a vector was encrypted to, with the vector's
    challenge stored for an integration whose subject template fits its CSR."""

    async def factory(vector: Vector) -> Server:
        ra_cert = x509.load_pem_x509_certificate(vector.recipient_cert.read_bytes())
        ra_key = serialization.load_pem_private_key(vector.recipient_key.read_bytes(), None)
        assert isinstance(ra_key, rsa.RSAPrivateKey)
        ca = dataclasses.replace(
            shared_ca[1],
            ra_cert=ra_cert,
            ra_key=ra_key,
            ra_cert_der=ra_cert.public_bytes(serialization.Encoding.DER),
            # The vectors were captured against one combined RA.
            enc_cert=None,
            enc_key=None,
        )
        config = load_config(None, {}, {"data_dir": str(tmp_path)})
        store = open_store(config)
        client = await aiohttp_client(build_app(config, ca, store))
        integration = Integration(
            id="vectors",
            name="vectors",
            subject_template=vector.subject_template,
            created_at=dt.datetime.now(dt.UTC),
            validity_days=365,
            username="scep-vectors",
        )
        await store.create_integration(integration)
        server = Server(client, store, config, ca, integration, integration)
        await _add_challenge(server, vector.challenge)
        return server

    return factory


@pytest.mark.parametrize("vector", REAL_VECTORS, ids=[v.id for v in REAL_VECTORS])
async def test_real_client_request_replayed_over_http(
    vector_server: Callable[[Vector], Awaitable[Server]], vector: Vector
) -> None:
    """Each captured request, sent the way its client sent it, is issued: BER constructed
    encryptedContent (scepclient), DES-CBC + SHA-1, a 77-digit transactionID (certmonger),
    a URL-encoded 3.5 kB GET, an empty message= on POST (pyscep, scepreq)."""
    server = await vector_server(vector)
    der_bytes = vector.path.read_bytes()
    msg = decode_pki_message(der_bytes)
    method, content_type, query = TRANSPORTS[vector.path.name.split("-")[0]]
    if method == "GET":
        raw = await _get_pki(server, quote(base64.b64encode(der_bytes).decode(), safe=""))
    else:
        resp = await server.client.post(
            URL(f"{server.url()}?operation=PKIOperation{query}", encoded=True),
            data=der_bytes,
            headers={"Content-Type": content_type or ""},
        )
        assert resp.status == 200, await resp.text()
        raw = await resp.read()
    replied = decode_pki_message(raw)
    assert replied.transaction_id == msg.transaction_id
    assert replied.digest_alg is msg.digest_alg
    assert replied.text_attribute("pki_status") == "0", replied.text_attribute("fail_info_text")
    assert await server.cert_count() == 1
    if vector.device_key is not None:
        key = serialization.load_pem_private_key(vector.device_key.read_bytes(), None)
        assert isinstance(key, rsa.RSAPrivateKey)
        reply = open_reply(raw, x509.load_der_x509_certificate(msg.signer_cert_der), key)
        assert reply.status is PKIStatus.SUCCESS
        assert reply.certificates[0].public_key() == key.public_key()
        assert reply.transaction_id == msg.transaction_id


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)
