"""The vectors' keys: the CA the OCSP and verify harnesses answer for (the micromdm lab CA, key
included), and the recipients the vector requests were encrypted to (envelope and CSR harnesses)."""

from __future__ import annotations

from _common import VECTORS
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from scep_ca.pki.ca import CAIdentity
from scep_ca.protocol.envelope import RecipientKey


def lab_ca() -> CAIdentity:
    folder = VECTORS / "micromdm-lab-2026-11-28"
    cert = x509.load_pem_x509_certificate((folder / "lab-ca.pem").read_bytes())
    key = serialization.load_pem_private_key((folder / "lab-ca.key").read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    der = cert.public_bytes(serialization.Encoding.DER)
    return CAIdentity(cert=cert, key=key, cert_der=der, ra_cert=cert, ra_key=key, ra_cert_der=der)


def _recipient(cert_name: str, key_name: str) -> RecipientKey:
    cert = x509.load_pem_x509_certificate((VECTORS / cert_name).read_bytes())
    key = serialization.load_pem_private_key((VECTORS / key_name).read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return RecipientKey.from_cert(cert, key)


def vector_recipients() -> list[RecipientKey]:
    """The RA of the scep-ca vectors and the micromdm lab CA: together they decrypt every vector request."""
    return [
        _recipient("scep-ca-2026-11-28/ra.pem", "scep-ca-2026-11-28/ra.key"),
        _recipient("micromdm-lab-2026-11-28/lab-ca.pem", "micromdm-lab-2026-11-28/lab-ca.key"),
    ]
