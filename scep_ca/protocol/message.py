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

The walk over the structure uses ``scep_ca.asn1.ber`` rather than asn1crypto: it runs on
every request, accepts BER (Apple and scepclient send indefinite lengths) and costs
a fraction of building asn1crypto objects.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from scep_ca.asn1 import oids
from scep_ca.asn1.ber import (
    BMP_STRING,
    CONTEXT,
    IA5_STRING,
    OCTET_STRING,
    OID,
    PRINTABLE_STRING,
    SEQUENCE,
    SET,
    T61_STRING,
    TLV,
    UNIVERSAL,
    UTF8_STRING,
    BERError,
    children,
    encode_tlv,
    issuer_and_serial,
    octet_string_value,
    read_tlv,
)
from scep_ca.asn1.der import TAG_SEQUENCE, TAG_SET
from scep_ca.protocol.algorithms import DIGEST_BY_OID
from scep_ca.protocol.enums import DigestAlg
from scep_ca.protocol.errors import BadAlg, BadMessageCheck, MalformedRequest

_HASHES: dict[DigestAlg, type[hashes.HashAlgorithm]] = {
    DigestAlg.SHA1: hashes.SHA1,
    DigestAlg.SHA256: hashes.SHA256,
    DigestAlg.SHA512: hashes.SHA512,
}
# rsaEncryption and the shaXWithRSAEncryption OIDs all mean PKCS#1 v1.5 signatures in CMS.
_PKCS1_SIGNATURES = {
    oids.ID_RSA_ENCRYPTION,
    oids.ID_SHA1_WITH_RSA,
    oids.ID_SHA256_WITH_RSA,
    oids.ID_SHA384_WITH_RSA,
    oids.ID_SHA512_WITH_RSA,
}
_ATTRIBUTE_NAMES = {
    oids.ID_CONTENT_TYPE: "content_type",
    oids.ID_MESSAGE_DIGEST: "message_digest",
    oids.ID_SIGNING_TIME: "signing_time",
    oids.ID_MESSAGE_TYPE: "message_type",
    oids.ID_PKI_STATUS: "pki_status",
    oids.ID_FAIL_INFO: "fail_info",
    oids.ID_SENDER_NONCE: "sender_nonce",
    oids.ID_RECIPIENT_NONCE: "recipient_nonce",
    oids.ID_TRANSACTION_ID: "transaction_id",
    oids.ID_FAIL_INFO_TEXT: "fail_info_text",  # RFC 8894 section 3.2.1.4
}
# Universal string tags a client may use for the SCEP PrintableString attributes.
_STRING_CODECS = {
    PRINTABLE_STRING: "ascii",
    UTF8_STRING: "utf-8",
    IA5_STRING: "ascii",
    T61_STRING: "latin-1",
    BMP_STRING: "utf-16-be",
}

# Every OID this module looks up, by content octets.
_KNOWN_OIDS = oids.content_table([*DIGEST_BY_OID, *_PKCS1_SIGNATURES, *_ATTRIBUTE_NAMES])


def _dotted(content: bytes) -> str:
    return oids.dotted(content, _KNOWN_OIDS)


MAX_NONCE_BYTES = 64
# ASCII digits only: str.isdigit() also accepts "²" (which int() refuses) and "١٩" (which it reads as 19).
_DECIMAL = re.compile(r"[0-9]{1,3}")
MAX_TRANSACTION_ID_CHARS = 256
_SIGNED_DATA = oids.SIGNED_DATA[2:]


def hash_algorithm(alg: DigestAlg) -> hashes.HashAlgorithm:
    return _HASHES[alg]()


@dataclass(frozen=True)
class PKIMessage:
    """A decoded pkiMessage. ``content`` is the raw eContent (usually an EnvelopedData)."""

    message_type: int
    transaction_id: str
    sender_nonce: bytes
    digest_alg: DigestAlg | None  # None when the request named a digest we do not support
    digest_alg_name: str
    signature_alg: str
    signature: bytes
    signed_attrs_der: bytes  # the DER SET the signature covers
    signer_cert_der: bytes
    signer_issuer_and_serial: bytes  # DER IssuerAndSerialNumber of the signer certificate
    content: bytes | None
    # Every signed attribute we know, by name: the raw value TLV.
    attributes: dict[str, TLV] = field(default_factory=dict)

    def reply_digest(self) -> DigestAlg:
        """The digest the CertRep uses: the request's, or SHA-256 when it was unsupported."""
        return self.digest_alg or DigestAlg.SHA256

    def text_attribute(self, name: str) -> str | None:
        tlv = self.attributes.get(name)
        return None if tlv is None else _string_value(tlv, name)

    def octets_attribute(self, name: str) -> bytes | None:
        tlv = self.attributes.get(name)
        return None if tlv is None else _octets_value(tlv, name)


def _string_value(tlv: TLV, name: str) -> str:
    codec = _STRING_CODECS.get(tlv.tag_number) if tlv.tag_class == UNIVERSAL else None
    if codec is None:
        raise MalformedRequest(f"{name} is not a string")
    try:
        return octet_string_value(tlv).decode(codec) if tlv.constructed else tlv.content.decode(codec)
    except (UnicodeDecodeError, BERError) as exc:
        raise MalformedRequest(f"{name} is not valid text") from exc


def _octets_value(tlv: TLV, name: str) -> bytes:
    if not tlv.is_universal(OCTET_STRING):
        raise MalformedRequest(f"{name} is not an OCTET STRING")
    try:
        return octet_string_value(tlv)
    except BERError as exc:  # a constructed OCTET STRING with malformed segments
        raise MalformedRequest(f"{name} is not a well-formed OCTET STRING") from exc


def _expect(tlv: TLV, tag_class: int, tag_number: int, what: str) -> TLV:
    if tlv.tag_class != tag_class or tlv.tag_number != tag_number:
        raise MalformedRequest(f"malformed {what}")
    return tlv


def _parse_attributes(set_content: bytes) -> dict[str, TLV]:
    attrs: dict[str, TLV] = {}
    for attr in children(set_content):
        parts = children(_expect(attr, UNIVERSAL, SEQUENCE, "attribute").content)
        if len(parts) != 2:
            raise MalformedRequest("malformed attribute")
        name = _ATTRIBUTE_NAMES.get(_dotted(_expect(parts[0], UNIVERSAL, OID, "attribute type").content))
        if name is None:
            continue
        values = children(_expect(parts[1], UNIVERSAL, SET, "attribute values").content)
        if len(values) != 1:
            raise MalformedRequest(f"signed attribute {name} must have one value")
        if name in attrs:
            raise MalformedRequest(f"signed attribute {name} appears twice")
        attrs[name] = values[0]
    return attrs


def _certificates(field_tlv: TLV) -> list[bytes]:
    out = []
    for cert in children(field_tlv.content):
        if cert.is_universal(SEQUENCE):
            out.append(encode_tlv(TAG_SEQUENCE, cert.content))
    return out


def _signer_cert(certs: list[bytes], sid: TLV) -> tuple[bytes, bytes]:
    """The signer certificate and its IssuerAndSerialNumber."""
    if sid.is_universal(SEQUENCE):
        wanted = encode_tlv(TAG_SEQUENCE, sid.content)
        for cert in certs:
            if issuer_and_serial(cert) == wanted:
                return cert, wanted
    elif sid.is_context(0):
        ski = sid.content
        for cert in certs:
            try:
                ext = x509.load_der_x509_certificate(cert).extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
            except (ValueError, x509.InvalidVersion, x509.ExtensionNotFound, x509.DuplicateExtension):
                continue
            if ext.value.digest == ski:
                return cert, issuer_and_serial(cert)
    raise MalformedRequest("the signer certificate is not in the pkiMessage")


def decode_pki_message(der: bytes) -> PKIMessage:
    """Decode the SignedData of a pkiMessage (RFC 8894 section 3.2; RFC 5652 section 5); no crypto checks."""
    try:
        outer = read_tlv(der)
        if outer.end != len(der):
            raise MalformedRequest("trailing bytes after the pkiMessage")
        info = children(_expect(outer, UNIVERSAL, SEQUENCE, "ContentInfo").content)
        if len(info) != 2 or _expect(info[0], UNIVERSAL, OID, "contentType").content != _SIGNED_DATA:
            raise MalformedRequest("not a CMS SignedData")
        sd_wrapped = children(_expect(info[1], CONTEXT, 0, "SignedData wrapper").content)
        if len(sd_wrapped) != 1:
            raise MalformedRequest("malformed SignedData")
        fields = children(_expect(sd_wrapped[0], UNIVERSAL, SEQUENCE, "SignedData").content)
        if len(fields) < 4:
            raise MalformedRequest("malformed SignedData")
        encap = children(_expect(fields[2], UNIVERSAL, SEQUENCE, "encapContentInfo").content)
        content = None
        if len(encap) > 1:
            wrapped = children(_expect(encap[1], CONTEXT, 0, "eContent").content)
            if len(wrapped) != 1:
                raise MalformedRequest("malformed eContent")
            content = _octets_value(wrapped[0], "eContent")
        certs: list[bytes] = []
        for extra in fields[3:-1]:
            if extra.is_context(0):
                certs = _certificates(extra)
        signer_infos = children(_expect(fields[-1], UNIVERSAL, SET, "signerInfos").content)
        # Exactly one signer: RFC 8894 section 3.2 has the requester sign alone.
        if len(signer_infos) != 1:
            raise MalformedRequest("a pkiMessage has exactly one signer")
        si = children(_expect(signer_infos[0], UNIVERSAL, SEQUENCE, "SignerInfo").content)
        if len(si) < 6:
            raise MalformedRequest("a pkiMessage carries signed attributes")
        sid, digest_alg, signed_attrs, sig_alg, signature = si[1], si[2], si[3], si[4], si[5]
        _expect(signed_attrs, CONTEXT, 0, "signedAttrs")
        digest_oid = _dotted(children(_expect(digest_alg, UNIVERSAL, SEQUENCE, "digestAlgorithm").content)[0].content)
        sig_oid = _dotted(children(_expect(sig_alg, UNIVERSAL, SEQUENCE, "signatureAlgorithm").content)[0].content)
        signature_bytes = _expect(signature, UNIVERSAL, OCTET_STRING, "signature").content
        attrs = _parse_attributes(signed_attrs.content)
        signer_cert_der, signer_ias = _signer_cert(certs, sid)
    except BERError as exc:
        raise MalformedRequest("not a well-formed pkiMessage") from exc
    except IndexError as exc:
        raise MalformedRequest("not a well-formed pkiMessage") from exc
    for required in ("message_type", "transaction_id", "sender_nonce"):
        if required not in attrs:
            raise MalformedRequest(f"missing signed attribute {required}")
    message_type_text = _string_value(attrs["message_type"], "messageType").strip()
    if not _DECIMAL.fullmatch(message_type_text):
        raise MalformedRequest("messageType is not a decimal PrintableString")
    transaction_id = _string_value(attrs["transaction_id"], "transactionID")
    if not 0 < len(transaction_id) <= MAX_TRANSACTION_ID_CHARS:
        raise MalformedRequest("transactionID is missing or too long")
    # Opaque, but it is logged and stored: no line breaks or other control characters.
    if not transaction_id.isprintable():
        raise MalformedRequest("transactionID holds control characters")
    sender_nonce = _octets_value(attrs["sender_nonce"], "senderNonce")
    if not 0 < len(sender_nonce) <= MAX_NONCE_BYTES:
        raise MalformedRequest("senderNonce is missing or malformed")
    return PKIMessage(
        message_type=int(message_type_text),
        transaction_id=transaction_id,
        sender_nonce=sender_nonce,
        digest_alg=DIGEST_BY_OID.get(digest_oid),
        digest_alg_name=digest_oid,
        signature_alg=sig_oid,
        signature=signature_bytes,
        # The signature covers the attributes as a SET, not as [0] IMPLICIT (RFC 5652 section 5.4).
        signed_attrs_der=encode_tlv(TAG_SET, signed_attrs.content),
        signer_cert_der=signer_cert_der,
        signer_issuer_and_serial=signer_ias,
        content=content,
        attributes=attrs,
    )


def verify_pki_message(msg: PKIMessage) -> x509.Certificate:
    """Check messageDigest and the signer's signature (RFC 8894 section 3.2.1; RFC 5652 section 5.4).

    Returns the signer certificate as a cryptography object. Raises ``BadAlg`` for a
    digest or key we do not support and ``BadMessageCheck`` for a failed check.
    """
    if msg.digest_alg is None:
        raise BadAlg("unsupported digest algorithm", f"digest {msg.digest_alg_name}")
    try:
        expected = msg.octets_attribute("message_digest")
    except MalformedRequest as exc:
        raise BadMessageCheck("malformed messageDigest") from exc
    if expected is None:
        raise BadMessageCheck("missing messageDigest")
    if expected != hashlib.new(msg.digest_alg.value, msg.content or b"").digest():
        raise BadMessageCheck("messageDigest does not match the content")
    try:
        signer = x509.load_der_x509_certificate(msg.signer_cert_der)
    except (ValueError, x509.InvalidVersion) as exc:
        raise BadMessageCheck("signer certificate cannot be parsed") from exc
    try:
        key = signer.public_key()
    except UnsupportedAlgorithm as exc:
        # An SPKI algorithm cryptography does not know (or an unknown curve).
        raise BadAlg("signer key is not RSA", "signer key algorithm unknown") from exc
    except ValueError as exc:
        raise BadMessageCheck("signer certificate cannot be parsed", "signer public key malformed") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise BadAlg("signer key is not RSA")
    if msg.signature_alg not in _PKCS1_SIGNATURES:
        raise BadAlg("unsupported signature algorithm", f"signature {msg.signature_alg}")
    try:
        key.verify(msg.signature, msg.signed_attrs_der, padding.PKCS1v15(), hash_algorithm(msg.digest_alg))
    except InvalidSignature as exc:
        raise BadMessageCheck("signature does not verify") from exc
    return signer
