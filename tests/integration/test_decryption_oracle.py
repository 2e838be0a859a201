"""No decryption oracle (RFC 3218 section 2.3.2, RFC 5652 section 10; design section 7;
issue 17 items 2 and 3), with file keys and with keys in a SoftHSM token.

Requests that fail at different steps of decrypting the EnvelopedData must get the same
CertRep: a wrapped content-encryption key of the wrong length, a wrapped key whose PKCS#1
v1.5 padding is bad, a correctly wrapped key under which the content does not decrypt (bad
CBC padding), and an envelope to the CA instead of the encryption RA. The replies are
compared whole, after removing what must differ: the fresh senderNonce, the signing time
and the signature over them.

A key that does not unwrap is replaced by a stand-in key derived from the server secret and
the encrypted key, so the same request always meets the same key: each request is sent
twice and must be answered alike, and a bad-padding key whose content happens to decrypt
under the stand-in is answered exactly like a good key with wrong content. The tests learn
which key the server will use from ``unwrap_key`` with the service's secret and craft the
content around it; the assertions are on the answers.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

import tests.asn1_scep  # noqa: F401  (registers the SCEP attributes with asn1crypto)
from scep_ca.asn1 import der, oids
from scep_ca.asn1.ber import issuer_and_serial
from scep_ca.pki.ca import CAIdentity, create_ca
from scep_ca.pki.pkcs11_keys import Token, TokenSettings
from scep_ca.protocol.algorithms import CIPHER_OIDS
from scep_ca.protocol.client import self_signed_signer
from scep_ca.protocol.enums import ContentCipher, DigestAlg, MessageType
from scep_ca.protocol.key_transport import KeyTransport, stand_in_key, unwrap_key
from scep_ca.protocol.signing import SignerIdentity, attribute, sign_message
from scep_ca.services.scep import RequestContext, ScepService
from scep_ca.services.validators.registry import Validators
from scep_ca.services.wiring import enroller_for
from tests.hsm import SoftHsm
from tests.integration.conftest import Server

KEY = bytes(range(32))  # the AES-256 key of the "correct wrap" case
IV = bytes(16)
NONCE = b"\x42" * 16
TID = "oracle-1"
NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
SECRET = b"s" * 32  # the server secret the stand-in keys derive from
_STRIPPED = {"sender_nonce", "signing_time"}
DECRYPTION_FAILED = ("2", "1", "the request cannot be decrypted")  # FAILURE, badMessageCheck


def _content(key: bytes, *, valid_padding: bool) -> bytes:
    """Two AES-256-CBC blocks under ``key``: PKCS#7-padded junk, or a last octet 0x00 (never valid)."""
    if valid_padding:
        padder = sym_padding.PKCS7(128).padder()
        plain = padder.update(b"not a CSR at all") + padder.finalize()
    else:
        plain = b"x" * 31 + b"\x00"
    encryptor = Cipher(algorithms.AES(key), modes.CBC(IV)).encryptor()
    return encryptor.update(plain) + encryptor.finalize()


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


def _enveloped(recipient: x509.Certificate, encrypted_key: bytes, content: bytes) -> bytes:
    """EnvelopedData (RFC 5652 section 6.1) to ``recipient`` with a given encryptedKey, AES-256-CBC."""
    ias = issuer_and_serial(recipient.public_bytes(serialization.Encoding.DER))
    ktri = der.seq(der.integer(0), ias, oids.RSA_ENCRYPTION, der.octet_string(encrypted_key))
    eci = der.seq(
        oids.DATA,
        der.seq(der.oid(CIPHER_OIDS[ContentCipher.AES256]), der.octet_string(IV)),
        der.implicit_primitive(0, content),
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


@pytest.fixture(params=["file", "token"])
def keys(request: pytest.FixtureRequest, server: Server, tmp_path: Path) -> Iterator[CAIdentity]:
    """The CA whose encryption RA decrypts: the shared file-key CA, or a new one in SoftHSM."""
    if request.param == "file":
        yield server.ca
        return
    hsm: SoftHsm = request.getfixturevalue("hsm")
    token = Token(TokenSettings(str(hsm.module), hsm.label, hsm.pin))
    yield create_ca(
        tmp_path / "token-ca", subject="CN=Token CA", key_size=2048, validity_days=30, passphrase=None, token=token
    )


@pytest.fixture
def service(server: Server, keys: CAIdentity) -> Callable[[], ScepService]:
    def make() -> ScepService:
        validators = Validators(server.config.intune, server.config.webhook, None, keys.cert.subject.rfc4514_string())
        enroller = enroller_for(server.config, server.store, keys, validators, lambda: NOW)
        return ScepService(server.store, keys, server.config.scep, enroller, clock=lambda: NOW, stand_in_secret=SECRET)

    return make


def _key_in_use(ca: CAIdentity, encrypted_key: bytes) -> bytes:
    """The AES-256 key the server decrypts the content with for ``encrypted_key``."""
    return unwrap_key(encrypted_key, KeyTransport(), ca.encryption_key, 32, SECRET)


async def _answers(
    server: Server, scep: ScepService, device_key: rsa.RSAPrivateKey, envelopes: dict[str, bytes]
) -> dict[str, list[bytes]]:
    """Each envelope in a PKCSReq, sent twice."""
    signer = self_signed_signer(device_key)
    ctx = RequestContext(remote="127.0.0.1", user_agent="oracle-test")
    request = {case: _request(device_key, signer, env) for case, env in envelopes.items()}
    return {
        case: [await scep.pki_operation(server.integration.id, req, ctx) for _ in range(2)]
        for case, req in request.items()
    }


async def test_every_decryption_failure_gets_the_same_cert_rep_every_time(
    server: Server, keys: CAIdentity, service: Callable[[], ScepService], device_key: rsa.RSAPrivateKey
) -> None:
    public = keys.encryption_cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    envelopes = {
        case: _enveloped(keys.encryption_cert, key, _content(_key_in_use(keys, key), valid_padding=False))
        for case, key in _wrapped_keys(public).items()
    }
    # Encrypted to the CA (clients that pin it): as undecryptable as the rest (issue 17 item 2).
    ca_public = keys.cert.public_key()
    assert isinstance(ca_public, rsa.RSAPublicKey)
    envelopes["to-the-ca"] = _enveloped(
        keys.cert, ca_public.encrypt(KEY, padding.PKCS1v15()), _content(KEY, valid_padding=False)
    )
    before = await server.cert_count()
    replies = await _answers(server, service(), device_key, envelopes)
    fields = {case: {_fields(reply) for reply in pair} for case, pair in replies.items()}
    assert all(f == {DECRYPTION_FAILED} for f in fields.values()), fields
    stripped = {_without_fresh_parts(reply) for pair in replies.values() for reply in pair}
    assert len(stripped) == 1, "the CertReps differ beyond senderNonce, signingTime and signature"
    # The replies themselves are distinct messages (fresh senderNonce each).
    assert len({reply for pair in replies.values() for reply in pair}) == 8
    assert await server.cert_count() == before


async def test_bad_padding_is_answered_like_good_padding_with_wrong_content(
    server: Server, keys: CAIdentity, service: Callable[[], ScepService], device_key: rsa.RSAPrivateKey
) -> None:
    """Content that decrypts (valid CBC padding, not a CSR) under the key the server will use:
    the wrapped key with bad PKCS#1 padding gets the same answer as the well-wrapped one, every
    time. With a random stand-in key it got "cannot be decrypted" 255 times in 256; counting
    those told bad padding from good (about 260 requests per yes/no question)."""
    public = keys.encryption_cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    wrapped = _wrapped_keys(public)
    if keys is not server.ca:
        # A token key: the padding is ours to check, and bad padding always meets the stand-in.
        assert _key_in_use(keys, wrapped["bad-pkcs1-padding"]) == stand_in_key(SECRET, wrapped["bad-pkcs1-padding"], 32)
    envelopes = {
        case: _enveloped(keys.encryption_cert, key, _content(_key_in_use(keys, key), valid_padding=True))
        for case, key in wrapped.items()
    }
    replies = await _answers(server, service(), device_key, envelopes)
    fields = {case: {_fields(reply) for reply in pair} for case, pair in replies.items()}
    assert len({frozenset(f) for f in fields.values()}) == 1 and len(fields["bad-pkcs1-padding"]) == 1, fields
    assert fields["bad-pkcs1-padding"] != {DECRYPTION_FAILED}, "the content did decrypt under the stand-in key"
    assert len({_without_fresh_parts(reply) for pair in replies.values() for reply in pair}) == 1


async def test_key_transport_failures_do_not_reach_the_log(
    server: Server,
    keys: CAIdentity,
    service: Callable[[], ScepService],
    device_key: rsa.RSAPrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The operator's log says "cannot be decrypted" for each case, never which step failed."""
    public = keys.encryption_cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    signer = self_signed_signer(device_key)
    scep = service()
    ctx = RequestContext(remote="127.0.0.1", user_agent="oracle-test")
    details = []
    for key in _wrapped_keys(public).values():
        caplog.clear()
        envelope = _enveloped(keys.encryption_cert, key, _content(_key_in_use(keys, key), valid_padding=False))
        with caplog.at_level("DEBUG"):
            await scep.pki_operation(server.integration.id, _request(device_key, signer, envelope), ctx)
        lines = [r.getMessage() for r in caplog.records if r.name.startswith("scep_ca")]
        details.append([line.replace(f"tid={TID}", "") for line in lines])
    assert details[0] == details[1] == details[2]
    assert any("detail=the request cannot be decrypted" in line for line in details[0])


@pytest.mark.parametrize("iv", [b"", bytes(8), bytes(17)], ids=["empty", "short", "long"])
async def test_wrong_iv_length_is_the_same_failure(
    server: Server, keys: CAIdentity, service: Callable[[], ScepService], device_key: rsa.RSAPrivateKey, iv: bytes
) -> None:
    public = keys.encryption_cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    ias = issuer_and_serial(keys.encryption_cert.public_bytes(serialization.Encoding.DER))
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
