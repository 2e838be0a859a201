"""GetCert's IssuerAndSerialNumber (RFC 8894 section 3.3.4), read by the protocol core."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from scep_ca.asn1 import der
from scep_ca.asn1.ber import issuer_and_serial
from scep_ca.protocol.client import self_signed_signer
from scep_ca.protocol.enums import FailInfo
from scep_ca.protocol.errors import BadRequest
from scep_ca.protocol.get_cert import CertId, read_get_cert, subject_octets


@pytest.fixture(scope="module")
def cert_der() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return self_signed_signer(key, "GetCert CA").public_bytes(serialization.Encoding.DER)


def test_reads_the_issuer_and_serial_a_certificate_names(cert_der: bytes) -> None:
    cert = x509.load_der_x509_certificate(cert_der)
    wanted = read_get_cert(issuer_and_serial(cert_der))
    assert wanted.serial == cert.serial_number and wanted.serial_hex == format(cert.serial_number, "x")
    # Self-signed: the issuer is the subject, compared as encoded.
    assert wanted.issued_by(subject_octets(cert_der))
    assert not wanted.issued_by(subject_octets(cert_der) + b"\x00")


def test_a_negative_serial_reads_as_the_store_keys_it() -> None:
    wanted = read_get_cert(der.seq(der.seq(), der.integer(-255)))
    assert wanted == CertId(b"", -255) and wanted.serial_hex == "-ff"


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x30",
        b"\x30\x80\x00\x00",  # indefinite length, empty
        der.seq(der.seq()),  # no serial
        der.seq(der.seq(), der.integer(1), der.integer(2)),  # one field too many
        der.octet_string(b"junk"),
    ],
)
def test_anything_else_is_bad_request(content: bytes) -> None:
    with pytest.raises(BadRequest) as caught:
        read_get_cert(content)
    assert caught.value.fail_info is FailInfo.BAD_REQUEST
    assert caught.value.text == "GetCert carries no IssuerAndSerialNumber"
