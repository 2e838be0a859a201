"""Signing a pkiMessage: one SignerInfo over SCEP signed attributes (RFC 8894 section 3.2, RFC 5652 5.3-5.4).

Written with the DER builder (``scep_ca.asn1.der``) because this runs on every reply.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding

from scep_ca.asn1 import der, oids
from scep_ca.asn1.ber import issuer_and_serial
from scep_ca.protocol.algorithms import DIGEST_ALGORITHMS
from scep_ca.protocol.enums import DigestAlg
from scep_ca.protocol.keys import PrivateKey
from scep_ca.protocol.message import hash_algorithm


@dataclass(frozen=True)
class SignerIdentity:
    """A signing certificate with its DER pieces precomputed, and its private key."""

    cert_der: bytes
    issuer_and_serial: bytes  # DER IssuerAndSerialNumber
    key: PrivateKey

    @classmethod
    def from_cert(cls, cert: x509.Certificate, key: PrivateKey) -> SignerIdentity:
        cert_der = cert.public_bytes(serialization.Encoding.DER)
        return cls(cert_der, issuer_and_serial(cert_der), key)


def attribute(attr_oid: bytes, value: bytes) -> bytes:
    """One Attribute (RFC 5652 section 5.3) with a single, already encoded value."""
    return der.seq(attr_oid, der.set_of(value))


_CONTENT_TYPE_DATA = attribute(oids.CONTENT_TYPE, oids.DATA)


def sign_message(
    signer: SignerIdentity,
    digest: DigestAlg,
    attrs: list[bytes],
    content: bytes | None,
) -> bytes:
    """A SignedData ContentInfo with ``content`` as eContent (absent when None), signed by ``signer``.

    ``attrs`` are encoded SCEP attributes; contentType and messageDigest are added here.
    The signature covers the DER SET of the attributes exactly as they are emitted.
    """
    digest_value = hashlib.new(digest.value, content or b"").digest()
    all_attrs = [
        _CONTENT_TYPE_DATA,
        *attrs,
        attribute(oids.MESSAGE_DIGEST, der.octet_string(digest_value)),
    ]
    signed_attrs = der.set_of(*all_attrs)
    signature = signer.key.sign(signed_attrs, padding.PKCS1v15(), hash_algorithm(digest))
    digest_alg = DIGEST_ALGORITHMS[digest]
    signer_info = der.seq(
        der.integer(1),
        signer.issuer_and_serial,
        digest_alg,
        # signedAttrs is [0] IMPLICIT SET OF: same content octets, context tag.
        b"\xa0" + signed_attrs[1:],
        oids.RSA_ENCRYPTION,
        der.octet_string(signature),
    )
    encap = [oids.DATA]
    if content is not None:
        encap.append(der.explicit(0, der.octet_string(content)))
    signed_data = der.seq(
        der.integer(1),
        der.set_of(digest_alg),
        der.seq(*encap),
        der.explicit(0, signer.cert_der),
        der.set_of(signer_info),
    )
    return der.seq(oids.SIGNED_DATA, der.explicit(0, signed_data))
