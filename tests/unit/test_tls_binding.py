"""tls-server-end-point (RFC 5929 4.1): which hash, over which certificate."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from challenge.tls_binding import end_point_application_data, end_point_hash


def _cert(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey,
    algorithm: hashes.HashAlgorithm | None,
    cn: str = "scep.example.com",
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
    )
    return builder.sign(key, algorithm)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.mark.parametrize(
    ("algorithm", "digest"),
    [(hashes.SHA256(), hashlib.sha256), (hashes.SHA512(), hashlib.sha512)],
)
def test_rsa_signature_hash(rsa_key: rsa.RSAPrivateKey, algorithm: hashes.HashAlgorithm, digest: object) -> None:
    cert = _cert(rsa_key, algorithm)
    assert end_point_hash(cert) == digest(cert.public_bytes(Encoding.DER)).digest()  # type: ignore[operator]


def test_ecdsa_sha384() -> None:
    cert = _cert(ec.generate_private_key(ec.SECP384R1()), hashes.SHA384())
    assert end_point_hash(cert) == hashlib.sha384(cert.public_bytes(Encoding.DER)).digest()


def test_ed25519_falls_back_to_sha256() -> None:
    cert = _cert(ed25519.Ed25519PrivateKey.generate(), None)
    assert end_point_hash(cert) == hashlib.sha256(cert.public_bytes(Encoding.DER)).digest()


def test_first_certificate_of_a_chain_file(rsa_key: rsa.RSAPrivateKey) -> None:
    leaf, issuer = _cert(rsa_key, hashes.SHA256(), "leaf"), _cert(rsa_key, hashes.SHA384(), "issuer")
    pem = leaf.public_bytes(Encoding.PEM) + issuer.public_bytes(Encoding.PEM)
    expected = b"tls-server-end-point:" + hashlib.sha256(leaf.public_bytes(Encoding.DER)).digest()
    assert end_point_application_data(pem) == expected
