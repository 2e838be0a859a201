"""EnvelopedData: decrypting requests and encrypting replies (RFC 8894 section 3.2.2, RFC 5652 section 6).

Key transport is RSA PKCS#1 v1.5 (RSAES-OAEP accepted on requests). Content
encryption: AES-128/192/256-CBC, DES-EDE3-CBC and single DES-CBC (3DES with
K1=K2=K3; micromdm's scepclient 2.1.0 and old routers send it). The content may
be BER with a constructed ``encryptedContent``; see ``scep_ca.asn1.ber``.

Decryption failures are one failure (RFC 3218 section 2.3.2, RFC 5652 section 10):
a key that does not unwrap (bad PKCS#1 v1.5 or OAEP padding, or a key of the wrong
length for the content cipher) is replaced by a stand-in key of the right length,
derived from a server secret and the encrypted key (``scep_ca.protocol.key_transport``),
so the failure surfaces at content decryption with the same text as a wrong key, an
IV of the wrong length or bad CBC padding, and repeats identically when the request is
sent again. Anything else would be a Bleichenbacher (million message) oracle on the RA
key. Requests are decrypted with the encryption RA's key only: an envelope to any
other certificate (the CA, a signing-only RA) is one more request that cannot be
decrypted, so the CA key is never a decryption oracle.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, CipherAlgorithm, algorithms, modes

from scep_ca.asn1 import der, oids
from scep_ca.asn1.ber import (
    OCTET_STRING,
    SEQUENCE,
    TLV,
    BERError,
    children,
    encode_tlv,
    issuer_and_serial,
    octet_string_value,
    read_tlv,
)
from scep_ca.protocol.algorithms import CIPHER_OIDS
from scep_ca.protocol.enums import ContentCipher
from scep_ca.protocol.errors import BadAlg, BadMessageCheck
from scep_ca.protocol.key_transport import KeyTransport, unwrap_key
from scep_ca.protocol.keys import PrivateKey

_KEY_BYTES = {
    ContentCipher.DES: 8,
    ContentCipher.DES3: 24,
    ContentCipher.AES128: 16,
    ContentCipher.AES192: 24,
    ContentCipher.AES256: 32,
}
_OAEP_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    oids.ID_SHA1: hashes.SHA1,
    oids.ID_SHA256: hashes.SHA256,
    oids.ID_SHA384: hashes.SHA384,
    oids.ID_SHA512: hashes.SHA512,
}
_CIPHERS_BY_OID = {dotted: cipher for cipher, dotted in CIPHER_OIDS.items()}
# Every OID this module looks up, by content octets.
_KNOWN_OIDS = oids.content_table(
    [*_OAEP_HASHES, oids.ID_RSA_ENCRYPTION, oids.ID_RSAES_OAEP, oids.ID_MGF1, *_CIPHERS_BY_OID]
)
_CIPHER_OID_TLVS = {cipher: der.oid(dotted) for cipher, dotted in CIPHER_OIDS.items()}

# The one text (and log detail) of every decryption failure: which step failed is not told.
DECRYPTION_FAILED = "the request cannot be decrypted"


@dataclass(frozen=True)
class Decrypted:
    plaintext: bytes
    cipher: ContentCipher


@dataclass(frozen=True)
class RecipientKey:
    """Our decryption identity: the certificate requests are encrypted to, and its key."""

    issuer_and_serial: bytes  # DER IssuerAndSerialNumber of the certificate
    subject_key_identifier: bytes | None
    key: PrivateKey

    @classmethod
    def from_cert(cls, cert: x509.Certificate, key: PrivateKey) -> RecipientKey:
        try:
            ski: bytes | None = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        except x509.ExtensionNotFound:
            ski = None
        return cls(issuer_and_serial(cert.public_bytes(serialization.Encoding.DER)), ski, key)


def _algorithm(cipher: ContentCipher, key: bytes) -> CipherAlgorithm:
    if cipher is ContentCipher.DES:
        # Single DES is 3DES with three equal keys; cryptography has no DES class of its own.
        return TripleDES(key * 3)
    if cipher is ContentCipher.DES3:
        return TripleDES(key)
    return algorithms.AES(key)


def _block_bytes(cipher: ContentCipher) -> int:
    return 8 if cipher in (ContentCipher.DES, ContentCipher.DES3) else 16


def _matches(rid: TLV, recipient: RecipientKey) -> bool:
    if rid.is_universal(SEQUENCE):
        return encode_tlv(der.TAG_SEQUENCE, rid.content) == recipient.issuer_and_serial
    # subjectKeyIdentifier [0] IMPLICIT OCTET STRING
    return rid.is_context(0) and rid.content == recipient.subject_key_identifier


def _algorithm_oid(tlv: TLV) -> tuple[str, list[TLV]]:
    """An AlgorithmIdentifier's OID and its parameter TLVs."""
    parts = children(tlv.content)
    return oids.dotted(parts[0].content, _KNOWN_OIDS), parts[1:]


def _oaep_transport(params: list[TLV]) -> KeyTransport:
    # RSAES-OAEP-params (RFC 8017 A.2.1): [0] hash, [1] MGF1 with its hash, [2] pSource; SHA-1 by default.
    hash_oid = mgf_oid = oids.ID_SHA1
    if params and params[0].tag_number == SEQUENCE:
        for item in children(params[0].content):
            inner = children(item.content)
            if item.tag_number == 0:
                hash_oid = _algorithm_oid(inner[0])[0]
            elif item.tag_number == 1:
                mgf, mgf_params = _algorithm_oid(inner[0])
                if mgf != oids.ID_MGF1:
                    raise BadAlg("unsupported OAEP mask generation function")
                mgf_oid = _algorithm_oid(mgf_params[0])[0] if mgf_params else oids.ID_SHA1
            elif item.tag_number == 2:
                raise BadAlg("OAEP labels are not supported")
    if hash_oid not in _OAEP_HASHES or mgf_oid not in _OAEP_HASHES:
        raise BadAlg("unsupported OAEP hash")
    return KeyTransport(_OAEP_HASHES[hash_oid], _OAEP_HASHES[mgf_oid])


def _key_transport(alg: TLV) -> KeyTransport:
    """What a KeyTransRecipientInfo's keyEncryptionAlgorithm names (RFC 5652 section 6.2.1)."""
    alg_oid, params = _algorithm_oid(alg)
    if alg_oid == oids.ID_RSA_ENCRYPTION:
        return KeyTransport()
    if alg_oid == oids.ID_RSAES_OAEP:
        return _oaep_transport(params)
    raise BadAlg("unsupported key transport algorithm", f"key transport {alg_oid}")


def _expect_octets(tlv: TLV) -> bytes:
    if not tlv.is_universal(OCTET_STRING):
        raise BERError("encryptedKey is not an OCTET STRING")
    return octet_string_value(tlv)


def _find_recipient(infos: list[TLV], recipients: Sequence[RecipientKey]) -> tuple[list[TLV], RecipientKey] | None:
    """The KeyTransRecipientInfo (RFC 5652 section 6.2.1) that names one of ``recipients``
    (the first of them that one names), with that recipient."""
    for recipient in recipients:
        for ri in infos:
            fields = children(ri.content)
            if len(fields) == 4 and _matches(fields[1], recipient):
                return fields, recipient
    return None


def decrypt_envelope(
    content: bytes,
    recipient: RecipientKey | Sequence[RecipientKey],
    *,
    allow_des: bool,
    stand_in_secret: bytes,
) -> Decrypted:
    """Decrypt the EnvelopedData that a PKCSReq/RenewalReq carries (RFC 8894 section 3.2.2).

    ``recipient`` may list several encryption RA identities (the current one, then previous
    ones a client may still have cached from GetCACert): the one a RecipientInfo names
    decrypts, which one being public in the request. Structure and algorithms are checked
    before any private-key operation; after that, every failure is
    ``BadMessageCheck(DECRYPTION_FAILED)``, and so is an envelope that names none of them.
    ``stand_in_secret`` derives the stand-in key for a key that does not unwrap (module
    docstring).
    """
    recipients = [recipient] if isinstance(recipient, RecipientKey) else list(recipient)
    try:
        info = children(read_tlv(content).content)
        if len(info) != 2 or encode_tlv(der.TAG_OID, info[0].content) != oids.ENVELOPED_DATA:
            raise BadMessageCheck("the signed content is not an EnvelopedData")
        env = children(children(info[1].content)[0].content)
        # EnvelopedData: version, [0] originatorInfo (optional), recipientInfos, encryptedContentInfo.
        rest = [f for f in env[1:] if not f.is_context(0)]
        recipient_infos, eci = rest[0], rest[1]
        infos = [ri for ri in children(recipient_infos.content) if ri.is_universal(SEQUENCE)]
        found = _find_recipient(infos, recipients)
        if found is None:
            # As undecryptable as any other: the operator's log says why.
            raise BadMessageCheck(DECRYPTION_FAILED, "the request is not encrypted to the encryption RA")
        ktri, chosen = found
        transport = _key_transport(ktri[2])
        encrypted_key = _expect_octets(ktri[3])
        parts = children(eci.content)
        if len(parts) < 3 or not parts[2].is_context(0):
            raise BadMessageCheck("the EnvelopedData has no encrypted content")
        alg_oid, alg_params = _algorithm_oid(parts[1])
        iv = alg_params[0].content if alg_params and alg_params[0].tag_number == OCTET_STRING else None
        # encryptedContent may be primitive or constructed BER (scepclient); join the segments.
        ciphertext = octet_string_value(parts[2])
    except (BadMessageCheck, BadAlg):
        raise
    except (IndexError, BERError) as exc:
        raise BadMessageCheck("the EnvelopedData is malformed") from exc
    cipher = _CIPHERS_BY_OID.get(alg_oid)
    if cipher is None:
        raise BadAlg("unsupported content-encryption algorithm", f"cipher {alg_oid}")
    if cipher is ContentCipher.DES and not allow_des:
        raise BadAlg("single DES is disabled on this server")
    block = _block_bytes(cipher)
    if iv is None or len(iv) != block or not ciphertext or len(ciphertext) % block:
        raise BadMessageCheck(DECRYPTION_FAILED)
    key = unwrap_key(encrypted_key, transport, chosen.key, _KEY_BYTES[cipher], stand_in_secret)
    decryptor = Cipher(_algorithm(cipher, key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = sym_padding.PKCS7(block * 8).unpadder()
    try:
        plaintext = unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise BadMessageCheck(DECRYPTION_FAILED) from None
    return Decrypted(plaintext=plaintext, cipher=cipher)


def encrypt_envelope(
    plaintext: bytes, recipient_issuer_and_serial: bytes, recipient_key: rsa.RSAPublicKey, cipher: ContentCipher
) -> bytes:
    """EnvelopedData for the requester (RFC 8894 section 3.3.2.1): its cipher, RSA PKCS#1 v1.5 transport.

    ``recipient_issuer_and_serial`` is the DER IssuerAndSerialNumber of the requester's signer
    certificate (``scep_ca.protocol.signing.issuer_and_serial``).
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
        der.seq(_CIPHER_OID_TLVS[cipher], der.octet_string(iv)),
        der.implicit_primitive(0, ciphertext),
    )
    enveloped = der.seq(der.integer(0), der.set_of(ktri), encrypted_content_info)
    return der.seq(oids.ENVELOPED_DATA, der.explicit(0, enveloped))
