"""OCSP requests and responses (scep_ca.pki.ocsp, RFC 6960), checked with cryptography and openssl."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import urllib.parse
from pathlib import Path

import pytest
from asn1crypto import ocsp as asn1_ocsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509 import ocsp

from scep_ca.pki.ca import CAIdentity
from scep_ca.pki.ocsp import (
    CertStatusInfo,
    OcspRequestError,
    OcspStatus,
    answer,
    build_ocsp_response,
    decode_get_path,
    error_response,
    is_for_issuer,
    parse_ocsp_request,
    status_from_record,
)
from scep_ca.pki.records import CertStatus
from tests.revocation_helpers import NOW, issue_cert, openssl, record_for, write_pem

VALIDITY = dt.timedelta(hours=1)
NONCE = bytes(range(16))


def _request(
    cert: x509.Certificate,
    ca: CAIdentity,
    *,
    algorithm: hashes.HashAlgorithm | None = None,
    nonce: bytes | None = NONCE,
) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, ca.cert, algorithm or hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def _verify_signature(ca: CAIdentity, response: ocsp.OCSPResponse) -> None:
    assert response.signature_hash_algorithm is not None
    ca.public_key.verify(
        response.signature, response.tbs_response_bytes, padding.PKCS1v15(), response.signature_hash_algorithm
    )


@pytest.fixture(scope="module")
def leaf(ca: CAIdentity, device_key: rsa.RSAPrivateKey) -> x509.Certificate:
    return issue_cert(ca, device_key, 0x5EC0_1234_ABCD)


def test_good(ca: CAIdentity, leaf: x509.Certificate) -> None:
    query = parse_ocsp_request(_request(leaf, ca))
    assert query.serial_number == leaf.serial_number and query.nonce == NONCE
    assert is_for_issuer(ca, query)
    response = ocsp.load_der_ocsp_response(answer(ca, query, record_for(ca, leaf), NOW, VALIDITY))
    assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert response.serial_number == leaf.serial_number
    assert response.this_update_utc == NOW and response.next_update_utc == NOW + VALIDITY
    _verify_signature(ca, response)
    # responderID byKey: SHA-1 of the CA's subjectPublicKey (RFC 6960 §4.2.2.3).
    key_hash = ocsp.OCSPRequestBuilder().add_certificate(leaf, ca.cert, hashes.SHA1()).build().issuer_key_hash
    assert response.responder_key_hash == key_hash and response.responder_name is None
    assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == NONCE
    assert response.certificates == [ca.cert]


def test_revoked_with_time_and_reason(ca: CAIdentity, leaf: x509.Certificate) -> None:
    revoked_at = NOW - dt.timedelta(minutes=30)
    record = dataclasses.replace(
        record_for(ca, leaf), status=CertStatus.REVOKED, revoked_at=revoked_at, revocation_reason="keyCompromise"
    )
    query = parse_ocsp_request(_request(leaf, ca))
    response = ocsp.load_der_ocsp_response(answer(ca, query, record, NOW, VALIDITY))
    assert response.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert response.revocation_time_utc == revoked_at
    assert response.revocation_reason is x509.ReasonFlags.key_compromise
    _verify_signature(ca, response)


def test_revoked_without_reason(ca: CAIdentity, leaf: x509.Certificate) -> None:
    record = dataclasses.replace(record_for(ca, leaf), status=CertStatus.REVOKED, revoked_at=NOW)
    info = status_from_record(ca, record)
    assert info == CertStatusInfo(OcspStatus.REVOKED, revoked_at=NOW, reason=None)


def test_unknown_serial_of_our_issuer(ca: CAIdentity, leaf: x509.Certificate) -> None:
    query = parse_ocsp_request(_request(leaf, ca))
    response = ocsp.load_der_ocsp_response(answer(ca, query, None, NOW, VALIDITY))
    assert response.certificate_status is ocsp.OCSPCertStatus.UNKNOWN
    _verify_signature(ca, response)


def test_record_of_another_issuer_is_unknown(ca: CAIdentity, leaf: x509.Certificate) -> None:
    record = dataclasses.replace(record_for(ca, leaf), issuer_fingerprint="00" * 32)
    assert status_from_record(ca, record).status is OcspStatus.UNKNOWN


def test_sha256_cert_id_is_echoed(ca: CAIdentity, leaf: x509.Certificate) -> None:
    query = parse_ocsp_request(_request(leaf, ca, algorithm=hashes.SHA256(), nonce=None))
    assert query.nonce is None and is_for_issuer(ca, query)
    response = ocsp.load_der_ocsp_response(answer(ca, query, record_for(ca, leaf), NOW, VALIDITY))
    assert isinstance(response.hash_algorithm, hashes.SHA256)
    assert response.issuer_key_hash == query.issuer_key_hash
    assert response.issuer_name_hash == query.issuer_name_hash
    with pytest.raises(x509.ExtensionNotFound):
        response.extensions.get_extension_for_class(x509.OCSPNonce)


def test_other_issuer_is_unauthorized(
    ca: CAIdentity, device_key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey
) -> None:
    # Same issuer name, other key: the key hash tells them apart.
    other_ca = dataclasses.replace(ca, cert=issue_cert(ca, other_key, 99, cn="Unit Test CA"), key=other_key)
    foreign = issue_cert(other_ca, device_key, 5, signing_key=other_key)
    query = parse_ocsp_request(_request(foreign, other_ca))
    assert not is_for_issuer(ca, query)
    response = ocsp.load_der_ocsp_response(answer(ca, query, None, NOW, VALIDITY))
    assert response.response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED


@pytest.mark.parametrize("der", [b"", b"\x30\x03\x02\x01\x01", b"not der at all", b"\x30" * 20_000])
def test_malformed_requests(der: bytes) -> None:
    with pytest.raises(OcspRequestError) as info:
        parse_ocsp_request(der)
    assert info.value.status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_two_cert_ids_are_malformed(ca: CAIdentity, leaf: x509.Certificate) -> None:
    one = asn1_ocsp.OCSPRequest.load(_request(leaf, ca, nonce=None))
    single = one["tbs_request"]["request_list"][0]
    two = asn1_ocsp.OCSPRequest({"tbs_request": {"request_list": [single, single]}}).dump()
    with pytest.raises(OcspRequestError) as info:
        parse_ocsp_request(two)
    assert info.value.status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_nonce_over_32_octets_is_malformed(ca: CAIdentity, leaf: x509.Certificate) -> None:
    # RFC 8954 §2.1.
    assert parse_ocsp_request(_request(leaf, ca, nonce=b"n" * 32)).nonce == b"n" * 32
    with pytest.raises(OcspRequestError):
        parse_ocsp_request(_request(leaf, ca, nonce=b"n" * 33))


def test_error_response_is_an_ocsp_response() -> None:
    response = ocsp.load_der_ocsp_response(error_response(ocsp.OCSPResponseStatus.MALFORMED_REQUEST))
    assert response.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_get_path_decoding(ca: CAIdentity, leaf: x509.Certificate) -> None:
    der = _request(leaf, ca)
    b64 = base64.b64encode(der).decode()
    assert decode_get_path(b64) == der
    assert decode_get_path(urllib.parse.quote(b64, safe="")) == der  # %2B %2F %3D
    assert decode_get_path(base64.urlsafe_b64encode(der).decode().rstrip("=")) == der
    assert decode_get_path(b64[:20] + "\n" + b64[20:]) == der
    with pytest.raises(OcspRequestError):
        decode_get_path("***")


def test_microseconds_are_dropped(ca: CAIdentity, leaf: x509.Certificate) -> None:
    query = parse_ocsp_request(_request(leaf, ca))
    now = NOW.replace(microsecond=654321)
    der = build_ocsp_response(ca, query, CertStatusInfo(OcspStatus.GOOD), now, VALIDITY)
    assert ocsp.load_der_ocsp_response(der).this_update_utc == NOW


@pytest.mark.parametrize("revoked", [False, True])
def test_openssl_request_and_verification(
    ca: CAIdentity, leaf: x509.Certificate, tmp_path: Path, revoked: bool
) -> None:
    """A request written by ``openssl ocsp -reqout``, answered, then verified by openssl (nonce included)."""
    ca_pem = write_pem(tmp_path / "ca.pem", ca.cert)
    leaf_pem = write_pem(tmp_path / "leaf.pem", leaf)
    req, resp = tmp_path / "req.der", tmp_path / "resp.der"
    openssl("ocsp", "-issuer", ca_pem, "-cert", leaf_pem, "-reqout", req)
    query = parse_ocsp_request(req.read_bytes())
    assert query.serial_number == leaf.serial_number and query.nonce is not None
    assert isinstance(query.hash_algorithm, hashes.SHA1) and is_for_issuer(ca, query)
    assert query.issuer_name_hash == hashlib.sha1(ca.cert.subject.public_bytes()).digest()

    now = dt.datetime.now(dt.UTC)  # openssl checks thisUpdate/nextUpdate against the real clock
    record = record_for(ca, leaf)
    if revoked:
        record = dataclasses.replace(
            record, status=CertStatus.REVOKED, revoked_at=now, revocation_reason="cessationOfOperation"
        )
    resp.write_bytes(answer(ca, query, record, now, VALIDITY))
    # Signature, signer and nonce against the request file (openssl ignores -reqin's nonce
    # when -cert is also given: it builds a request of its own, hence two calls).
    verified = openssl("ocsp", "-reqin", req, "-respin", resp, "-CAfile", ca_pem)
    assert "Response verify OK" in verified.stderr + verified.stdout
    assert "WARNING" not in verified.stderr  # "no nonce in response" would be a warning
    other_req = tmp_path / "other.der"
    openssl("ocsp", "-issuer", ca_pem, "-cert", leaf_pem, "-reqout", other_req)
    mismatch = openssl("ocsp", "-reqin", other_req, "-respin", resp, "-CAfile", ca_pem, check=False)
    assert "Nonce Verify error" in mismatch.stderr + mismatch.stdout

    result = openssl("ocsp", "-respin", resp, "-CAfile", ca_pem, "-issuer", ca_pem, "-cert", leaf_pem, "-no_nonce")
    if revoked:
        assert f"{leaf_pem}: revoked" in result.stdout
        assert "Reason: cessationOfOperation" in result.stdout
    else:
        assert f"{leaf_pem}: good" in result.stdout


def test_cert_id_hash_we_cannot_compute_is_unauthorized(ca: CAIdentity, leaf: x509.Certificate) -> None:
    request = asn1_ocsp.OCSPRequest.load(_request(leaf, ca, nonce=None))
    cert_id = request["tbs_request"]["request_list"][0]["req_cert"]
    md5 = asn1_ocsp.OCSPRequest(
        {
            "tbs_request": {
                "request_list": [
                    {
                        "req_cert": {
                            "hash_algorithm": {"algorithm": "md5"},
                            "issuer_name_hash": hashlib.md5(ca.cert.subject.public_bytes()).digest(),
                            "issuer_key_hash": cert_id["issuer_key_hash"].native[:16],
                            "serial_number": leaf.serial_number,
                        }
                    }
                ]
            }
        }
    ).dump()
    with pytest.raises(OcspRequestError) as info:
        parse_ocsp_request(md5)
    assert info.value.status is ocsp.OCSPResponseStatus.UNAUTHORIZED
