"""Decoding and verifying a SCEP pkiMessage (RFC 8894 section 3.2).

A pkiMessage is a CMS SignedData whose signed attributes carry the SCEP fields and
whose content is (for most message types) an EnvelopedData. The outer signer is a
transient self-signed certificate (PKCSReq) or the certificate being renewed
(RenewalReq); its subject is often a random UUID, so it is never compared with the
CSR subject.

``decode_pki_message`` checks structure only (failures are ``MalformedRequest``:
HTTP 400, nothing to sign a reply to). ``verify_pki_message`` checks the
messageDigest and the signature (failures are ``ScepFailure``: a signed CertRep
FAILURE can still be built from the decoded header).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from scep_ca import asn1 as _asn1  # noqa: F401  (registers the SCEP attributes)
from scep_ca.ber import encode_tlv
from scep_ca.enums import DigestAlg
from scep_ca.errors import BadAlg, BadMessageCheck, MalformedRequest

_HASHES: dict[DigestAlg, type[hashes.HashAlgorithm]] = {
    DigestAlg.SHA1: hashes.SHA1,
    DigestAlg.SHA256: hashes.SHA256,
    DigestAlg.SHA512: hashes.SHA512,
}

MAX_NONCE_BYTES = 64
MAX_TRANSACTION_ID_CHARS = 256


def hash_algorithm(alg: DigestAlg) -> hashes.HashAlgorithm:
    return _HASHES[alg]()


@dataclass(frozen=True)
class PKIMessage:
    """A decoded request. ``content`` is the raw eContent (usually an EnvelopedData)."""

    message_type: int
    transaction_id: str
    sender_nonce: bytes
    digest_alg: DigestAlg | None  # None when the request named a digest we do not support
    digest_alg_name: str
    signer_info: cms.SignerInfo
    signer_cert: asn1_x509.Certificate
    content: bytes | None

    @property
    def signer_cert_der(self) -> bytes:
        return bytes(self.signer_cert.dump())

    def reply_digest(self) -> DigestAlg:
        """The digest the CertRep uses: the request's, or SHA-256 when it was unsupported."""
        return self.digest_alg or DigestAlg.SHA256


def _single_attr(attrs: dict[str, cms.CMSAttribute], name: str) -> object:
    attr = attrs.get(name)
    if attr is None:
        raise MalformedRequest(f"missing signed attribute {name}")
    values = attr["values"]
    if len(values) != 1:
        raise MalformedRequest(f"signed attribute {name} must have one value")
    return values[0].native


def _find_signer_cert(sd: cms.SignedData, sid: cms.SignerIdentifier) -> asn1_x509.Certificate:
    certs = [c.chosen for c in sd["certificates"] or [] if c.name == "certificate"]
    if sid.name == "issuer_and_serial_number":
        # Compare encodings: asn1crypto's Name equality normalises every string and is slow.
        issuer = sid.chosen["issuer"].dump()
        serial = sid.chosen["serial_number"].native
        for cert in certs:
            tbs = cert["tbs_certificate"]
            if tbs["serial_number"].native == serial and tbs["issuer"].dump() == issuer:
                return cert
    else:
        ski = sid.chosen.native
        for cert in certs:
            if cert.key_identifier == ski:
                return cert
    raise MalformedRequest("the signer certificate is not in the pkiMessage")


def decode_pki_message(der: bytes) -> PKIMessage:
    """Decode the SignedData envelope of a request (RFC 8894 section 3.2); no crypto checks."""
    try:
        info = cms.ContentInfo.load(der)
        if info["content_type"].native != "signed_data":
            raise MalformedRequest("not a CMS SignedData")
        sd = info["content"]
        signer_infos = sd["signer_infos"]
        # Exactly one signer: RFC 8894 section 3.2 has the requester sign alone.
        if len(signer_infos) != 1:
            raise MalformedRequest("a pkiMessage has exactly one signer")
        si = signer_infos[0]
        signed_attrs = si["signed_attrs"]
        if not isinstance(signed_attrs, cms.CMSAttributes) or len(signed_attrs) == 0:
            raise MalformedRequest("a pkiMessage carries signed attributes")
        attrs = {a["type"].native: a for a in signed_attrs}
        message_type_text = _single_attr(attrs, "message_type")
        transaction_id = _single_attr(attrs, "transaction_id")
        sender_nonce = _single_attr(attrs, "sender_nonce")
        if not isinstance(message_type_text, str) or not message_type_text.strip().isdigit():
            raise MalformedRequest("messageType is not a decimal PrintableString")
        if not isinstance(transaction_id, str) or not 0 < len(transaction_id) <= MAX_TRANSACTION_ID_CHARS:
            raise MalformedRequest("transactionID is missing or too long")
        if not isinstance(sender_nonce, bytes) or not 0 < len(sender_nonce) <= MAX_NONCE_BYTES:
            raise MalformedRequest("senderNonce is missing or malformed")
        signer_cert = _find_signer_cert(sd, si["sid"])
        # Touch the parts verification needs so that a truncated message fails here.
        _ = signer_cert.public_key.dump(), si["signature"].native
        encap = sd["encap_content_info"]
        content_value = encap["content"]
        content = bytes(content_value) if content_value.native is not None else None
        digest_name = si["digest_algorithm"]["algorithm"].native
    except MalformedRequest:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise MalformedRequest("not a well-formed pkiMessage") from exc
    try:
        digest_alg: DigestAlg | None = DigestAlg(digest_name)
    except ValueError:
        digest_alg = None
    return PKIMessage(
        message_type=int(message_type_text),
        transaction_id=transaction_id,
        sender_nonce=sender_nonce,
        digest_alg=digest_alg,
        digest_alg_name=str(digest_name),
        signer_info=si,
        signer_cert=signer_cert,
        content=content,
    )


def signed_attrs_der(si: cms.SignerInfo) -> bytes:
    """The signed attributes as the DER SET the signature covers (RFC 5652 section 5.4)."""
    attrs = si["signed_attrs"]
    contents = attrs.contents
    return encode_tlv(0x31, contents)


def verify_pki_message(msg: PKIMessage) -> x509.Certificate:
    """Check messageDigest and the signer's signature (RFC 8894 section 3.2.1).

    Returns the signer certificate as a cryptography object. Raises ``BadAlg`` for a
    digest or key we do not support and ``BadMessageCheck`` for a failed check.
    """
    if msg.digest_alg is None:
        raise BadAlg("unsupported digest algorithm", f"digest {msg.digest_alg_name}")
    si = msg.signer_info
    attrs = {a["type"].native: a for a in si["signed_attrs"]}
    try:
        expected = _single_attr(attrs, "message_digest")
    except MalformedRequest as exc:
        raise BadMessageCheck("missing messageDigest") from exc
    actual = hashlib.new(msg.digest_alg.value, msg.content or b"").digest()
    if not isinstance(expected, bytes) or expected != actual:
        raise BadMessageCheck("messageDigest does not match the content")
    try:
        signer = x509.load_der_x509_certificate(msg.signer_cert_der)
        key = signer.public_key()
    except ValueError as exc:
        raise BadMessageCheck("signer certificate cannot be parsed") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise BadAlg("signer key is not RSA")
    sig_algo = si["signature_algorithm"].signature_algo
    if sig_algo != "rsassa_pkcs1v15":
        raise BadAlg("unsupported signature algorithm", f"signature {sig_algo}")
    try:
        key.verify(si["signature"].native, signed_attrs_der(si), padding.PKCS1v15(), hash_algorithm(msg.digest_alg))
    except InvalidSignature as exc:
        raise BadMessageCheck("signature does not verify") from exc
    return signer


def parse_pki_message(der: bytes) -> tuple[PKIMessage, x509.Certificate]:
    """Decode and verify in one step (for callers that need no FAILURE reply on bad input)."""
    msg = decode_pki_message(der)
    return msg, verify_pki_message(msg)


__all__ = [
    "PKIMessage",
    "decode_pki_message",
    "hash_algorithm",
    "parse_pki_message",
    "signed_attrs_der",
    "verify_pki_message",
]
