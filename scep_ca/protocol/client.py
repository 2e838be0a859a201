"""The public SCEP client API (RFC 8894 section 3.3): the requester's side of the protocol.

Builds PKCSReq, RenewalReq, CertPoll and GetCert pkiMessages the way RFC 8894 section
3.3.1 and the real clients do (``build_csr``, ``self_signed_signer``, ``build_request``),
and opens CertReps (``open_reply``). Pure: no I/O; the caller sends the bytes (GET or POST
to ``/scep/<id>``). It is part of the runtime package on purpose: the test suites, the
benchmarks (``bench/enroll.py``) and the real-client harnesses drive the server through
it, and an operator can use it for a self-check of a deployment (README "Architecture").
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from config.clock import utc_now
from scep_ca.asn1 import der, oids
from scep_ca.asn1.ber import issuer_and_serial
from scep_ca.protocol.enums import ContentCipher, DigestAlg, FailInfo, MessageType, PKIStatus
from scep_ca.protocol.envelope import RecipientKey, decrypt_envelope, encrypt_envelope
from scep_ca.protocol.message import decode_pki_message, verify_pki_message
from scep_ca.protocol.signing import SignerIdentity, attribute, sign_message


def self_signed_signer(key: rsa.RSAPrivateKey, cn: str = "SCEP SIGNER") -> x509.Certificate:
    """The transient certificate a device signs its PKCSReq with (RFC 8894 section 2.3)."""
    now = utc_now()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )


def build_csr(
    key: rsa.RSAPrivateKey,
    subject: x509.Name,
    challenge: str | None,
    hash_alg: hashes.SHA256 | hashes.SHA384 | hashes.SHA512 | None = None,
) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if challenge is not None:
        builder = builder.add_attribute(x509.oid.AttributeOID.CHALLENGE_PASSWORD, challenge.encode())
    return builder.sign(key, hash_alg or hashes.SHA256()).public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class Request:
    der: bytes
    transaction_id: str
    sender_nonce: bytes


def build_request(
    payload: bytes | None,
    *,
    signer_cert: x509.Certificate,
    signer_key: rsa.RSAPrivateKey,
    recipient: x509.Certificate,
    transaction_id: str,
    message_type: MessageType = MessageType.PKCS_REQ,
    cipher: ContentCipher = ContentCipher.AES256,
    digest: DigestAlg = DigestAlg.SHA256,
) -> Request:
    """A pkiMessage: ``payload`` (CSR, IssuerAndSubject, ...) enveloped to ``recipient`` and signed."""
    nonce = os.urandom(16)
    enveloped = None
    if payload is not None:
        public = recipient.public_key()
        assert isinstance(public, rsa.RSAPublicKey)
        recipient_der = recipient.public_bytes(serialization.Encoding.DER)
        enveloped = encrypt_envelope(payload, issuer_and_serial(recipient_der), public, cipher)
    attrs = [
        attribute(oids.MESSAGE_TYPE, der.printable_string(str(int(message_type)))),
        attribute(oids.TRANSACTION_ID, der.printable_string(transaction_id)),
        attribute(oids.SENDER_NONCE, der.octet_string(nonce)),
    ]
    message = sign_message(SignerIdentity.from_cert(signer_cert, signer_key), digest, attrs, enveloped)
    return Request(der=message, transaction_id=transaction_id, sender_nonce=nonce)


@dataclass(frozen=True)
class Reply:
    status: PKIStatus
    fail_info: FailInfo | None
    fail_text: str | None
    transaction_id: str
    recipient_nonce: bytes | None
    certificates: list[x509.Certificate]
    crls: list[x509.CertificateRevocationList]
    cipher: ContentCipher | None
    digest: DigestAlg | None
    signer_cert_der: bytes


def open_reply(der: bytes, signer_cert: x509.Certificate, signer_key: rsa.RSAPrivateKey) -> Reply:
    """Verify a CertRep's signature and decrypt its certs-only content (RFC 8894 section 3.3.2)."""
    msg = decode_pki_message(der)
    verify_pki_message(msg)
    status = PKIStatus(int(msg.text_attribute("pki_status") or "-1"))
    fail = msg.text_attribute("fail_info")
    certs: list[x509.Certificate] = []
    crls: list[x509.CertificateRevocationList] = []
    cipher = None
    if status is PKIStatus.SUCCESS and msg.content:
        # The requester's own reply: no oracle to hide, any secret derives the unused stand-in.
        recipient = RecipientKey.from_cert(signer_cert, signer_key)
        decrypted = decrypt_envelope(msg.content, recipient, allow_des=True, stand_in_secret=os.urandom(32))
        cipher = decrypted.cipher
        bag = cms.ContentInfo.load(decrypted.plaintext)["content"]
        certs = [x509.load_der_x509_certificate(c.chosen.dump()) for c in bag["certificates"] or []]
        crls = [x509.load_der_x509_crl(c.chosen.dump()) for c in bag["crls"] or []]
    return Reply(
        status=status,
        fail_info=FailInfo(int(fail)) if fail is not None else None,
        fail_text=msg.text_attribute("fail_info_text"),
        transaction_id=msg.transaction_id,
        recipient_nonce=msg.octets_attribute("recipient_nonce"),
        certificates=certs,
        crls=crls,
        cipher=cipher,
        digest=msg.digest_alg,
        signer_cert_der=msg.signer_cert_der,
    )


def issuer_and_subject(issuer: x509.Name, subject: x509.Name) -> bytes:
    """IssuerAndSubject (RFC 8894 section 3.3.3): the content of a CertPoll."""
    return der.seq(issuer.public_bytes(), subject.public_bytes())


def issuer_and_serial_of(issuer: x509.Name, serial: int) -> bytes:
    """IssuerAndSerialNumber (RFC 5652 section 10.2.4): the content of GetCert and GetCRL."""
    return der.seq(issuer.public_bytes(), der.integer(serial))
