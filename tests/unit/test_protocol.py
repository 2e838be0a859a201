"""The protocol core end to end without I/O: request -> checks -> issuance -> CertRep -> client."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from scep_ca.asn1 import der, oids
from scep_ca.asn1.ber import issuer_and_serial
from scep_ca.pki.ca import CAIdentity, create_ca
from scep_ca.pki.issue import Profile, random_serial
from scep_ca.protocol.certrep import ReplyTo, build_cert_rep, certs_only
from scep_ca.protocol.client import build_csr, build_request, open_reply, self_signed_signer
from scep_ca.protocol.csr import CsrPolicy, check_csr
from scep_ca.protocol.dn import parse_dn
from scep_ca.protocol.enums import ContentCipher, DigestAlg, FailInfo, MessageType, PKIStatus
from scep_ca.protocol.envelope import RecipientKey, decrypt_envelope, encrypt_envelope
from scep_ca.protocol.errors import BadAlg, BadMessageCheck, BadRequest, MalformedRequest
from scep_ca.protocol.message import decode_pki_message, verify_pki_message
from scep_ca.protocol.signing import SignerIdentity, attribute, sign_message
from tests import asn1_scep  # noqa: F401  (registers SCEP attributes with asn1crypto)
from tests.issued import issue_certificate

POLICY = CsrPolicy(key_sizes=(2048,), subject_template=parse_dn("CN=$USERID$,O=Example"))


def _request(
    ca: CAIdentity,
    key: rsa.RSAPrivateKey,
    *,
    cipher: ContentCipher = ContentCipher.AES128,
    digest: DigestAlg = DigestAlg.SHA256,
    subject: str = "CN=alice,O=Example",
) -> bytes:
    csr = build_csr(key, parse_dn(subject), "CHALLENGE1")
    return build_request(
        csr,
        signer_cert=self_signed_signer(key),
        signer_key=key,
        recipient=ca.cert,
        transaction_id="TID-1",
        cipher=cipher,
        digest=digest,
    ).der


@pytest.mark.parametrize("cipher", list(ContentCipher))
@pytest.mark.parametrize("digest", list(DigestAlg))
def test_round_trip_every_cipher_and_digest(
    ca: CAIdentity, device_key: rsa.RSAPrivateKey, cipher: ContentCipher, digest: DigestAlg
) -> None:
    signer = self_signed_signer(device_key)
    csr = build_csr(device_key, parse_dn("CN=alice,O=Example"), "CHALLENGE1")
    req = build_request(
        csr,
        signer_cert=signer,
        signer_key=device_key,
        recipient=ca.cert,
        transaction_id="TID-1",
        cipher=cipher,
        digest=digest,
    )
    msg = decode_pki_message(req.der)
    signer_cert = verify_pki_message(msg)
    assert msg.content is not None
    decrypted = decrypt_envelope(
        msg.content, RecipientKey.from_cert(ca.cert, ca.key), allow_des=True, stand_in_secret=bytes(32)
    )
    assert decrypted.cipher is cipher
    checked = check_csr(decrypted.plaintext, POLICY)
    assert checked.challenge == "CHALLENGE1"
    cert = issue_certificate(
        ca,
        subject=checked.subject,
        public_key=checked.public_key,
        sans=(),
        profile=Profile(365),
        serial=random_serial(),
        now=dt.datetime.now(dt.UTC),
    )
    bag = certs_only([cert.public_bytes(serialization.Encoding.DER)])
    public = signer_cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    env = encrypt_envelope(bag, issuer_and_serial(msg.signer_cert_der), public, decrypted.cipher)
    rep = build_cert_rep(
        SignerIdentity.from_cert(ca.cert, ca.key),
        ReplyTo(msg.transaction_id, msg.sender_nonce, msg.reply_digest()),
        PKIStatus.SUCCESS,
        enveloped=env,
    )
    reply = open_reply(rep, signer, device_key)
    assert reply.status is PKIStatus.SUCCESS
    assert reply.cipher is cipher and reply.digest is digest
    assert reply.recipient_nonce == req.sender_nonce
    assert reply.transaction_id == "TID-1"
    assert reply.certificates[0].serial_number == cert.serial_number
    # DER throughout: re-encoding changes nothing (pyscep/scepreq choke on BER).
    assert cms.ContentInfo.load(rep).dump(force=True) == rep


def test_cert_rep_attributes_are_printable_strings(ca: CAIdentity) -> None:
    rep = build_cert_rep(
        SignerIdentity.from_cert(ca.cert, ca.key),
        ReplyTo("T", b"n" * 16, DigestAlg.SHA256),
        PKIStatus.FAILURE,
        fail_info=FailInfo.BAD_REQUEST,
        fail_text="no",
    )
    si = cms.ContentInfo.load(rep)["content"]["signer_infos"]
    assert len(si) == 1, "Apple rejects a CertRep with more than one signer"
    attrs = {a["type"].native: a["values"][0] for a in si[0]["signed_attrs"]}
    for name in ("message_type", "pki_status", "fail_info", "transaction_id"):
        assert attrs[name].tag == 19, f"{name} must be a PrintableString"
    assert attrs["pki_status"].native == "2" and attrs["fail_info"].native == "2"
    assert attrs["recipient_nonce"].native == b"n" * 16
    assert len(attrs["sender_nonce"].native) == 16
    assert attrs["message_type"].native == str(int(MessageType.CERT_REP))


def test_certs_only_keeps_issued_certificate_first(ca: CAIdentity, device_key: rsa.RSAPrivateKey) -> None:
    """Apple takes the first certificate as the issued one; asn1crypto would sort the SET OF."""
    leaf = issue_certificate(
        ca,
        subject=parse_dn("CN=zzz"),
        public_key=device_key.public_key(),
        sans=(),
        profile=Profile(1),
        serial=random_serial(),
        now=dt.datetime.now(dt.UTC),
    )
    leaf_der = leaf.public_bytes(serialization.Encoding.DER)
    for order in ([leaf_der, ca.cert_der], [ca.cert_der, leaf_der]):
        bag = cms.ContentInfo.load(certs_only(order))
        assert [c.chosen.dump() for c in bag["content"]["certificates"]] == order


def test_certs_only_readable_by_openssl(ca: CAIdentity, tmp_path: Path) -> None:
    path = tmp_path / "bag.der"
    path.write_bytes(certs_only([ca.cert_der]))
    out = subprocess.run(
        ["openssl", "pkcs7", "-inform", "DER", "-in", str(path), "-print_certs"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Unit Test CA" in out


def test_cert_rep_verifies_with_openssl(ca: CAIdentity, tmp_path: Path, device_key: rsa.RSAPrivateKey) -> None:
    msg = decode_pki_message(_request(ca, device_key))
    env = encrypt_envelope(b"x", issuer_and_serial(msg.signer_cert_der), device_key.public_key(), ContentCipher.AES128)
    rep = build_cert_rep(
        SignerIdentity.from_cert(ca.cert, ca.key),
        ReplyTo("T", b"n" * 16, DigestAlg.SHA512),
        PKIStatus.SUCCESS,
        enveloped=env,
    )
    (tmp_path / "rep.der").write_bytes(rep)
    (tmp_path / "ca.pem").write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    # Default purpose (S/MIME signing) is what certmonger's PKCS7_verify checks.
    res = subprocess.run(
        [
            "openssl",
            "cms",
            "-verify",
            "-inform",
            "DER",
            "-in",
            str(tmp_path / "rep.der"),
            "-CAfile",
            str(tmp_path / "ca.pem"),
            "-out",
            "/dev/null",
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert "Verification successful" in res.stderr


# --- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("der", [b"", b"not der at all", b"\x30\x03\x02\x01", b"\x30\x82\xff\xff" + b"\x00" * 10])
def test_garbage_is_malformed(der: bytes) -> None:
    with pytest.raises(MalformedRequest):
        decode_pki_message(der)


def test_truncated_message_is_malformed(ca: CAIdentity, device_key: rsa.RSAPrivateKey) -> None:
    request = _request(ca, device_key)
    for cut in (len(request) // 3, len(request) // 2, len(request) - 5):
        with pytest.raises(MalformedRequest):
            decode_pki_message(request[:cut])


def test_enveloped_data_alone_is_malformed(ca: CAIdentity, device_key: rsa.RSAPrivateKey) -> None:
    env = encrypt_envelope(b"x", issuer_and_serial(ca.cert_der), ca.key.public_key(), ContentCipher.AES128)
    with pytest.raises(MalformedRequest, match="SignedData"):
        decode_pki_message(env)


def test_bad_signature_is_bad_message_check(ca: CAIdentity, device_key: rsa.RSAPrivateKey) -> None:
    info = cms.ContentInfo.load(_request(ca, device_key))
    sig = bytearray(info["content"]["signer_infos"][0]["signature"].native)
    sig[10] ^= 0xFF
    info["content"]["signer_infos"][0]["signature"] = bytes(sig)
    msg = decode_pki_message(info.dump(force=True))
    with pytest.raises(BadMessageCheck, match="signature"):
        verify_pki_message(msg)


def test_wrong_message_digest_is_bad_message_check(ca: CAIdentity, device_key: rsa.RSAPrivateKey) -> None:
    request = _request(ca, device_key)
    msg = decode_pki_message(request)
    assert msg.content is not None
    # Sign attributes whose messageDigest is over other content.
    attrs = [
        attribute(oids.MESSAGE_TYPE, der.printable_string("19")),
        attribute(oids.TRANSACTION_ID, der.printable_string("T")),
        attribute(oids.SENDER_NONCE, der.octet_string(b"n" * 16)),
    ]
    good = sign_message(
        SignerIdentity.from_cert(self_signed_signer(device_key), device_key), DigestAlg.SHA256, attrs, b"other"
    )
    info = cms.ContentInfo.load(good)
    info["content"]["encap_content_info"] = {"content_type": "data", "content": msg.content}
    with pytest.raises(BadMessageCheck, match="messageDigest"):
        verify_pki_message(decode_pki_message(info.dump(force=True)))


def test_envelope_for_another_recipient(ca: CAIdentity, device_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    other = create_ca(tmp_path, subject="CN=Other CA", key_size=2048, validity_days=10, passphrase=None)
    msg = decode_pki_message(_request(other, device_key))
    assert msg.content is not None
    with pytest.raises(BadMessageCheck, match=r"^the request cannot be decrypted$") as failure:
        decrypt_envelope(msg.content, RecipientKey.from_cert(ca.cert, ca.key), allow_des=True, stand_in_secret=b"s")
    assert failure.value.detail == "the request is not encrypted to the encryption RA"


def test_unsupported_cipher_is_bad_alg(ca: CAIdentity, device_key: rsa.RSAPrivateKey) -> None:
    env = encrypt_envelope(b"x" * 20, issuer_and_serial(ca.cert_der), ca.key.public_key(), ContentCipher.AES128)
    aes128_cbc = bytes.fromhex("0609608648016503040102")
    assert env.count(aes128_cbc) == 1
    gcm = env.replace(aes128_cbc, bytes.fromhex("0609608648016503040106"))  # id-aes128-GCM
    with pytest.raises(BadAlg, match="content-encryption"):
        decrypt_envelope(gcm, RecipientKey.from_cert(ca.cert, ca.key), allow_des=True, stand_in_secret=bytes(32))


def test_tampered_ciphertext_is_bad_message_check(ca: CAIdentity) -> None:
    env = bytearray(
        encrypt_envelope(b"x" * 40, issuer_and_serial(ca.cert_der), ca.key.public_key(), ContentCipher.AES256)
    )
    # CBC: a flip in the next-to-last block flips the same bit of the last plaintext block, so the
    # last padding byte (8 for 40 bytes) becomes 8 ^ 0x55 = 0x5D: invalid, every time (flipping
    # the last ciphertext byte instead gives valid padding by chance one time in 256).
    env[-17] ^= 0x55
    with pytest.raises(BadMessageCheck):
        decrypt_envelope(bytes(env), RecipientKey.from_cert(ca.cert, ca.key), allow_des=True, stand_in_secret=bytes(32))


def test_unsupported_digest_is_bad_alg(ca: CAIdentity, device_key: rsa.RSAPrivateKey) -> None:
    info = cms.ContentInfo.load(_request(ca, device_key))
    info["content"]["signer_infos"][0]["digest_algorithm"] = {"algorithm": "md5"}
    msg = decode_pki_message(info.dump(force=True))
    assert msg.digest_alg is None and msg.reply_digest() is DigestAlg.SHA256
    with pytest.raises(BadAlg):
        verify_pki_message(msg)


def test_missing_transaction_id_is_malformed(device_key: rsa.RSAPrivateKey) -> None:
    attrs = [
        attribute(oids.MESSAGE_TYPE, der.printable_string("19")),
        attribute(oids.SENDER_NONCE, der.octet_string(b"n" * 16)),
    ]
    message = sign_message(
        SignerIdentity.from_cert(self_signed_signer(device_key), device_key), DigestAlg.SHA256, attrs, b"x"
    )
    with pytest.raises(MalformedRequest, match="transaction_id"):
        decode_pki_message(message)


# --- CSR policy -------------------------------------------------------------------------------------


def test_sha1_csr_is_bad_alg(device_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    key_path = tmp_path / "k.pem"
    key_path.write_bytes(
        device_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    der = subprocess.run(
        ["openssl", "req", "-new", "-sha1", "-key", str(key_path), "-subj", "/O=Example/CN=a", "-outform", "DER"],
        capture_output=True,
        check=True,
    ).stdout
    with pytest.raises(BadAlg, match="SHA-256"):
        check_csr(der, POLICY)


def test_small_rsa_key_is_bad_alg() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(BadAlg, match="1024"):
        check_csr(build_csr(small, parse_dn("CN=a,O=Example"), "x"), POLICY)


def test_ec_key_is_bad_alg() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    from cryptography.hazmat.primitives import hashes

    der = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(parse_dn("CN=a,O=Example"))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    with pytest.raises(BadAlg, match="RSA"):
        check_csr(der, POLICY)


# "O=Example,CN=a" is the template's exact reverse, accepted since issue 11 (tests/unit/test_dn.py).
@pytest.mark.parametrize("subject", ["CN=a,O=Other", "CN=a", "CN=a,O=Example,C=US", "O=Example,CN=b,CN=a"])
def test_wrong_subject_is_bad_request(device_key: rsa.RSAPrivateKey, subject: str) -> None:
    with pytest.raises(BadRequest, match="subject"):
        check_csr(build_csr(device_key, parse_dn(subject), "x"), POLICY)


def test_not_a_csr_is_bad_request() -> None:
    with pytest.raises(BadRequest, match="PKCS#10"):
        check_csr(b"\x30\x00", POLICY)


def test_the_checked_csr_keeps_the_requests_octets(device_key: rsa.RSAPrivateKey) -> None:
    der = build_csr(device_key, parse_dn("CN=a,O=Example"), "x")
    assert check_csr(der, POLICY).der == der == x509.load_der_x509_csr(der).public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("extra", [b"\x00", b"\x00\x00", b"\x30\x00"])
def test_a_csr_with_trailing_octets_is_bad_request(device_key: rsa.RSAPrivateKey, extra: bytes) -> None:
    # What lets CheckedCsr.der stand for the request: nothing but the CSR's own DER is accepted.
    with pytest.raises(BadRequest, match="PKCS#10"):
        check_csr(build_csr(device_key, parse_dn("CN=a,O=Example"), "x") + extra, POLICY)


def test_issued_certificate_profile(ca: CAIdentity, device_key: rsa.RSAPrivateKey) -> None:
    now = dt.datetime.now(dt.UTC)
    serial = random_serial()
    cert = issue_certificate(
        ca,
        subject=parse_dn("CN=bob,O=Example"),
        public_key=device_key.public_key(),
        sans=(),
        profile=Profile(365, crl_url="http://x/crl/ca.crl", ocsp_url="http://x/ocsp"),
        serial=serial,
        now=now,
    )
    assert 0 < cert.serial_number < 2**159 and cert.serial_number.bit_length() == 159
    assert cert.signature_algorithm_oid == x509.oid.SignatureAlgorithmOID.RSA_WITH_SHA256
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and ku.value.key_encipherment and not ku.value.key_cert_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.not_valid_before_utc <= now - dt.timedelta(minutes=4)
    assert (cert.not_valid_after_utc - now).days in (364, 365)
    cert.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    cert.verify_directly_issued_by(ca.cert)


def test_failure_cert_rep_is_not_detached(ca: CAIdentity, tmp_path: Path) -> None:
    """certmonger's PKCS7_verify fails with "no content" on a CertRep without eContent."""
    rep = build_cert_rep(
        SignerIdentity.from_cert(ca.ra_cert, ca.ra_key),
        ReplyTo("T", b"n" * 16, DigestAlg.SHA256),
        PKIStatus.FAILURE,
        fail_info=FailInfo.BAD_REQUEST,
    )
    assert cms.ContentInfo.load(rep)["content"]["encap_content_info"]["content"].native == b""
    (tmp_path / "rep.der").write_bytes(rep)
    (tmp_path / "ca.pem").write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    res = subprocess.run(
        [
            "openssl",
            "smime",
            "-verify",
            "-inform",
            "DER",
            "-in",
            str(tmp_path / "rep.der"),
            "-CAfile",
            str(tmp_path / "ca.pem"),
            "-purpose",
            "any",
            "-out",
            "/dev/null",
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize(
    ("tid", "tag"), [("ABC-123 (x)", 0x13), ("abc_{x}", 0x0C), ("77401234567890", 0x13), ("dGVzdA==", 0x13)]
)
def test_transaction_id_string_type(ca: CAIdentity, tid: str, tag: int) -> None:
    """PrintableString only when the id fits its alphabet ('_' and '{' do not), else UTF8String."""
    from scep_ca.protocol.message import decode_pki_message as decode

    rep = build_cert_rep(
        SignerIdentity.from_cert(ca.ra_cert, ca.ra_key), ReplyTo(tid, b"n" * 16, DigestAlg.SHA256), PKIStatus.PENDING
    )
    msg = decode(rep)
    assert msg.transaction_id == tid
    assert msg.attributes["transaction_id"].tag_number == tag
