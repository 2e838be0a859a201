"""The CA identity: creating it once (``scep-ca init``) and loading it once per process.

Default GetCACert shape (see README, "Why GetCACert is one certificate"): one
self-signed CA certificate that signs certificates and CRLs (keyCertSign, cRLSign)
and also signs CertReps and decrypts requests (digitalSignature, keyEncipherment).
OpenSSL's PKCS7_verify, which certmonger's scep-submit uses on CertReps, checks the
signer for the S/MIME-signing purpose, which needs digitalSignature; Apple's SCEP
client needs digitalSignature+keyEncipherment on whatever certificate GetCACert
returns. micromdm's scepserver CA has keyCertSign+cRLSign only, hence certmonger's
"certificate verify error" against it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"


class CAError(Exception):
    """The CA cannot be created or loaded (message is safe to show; never contains key material)."""


@dataclass(frozen=True)
class CAIdentity:
    """Keys and certificates loaded once; used by every request of the process."""

    cert: x509.Certificate
    key: rsa.RSAPrivateKey
    cert_der: bytes

    @property
    def fingerprint_sha256(self) -> str:
        return hashlib.sha256(self.cert_der).hexdigest()

    @property
    def fingerprint_md5(self) -> str:
        """NDES's thumbprint line shows MD5 of the CA certificate."""
        return hashlib.md5(self.cert_der, usedforsecurity=False).hexdigest()

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return self.key.public_key()


def ca_exists(data_dir: Path) -> bool:
    return (data_dir / CA_CERT_FILE).exists() or (data_dir / CA_KEY_FILE).exists()


def _parse_subject(text: str) -> x509.Name:
    from scep_ca.dn import parse_dn

    return parse_dn(text)


def create_ca(
    data_dir: Path,
    *,
    subject: str,
    key_size: int,
    validity_days: int,
    passphrase: bytes | None,
    now: dt.datetime | None = None,
) -> CAIdentity:
    """Create the CA key (mode 0600) and self-signed certificate; refuse to overwrite."""
    if ca_exists(data_dir):
        raise CAError(f"a CA already exists in {data_dir}; refusing to overwrite it")
    data_dir.mkdir(parents=True, exist_ok=True)
    now = now or dt.datetime.now(dt.UTC)
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    name = _parse_subject(subject)
    if not name.get_attributes_for_oid(NameOID.COMMON_NAME) and not list(name):
        raise CAError("ca.subject: must not be empty")
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=validity_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    key_path = data_dir / CA_KEY_FILE
    # Created with 0600 from the start: chmod after write would leave a window.
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key_pem)
    (data_dir / CA_CERT_FILE).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return CAIdentity(cert=cert, key=key, cert_der=cert.public_bytes(serialization.Encoding.DER))


def load_ca(data_dir: Path, passphrase: bytes | None) -> CAIdentity:
    """Load the CA once per process (cryptography validates an RSA key in ~27 ms per load)."""
    cert_path, key_path = data_dir / CA_CERT_FILE, data_dir / CA_KEY_FILE
    if not cert_path.exists() or not key_path.exists():
        raise CAError(f"no CA in {data_dir}: run `scep-ca init` first")
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=passphrase)
    except TypeError as exc:
        raise CAError("the CA key is encrypted: set the passphrase environment variable") from exc
    except ValueError as exc:
        raise CAError("the CA key cannot be loaded (wrong passphrase or corrupt file)") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CAError("the CA key is not an RSA key")
    if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
        raise CAError("the CA key does not match the CA certificate")
    return CAIdentity(cert=cert, key=key, cert_der=cert.public_bytes(serialization.Encoding.DER))
