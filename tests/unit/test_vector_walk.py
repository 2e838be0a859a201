"""Every request vector under tests/vectors, walked through the whole server-side pipeline.

For each ``*-pkcsreq.der`` in every vector folder: decode and verify the pkiMessage, decrypt the
envelope with the key it was encrypted to (micromdm's lab CA, or our RA), check the CSR against
an issuance policy, issue a certificate with a test CA, build the CertRep (certs-only bag,
EnvelopedData, RA signature) and then check the reply independently of our decoder:
asn1crypto for the structure, cryptography for the signature and messageDigest, OpenSSL's
``cms -verify`` for the chain, and ``scep_ca.protocol.client.open_reply`` with the device key where the
folder has one. The reply must use the request's digest and content cipher, and be encrypted
to the request's signer (RecipientInfo issuerAndSerialNumber equal to the signer's).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from scep_ca.pki.ca import CAIdentity
from scep_ca.pki.issue import Profile, random_serial
from scep_ca.protocol.certrep import ReplyTo, build_cert_rep, certs_only
from scep_ca.protocol.client import open_reply
from scep_ca.protocol.csr import CsrPolicy, check_csr
from scep_ca.protocol.dn import parse_dn
from scep_ca.protocol.enums import ContentCipher, DigestAlg, MessageType, PKIStatus
from scep_ca.protocol.envelope import RecipientKey, decrypt_envelope, encrypt_envelope
from scep_ca.protocol.message import decode_pki_message, verify_pki_message
from scep_ca.protocol.signing import SignerIdentity
from tests.issued import issue_certificate

VECTORS = Path(__file__).parent.parent / "vectors"
SCEPCLIENT_SUBJECT = "CN=$USERID$,OU=MDM,O=scep-client,C=US"

# The micromdm lab folder is read-only and has no manifest: what its README says, per client.
LAB_FOLDER = "micromdm-lab-2026-11-28"
LAB_EXPECTED = {
    "scepclient": (SCEPCLIENT_SUBJECT, "secret"),
    "certmonger": ("CN=$USERID$", "secret"),
    "pyscep": ("CN=$USERID$", "secret"),
    "scepreq": ("CN=$USERID$", "secret"),
}

CIPHER_OIDS = {
    ContentCipher.DES: "1.3.14.3.2.7",
    ContentCipher.DES3: "1.2.840.113549.3.7",
    ContentCipher.AES128: "2.16.840.1.101.3.4.1.2",
    ContentCipher.AES192: "2.16.840.1.101.3.4.1.22",
    ContentCipher.AES256: "2.16.840.1.101.3.4.1.42",
}
DIGEST_OIDS = {
    DigestAlg.SHA1: "1.3.14.3.2.26",
    DigestAlg.SHA256: "2.16.840.1.101.3.4.2.1",
    DigestAlg.SHA512: "2.16.840.1.101.3.4.2.3",
}
HASHES: dict[DigestAlg, hashes.HashAlgorithm] = {
    DigestAlg.SHA1: hashes.SHA1(),
    DigestAlg.SHA256: hashes.SHA256(),
    DigestAlg.SHA512: hashes.SHA512(),
}


@dataclass(frozen=True)
class Vector:
    folder: Path
    path: Path
    recipient_cert: Path
    recipient_key: Path
    device_key: Path | None
    subject_template: str
    challenge: str
    # From the folder's manifest.json, when it has one.
    cipher: ContentCipher | None = None
    digest: DigestAlg | None = None
    transaction_id: str | None = None

    @property
    def id(self) -> str:
        return f"{self.folder.name}/{self.path.name}"


def _recipient_files(folder: Path) -> tuple[Path, Path]:
    """The certificate (and key) a folder's requests are encrypted to."""
    for cert, key in (("ra.pem", "ra.key"), ("lab-ca.pem", "lab-ca.key")):
        if (folder / cert).exists() and (folder / key).exists():
            return folder / cert, folder / key
    raise AssertionError(f"{folder}: no ra.pem/ra.key or lab-ca.pem/lab-ca.key to decrypt its requests")


def discover() -> list[Vector]:
    vectors: list[Vector] = []
    for folder in sorted(p for p in VECTORS.iterdir() if p.is_dir()):
        cert, key = _recipient_files(folder)
        manifest_path = folder / "manifest.json"
        manifest = (
            {v["file"]: v for v in json.loads(manifest_path.read_text())["vectors"]} if manifest_path.exists() else {}
        )
        for path in sorted(folder.glob("*-pkcsreq.der")):
            client = path.name.split("-")[0]
            device = folder / f"{client}-device.key"
            if path.name in manifest:
                entry = manifest[path.name]
                device = folder / entry["device_key"]
                vectors.append(
                    Vector(
                        folder,
                        path,
                        cert,
                        key,
                        device if device.exists() else None,
                        SCEPCLIENT_SUBJECT,
                        entry["challenge"],
                        ContentCipher(entry["cipher_id"]),
                        DigestAlg(entry["digest_id"]),
                        entry["transaction_id"],
                    )
                )
            elif folder.name == LAB_FOLDER and client in LAB_EXPECTED:
                template, challenge = LAB_EXPECTED[client]
                vectors.append(
                    Vector(folder, path, cert, key, device if device.exists() else None, template, challenge)
                )
            else:
                raise AssertionError(f"{path}: no manifest entry and no known expectations: add one")
    return vectors


VECTOR_LIST = discover()


def _rsa_key(path: Path) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def test_every_folder_is_walked() -> None:
    folders = {v.folder.name for v in VECTOR_LIST}
    assert LAB_FOLDER in folders
    assert any(name.startswith("scep-ca-") for name in folders)
    assert folders == {p.name for p in VECTORS.iterdir() if p.is_dir()}


def test_our_folder_covers_every_cipher_and_digest() -> None:
    """scepclient + certmonger + built messages: all 5 ciphers x 3 digests, real clients included."""
    ours = [v for v in VECTOR_LIST if v.folder.name.startswith("scep-ca-")]
    assert {(v.cipher, v.digest) for v in ours} == {(c, d) for c in ContentCipher for d in DigestAlg}
    clients = {v.path.name.split("-")[0] for v in ours}
    assert {"scepclient", "certmonger", "built"} <= clients
    for v in ours:
        assert v.device_key is not None, v.id
    for folder in {v.folder for v in ours}:
        assert sum(p.stat().st_size for p in folder.iterdir()) < 300_000, folder


@pytest.mark.parametrize("vector", VECTOR_LIST, ids=[v.id for v in VECTOR_LIST])
def test_vector_walk(vector: Vector, ca: CAIdentity, tmp_path: Path) -> None:
    der = vector.path.read_bytes()
    # 1. Parse and verify the request.
    msg = decode_pki_message(der)
    signer = verify_pki_message(msg)
    assert msg.message_type == MessageType.PKCS_REQ
    assert msg.digest_alg is not None and msg.content is not None
    if vector.transaction_id is not None:
        assert msg.transaction_id == vector.transaction_id
        assert msg.digest_alg is vector.digest

    # 2. Decrypt with the key the client encrypted to.
    recipient_cert = x509.load_pem_x509_certificate(vector.recipient_cert.read_bytes())
    recipient = RecipientKey.from_cert(recipient_cert, _rsa_key(vector.recipient_key))
    decrypted = decrypt_envelope(msg.content, recipient, allow_des=True, stand_in_secret=bytes(32))
    if vector.cipher is not None:
        assert decrypted.cipher is vector.cipher

    # 3. The CSR passes an issuance policy.
    checked = check_csr(
        decrypted.plaintext, CsrPolicy(key_sizes=(2048,), subject_template=parse_dn(vector.subject_template))
    )
    assert checked.challenge == vector.challenge

    # 4. Issue with the test CA.
    now = dt.datetime.now(dt.UTC)
    cert = issue_certificate(
        ca,
        subject=checked.subject,
        public_key=checked.public_key,
        sans=checked.sans,
        profile=Profile(validity_days=365),
        serial=random_serial(),
        now=now,
    )
    cert.verify_directly_issued_by(ca.cert)
    cert_der = cert.public_bytes(serialization.Encoding.DER)

    # 5. The CertRep, as the service builds it: RA-signed, the request's digest and cipher.
    signer_public = signer.public_key()
    assert isinstance(signer_public, rsa.RSAPublicKey)
    enveloped = encrypt_envelope(
        certs_only([cert_der, ca.cert_der]), msg.signer_issuer_and_serial, signer_public, decrypted.cipher
    )
    reply = build_cert_rep(
        SignerIdentity.from_cert(ca.ra_cert, ca.ra_key),
        ReplyTo(msg.transaction_id, msg.sender_nonce, msg.reply_digest()),
        PKIStatus.SUCCESS,
        enveloped=enveloped,
        now=now,
    )

    # 6. Check the reply without our decoder.
    _check_reply_structure(reply, msg.digest_alg, decrypted.cipher, msg.signer_issuer_and_serial, ca)
    _check_reply_signature(reply, msg.digest_alg, ca, msg.transaction_id, msg.sender_nonce)
    _openssl_verify(reply, ca, tmp_path)

    # 7. The device opens it, when we have its key.
    if vector.device_key is not None:
        opened = open_reply(reply, signer, _rsa_key(vector.device_key))
        assert opened.status is PKIStatus.SUCCESS
        assert (opened.cipher, opened.digest) == (decrypted.cipher, msg.digest_alg)
        assert opened.certificates[0] == cert, "the issued certificate comes first"
        assert opened.certificates[1] == ca.cert
        assert opened.recipient_nonce == msg.sender_nonce
        assert opened.transaction_id == msg.transaction_id


def _check_reply_structure(
    reply: bytes, digest: DigestAlg, cipher: ContentCipher, requester_ias: bytes, ca: CAIdentity
) -> None:
    info = cms.ContentInfo.load(reply)
    assert info.dump(force=True) == reply, "the CertRep is DER"
    signed = info["content"]
    (signer_info,) = signed["signer_infos"]
    assert signer_info["digest_algorithm"]["algorithm"].dotted == DIGEST_OIDS[digest]
    assert [a["algorithm"].dotted for a in signed["digest_algorithms"]] == [DIGEST_OIDS[digest]]
    assert [c.chosen.dump() for c in signed["certificates"]] == [ca.ra_cert_der]
    # The EnvelopedData: to the request's signer, with the request's cipher, PKCS#1 v1.5 transport.
    enveloped = cms.ContentInfo.load(signed["encap_content_info"]["content"].native)["content"]
    (recipient_info,) = enveloped["recipient_infos"]
    ktri = recipient_info.chosen
    assert ktri["rid"].chosen.dump() == requester_ias
    assert ktri["key_encryption_algorithm"]["algorithm"].dotted == "1.2.840.113549.1.1.1"
    eci = enveloped["encrypted_content_info"]
    assert eci["content_encryption_algorithm"]["algorithm"].dotted == CIPHER_OIDS[cipher]


def _check_reply_signature(
    reply: bytes, digest: DigestAlg, ca: CAIdentity, transaction_id: str, sender_nonce: bytes
) -> None:
    signed = cms.ContentInfo.load(reply)["content"]
    (signer_info,) = signed["signer_infos"]
    sid = signer_info["sid"].chosen
    assert sid["serial_number"].native == ca.ra_cert.serial_number
    attrs = {a["type"].dotted: a["values"][0] for a in signer_info["signed_attrs"]}
    content = signed["encap_content_info"]["content"].native
    assert attrs["1.2.840.113549.1.9.4"].native == hashlib.new(digest.value, content).digest()
    assert attrs["2.16.840.1.113733.1.9.2"].native == "3"  # CertRep
    assert attrs["2.16.840.1.113733.1.9.3"].native == "0"  # SUCCESS
    assert attrs["2.16.840.1.113733.1.9.7"].native == transaction_id
    assert attrs["2.16.840.1.113733.1.9.6"].native == sender_nonce  # recipientNonce
    # The signature covers the attributes re-tagged as a SET (RFC 5652 section 5.4).
    signed_attrs = signer_info["signed_attrs"].dump()
    public = ca.ra_cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(signer_info["signature"].native, b"\x31" + signed_attrs[1:], padding.PKCS1v15(), HASHES[digest])


def _openssl_verify(reply: bytes, ca: CAIdentity, tmp_path: Path) -> None:
    (tmp_path / "reply.der").write_bytes(reply)
    (tmp_path / "ca.pem").write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    result = subprocess.run(
        [
            "openssl",
            "cms",
            "-verify",
            "-inform",
            "DER",
            "-in",
            str(tmp_path / "reply.der"),
            "-CAfile",
            str(tmp_path / "ca.pem"),
            "-purpose",
            "any",
            "-out",
            str(tmp_path / "content.der"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    signed = cms.ContentInfo.load(reply)["content"]
    assert (tmp_path / "content.der").read_bytes() == signed["encap_content_info"]["content"].native
