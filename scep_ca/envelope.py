"""EnvelopedData: decrypting requests and encrypting replies (RFC 8894 section 3.2.2, RFC 5652 section 6).

Key transport is RSA PKCS#1 v1.5 (RSAES-OAEP accepted on requests). Content
encryption: AES-128/192/256-CBC, DES-EDE3-CBC and single DES-CBC (3DES with
K1=K2=K3; micromdm's scepclient 2.1.0 and old routers send it). The content may
be BER with a constructed ``encryptedContent``; see ``scep_ca.ber``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from asn1crypto import algos, cms, core
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, CipherAlgorithm, algorithms, modes

from scep_ca import der, oids
from scep_ca.ber import BERError, children, encode_tlv, octet_string_value
from scep_ca.enums import ContentCipher
from scep_ca.errors import BadAlg, BadMessageCheck

_KEY_BYTES = {
    ContentCipher.DES: 8,
    ContentCipher.DES3: 24,
    ContentCipher.AES128: 16,
    ContentCipher.AES192: 24,
    ContentCipher.AES256: 32,
}
_OAEP_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


@dataclass(frozen=True)
class Decrypted:
    plaintext: bytes
    cipher: ContentCipher


@dataclass(frozen=True)
class RecipientKey:
    """Our decryption identity: the certificate requests are encrypted to, and its key."""

    cert: asn1_x509.Certificate
    key: rsa.RSAPrivateKey


def _algorithm(cipher: ContentCipher, key: bytes) -> CipherAlgorithm:
    if cipher is ContentCipher.DES:
        # Single DES is 3DES with three equal keys; cryptography has no DES class of its own.
        return TripleDES(key * 3)
    if cipher is ContentCipher.DES3:
        return TripleDES(key)
    return algorithms.AES(key)


def _block_bytes(cipher: ContentCipher) -> int:
    return 8 if cipher in (ContentCipher.DES, ContentCipher.DES3) else 16


def _matches(rid: cms.RecipientIdentifier, cert: asn1_x509.Certificate) -> bool:
    if rid.name == "issuer_and_serial_number":
        ias = rid.chosen
        tbs = cert["tbs_certificate"]
        # Encodings, not asn1crypto Name equality (which normalises and is slow).
        return bool(
            ias["serial_number"].native == tbs["serial_number"].native and ias["issuer"].dump() == tbs["issuer"].dump()
        )
    return bool(rid.chosen.native == cert.key_identifier)


def _unwrap_key(ktri: cms.KeyTransRecipientInfo, key: rsa.RSAPrivateKey) -> bytes:
    alg = ktri["key_encryption_algorithm"]
    name = alg["algorithm"].native
    encrypted_key = ktri["encrypted_key"].native
    if name == "rsaes_pkcs1v15":
        pad: padding.AsymmetricPadding = padding.PKCS1v15()
    elif name == "rsaes_oaep":
        params = alg["parameters"]
        hash_name = params["hash_algorithm"]["algorithm"].native if params else "sha1"
        mgf_hash = params["mask_gen_algorithm"]["parameters"]["algorithm"].native if params else "sha1"
        if hash_name not in _OAEP_HASHES or mgf_hash not in _OAEP_HASHES:
            raise BadAlg("unsupported OAEP hash")
        pad = padding.OAEP(mgf=padding.MGF1(_OAEP_HASHES[mgf_hash]()), algorithm=_OAEP_HASHES[hash_name](), label=None)
    else:
        raise BadAlg("unsupported key transport algorithm", f"key transport {name}")
    try:
        return key.decrypt(encrypted_key, pad)
    except ValueError as exc:
        raise BadMessageCheck("cannot decrypt the content-encryption key") from exc


def decrypt_envelope(content: bytes, recipient: RecipientKey, *, allow_des: bool) -> Decrypted:
    """Decrypt the EnvelopedData that a PKCSReq/RenewalReq carries (RFC 8894 section 3.2.2)."""
    try:
        info = cms.ContentInfo.load(content)
        if info["content_type"].native != "enveloped_data":
            raise BadMessageCheck("the signed content is not an EnvelopedData")
        env = info["content"]
        ktri = None
        for ri in env["recipient_infos"]:
            if ri.name == "ktri" and _matches(ri.chosen["rid"], recipient.cert):
                ktri = ri.chosen
                break
        if ktri is None:
            raise BadMessageCheck("the request is not encrypted to this CA")
        eci = env["encrypted_content_info"]
        # encryptedContent may be constructed BER, which asn1crypto cannot load; read it raw.
        parts = children(eci.contents)
    except (BadMessageCheck, BadAlg):
        raise
    except (ValueError, TypeError, KeyError, BERError) as exc:
        raise BadMessageCheck("the EnvelopedData is malformed") from exc
    if len(parts) < 3 or parts[2].tag_class != 2 or parts[2].tag_number != 0:
        raise BadMessageCheck("the EnvelopedData has no encrypted content")
    try:
        # Re-wrapped as a definite-length SEQUENCE, which asn1crypto loads.
        alg = algos.EncryptionAlgorithm.load(encode_tlv(0x30, parts[1].content))
        alg_name = alg["algorithm"].native
        ciphertext = octet_string_value(parts[2])
    except (ValueError, BERError) as exc:
        raise BadMessageCheck("the content-encryption algorithm is malformed") from exc
    try:
        cipher = ContentCipher(alg_name)
    except ValueError as exc:
        raise BadAlg("unsupported content-encryption algorithm", f"cipher {alg_name}") from exc
    if cipher is ContentCipher.DES and not allow_des:
        raise BadAlg("single DES is disabled on this server")
    iv_value = alg["parameters"]
    iv = iv_value.native if isinstance(iv_value, core.OctetString) else None
    if not isinstance(iv, bytes) or len(iv) != _block_bytes(cipher):
        raise BadMessageCheck("bad IV")
    key = _unwrap_key(ktri, recipient.key)
    if len(key) != _KEY_BYTES[cipher]:
        raise BadMessageCheck("content-encryption key has the wrong length")
    if not ciphertext or len(ciphertext) % _block_bytes(cipher):
        raise BadMessageCheck("ciphertext length is not a multiple of the block size")
    decryptor = Cipher(_algorithm(cipher, key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = sym_padding.PKCS7(_block_bytes(cipher) * 8).unpadder()
    try:
        plaintext = unpadder.update(padded) + unpadder.finalize()
    except ValueError as exc:
        raise BadMessageCheck("bad padding after decryption") from exc
    return Decrypted(plaintext=plaintext, cipher=cipher)


def encrypt_envelope(
    plaintext: bytes, recipient_issuer_and_serial: bytes, recipient_key: rsa.RSAPublicKey, cipher: ContentCipher
) -> bytes:
    """EnvelopedData for the requester (RFC 8894 section 3.3.2.1): its cipher, RSA PKCS#1 v1.5 transport.

    ``recipient_issuer_and_serial`` is the DER IssuerAndSerialNumber of the requester's signer
    certificate (``scep_ca.signing.issuer_and_serial``).
    """
    block = _block_bytes(cipher)
    key = os.urandom(_KEY_BYTES[cipher])
    iv = os.urandom(block)
    padder = sym_padding.PKCS7(block * 8).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(_algorithm(cipher, key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    encrypted_key = recipient_key.encrypt(key, padding.PKCS1v15())
    ktri = der.seq(der.integer(0), recipient_issuer_and_serial, oids.RSA_ENCRYPTION, der.octet_string(encrypted_key))
    encrypted_content_info = der.seq(
        oids.DATA,
        der.algorithm(oids.CIPHER_OIDS[cipher], der.octet_string(iv)),
        der.implicit_primitive(0, ciphertext),
    )
    enveloped = der.seq(der.integer(0), der.set_of(ktri), encrypted_content_info)
    return der.seq(oids.ENVELOPED_DATA, der.explicit(0, enveloped))
