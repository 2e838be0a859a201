"""Building CertRep pkiMessages and certs-only bags (RFC 8894 sections 3.3 and 3.4).

Everything emitted is DER with definite lengths (asn1crypto-based clients such as
pyscep and scepreq fail on BER). The CertRep is signed by exactly the certificate
GetCACert presents for signing, includes that certificate, uses the request's digest
algorithm, and has one signer (Apple rejects more). SCEP attribute values are
PrintableStrings; recipientNonce echoes the request's senderNonce, senderNonce is
fresh, transactionID is the request's.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives.asymmetric import rsa

from scep_ca.asn1 import attribute
from scep_ca.ber import encode_tlv, read_tlv
from scep_ca.enums import DigestAlg, FailInfo, MessageType, PKIStatus
from scep_ca.signing import sign_message

NONCE_BYTES = 16


@dataclass(frozen=True)
class Signer:
    """The identity that signs CertReps: the certificate from GetCACert and its key."""

    cert: asn1_x509.Certificate
    key: rsa.RSAPrivateKey


@dataclass(frozen=True)
class ReplyTo:
    """What a CertRep copies from the request it answers."""

    transaction_id: str
    sender_nonce: bytes
    digest: DigestAlg


def certs_only(certs_der: list[bytes]) -> bytes:
    """A degenerate certs-only SignedData (RFC 8894 section 3.4) with the certificates in this order.

    Apple takes the first certificate of the reply as the issued one, and asn1crypto
    sorts a SET OF when it re-encodes one, so the [0] certificates field is written
    here by hand, in the caller's order.
    """
    template = cms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [],
            "encap_content_info": {"content_type": "data"},
            "signer_infos": [],
        }
    )
    fields = template.contents
    # fields = version, digestAlgorithms, encapContentInfo, signerInfos (in that order).
    encap_end = read_tlv(fields, read_tlv(fields, read_tlv(fields, 0).end).end).end
    certs_field = encode_tlv(0xA0, b"".join(certs_der))
    body = fields[:encap_end] + certs_field + fields[encap_end:]
    signed_data = encode_tlv(0x30, body)
    oid = cms.ContentType("signed_data").dump()
    return encode_tlv(0x30, oid + encode_tlv(0xA0, signed_data))


def build_cert_rep(
    signer: Signer,
    reply_to: ReplyTo,
    status: PKIStatus,
    *,
    fail_info: FailInfo | None = None,
    fail_text: str | None = None,
    enveloped: bytes | None = None,
    now: dt.datetime | None = None,
) -> bytes:
    """A signed CertRep (RFC 8894 section 3.3.2). ``enveloped`` is the EnvelopedData on SUCCESS."""
    if (status is PKIStatus.FAILURE) != (fail_info is not None):
        raise ValueError("failInfo goes with pkiStatus FAILURE and only with it")
    if (status is PKIStatus.SUCCESS) != (enveloped is not None):
        raise ValueError("a SUCCESS CertRep carries the enveloped certificate, others nothing")
    now = now or dt.datetime.now(dt.UTC)
    digest = reply_to.digest
    attrs = [
        attribute("signing_time", cms.Time(name="utc_time", value=core.UTCTime(now.replace(microsecond=0)))),
        attribute("message_type", str(int(MessageType.CERT_REP))),
        attribute("pki_status", str(int(status))),
        attribute("transaction_id", reply_to.transaction_id),
        attribute("sender_nonce", os.urandom(NONCE_BYTES)),
        attribute("recipient_nonce", reply_to.sender_nonce),
    ]
    if fail_info is not None:
        attrs.append(attribute("fail_info", str(int(fail_info))))
        if fail_text:
            attrs.append(attribute("fail_info_text", fail_text[:200]))
    return sign_message(signer.cert, signer.key, digest, attrs, enveloped)
