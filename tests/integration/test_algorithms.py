"""The algorithm matrix, both directions, through the real app on a real SQLite store.

Requests: content ciphers AES-128/192/256-CBC, DES-EDE3-CBC and DES-CBC x signer digests
SHA-1/256/512, each enrolled over HTTP; the CertRep must use the request's digest (SignerInfo)
and the request's cipher (the EnvelopedData around the issued certificate). Key transport
RSAES-OAEP (default and explicit parameters) is accepted like PKCS#1 v1.5. An unsupported
content cipher (AES-GCM, RC2), an unsupported key transport or OAEP variant, and single DES on a
server with ``scep.allow_des: false`` are each a signed FAILURE with badAlg, and nothing is issued.

The OAEP and unsupported-algorithm requests need an EnvelopedData that ``scep_ca.protocol.client`` does
not build; ``_envelope`` below writes one with ``scep_ca.asn1.der``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from scep_ca.asn1 import der, oids
from scep_ca.asn1.ber import issuer_and_serial
from scep_ca.protocol.algorithms import CIPHER_OIDS
from scep_ca.protocol.client import Reply, build_csr, build_request, open_reply, self_signed_signer
from scep_ca.protocol.dn import parse_dn
from scep_ca.protocol.enums import ContentCipher, DigestAlg, FailInfo, MessageType, PKIStatus
from scep_ca.protocol.signing import SignerIdentity, attribute, sign_message
from tests.integration.conftest import Server, ServerFactory

SUBJECT = "CN=alice,O=Example"
CIPHERS = list(ContentCipher)
DIGESTS = list(DigestAlg)

RSAES_OAEP = "1.2.840.113549.1.1.7"
MGF1 = "1.2.840.113549.1.1.8"
P_SPECIFIED = "1.2.840.113549.1.1.9"
HASH_OIDS = {
    "sha1": "1.3.14.3.2.26",
    "sha256": "2.16.840.1.101.3.4.2.1",
    "sha384": "2.16.840.1.101.3.4.2.2",
    "sha512": "2.16.840.1.101.3.4.2.3",
    "md5": "1.2.840.113549.2.5",
}
HASH_CLASSES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
    "md5": hashes.MD5,
}
AES128_CBC = CIPHER_OIDS[ContentCipher.AES128]
AES128_GCM = "2.16.840.1.101.3.4.1.6"
RC2_CBC = "1.2.840.113549.3.2"


async def _post(server: Server, body: bytes) -> bytes:
    resp = await server.client.post(
        f"{server.url()}?operation=PKIOperation", data=body, headers={"Content-Type": "application/x-pki-message"}
    )
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"] == "application/x-pki-message"
    return await resp.read()


def _csr(key: rsa.RSAPrivateKey, challenge: str | None) -> bytes:
    return build_csr(key, parse_dn(SUBJECT), challenge)


async def _enroll(
    server: Server, key: rsa.RSAPrivateKey, cipher: ContentCipher, digest: DigestAlg, challenge: str | None = None
) -> Reply:
    signer = self_signed_signer(key)
    request = build_request(
        _csr(key, challenge if challenge is not None else await server.challenge()),
        signer_cert=signer,
        signer_key=key,
        recipient=server.ca.encryption_cert,
        transaction_id=f"alg-{cipher.value}-{digest.value}",
        cipher=cipher,
        digest=digest,
    )
    return open_reply(await _post(server, request.der), signer, key)


# --- the matrix -----------------------------------------------------------------------------------


@pytest.mark.parametrize("digest", DIGESTS, ids=[d.value for d in DIGESTS])
@pytest.mark.parametrize("cipher", CIPHERS, ids=[c.value for c in CIPHERS])
async def test_request_cipher_and_digest_are_echoed(
    server: Server, device_key: rsa.RSAPrivateKey, cipher: ContentCipher, digest: DigestAlg
) -> None:
    reply = await _enroll(server, device_key, cipher, digest)
    assert reply.status is PKIStatus.SUCCESS, (reply.fail_info, reply.fail_text)
    assert reply.digest is digest, "CertRep SignerInfo digest = the request's"
    assert reply.cipher is cipher, "CertRep EnvelopedData cipher = the request's"
    assert reply.certificates[0].public_key() == device_key.public_key()
    assert reply.signer_cert_der == server.ca.ra_cert_der
    assert await server.cert_count() == 1


@pytest.mark.parametrize("digest", DIGESTS, ids=[d.value for d in DIGESTS])
async def test_failure_reply_uses_the_request_digest(
    server: Server, device_key: rsa.RSAPrivateKey, digest: DigestAlg
) -> None:
    reply = await _enroll(server, device_key, ContentCipher.AES128, digest, challenge="not-a-challenge")
    assert (reply.status, reply.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST)
    assert reply.digest is digest
    assert await server.cert_count() == 0


# --- hand-built envelopes -------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyTransport:
    """How the content-encryption key is wrapped: the AlgorithmIdentifier and the RSA padding."""

    algorithm: bytes
    padding: padding.AsymmetricPadding


def _hash_alg(name: str) -> bytes:
    # RFC 4055 section 2.1: hash AlgorithmIdentifiers in RSAES-OAEP-params have absent parameters.
    return der.seq(der.oid(HASH_OIDS[name]))


def oaep(
    hash_name: str | None = None, mgf_hash: str | None = None, label: bytes | None = None, *, params: bool = True
) -> KeyTransport:
    """RSAES-OAEP (RFC 8017 A.2.1, RFC 4055 section 4.1). None means the SHA-1 default, left out."""
    fields = []
    if hash_name is not None:
        fields.append(der.explicit(0, _hash_alg(hash_name)))
    if mgf_hash is not None:
        fields.append(der.explicit(1, der.seq(der.oid(MGF1), _hash_alg(mgf_hash))))
    if label is not None:
        fields.append(der.explicit(2, der.seq(der.oid(P_SPECIFIED), der.octet_string(label))))
    algorithm = der.seq(der.oid(RSAES_OAEP), der.seq(*fields)) if params else der.seq(der.oid(RSAES_OAEP))
    pad = padding.OAEP(
        mgf=padding.MGF1(HASH_CLASSES[mgf_hash or "sha1"]()),
        algorithm=HASH_CLASSES[hash_name or "sha1"](),
        label=label,
    )
    return KeyTransport(algorithm, pad)


PKCS1_V15 = KeyTransport(oids.RSA_ENCRYPTION, padding.PKCS1v15())


def _aes_cbc(plaintext: bytes, key: bytes) -> tuple[bytes, bytes]:
    """(AlgorithmIdentifier with IV, ciphertext) for AES-CBC with PKCS#7 padding."""
    iv = os.urandom(16)
    padder = sym_padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    ciphertext = enc.update(padded) + enc.finalize()
    oid = {16: AES128_CBC, 24: CIPHER_OIDS[ContentCipher.AES192], 32: CIPHER_OIDS[ContentCipher.AES256]}
    return der.algorithm(oid[len(key)], der.octet_string(iv)), ciphertext


def _aes_gcm(plaintext: bytes, key: bytes) -> tuple[bytes, bytes]:
    """(AlgorithmIdentifier with GCMParameters (RFC 5084), ciphertext||tag)."""
    nonce = os.urandom(12)
    params = der.seq(der.octet_string(nonce), der.integer(16))
    return der.algorithm(AES128_GCM, params), AESGCM(key).encrypt(nonce, plaintext, None)


def _envelope(
    plaintext: bytes,
    recipient: x509.Certificate,
    transport: KeyTransport,
    *,
    content: str = "aes-cbc",
) -> bytes:
    """An EnvelopedData (RFC 5652 section 6.1) with one KeyTransRecipientInfo to ``recipient``."""
    cek = os.urandom(16)
    if content == "aes-cbc":
        content_alg, ciphertext = _aes_cbc(plaintext, cek)
    elif content == "aes-gcm":
        content_alg, ciphertext = _aes_gcm(plaintext, cek)
    else:  # RC2-CBC (RFC 3370 section 5.2): the OID with an IV; the bytes are never decrypted.
        content_alg = der.algorithm(RC2_CBC, der.seq(der.integer(58), der.octet_string(os.urandom(8))))
        ciphertext = os.urandom(16 * (len(plaintext) // 16 + 1))
    public = recipient.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    encrypted_key = public.encrypt(cek, transport.padding)
    recipient_ias = issuer_and_serial(recipient.public_bytes(serialization.Encoding.DER))
    ktri = der.seq(der.integer(0), recipient_ias, transport.algorithm, der.octet_string(encrypted_key))
    eci = der.seq(oids.DATA, content_alg, der.implicit_primitive(0, ciphertext))
    return der.seq(oids.ENVELOPED_DATA, der.explicit(0, der.seq(der.integer(0), der.set_of(ktri), eci)))


def _signed(enveloped: bytes, key: rsa.RSAPrivateKey, signer: x509.Certificate, tid: str, digest: DigestAlg) -> bytes:
    """The PKCSReq pkiMessage around an EnvelopedData, as ``scep_ca.protocol.client.build_request`` signs it."""
    attrs = [
        attribute(oids.MESSAGE_TYPE, der.printable_string(str(int(MessageType.PKCS_REQ)))),
        attribute(oids.TRANSACTION_ID, der.printable_string(tid)),
        attribute(oids.SENDER_NONCE, der.octet_string(os.urandom(16))),
    ]
    return sign_message(SignerIdentity.from_cert(signer, key), digest, attrs, enveloped)


async def _send_envelope(
    server: Server, key: rsa.RSAPrivateKey, transport: KeyTransport, *, content: str = "aes-cbc", tid: str = "T-env"
) -> Reply:
    signer = self_signed_signer(key)
    enveloped = _envelope(_csr(key, await server.challenge()), server.ca.encryption_cert, transport, content=content)
    return open_reply(await _post(server, _signed(enveloped, key, signer, tid, DigestAlg.SHA256)), signer, key)


async def test_hand_built_envelope_with_pkcs1_v15_is_accepted(server: Server, device_key: rsa.RSAPrivateKey) -> None:
    """The control for the cases below: the helper's envelope works with the usual key transport."""
    reply = await _send_envelope(server, device_key, PKCS1_V15)
    assert reply.status is PKIStatus.SUCCESS, (reply.fail_info, reply.fail_text)
    assert reply.cipher is ContentCipher.AES128


OAEP_ACCEPTED = {
    "no-params": oaep(params=False),
    "default-params": oaep(),
    "sha1-explicit": oaep("sha1", "sha1"),
    "sha256-mgf1-sha256": oaep("sha256", "sha256"),
    "sha256-mgf1-sha1": oaep("sha256"),
    "sha384-mgf1-sha384": oaep("sha384", "sha384"),
    "sha512-mgf1-sha512": oaep("sha512", "sha512"),
}


@pytest.mark.parametrize("variant", sorted(OAEP_ACCEPTED))
async def test_rsaes_oaep_key_transport_is_accepted(
    server: Server, device_key: rsa.RSAPrivateKey, variant: str
) -> None:
    reply = await _send_envelope(server, device_key, OAEP_ACCEPTED[variant])
    assert reply.status is PKIStatus.SUCCESS, (reply.fail_info, reply.fail_text)
    assert reply.certificates[0].public_key() == device_key.public_key()
    assert reply.cipher is ContentCipher.AES128
    assert await server.cert_count() == 1


UNSUPPORTED_TRANSPORT = {
    # RSA-KEM (RFC 5990) and RSASSA-PSS (a signature scheme) as keyEncryptionAlgorithm.
    "rsa-kem": KeyTransport(der.seq(der.oid("1.2.840.113549.1.9.16.3.14")), padding.PKCS1v15()),
    "rsassa-pss": KeyTransport(der.seq(der.oid("1.2.840.113549.1.1.10")), padding.PKCS1v15()),
    # cryptography cannot wrap with OAEP-MD5: the key is wrapped with the SHA-1 default, the
    # AlgorithmIdentifier says MD5, and the server must refuse the identifier before decrypting.
    "oaep-md5": KeyTransport(oaep("md5", "md5").algorithm, oaep().padding),
    "oaep-label": oaep("sha256", "sha256", label=b"scep"),
}


@pytest.mark.parametrize("variant", sorted(UNSUPPORTED_TRANSPORT))
async def test_unsupported_key_transport_is_bad_alg(
    server: Server, device_key: rsa.RSAPrivateKey, variant: str
) -> None:
    reply = await _send_envelope(server, device_key, UNSUPPORTED_TRANSPORT[variant])
    assert (reply.status, reply.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_ALG), reply.fail_text
    assert reply.digest is DigestAlg.SHA256
    assert await server.cert_count() == 0


@pytest.mark.parametrize("content", ["aes-gcm", "rc2-cbc"])
async def test_unsupported_content_cipher_is_bad_alg(
    server: Server, device_key: rsa.RSAPrivateKey, content: str
) -> None:
    reply = await _send_envelope(server, device_key, PKCS1_V15, content=content)
    assert (reply.status, reply.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_ALG), reply.fail_text
    assert await server.cert_count() == 0


# --- single DES by configuration ------------------------------------------------------------------


@pytest.fixture
async def no_des_server(make_server: ServerFactory) -> Server:
    return await make_server(**{"scep.allow_des": False})


@pytest.mark.parametrize("digest", DIGESTS, ids=[d.value for d in DIGESTS])
async def test_des_refused_when_disallowed(
    no_des_server: Server, device_key: rsa.RSAPrivateKey, digest: DigestAlg
) -> None:
    reply = await _enroll(no_des_server, device_key, ContentCipher.DES, digest)
    assert (reply.status, reply.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_ALG)
    assert reply.digest is digest
    assert await no_des_server.cert_count() == 0


@pytest.mark.parametrize("cipher", [c for c in CIPHERS if c is not ContentCipher.DES], ids=lambda c: c.value)
async def test_only_des_is_refused_when_disallowed(
    no_des_server: Server, device_key: rsa.RSAPrivateKey, cipher: ContentCipher
) -> None:
    reply = await _enroll(no_des_server, device_key, cipher, DigestAlg.SHA1)
    assert reply.status is PKIStatus.SUCCESS, (reply.fail_info, reply.fail_text)
    assert reply.cipher is cipher
