"""Checking a PKCS#10 request against an integration's issuance policy (RFC 8894 section 3.3.1).

Order matters: the signature algorithm is checked before the signature, because
cryptography reports a SHA-1-signed CSR as an invalid signature, which would
surface as badMessageCheck instead of badAlg.

cryptography reads a CSR lazily, field by field, and each field fails in its own way
(``InvalidVersion`` for a version other than 0 at load, ``ValueError`` for an attribute
SET with two values or none and for a name that is not valid UTF-8, ``DuplicateExtension``,
``UnsupportedAlgorithm``, ``TypeError``). Every field is read here, once, under ``_reading``:
whatever a field raises, the client gets badRequest (badAlg for the algorithms), never an
HTTP 500, and nothing after ``check_csr`` meets a field that cannot be read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import AttributeOID

from scep_ca.asn1 import oids
from scep_ca.asn1.ber import BERError, read_tlv
from scep_ca.protocol.dn import SubjectMismatch, ordered_subject, rebuild_subject
from scep_ca.protocol.errors import BadAlg, BadMessageCheck, BadRequest, ScepFailure
from scep_ca.protocol.text import has_control_characters

_STRONG_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)
# ASN.1 universal tags of DirectoryString choices (RFC 2985 challengePassword, RFC 5280 names).
_TAG_UTF8 = 12
_TAG_PRINTABLE = 19
_TAG_IA5 = 22
_TAG_VISIBLE = 26
_TAG_UNIVERSAL = 28
_TAG_BMP = 30
_ONE_BYTE_STRINGS = frozenset({_TAG_UTF8, _TAG_PRINTABLE, _TAG_IA5, _TAG_VISIBLE})
# What cryptography's detail text may add to the log line (never the client's answer).
_MAX_DETAIL_CHARS = 200
# Not PKCS#9's 255 (RFC 2985 section 5.4.1): Intune's challenge is a signed, encrypted blob of
# several kilobytes. The request body cap bounds it anyway; validators apply their own rules.
MAX_CHALLENGE_CHARS = 32 * 1024
# An allowed_san_types entry "uri:<prefix>" allows URI SANs that start with <prefix> only.
_URI_PREFIX = "uri:"


@dataclass(frozen=True)
class CsrPolicy:
    key_sizes: tuple[int, ...]
    subject_template: x509.Name
    allowed_san_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class CheckedCsr:
    csr: x509.CertificateSigningRequest
    # The request's DER as it arrived (cryptography loads DER only, so these are its octets):
    # kept, because cryptography's public_bytes encodes the whole request again.
    der: bytes
    public_key: rsa.RSAPublicKey
    spki_der: bytes  # the SubjectPublicKeyInfo, DER: encoded once for the hash, the SKI and the TBS
    subject: x509.Name  # what the certificate carries: the template's RDN order, whichever way the CSR ran
    challenge: str | None
    sans: tuple[x509.GeneralName, ...]
    dropped_sans: tuple[str, ...]

    @property
    def pubkey_sha256(self) -> str:
        return spki_der_sha256(self.spki_der)


def spki_der(key: PublicKeyTypes) -> bytes:
    """A public key's SubjectPublicKeyInfo, DER."""
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def spki_der_sha256(spki: bytes) -> str:
    """Hex SHA-256 of a SubjectPublicKeyInfo: how the store matches a requester's key."""
    return hashlib.sha256(spki).hexdigest()


def spki_sha256(key: PublicKeyTypes) -> str:
    return spki_der_sha256(spki_der(key))


@contextmanager
def _reading(field: str, failure: type[ScepFailure] = BadRequest) -> Iterator[None]:
    """Whatever reading ``field`` of a CSR raises becomes ``failure``; our own answers pass."""
    try:
        yield
    except ScepFailure:
        raise
    except Exception as exc:  # cryptography's errors have no common base: see the module docstring
        detail = f"{field}: {type(exc).__name__}: {exc}"[:_MAX_DETAIL_CHARS]
        raise failure(f"the CSR's {field} cannot be read", detail) from exc


def load_csr(der: bytes) -> x509.CertificateSigningRequest:
    try:
        return x509.load_der_x509_csr(der)
    except Exception as exc:  # ValueError, or InvalidVersion for a version other than v1 (RFC 2986 section 4.1)
        raise BadRequest("the decrypted content is not a PKCS#10 request", f"{type(exc).__name__}: {exc}") from exc


def challenge_password(csr: x509.CertificateSigningRequest) -> str | None:
    """The challengePassword attribute as text, whatever DirectoryString choice carries it."""
    with _reading("attributes"):
        attributes = csr.attributes
    try:
        attr = attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD)
    except x509.AttributeNotFound:
        return None
    raw = attr.value
    try:
        if attr._type == _TAG_BMP:
            text = raw.decode("utf-16-be")
        elif attr._type == _TAG_UNIVERSAL:
            text = raw.decode("utf-32-be")
        else:
            text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("challengePassword is not valid text") from exc
    if len(text) > MAX_CHALLENGE_CHARS:
        raise BadRequest("challengePassword is too long")
    return text


_SAN_TYPES: dict[type[x509.GeneralName], str] = {
    x509.RFC822Name: "rfc822Name",
    x509.UniformResourceIdentifier: "uri",
    x509.DNSName: "dNSName",
    x509.OtherName: "upn",
}


def _requested_sans(csr: x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    with _reading("extensions"):
        extensions = csr.extensions
    try:
        ext = extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(ext.value)


def _other_name_text(value: bytes) -> str | None:
    """The text of an otherName whose value is a string (a UPN is a UTF8String); None otherwise."""
    try:
        tlv = read_tlv(value)
    except BERError as exc:
        raise BadRequest("a subjectAltName otherName is malformed") from exc
    if tlv.tag_class != 0 or tlv.constructed:
        return None
    try:
        if tlv.tag_number in _ONE_BYTE_STRINGS:
            return tlv.content.decode("utf-8")
        if tlv.tag_number == _TAG_BMP:
            return tlv.content.decode("utf-16-be")
    except UnicodeDecodeError as exc:
        raise BadRequest("a subjectAltName otherName is not valid text") from exc
    return None


def _name_texts(name: x509.Name) -> list[str]:
    texts = []
    for attr in name:
        if not isinstance(attr.value, str):
            raise BadRequest("name attributes must be text", f"{attr.oid.dotted_string} is not a string")
        texts.append(attr.value)
    return texts


def _san_texts(san: x509.GeneralName) -> list[str]:
    """The text a SAN carries (IP addresses and registered IDs carry none)."""
    if isinstance(san, x509.DNSName | x509.RFC822Name | x509.UniformResourceIdentifier):
        return [san.value]
    if isinstance(san, x509.DirectoryName):
        return _name_texts(san.value)
    if isinstance(san, x509.OtherName):
        text = _other_name_text(san.value)
        return [] if text is None else [text]
    return []


def _refuse_control_characters(subject: x509.Name, sans: list[x509.GeneralName]) -> None:
    """Threat model: a client's subject and SANs reach operators' terminals and relying parties'
    parsers: no C0, DEL or C1 in any of them (``scep_ca.protocol.text``)."""
    if any(has_control_characters(text) for text in _name_texts(subject)):
        raise BadRequest("the subject holds control characters")
    if any(has_control_characters(text) for san in sans for text in _san_texts(san)):
        raise BadRequest("a subjectAltName holds control characters")


def _san_type(name: x509.GeneralName) -> str:
    if isinstance(name, x509.OtherName):
        return "upn" if name.type_id.dotted_string == oids.ID_MS_UPN else "otherName"
    return _SAN_TYPES.get(type(name), type(name).__name__)


def _san_allowed(san: x509.GeneralName, allowed: tuple[str, ...]) -> bool:
    if _san_type(san) in allowed:
        return True
    if isinstance(san, x509.UniformResourceIdentifier):
        return any(a.startswith(_URI_PREFIX) and san.value.startswith(a[len(_URI_PREFIX) :]) for a in allowed)
    return False


def check_csr(der: bytes, policy: CsrPolicy) -> CheckedCsr:
    """Apply the issuance policy: algorithm, key, signature, subject, SAN filter."""
    csr = load_csr(der)
    with _reading("signature algorithm", BadAlg):
        hash_alg = csr.signature_hash_algorithm
    if not isinstance(hash_alg, _STRONG_HASHES):
        name = hash_alg.name if hash_alg else "none"
        raise BadAlg("CSR must be signed with SHA-256 or stronger", f"CSR signed with {name}")
    with _reading("public key", BadAlg):
        key = csr.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise BadAlg("only RSA keys are accepted", f"key type {type(key).__name__}")
    if key.key_size not in policy.key_sizes:
        raise BadAlg(
            f"RSA key size {key.key_size} is not allowed",
            f"key size {key.key_size} not in {policy.key_sizes}",
        )
    if key.public_numbers().e != 65537:
        raise BadAlg("RSA public exponent must be 65537")
    with _reading("signature"):
        signature_valid = csr.is_signature_valid
    if not signature_valid:
        raise BadMessageCheck("CSR signature does not verify")
    with _reading("subject"):
        requested = csr.subject
        _name_texts(requested)  # every value decoded once, here
    requested_sans = _requested_sans(csr)
    _refuse_control_characters(requested, requested_sans)
    challenge = challenge_password(csr)
    try:
        # The certificate carries the template's order whichever way the CSR wrote it.
        ordered = ordered_subject(policy.subject_template, requested)
    except SubjectMismatch as exc:
        raise BadRequest("subject does not match the integration's subject", str(exc)) from exc
    with _reading("subject"):
        subject = rebuild_subject(ordered)
    kept: list[x509.GeneralName] = []
    dropped: list[str] = []
    for san in requested_sans:
        if _san_allowed(san, policy.allowed_san_types):
            kept.append(san)
        else:
            dropped.append(_san_type(san))
    return CheckedCsr(
        csr=csr,
        der=bytes(der),
        public_key=key,
        spki_der=spki_der(key),
        subject=subject,
        challenge=challenge,
        sans=tuple(kept),
        dropped_sans=tuple(dropped),
    )
