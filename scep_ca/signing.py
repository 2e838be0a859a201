"""Signing a pkiMessage: one SignerInfo over SCEP signed attributes (RFC 8894 section 3.2, RFC 5652 5.4)."""

from __future__ import annotations

import hashlib

from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from scep_ca.asn1 import attribute
from scep_ca.ber import encode_tlv
from scep_ca.enums import DigestAlg
from scep_ca.message import hash_algorithm


def sign_message(
    cert: asn1_x509.Certificate,
    key: rsa.RSAPrivateKey,
    digest: DigestAlg,
    attrs: list[cms.CMSAttribute],
    content: bytes | None,
) -> bytes:
    """A SignedData ContentInfo with ``content`` as eContent (absent when None), signed by ``cert``.

    ``attrs`` are the SCEP attributes; contentType and messageDigest are added here.
    The signature covers the DER SET of the attributes exactly as they are emitted.
    """
    all_attrs = [
        attribute("content_type", "data"),
        *attrs,
        attribute("message_digest", hashlib.new(digest.value, content or b"").digest()),
    ]
    signer_info = cms.SignerInfo(
        {
            "version": "v1",
            "sid": cms.SignerIdentifier(
                name="issuer_and_serial_number",
                value=cms.IssuerAndSerialNumber({"issuer": cert.issuer, "serial_number": cert.serial_number}),
            ),
            "digest_algorithm": {"algorithm": digest.value},
            "signed_attrs": cms.CMSAttributes(all_attrs),
            "signature_algorithm": {"algorithm": "rsassa_pkcs1v15"},
            "signature": b"",
        }
    )
    to_sign = encode_tlv(0x31, signer_info["signed_attrs"].contents)
    signer_info["signature"] = key.sign(to_sign, padding.PKCS1v15(), hash_algorithm(digest))
    encap: dict[str, object] = {"content_type": "data"}
    if content is not None:
        encap["content"] = content
    signed_data = cms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [{"algorithm": digest.value}],
            "encap_content_info": encap,
            "certificates": [cert],
            "signer_infos": [signer_info],
        }
    )
    return bytes(cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump())
