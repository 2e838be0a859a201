"""The CA the OCSP and verify harnesses answer for: the micromdm lab CA of the vectors (key included)."""

from __future__ import annotations

from _common import VECTORS
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from scep_ca.pki.ca import CAIdentity


def lab_ca() -> CAIdentity:
    folder = VECTORS / "micromdm-lab-2026-11-28"
    cert = x509.load_pem_x509_certificate((folder / "lab-ca.pem").read_bytes())
    key = serialization.load_pem_private_key((folder / "lab-ca.key").read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    der = cert.public_bytes(serialization.Encoding.DER)
    return CAIdentity(cert=cert, key=key, cert_der=der, ra_cert=cert, ra_key=key, ra_cert_der=der)
