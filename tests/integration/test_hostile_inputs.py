"""Unauthenticated inputs that once made the server answer HTTP 500 with a traceback in its log.

Each gets a typed answer now (HTTP 400/413, a FAILURE CertRep with the right failInfo, or
an OCSP malformedRequest), nothing in the log carries a traceback, and the store does not
change. Several came from the fuzz harnesses (tests/fuzz/), named after what they found.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os

import pytest
from aiohttp import ClientResponse
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from scep_ca.asn1 import der, oids
from scep_ca.asn1.ber import issuer_and_serial
from scep_ca.pki.ocsp import OcspIssuer
from scep_ca.pki.status import MAX_PEM_BYTES
from scep_ca.protocol.algorithms import CIPHER_OIDS
from scep_ca.protocol.client import build_csr, open_reply, self_signed_signer
from scep_ca.protocol.dn import parse_dn
from scep_ca.protocol.enums import ContentCipher, DigestAlg, FailInfo, PKIStatus
from scep_ca.protocol.envelope import encrypt_envelope
from scep_ca.protocol.signing import SignerIdentity, attribute, sign_message
from tests.integration.conftest import Server

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(autouse=True)
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> object:
    caplog.set_level("DEBUG")
    yield
    assert not [r for r in caplog.records if r.exc_info], "a traceback reached the log"
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


# --- SCEP PKIOperation ---------------------------------------------------------------------


def _message(
    device_key: rsa.RSAPrivateKey,
    *,
    message_type: bytes | None = None,
    transaction_id: bytes | None = None,
    sender_nonce: bytes | None = None,
    content: bytes | None = None,
    signer_cert_der: bytes | None = None,
) -> bytes:
    signer = self_signed_signer(device_key)
    cert_der = signer_cert_der or signer.public_bytes(serialization.Encoding.DER)
    identity = SignerIdentity(cert_der, issuer_and_serial(cert_der), device_key)
    attrs = [
        attribute(oids.MESSAGE_TYPE, message_type or der.printable_string("19")),
        attribute(oids.TRANSACTION_ID, transaction_id or der.printable_string("hostile-1")),
        attribute(oids.SENDER_NONCE, sender_nonce or der.octet_string(os.urandom(16))),
    ]
    return sign_message(identity, DigestAlg.SHA256, attrs, content)


async def _post(server: Server, body: bytes) -> ClientResponse:
    return await server.client.post(f"{server.url()}?operation=PKIOperation", data=body)


async def _failure(server: Server, body: bytes, device_key: rsa.RSAPrivateKey) -> tuple[FailInfo | None, str | None]:
    before = await server.cert_count()
    resp = await _post(server, body)
    assert resp.status == 200
    reply = open_reply(await resp.read(), self_signed_signer(device_key), device_key)
    assert reply.status is PKIStatus.FAILURE
    assert await server.cert_count() == before
    return reply.fail_info, reply.fail_text


@pytest.mark.parametrize(
    ("field", "value", "text"),
    [
        # "²" passes str.isdigit(), then int() raised ValueError.
        ("message_type", der.utf8_string("²"), "messageType is not a decimal PrintableString"),
        # Arabic-Indic digits: isdigit() and int() both accept them (as 19).
        ("message_type", der.utf8_string("١٩"), "messageType is not a decimal PrintableString"),
        ("transaction_id", der.utf8_string("tid\nFORGED log line"), "transactionID holds control characters"),
        # Found by fuzz_message: a constructed senderNonce whose segment runs past its end.
        ("sender_nonce", b"\x24\x05\x04\x05abc", "senderNonce is not a well-formed OCTET STRING"),
    ],
    ids=["superscript-two", "arabic-indic-digits", "newline-in-transaction-id", "broken-constructed-nonce"],
)
async def test_malformed_header_attribute_is_400(
    server: Server, device_key: rsa.RSAPrivateKey, field: str, value: bytes, text: str
) -> None:
    body = _message(device_key, **{field: value})
    before = await server.cert_count()
    resp = await _post(server, body)
    assert (resp.status, await resp.text()) == (400, text + "\n")
    assert await server.cert_count() == before


def _enveloped_with_key_transport(server: Server, key_transport: bytes) -> bytes:
    """An EnvelopedData to the RA (RFC 5652 section 6.1) with this keyEncryptionAlgorithm."""
    ra = server.ca.encryption_cert
    public = ra.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    ias = issuer_and_serial(ra.public_bytes(serialization.Encoding.DER))
    ktri = der.seq(der.integer(0), ias, key_transport, der.octet_string(os.urandom(256)))
    eci = der.seq(
        oids.DATA,
        der.seq(der.oid(CIPHER_OIDS[ContentCipher.AES128]), der.octet_string(os.urandom(16))),
        der.implicit_primitive(0, os.urandom(32)),
    )
    return der.seq(oids.ENVELOPED_DATA, der.explicit(0, der.seq(der.integer(0), der.set_of(ktri), eci)))


_OAEP = der.oid("1.2.840.113549.1.1.7")
_MGF1 = der.oid("1.2.840.113549.1.1.8")


@pytest.mark.parametrize(
    ("key_transport", "fail_info", "text"),
    [
        (der.seq(), FailInfo.BAD_MESSAGE_CHECK, "the EnvelopedData is malformed"),
        # RSAES-OAEP-params with an empty [0] hashAlgorithm.
        (der.seq(_OAEP, der.seq(der.explicit(0, b""))), FailInfo.BAD_MESSAGE_CHECK, "the EnvelopedData is malformed"),
        # [1] maskGenAlgorithm: MGF1 whose parameter is an empty AlgorithmIdentifier.
        (
            der.seq(_OAEP, der.seq(der.explicit(1, der.seq(_MGF1, der.seq())))),
            FailInfo.BAD_MESSAGE_CHECK,
            "the EnvelopedData is malformed",
        ),
        # OAEP params that are not a SEQUENCE's worth of TLVs.
        (der.seq(_OAEP, der.seq(b"\x30\x05\x00")), FailInfo.BAD_MESSAGE_CHECK, "the EnvelopedData is malformed"),
        # A mask generation function other than MGF1.
        (
            der.seq(_OAEP, der.seq(der.explicit(1, der.seq(der.oid("1.2.3.4"), der.seq())))),
            FailInfo.BAD_ALG,
            "unsupported OAEP mask generation function",
        ),
    ],
    ids=["empty-algorithm", "oaep-empty-hash", "oaep-empty-mgf-hash", "oaep-truncated-params", "oaep-unknown-mgf"],
)
async def test_malformed_key_transport_is_a_failure_cert_rep(
    server: Server, device_key: rsa.RSAPrivateKey, key_transport: bytes, fail_info: FailInfo, text: str
) -> None:
    content = _enveloped_with_key_transport(server, key_transport)
    body = _message(device_key, content=content)
    assert await _failure(server, body, device_key) == (fail_info, text)


def _cert(public_key: object, signing_key: object, algorithm: hashes.HashAlgorithm | None) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "signer")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(minutes=5))
        .not_valid_after(NOW + dt.timedelta(hours=1))
    )
    return builder.sign(signing_key, algorithm).public_bytes(serialization.Encoding.DER)  # type: ignore[arg-type]


def _with_spki_oid(cert_der: bytes, dotted: str) -> bytes:
    cert = asn1_x509.Certificate.load(cert_der)
    cert["tbs_certificate"]["subject_public_key_info"]["algorithm"]["algorithm"] = dotted
    return bytes(cert.dump(force=True))


@pytest.mark.parametrize("kind", ["ed25519", "dsa", "unknown-spki-oid"])
async def test_signer_certificate_with_another_key_type_is_bad_alg(
    server: Server, device_key: rsa.RSAPrivateKey, kind: str
) -> None:
    if kind == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
        cert_der = _cert(key.public_key(), key, None)
    elif kind == "dsa":
        dsa_key = dsa.generate_private_key(2048)
        cert_der = _cert(dsa_key.public_key(), dsa_key, hashes.SHA256())
    else:
        cert_der = _with_spki_oid(_cert(device_key.public_key(), device_key, hashes.SHA256()), "1.2.3.4.5")
    csr = build_csr(device_key, parse_dn("CN=alice,O=Example"), await server.challenge())
    ra = server.ca.encryption_cert
    public = ra.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    content = encrypt_envelope(
        csr, issuer_and_serial(ra.public_bytes(serialization.Encoding.DER)), public, ContentCipher.AES128
    )
    body = _message(device_key, content=content, signer_cert_der=cert_der)
    assert await _failure(server, body, device_key) == (FailInfo.BAD_ALG, "signer key is not RSA")


# --- OCSP ----------------------------------------------------------------------------------


def _ocsp_request(server: Server, serial: int) -> bytes:
    issuer = OcspIssuer.of(server.ca)
    request = asn1_ocsp.OCSPRequest(
        {
            "tbs_request": {
                "request_list": [
                    {
                        "req_cert": {
                            "hash_algorithm": {"algorithm": "sha1"},
                            "issuer_name_hash": hashlib.sha1(issuer.name_der).digest(),
                            "issuer_key_hash": hashlib.sha1(issuer.key_bits).digest(),
                            "serial_number": serial,
                        }
                    }
                ]
            }
        }
    )
    return bytes(request.dump())


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_ocsp_negative_serial_is_malformed_request(server: Server, method: str) -> None:
    body = _ocsp_request(server, -5)
    if method == "GET":
        resp = await server.client.get("/ocsp/" + base64.b64encode(body).decode())
    else:
        resp = await server.client.post("/ocsp", data=body, headers={"Content-Type": "application/ocsp-request"})
    assert resp.status == 200
    answer = ocsp.load_der_ocsp_response(await resp.read())
    assert answer.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


# --- POST /api/v1/verify ---------------------------------------------------------------------


def _pem(cert_der: bytes) -> bytes:
    return b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(cert_der) + b"-----END CERTIFICATE-----\n"


def _issued_by_our_name(server: Server, **tbs_changes: object) -> bytes:
    """An EC certificate that names our CA as issuer (self-signed, so not ours), with TBS fields changed."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Zzzz")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(server.ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(12345)
        .not_valid_before(NOW - dt.timedelta(minutes=5))
        .not_valid_after(NOW + dt.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    parsed = asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
    for field, value in tbs_changes.items():
        parsed["tbs_certificate"][field] = value
    return bytes(parsed.dump(force=True))


async def _verify(server: Server, body: bytes, content_type: str = "application/x-pem-file") -> tuple[int, object]:
    resp = await server.client.post("/api/v1/verify", data=body, headers={"Content-Type": content_type})
    return resp.status, await resp.json()


async def test_verify_rejects_non_pem(server: Server) -> None:
    assert await _verify(server, b"hello, not a certificate") == (400, {"error": "not a PEM certificate"})


async def test_verify_rejects_pem_with_garbage(server: Server) -> None:
    body = b"-----BEGIN CERTIFICATE-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE-----\n"
    assert await _verify(server, body) == (400, {"error": "not a PEM certificate"})


async def test_verify_rejects_huge_body(server: Server) -> None:
    resp = await server.client.post("/api/v1/verify", data=b"A" * (MAX_PEM_BYTES + 1))
    assert resp.status == 413


async def test_verify_with_json_content_type_reads_the_body_as_pem(server: Server) -> None:
    assert await _verify(server, b'{"pem": "x"}', "application/json") == (400, {"error": "not a PEM certificate"})


async def test_verify_non_rsa_certificate_is_unknown_issuer(server: Server) -> None:
    status, data = await _verify(server, _pem(_issued_by_our_name(server)))
    assert status == 200
    assert isinstance(data, dict) and data["status"] == "unknown-issuer"


async def test_verify_unknown_signature_algorithm_is_unknown_issuer(server: Server) -> None:
    cert = asn1_x509.Certificate.load(_issued_by_our_name(server))
    cert["signature_algorithm"]["algorithm"] = "1.2.3.4.5"
    cert["tbs_certificate"]["signature"]["algorithm"] = "1.2.3.4.5"
    status, data = await _verify(server, _pem(bytes(cert.dump(force=True))))
    assert status == 200
    assert isinstance(data, dict) and data["status"] == "unknown-issuer"


@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
async def test_verify_negative_serial_is_400(server: Server) -> None:
    body = _pem(_issued_by_our_name(server, serial_number=-12345))
    assert await _verify(server, body) == (400, {"error": "negative serial number"})


async def test_verify_invalid_version_is_400(server: Server) -> None:
    """Found by fuzz_verify: cryptography raises InvalidVersion (not a ValueError) for version 8."""
    cert_der = _issued_by_our_name(server)
    v3 = b"\xa0\x03\x02\x01\x02"  # [0] EXPLICIT INTEGER 2
    assert cert_der.count(v3) == 1
    body = _pem(cert_der.replace(v3, b"\xa0\x03\x02\x01\x08"))
    assert await _verify(server, body) == (400, {"error": "not a PEM certificate"})


async def test_verify_bit_string_name_attribute_is_400(server: Server) -> None:
    """Found by fuzz_verify: a subject attribute that is a BIT STRING (other than
    x500UniqueIdentifier) makes cryptography's Name raise TypeError on first use."""
    cert_der = _issued_by_our_name(server)
    cn = b"\x0c\x04Zzzz"  # the subject's CN, a UTF8String
    assert cert_der.count(cn) == 1
    body = _pem(cert_der.replace(cn, b"\x03\x04\x00zzz"))  # the same length as a BIT STRING
    assert await _verify(server, body) == (400, {"error": "not a well-formed certificate"})
