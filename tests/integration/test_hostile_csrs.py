"""Hostile PKCS#10 requests inside well-formed, properly enveloped and signed PKCSReqs.

Each CSR shape below once made the server answer HTTP 500 (cryptography raised something
other than ValueError while a field was read), or was issued with control characters in its
subject. Each now gets a signed CertRep FAILURE with its failInfo through the real app, with
no traceback in the log and nothing written to the store.
"""

from __future__ import annotations

import uuid

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from scep_ca.asn1 import der, oids
from scep_ca.protocol.client import Reply, build_request, open_reply, self_signed_signer
from scep_ca.protocol.enums import FailInfo, PKIStatus
from tests.integration.conftest import Server

_CN = der.oid("2.5.4.3")
_O = der.oid("2.5.4.10")
_CHALLENGE_PASSWORD = der.oid("1.2.840.113549.1.9.7")
_EXTENSION_REQUEST = der.oid("1.2.840.113549.1.9.14")
_SAN = der.oid("2.5.29.17")
_UPN = der.oid(oids.ID_MS_UPN)


@pytest.fixture(autouse=True)
def log_has_no_traceback(caplog: pytest.LogCaptureFixture) -> object:
    caplog.set_level("DEBUG")
    yield
    assert not [r for r in caplog.records if r.exc_info or r.levelname in ("ERROR", "CRITICAL")]


def _name(cn: bytes) -> bytes:
    """CN=<cn>,O=Example in DER order (O first), as the integration's template wants."""
    return der.seq(der.set_of(der.seq(_O, der.utf8_string("Example"))), der.set_of(der.seq(_CN, cn)))


def _attribute(oid: bytes, *values: bytes) -> bytes:
    # Attribute ::= SEQUENCE { type, values SET OF } (RFC 2986 section 4.1): any number of values.
    return der.seq(oid, der.encode_tlv(der.TAG_SET, b"".join(values)))


def _extension_request(*extensions: bytes) -> bytes:
    return _attribute(_EXTENSION_REQUEST, der.seq(*extensions))


def _san(*general_names: bytes) -> bytes:
    return der.extension(_SAN, der.seq(*general_names))


def _dns(name: bytes) -> bytes:
    return der.encode_tlv(0x82, name)  # [2] IMPLICIT IA5String


def _csr(
    key: rsa.RSAPrivateKey,
    challenge: str,
    *,
    cn: bytes = der.utf8_string("alice"),
    subject: bytes | None = None,
    attributes: tuple[bytes, ...] = (),
    version: int = 0,
    spki: bytes | None = None,
    with_challenge: bool = True,
) -> bytes:
    """A CertificationRequest (RFC 2986 section 4) written byte by byte, signed with ``key``."""
    if spki is None:
        numbers = key.public_key().public_numbers()
        spki = der.seq(oids.RSA_ENCRYPTION, der.bit_string(der.seq(der.integer(numbers.n), der.integer(numbers.e))))
    attrs = (_attribute(_CHALLENGE_PASSWORD, der.utf8_string(challenge)),) if with_challenge else ()
    info = der.seq(der.integer(version), subject or _name(cn), spki, der.explicit(0, b"".join(attrs + attributes)))
    return der.signed(info, oids.SHA256_WITH_RSA, key.sign(info, padding.PKCS1v15(), hashes.SHA256()))


async def _pkcs_req(server: Server, key: rsa.RSAPrivateKey, csr: bytes) -> Reply:
    signer = self_signed_signer(key)
    request = build_request(
        csr,
        signer_cert=signer,
        signer_key=key,
        recipient=server.ca.encryption_cert,
        transaction_id=uuid.uuid4().hex,
    )
    resp = await server.client.post(f"{server.url()}?operation=PKIOperation", data=request.der)
    assert resp.status == 200
    return open_reply(await resp.read(), signer, key)


async def _refused(server: Server, key: rsa.RSAPrivateKey, csr: bytes) -> tuple[FailInfo | None, str | None]:
    before = (await server.cert_count(), await server.store.list_transactions())
    reply = await _pkcs_req(server, key, csr)
    assert reply.status is PKIStatus.FAILURE
    assert (await server.cert_count(), await server.store.list_transactions()) == before
    return reply.fail_info, reply.fail_text


async def test_the_hostile_csr_builder_makes_a_csr_the_server_issues(
    server: Server, device_key: rsa.RSAPrivateKey
) -> None:
    """The control: built the same way, without the hostile part, the CSR is issued."""
    reply = await _pkcs_req(server, device_key, _csr(device_key, await server.challenge()))
    assert reply.status is PKIStatus.SUCCESS
    assert reply.certificates[0].subject.rfc4514_string() == "CN=alice,O=Example"


_SPKI_UNKNOWN = der.seq(der.algorithm("1.2.3.4.5"), der.bit_string(bytes(64)))

# (shape, CSR keyword arguments, failInfo, failInfoText)
_SHAPES = [
    (
        "challenge-password-two-values",
        {
            "with_challenge": False,
            "attributes": (_attribute(_CHALLENGE_PASSWORD, der.utf8_string("a"), der.utf8_string("b")),),
        },
        FailInfo.BAD_REQUEST,
        "the CSR's attributes cannot be read",
    ),
    (
        "challenge-password-no-value",
        {"with_challenge": False, "attributes": (_attribute(_CHALLENGE_PASSWORD),)},
        FailInfo.BAD_REQUEST,
        "the CSR's attributes cannot be read",
    ),
    (
        "extension-request-two-values",
        {
            "attributes": (
                _attribute(
                    _EXTENSION_REQUEST,
                    der.seq(_san(_dns(b"a.example"))),
                    der.seq(_san(_dns(b"b.example"))),
                ),
            )
        },
        FailInfo.BAD_REQUEST,
        "the CSR's extensions cannot be read",
    ),
    (
        "san-extension-twice",
        {"attributes": (_extension_request(_san(_dns(b"a.example")), _san(_dns(b"b.example"))),)},
        FailInfo.BAD_REQUEST,
        "the CSR's extensions cannot be read",
    ),
    (
        "cn-invalid-utf8",
        {"cn": der.encode_tlv(der.TAG_UTF8_STRING, b"al\xffce")},
        FailInfo.BAD_REQUEST,
        "the CSR's subject cannot be read",
    ),
    # Found by fuzz_verify for certificates: cryptography raises TypeError on first use.
    (
        "cn-bit-string",
        {"cn": der.encode_tlv(der.TAG_BIT_STRING, b"\x00ab")},
        FailInfo.BAD_REQUEST,
        "the CSR's subject cannot be read",
    ),
    # The one attribute cryptography reads as a BIT STRING: bytes, not text.
    (
        "unique-identifier-bit-string",
        {"subject": der.seq(der.set_of(der.seq(der.oid("2.5.4.45"), der.encode_tlv(der.TAG_BIT_STRING, b"\x00ab"))))},
        FailInfo.BAD_REQUEST,
        "name attributes must be text",
    ),
    ("unknown-spki-algorithm", {"spki": _SPKI_UNKNOWN}, FailInfo.BAD_ALG, "the CSR's public key cannot be read"),
    ("version-1", {"version": 1}, FailInfo.BAD_REQUEST, "the decrypted content is not a PKCS#10 request"),
    ("version-5", {"version": 5}, FailInfo.BAD_REQUEST, "the decrypted content is not a PKCS#10 request"),
]


@pytest.mark.parametrize(("kwargs", "fail_info", "text"), [s[1:] for s in _SHAPES], ids=[s[0] for s in _SHAPES])
async def test_unreadable_csr_is_a_failure_cert_rep(
    server: Server, device_key: rsa.RSAPrivateKey, kwargs: dict[str, object], fail_info: FailInfo, text: str
) -> None:
    csr = _csr(device_key, await server.challenge(), **kwargs)  # type: ignore[arg-type]
    assert await _refused(server, device_key, csr) == (fail_info, text)


# --- control characters (C0, DEL, C1) in subjects and SANs ------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["alice\x1b[2J", "alice\x00root", "alice\x7f", "alice\x9b31m", "alice\nO=Forged", "alice\tx", "\x85alice"],
    ids=["esc", "nul", "del", "c1-csi", "newline", "tab", "c1-nel"],
)
async def test_control_character_in_a_subject_variable_is_bad_request(
    server: Server, device_key: rsa.RSAPrivateKey, value: str
) -> None:
    """The template's $USERID$ matches any value: a control character in it was issued as is."""
    csr = _csr(device_key, await server.challenge(), cn=der.utf8_string(value))
    assert await _refused(server, device_key, csr) == (FailInfo.BAD_REQUEST, "the subject holds control characters")


def _upn(text: bytes) -> bytes:
    # otherName ::= [0] IMPLICIT SEQUENCE { type-id, [0] EXPLICIT value } (RFC 5280 section 4.2.1.6)
    return der.encode_tlv(0xA0, _UPN + der.explicit(0, der.encode_tlv(der.TAG_UTF8_STRING, text)))


@pytest.mark.parametrize(
    "general_name",
    [
        _dns(b"host\x1b.example"),
        der.encode_tlv(0x81, b"alice\x00@example.com"),  # [1] rfc822Name
        der.encode_tlv(0x86, b"https://example.com/\x7f"),  # [6] URI
        _upn("alice\u009b@example.com".encode()),
        der.encode_tlv(0xA4, _name(der.utf8_string("evil\x1b"))),  # [4] directoryName
    ],
    ids=["dns-esc", "rfc822-nul", "uri-del", "upn-c1", "directory-name-esc"],
)
async def test_control_character_in_a_san_is_bad_request(
    server: Server, device_key: rsa.RSAPrivateKey, general_name: bytes
) -> None:
    """Refused whether or not the integration would keep that SAN type: the CSR is hostile."""
    csr = _csr(device_key, await server.challenge(), attributes=(_extension_request(_san(general_name)),))
    assert await _refused(server, device_key, csr) == (
        FailInfo.BAD_REQUEST,
        "a subjectAltName holds control characters",
    )


async def test_printable_unicode_in_the_subject_is_issued(server: Server, device_key: rsa.RSAPrivateKey) -> None:
    """Only controls are refused: accented letters, CJK and a non-breaking space are names people have."""
    value = "José 山田\u00a0Ødegård"
    reply = await _pkcs_req(server, device_key, _csr(device_key, await server.challenge(), cn=der.utf8_string(value)))
    assert reply.status is PKIStatus.SUCCESS
    assert reply.certificates[0].subject.rfc4514_string() == f"CN={' '.join(value.split())},O=Example"
