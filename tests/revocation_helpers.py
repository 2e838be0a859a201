"""Certificates and store records for the revocation tests (CRL, OCSP, status API).

Certificates are built directly with cryptography rather than through SCEP issuance,
so these tests depend only on the revocation code and the store.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from scep_ca.pki.ca import CAIdentity
from scep_ca.pki.records import CertificateRecord

NOW = dt.datetime(2026, 11, 28, 12, 0, 0, tzinfo=dt.UTC)


def issue_cert(
    ca: CAIdentity,
    key: rsa.RSAPrivateKey,
    serial: int,
    *,
    cn: str = "device",
    not_before: dt.datetime = NOW - dt.timedelta(days=1),
    not_after: dt.datetime = NOW + dt.timedelta(days=365),
    signing_key: rsa.RSAPrivateKey | None = None,
) -> x509.Certificate:
    """A leaf naming ``ca`` as issuer, signed by ``signing_key`` (default: the CA key)."""
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(signing_key or ca.key, hashes.SHA256())
    )


def record_for(
    ca: CAIdentity,
    cert: x509.Certificate,
    integration_id: str = "intega",
    *,
    transaction_id: str | None = None,
) -> CertificateRecord:
    der = cert.public_bytes(serialization.Encoding.DER)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    serial = format(cert.serial_number, "x")
    return CertificateRecord(
        serial=serial,
        integration_id=integration_id,
        issuer_fingerprint=ca.fingerprint_sha256,
        subject=cert.subject.rfc4514_string(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        der=der,
        transaction_id=transaction_id or f"txn-{serial}",
        pubkey_sha256=hashlib.sha256(spki).hexdigest(),
        message_type=19,
    )


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def write_pem(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(pem(cert))
    return path


def openssl(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the openssl binary; stdout and stderr are captured as text."""
    return subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, check=check, timeout=60)
