"""Which OID stands for which SCEP digest and content cipher (RFC 8894 section 3.5.2, RFC 3370, RFC 3565)."""

from __future__ import annotations

from scep_ca.asn1 import der, oids
from scep_ca.protocol.enums import ContentCipher, DigestAlg

DIGEST_OIDS = {
    DigestAlg.SHA1: oids.ID_SHA1,
    DigestAlg.SHA256: oids.ID_SHA256,
    DigestAlg.SHA512: oids.ID_SHA512,
}
DIGEST_BY_OID = {dotted: digest for digest, dotted in DIGEST_OIDS.items()}
# The digestAlgorithm AlgorithmIdentifiers a SignedData carries (NULL parameters).
DIGEST_ALGORITHMS = {digest: der.algorithm(dotted) for digest, dotted in DIGEST_OIDS.items()}

CIPHER_OIDS = {
    ContentCipher.DES: oids.ID_DES_CBC,
    ContentCipher.DES3: oids.ID_DES_EDE3_CBC,
    ContentCipher.AES128: oids.ID_AES128_CBC,
    ContentCipher.AES192: oids.ID_AES192_CBC,
    ContentCipher.AES256: oids.ID_AES256_CBC,
}
