"""Every captured real-client request parses, verifies, decrypts and yields its CSR."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from scep_ca.protocol.csr import challenge_password
from scep_ca.protocol.enums import ContentCipher, DigestAlg, MessageType
from scep_ca.protocol.envelope import RecipientKey, decrypt_envelope
from scep_ca.protocol.errors import BadAlg
from scep_ca.protocol.message import decode_pki_message, verify_pki_message

LAB = Path(__file__).parent.parent / "vectors" / "micromdm-lab-2026-11-28"

# client -> (cipher, digest, transactionID prefix)
EXPECTED = {
    "scepclient": (ContentCipher.DES, DigestAlg.SHA1, "945t7gOLCPR8"),
    "certmonger": (ContentCipher.AES256, DigestAlg.SHA256, "706101058202"),
    "pyscep": (ContentCipher.AES256, DigestAlg.SHA256, "3b577ee29428"),
    "scepreq": (ContentCipher.AES256, DigestAlg.SHA256, "41efdae5344c"),
}


@pytest.fixture(scope="module")
def lab_recipient() -> RecipientKey:
    key = serialization.load_pem_private_key((LAB / "lab-ca.key").read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    cert = x509.load_pem_x509_certificate((LAB / "lab-ca.pem").read_bytes())
    return RecipientKey.from_cert(cert, key)


@pytest.mark.parametrize("client", sorted(EXPECTED))
def test_real_client_request_decodes(client: str, lab_recipient: RecipientKey) -> None:
    cipher, digest, tid_prefix = EXPECTED[client]
    msg = decode_pki_message((LAB / f"{client}-pkcsreq.der").read_bytes())
    verify_pki_message(msg)
    assert msg.message_type == MessageType.PKCS_REQ
    assert msg.digest_alg is digest
    assert msg.transaction_id.startswith(tid_prefix)
    assert len(msg.sender_nonce) == 16
    assert msg.content is not None
    decrypted = decrypt_envelope(msg.content, lab_recipient, allow_des=True, stand_in_secret=bytes(32))
    assert decrypted.cipher is cipher
    csr = x509.load_der_x509_csr(decrypted.plaintext)
    assert csr.is_signature_valid
    assert challenge_password(csr) == "secret"
    assert f"interop-{client}-" in csr.subject.rfc4514_string()


def test_scepclient_des_refused_when_disabled(lab_recipient: RecipientKey) -> None:
    msg = decode_pki_message((LAB / "scepclient-pkcsreq.der").read_bytes())
    assert msg.content is not None
    with pytest.raises(BadAlg):
        decrypt_envelope(msg.content, lab_recipient, allow_des=False, stand_in_secret=bytes(32))


def test_scepclient_envelope_is_ber_constructed() -> None:
    """Regression: asn1crypto alone cannot load scepclient's constructed encryptedContent."""
    from asn1crypto import cms

    msg = decode_pki_message((LAB / "scepclient-pkcsreq.der").read_bytes())
    assert msg.content is not None
    env = cms.ContentInfo.load(msg.content)["content"]
    with pytest.raises(ValueError, match="constructed"):
        _ = env["encrypted_content_info"]["encrypted_content"].native


def test_micromdm_reply_is_ber_what_we_do_not_send() -> None:
    """micromdm's CertRep nests BER constructed OCTET STRINGs: the reason pyscep/scepreq fail on it."""
    der = (LAB / "micromdm-reply-to-pyscep.der").read_bytes()
    msg = decode_pki_message(der)
    assert msg.message_type == MessageType.CERT_REP
    from asn1crypto import cms

    info = cms.ContentInfo.load(der)
    # Re-encoding as DER changes the bytes: the original was not DER.
    assert info.dump(force=True) != der
