"""The ``tls-server-end-point`` channel binding of our TLS certificate (RFC 5929 4.1).

Computed once at startup from the certificate file the server presents; NTLM
clients that bind to the TLS channel (MsvAvChannelBindings) hash the same value.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

PREFIX = b"tls-server-end-point:"

# RFC 5929 4.1: MD5 and SHA-1 signatures are bound with SHA-256 instead.
_UPGRADED = (hashes.MD5, hashes.SHA1)


def end_point_hash(cert: x509.Certificate) -> bytes:
    """The certificate's hash for ``tls-server-end-point`` (RFC 5929 4.1).

    The hash of the certificate's signature algorithm, SHA-256 for MD5 and SHA-1.
    For signatures without a separate hash (Ed25519, Ed448), for which RFC 5929
    leaves the binding undefined, SHA-256: the common fallback of clients that
    compute it anyway (a mismatch then refuses the login; it never accepts one).
    """
    algorithm = cert.signature_hash_algorithm
    if algorithm is None or isinstance(algorithm, _UPGRADED):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(cert.public_bytes(Encoding.DER))
    return digest.finalize()


def end_point_application_data(cert_pem: bytes) -> bytes:
    """``tls-server-end-point:`` + hash, for the first (server) certificate of a PEM chain file."""
    certs = x509.load_pem_x509_certificates(cert_pem)
    return PREFIX + end_point_hash(certs[0])
