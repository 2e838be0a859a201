"""Fuzz the verify API's input (``scep_ca.pki.status``): one PEM certificate, classified against our CA.

The input is DER that the harness wraps in a PEM block (mutating base64 text would
rarely reach the X.509 parser), or, when it starts with ``-``, the raw request body.
Allowed outcome: a ``VerifyResult`` or ``CertificateParseError`` (HTTP 400).
"""

from __future__ import annotations

import base64
import datetime as dt

import atheris

with atheris.instrument_imports(include=["scep_ca"]):
    from scep_ca.pki.status import CertificateParseError, serial_of_pem, verify_certificate

from _ca import lab_ca
from _common import run, vector_files

CA = lab_ca()
NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def seeds() -> list[bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    out = []
    for path in vector_files("*/*.pem"):
        for cert in x509.load_pem_x509_certificates(path.read_bytes()):
            out.append(cert.public_bytes(serialization.Encoding.DER))
    out.append((vector_files("*/lab-ca.pem")[0]).read_bytes())  # a raw PEM body
    return out


def _pem(data: bytes) -> bytes:
    if data[:1] == b"-":
        return data
    return b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(data) + b"-----END CERTIFICATE-----\n"


def test_one_input(data: bytes) -> None:
    pem = _pem(data)
    try:
        serial_of_pem(pem)
        verify_certificate(CA, pem, None, NOW)
    except CertificateParseError:
        pass


if __name__ == "__main__":
    run(test_one_input, seeds)
