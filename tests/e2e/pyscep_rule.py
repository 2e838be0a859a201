"""pyscep 0.0.14's enrollment, with its certificate-selection rule reproduced exactly.

pyscep itself is not installed: it imports oscrypto, which cannot load on OpenSSL 3.0.10 and
later (README, "Why not oscrypto"). What it does with GetCACert's certificates is read from its
source (``scep/Client/responses.py``, ``CACertificates``; ``scep/Client/message.py``,
``SCEPMessage.parse``):

- recipient (``__recipient``): the first non-CA certificate with keyEncipherment and none of
  digitalSignature, nonRepudiation, dataEncipherment; else the first non-CA certificate with
  dataEncipherment and none of digitalSignature, nonRepudiation, keyEncipherment; else the
  first CA certificate;
- signer (``__signer``): the first non-CA certificate with digitalSignature; else the first CA;
- the CertRep's signature over its signed attributes is checked with the **signer's** key
  (``SCEPMessage.parse(..., signer_cert=ca_certs.signer)``), whatever certificate the reply
  names.

Against one combined RA (digitalSignature + keyEncipherment) the recipient is therefore the CA
and the signer the RA. Only the encryption RA decrypts (issue 17 item 2: the CA key is no
decryption oracle), so the request is one that cannot be decrypted: an RA-signed FAILURE
CertRep (badMessageCheck), which pyscep verifies and reports as a failed enrollment.
"""

from __future__ import annotations

import hashlib
import urllib.parse
import urllib.request
from dataclasses import dataclass

from asn1crypto import cms
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from scep_ca.protocol.client import Reply, build_csr, build_request, open_reply, self_signed_signer
from scep_ca.protocol.enums import ContentCipher, DigestAlg
from tests.e2e.clients import http_get

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha512": hashes.SHA512,
}


class PyscepRuleError(AssertionError):
    """What pyscep would raise: the CertRep does not verify with the certificate it selected."""


def _usage(cert: x509.Certificate) -> set[str]:
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return set()
    names = {
        "digital_signature": ku.digital_signature,
        "non_repudiation": ku.content_commitment,
        "key_encipherment": ku.key_encipherment,
        "data_encipherment": ku.data_encipherment,
    }
    return {name for name, present in names.items() if present}


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _filter(
    certs: list[x509.Certificate], required: set[str], not_allowed: set[str], *, ca_only: bool
) -> list[x509.Certificate]:
    """``CACertificates._filter``: CA-ness must equal ``ca_only``; all of ``required``, none of ``not_allowed``."""
    return [c for c in certs if _is_ca(c) == ca_only and required <= _usage(c) and not (not_allowed & _usage(c))]


def select_recipient(certs: list[x509.Certificate]) -> x509.Certificate:
    for required, not_allowed in (
        ({"key_encipherment"}, {"digital_signature", "non_repudiation", "data_encipherment"}),
        ({"data_encipherment"}, {"digital_signature", "non_repudiation", "key_encipherment"}),
    ):
        found = _filter(certs, required, not_allowed, ca_only=False)
        if found:
            return found[0]
    return _filter(certs, set(), set(), ca_only=True)[0]


def select_signer(certs: list[x509.Certificate]) -> x509.Certificate:
    found = _filter(certs, {"digital_signature"}, set(), ca_only=False)
    return found[0] if found else _filter(certs, set(), set(), ca_only=True)[0]


def verify_with(reply_der: bytes, signer: x509.Certificate) -> None:
    """``SCEPMessage.parse`` with ``signer_cert``: the signed attributes, re-tagged as a SET,
    verified with that certificate's key (PKCS#1 v1.5, the SignerInfo's digest)."""
    signer_info = cms.ContentInfo.load(reply_der)["content"]["signer_infos"][0]
    data = b"\x31" + signer_info["signed_attrs"].dump()[1:]
    digest = _HASHES[signer_info["digest_algorithm"]["algorithm"].native]
    public = signer.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    try:
        public.verify(signer_info["signature"].native, data, padding.PKCS1v15(), digest())
    except InvalidSignature as exc:
        raise PyscepRuleError(
            f"InvalidSignature: CertRep does not verify with {signer.subject.rfc4514_string()}"
        ) from exc


@dataclass(frozen=True)
class PyscepEnrollment:
    recipient: x509.Certificate
    signer: x509.Certificate
    reply: Reply


def _get(url: str, operation: str) -> tuple[str, bytes]:
    status, headers, body = http_get(f"{url}?{urllib.parse.urlencode({'operation': operation, 'message': ''})}")
    assert status == 200, (operation, status, body)
    return headers.get("Content-Type", ""), body


def enroll(scep_url: str, challenge: str, key: rsa.RSAPrivateKey, subject: x509.Name) -> PyscepEnrollment:
    """``Client.enrol``: GetCACaps, GetCACert, then a POSTed PKCSReq encrypted to the selected
    recipient; the CertRep is checked with the selected signer before anything else is read."""
    _, caps_body = _get(scep_url, "GetCACaps")
    caps = caps_body.decode().split()
    content_type, body = _get(scep_url, "GetCACert")
    assert content_type == "application/x-x509-ca-ra-cert", content_type
    certs = [
        x509.load_der_x509_certificate(c.chosen.dump()) for c in cms.ContentInfo.load(body)["content"]["certificates"]
    ]
    recipient, signer = select_recipient(certs), select_signer(certs)
    identity = self_signed_signer(key)
    spki = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    request = build_request(
        build_csr(key, subject, challenge),
        signer_cert=identity,
        signer_key=key,
        recipient=recipient,
        # pyscep: the hex SHA-1 of the CSR's public key; its strongest advertised cipher and digest.
        transaction_id=hashlib.sha1(spki).hexdigest(),
        cipher=ContentCipher.AES256 if "AES" in caps else ContentCipher.DES3,
        digest=DigestAlg.SHA512 if "SHA-512" in caps else DigestAlg.SHA256,
    )
    post = urllib.request.Request(
        f"{scep_url}?operation=PKIOperation&message=",
        data=request.der,
        headers={"Content-Type": "application/x-pki-message"},
    )
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(post, timeout=10) as resp:
        reply_der: bytes = resp.read()
    verify_with(reply_der, signer)
    return PyscepEnrollment(recipient, signer, open_reply(reply_der, identity, key))
