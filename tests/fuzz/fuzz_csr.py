"""Fuzz PKCS#10 reading and the issuance policy (``scep_ca.protocol.csr.check_csr``).

Seeds are the CSRs inside every vector request (certmonger, scepclient, PyScep, scepreq and
the project's own builds), decrypted with the vectors' keys, so mutations start from what
real clients send. The policy accepts every key size and SAN type the code knows and takes
its subject template from the input's own subject with every value a variable, so that
mutations get past the subject match to the SAN, challenge and rebuild steps. Allowed
outcome: a ``CheckedCsr`` whose fields can all be used, or ``ScepCoreError`` (a FAILURE
CertRep: badRequest, badAlg, badMessageCheck).
"""

from __future__ import annotations

import contextlib

import atheris

with atheris.instrument_imports(include=["scep_ca"]):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from scep_ca.protocol.csr import CsrPolicy, check_csr
    from scep_ca.protocol.envelope import decrypt_envelope
    from scep_ca.protocol.errors import ScepCoreError
    from scep_ca.protocol.message import decode_pki_message
    from scep_ca.services.renewal import identity_mismatch

from _ca import vector_recipients
from _common import run, vector_files

_KEY_SIZES = (1024, 2048, 3072, 4096)
_SAN_TYPES = ("dNSName", "rfc822Name", "uri", "upn", "otherName", "IPAddress", "DirectoryName", "RegisteredID")
_FALLBACK_TEMPLATE = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "$CN$")])
# Any certificate will do: identity_mismatch only reads its subject and SANs.
_RENEWED = x509.load_pem_x509_certificate(vector_files("micromdm-lab-2026-11-28/lab-ca.pem")[0].read_bytes())


def seeds() -> list[bytes]:
    recipients = vector_recipients()
    out = []
    for path in vector_files("*/*pkcsreq.der"):
        content = decode_pki_message(path.read_bytes()).content
        if content:
            with contextlib.suppress(ScepCoreError):
                out.append(decrypt_envelope(content, recipients, allow_des=True, stand_in_secret=bytes(32)).plaintext)
    return out


def _template(data: bytes) -> x509.Name:
    """The input's own subject with every value a variable; any failure here is check_csr's to find."""
    try:
        subject = x509.load_der_x509_csr(data).subject
        return x509.Name(
            [x509.RelativeDistinguishedName([x509.NameAttribute(a.oid, "$V$") for a in rdn]) for rdn in subject.rdns]
        )
    except Exception:
        return _FALLBACK_TEMPLATE


def test_one_input(data: bytes) -> None:
    policy = CsrPolicy(key_sizes=_KEY_SIZES, subject_template=_template(data), allowed_san_types=_SAN_TYPES)
    try:
        checked = check_csr(data, policy)
    except ScepCoreError:
        return
    # What issuance, the store, validators and renewals read from a checked CSR.
    checked.subject.rfc4514_string()
    checked.subject.public_bytes()
    checked.csr.public_bytes(serialization.Encoding.DER)
    checked.csr.signature_algorithm_oid.dotted_string  # noqa: B018
    assert checked.pubkey_sha256
    if checked.sans:  # encoded as pki.issue encodes it
        x509.SubjectAlternativeName(list(checked.sans)).public_bytes()
    identity_mismatch(_RENEWED, checked)


if __name__ == "__main__":
    run(test_one_input, seeds)
