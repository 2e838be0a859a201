"""No decryption oracle (RFC 3218 section 2.3.2, RFC 5652 section 10; design section 7).

Three requests that fail at different steps of decrypting the EnvelopedData must get the
same CertRep: a wrapped content-encryption key of the wrong length, a wrapped key whose
PKCS#1 v1.5 padding is bad, and a correctly wrapped key under which the content does not
decrypt (bad CBC padding). Each is sent encrypted to the RA and to the CA (clients that
pin the CA encrypt to it). The replies are compared whole, after removing what must
differ: the fresh senderNonce, the signing time and the signature over them.

The server replaces a key that does not unwrap with a random key; here the random source
returns the key the third request wraps, so all three decrypt their content with one key
and the comparison is deterministic (with real randomness, a random key gives valid CBC
padding one time in 256, just as a wrong key does).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

import tests.asn1_scep  # noqa: F401  (registers the SCEP attributes with asn1crypto)
from scep_ca.asn1 import der, oids
from scep_ca.asn1.ber import issuer_and_serial
from scep_ca.protocol.algorithms import CIPHER_OIDS
from scep_ca.protocol.client import self_signed_signer
from scep_ca.protocol.enums import ContentCipher, DigestAlg, MessageType
from scep_ca.protocol.signing import SignerIdentity, attribute, sign_message
from scep_ca.services.scep import RequestContext, ScepService
from scep_ca.services.validators.registry import Validators
from scep_ca.services.wiring import enroller_for
from tests.integration.conftest import Server

KEY = bytes(range(32))  # the AES-256 key of the "correct wrap" case, and the stand-in key
IV = bytes(16)
NONCE = b"\x42" * 16
TID = "oracle-1"
NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
_STRIPPED = {"sender_nonce", "signing_time"}


def _bad_padding_ciphertext() -> bytes:
    """Two AES-256-CBC blocks under KEY whose plaintext ends in 0x00: never valid PKCS#7 padding."""
    encryptor = Cipher(algorithms.AES(KEY), modes.CBC(IV)).encryptor()
    return encryptor.update(b"x" * 31 + b"\x00") + encryptor.finalize()


def _raw_rsa(public: rsa.RSAPublicKey, message: int) -> bytes:
    numbers = public.public_numbers()
    return pow(message, numbers.e, numbers.n).to_bytes(public.key_size // 8, "big")


def _wrapped_keys(public: rsa.RSAPublicKey) -> dict[str, bytes]:
    size = public.key_size // 8
    # 0x00 0x01 ... is PKCS#1 v1.5 *signature* padding: not a valid encryption block (RFC 8017 7.2.2).
    bad_padding = int.from_bytes(b"\x00\x01" + b"\xff" * (size - 35) + b"\x00" + KEY, "big")
    return {
        "wrong-length": public.encrypt(KEY[:5], padding.PKCS1v15()),
        "bad-pkcs1-padding": _raw_rsa(public, bad_padding),
        "bad-content-padding": public.encrypt(KEY, padding.PKCS1v15()),
    }


def _enveloped(recipient: x509.Certificate, encrypted_key: bytes) -> bytes:
    """EnvelopedData (RFC 5652 section 6.1) to ``recipient`` with a given encryptedKey, AES-256-CBC."""
    ias = issuer_and_serial(recipient.public_bytes(serialization.Encoding.DER))
    ktri = der.seq(der.integer(0), ias, oids.RSA_ENCRYPTION, der.octet_string(encrypted_key))
    eci = der.seq(
        oids.DATA,
        der.seq(der.oid(CIPHER_OIDS[ContentCipher.AES256]), der.octet_string(IV)),
        der.implicit_primitive(0, _bad_padding_ciphertext()),
    )
    return der.seq(oids.ENVELOPED_DATA, der.explicit(0, der.seq(der.integer(0), der.set_of(ktri), eci)))


def _request(device_key: rsa.RSAPrivateKey, signer: x509.Certificate, enveloped: bytes) -> bytes:
    attrs = [
        attribute(oids.MESSAGE_TYPE, der.printable_string(str(int(MessageType.PKCS_REQ)))),
        attribute(oids.TRANSACTION_ID, der.printable_string(TID)),
        attribute(oids.SENDER_NONCE, der.octet_string(NONCE)),
    ]
    return sign_message(SignerIdentity.from_cert(signer, device_key), DigestAlg.SHA256, attrs, enveloped)


def _fields(reply: bytes) -> tuple[str, str, str]:
    signer_info = cms.ContentInfo.load(reply)["content"]["signer_infos"][0]
    attrs = {a["type"].native: a["values"][0].native for a in signer_info["signed_attrs"]}
    return attrs["pki_status"], attrs["fail_info"], attrs["fail_info_text"]


def _without_fresh_parts(reply: bytes) -> bytes:
    """The CertRep re-encoded without senderNonce, signingTime and the signature."""
    info = cms.ContentInfo.load(reply)
    signer_info = info["content"]["signer_infos"][0]
    kept = [a for a in signer_info["signed_attrs"] if a["type"].native not in _STRIPPED]
    signer_info["signed_attrs"] = cms.CMSAttributes(kept)
    signer_info["signature"] = b""
    return bytes(info.dump(force=True))


def _stand_in(size: int) -> bytes:
    return KEY[:size]


@pytest.fixture
def service(server: Server) -> Callable[[], ScepService]:
    def make() -> ScepService:
        validators = Validators(
            server.config.intune, server.config.webhook, None, server.ca.cert.subject.rfc4514_string()
        )
        enroller = enroller_for(server.config, server.store, server.ca, validators, lambda: NOW)
        return ScepService(
            server.store, server.ca, server.config.scep, enroller, clock=lambda: NOW, random_bytes=_stand_in
        )

    return make


@pytest.mark.parametrize("to", ["ra", "ca"])
async def test_every_decryption_failure_gets_the_same_cert_rep(
    server: Server, service: Callable[[], ScepService], device_key: rsa.RSAPrivateKey, to: str
) -> None:
    recipient = server.ca.encryption_cert if to == "ra" else server.ca.cert
    public = recipient.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    signer = self_signed_signer(device_key)
    scep = service()
    ctx = RequestContext(remote="127.0.0.1", user_agent="oracle-test")
    before = await server.cert_count()
    replies = {
        case: await scep.pki_operation(
            server.integration.id, _request(device_key, signer, _enveloped(recipient, key)), ctx
        )
        for case, key in _wrapped_keys(public).items()
    }
    fields = {case: _fields(reply) for case, reply in replies.items()}
    # FAILURE, badMessageCheck, one text for all three.
    assert set(fields.values()) == {("2", "1", "the request cannot be decrypted")}, fields
    stripped = {case: _without_fresh_parts(reply) for case, reply in replies.items()}
    assert len(set(stripped.values())) == 1, "the CertReps differ beyond senderNonce, signingTime and signature"
    # The replies themselves are distinct messages (fresh senderNonce each).
    assert len(set(replies.values())) == 3
    assert await server.cert_count() == before


async def test_key_transport_failures_do_not_reach_the_log(
    server: Server, service: Callable[[], ScepService], device_key: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    """The operator's log says "cannot be decrypted" for each case, never which step failed."""
    public = server.ca.encryption_cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    signer = self_signed_signer(device_key)
    scep = service()
    ctx = RequestContext(remote="127.0.0.1", user_agent="oracle-test")
    details = []
    for key in _wrapped_keys(public).values():
        caplog.clear()
        with caplog.at_level("DEBUG"):
            await scep.pki_operation(
                server.integration.id, _request(device_key, signer, _enveloped(server.ca.encryption_cert, key)), ctx
            )
        lines = [r.getMessage() for r in caplog.records if r.name.startswith("scep_ca")]
        details.append([line.replace(f"tid={TID}", "") for line in lines])
    assert details[0] == details[1] == details[2]
    assert any("detail=the request cannot be decrypted" in line for line in details[0])


@pytest.mark.parametrize("iv", [b"", bytes(8), bytes(17)], ids=["empty", "short", "long"])
async def test_wrong_iv_length_is_the_same_failure(
    server: Server, service: Callable[[], ScepService], device_key: rsa.RSAPrivateKey, iv: bytes
) -> None:
    public = server.ca.encryption_cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    ias = issuer_and_serial(server.ca.encryption_cert.public_bytes(serialization.Encoding.DER))
    ktri = der.seq(der.integer(0), ias, oids.RSA_ENCRYPTION, der.octet_string(public.encrypt(KEY, padding.PKCS1v15())))
    eci = der.seq(
        oids.DATA,
        der.seq(der.oid(CIPHER_OIDS[ContentCipher.AES256]), der.octet_string(iv)),
        der.implicit_primitive(0, os.urandom(32)),
    )
    enveloped = der.seq(oids.ENVELOPED_DATA, der.explicit(0, der.seq(der.integer(0), der.set_of(ktri), eci)))
    signer = self_signed_signer(device_key)
    reply = await service().pki_operation(
        server.integration.id, _request(device_key, signer, enveloped), RequestContext(None, None)
    )
    assert _fields(reply) == ("2", "1", "the request cannot be decrypted")
