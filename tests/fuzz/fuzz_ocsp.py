"""Fuzz the OCSP request parser (``scep_ca.pki.ocsp``) and the answer built for what it accepts.

An input starting with ``G`` is the GET form (RFC 6960 Appendix A.1: the path after
``/ocsp/``), anything else a POST body. A parsed request is answered for the lab CA
as if the store had no record (``unknown``, or ``unauthorized`` for another issuer).
Allowed outcome: a DER OCSPResponse or ``OcspRequestError``.
"""

from __future__ import annotations

import datetime as dt

import atheris

with atheris.instrument_imports(include=["scep_ca"]):
    from scep_ca.pki.ocsp import OcspRequestError, answer, decode_get_path, parse_ocsp_request

from _ca import lab_ca
from _common import run

CA = lab_ca()
NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
VALIDITY = dt.timedelta(hours=1)


def seeds() -> list[bytes]:
    import base64
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509 import ocsp

    from scep_ca.pki.ocsp import OcspIssuer

    issuer = OcspIssuer.of(CA)
    out = []
    for serial, algorithm, nonce in [
        (1, hashes.SHA1(), None),
        (0x1234567890ABCDEF, hashes.SHA256(), b"\x01" * 16),
        (2**158 + 5, hashes.SHA512(), b"n"),
    ]:
        builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
            hashlib.new(algorithm.name, issuer.name_der).digest(),
            hashlib.new(algorithm.name, issuer.key_bits).digest(),
            serial,
            algorithm,
        )
        if nonce is not None:
            builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
        der = builder.build().public_bytes(serialization.Encoding.DER)
        out += [der, b"G" + base64.b64encode(der)]
    return out


def test_one_input(data: bytes) -> None:
    try:
        der = decode_get_path(data[1:].decode("latin-1")) if data[:1] == b"G" else data
        answer(CA, parse_ocsp_request(der), None, NOW, VALIDITY)
    except OcspRequestError:
        pass


if __name__ == "__main__":
    run(test_one_input, seeds)
