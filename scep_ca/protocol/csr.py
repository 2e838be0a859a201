"""Checking a PKCS#10 request against an integration's issuance policy (RFC 8894 section 3.3.1).

Order matters: the signature algorithm is checked before the signature, because
cryptography reports a SHA-1-signed CSR as an invalid signature, which would
surface as badMessageCheck instead of badAlg.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import AttributeOID

from scep_ca.asn1 import oids
from scep_ca.protocol.dn import SubjectMismatch, ordered_subject, rebuild_subject
from scep_ca.protocol.errors import BadAlg, BadMessageCheck, BadRequest

_STRONG_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)
# ASN.1 universal tags of DirectoryString choices (RFC 2985 challengePassword).
_TAG_BMP = 30
_TAG_UNIVERSAL = 28
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


def load_csr(der: bytes) -> x509.CertificateSigningRequest:
    try:
        return x509.load_der_x509_csr(der)
    except ValueError as exc:
        raise BadRequest("the decrypted content is not a PKCS#10 request") from exc


def challenge_password(csr: x509.CertificateSigningRequest) -> str | None:
    """The challengePassword attribute as text, whatever DirectoryString choice carries it."""
    try:
        attr = csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD)
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
    try:
        ext = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(ext.value)


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
    try:
        hash_alg = csr.signature_hash_algorithm
    except Exception as exc:  # cryptography raises UnsupportedAlgorithm for unknown OIDs
        raise BadAlg("unsupported CSR signature algorithm") from exc
    if not isinstance(hash_alg, _STRONG_HASHES):
        name = hash_alg.name if hash_alg else "none"
        raise BadAlg("CSR must be signed with SHA-256 or stronger", f"CSR signed with {name}")
    try:
        key = csr.public_key()
    except ValueError as exc:
        raise BadAlg("unsupported public key") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise BadAlg("only RSA keys are accepted", f"key type {type(key).__name__}")
    if key.key_size not in policy.key_sizes:
        raise BadAlg(
            f"RSA key size {key.key_size} is not allowed",
            f"key size {key.key_size} not in {policy.key_sizes}",
        )
    if key.public_numbers().e != 65537:
        raise BadAlg("RSA public exponent must be 65537")
    if not csr.is_signature_valid:
        raise BadMessageCheck("CSR signature does not verify")
    try:
        # The certificate carries the template's order whichever way the CSR wrote it.
        subject = ordered_subject(policy.subject_template, csr.subject)
    except SubjectMismatch as exc:
        raise BadRequest("subject does not match the integration's subject", str(exc)) from exc
    kept: list[x509.GeneralName] = []
    dropped: list[str] = []
    for san in _requested_sans(csr):
        if _san_allowed(san, policy.allowed_san_types):
            kept.append(san)
        else:
            dropped.append(_san_type(san))
    return CheckedCsr(
        csr=csr,
        public_key=key,
        spki_der=spki_der(key),
        subject=rebuild_subject(subject),
        challenge=challenge_password(csr),
        sans=tuple(kept),
        dropped_sans=tuple(dropped),
    )
