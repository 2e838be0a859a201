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
import re
from dataclasses import dataclass

from config.clock import utc_now
from scep_ca.asn1 import der, oids
from scep_ca.protocol.enums import DigestAlg, FailInfo, MessageType, PKIStatus
from scep_ca.protocol.signing import SignerIdentity, attribute, sign_message

NONCE_BYTES = 16
MAX_FAIL_TEXT = 200


@dataclass(frozen=True)
class ReplyTo:
    """What a CertRep copies from the request it answers."""

    transaction_id: str
    sender_nonce: bytes
    digest: DigestAlg


def certs_only(certs_der: list[bytes]) -> bytes:
    """A degenerate certs-only SignedData (RFC 8894 section 3.4) with the certificates in this order.

    Apple takes the first certificate of the reply as the issued one, so the [0]
    certificates field keeps the caller's order rather than DER's SET OF sorting.
    """
    signed_data = der.seq(
        der.integer(1),
        der.set_of(),
        der.seq(oids.DATA),
        der.explicit(0, b"".join(certs_der)),
        der.set_of(),
    )
    return der.seq(oids.SIGNED_DATA, der.explicit(0, signed_data))


def crls_only(crl_der: bytes) -> bytes:
    """A degenerate SignedData carrying one CRL in ``crls`` (RFC 8894 section 3.3.2, GetCRL reply)."""
    signed_data = der.seq(
        der.integer(1),
        der.set_of(),
        der.seq(oids.DATA),
        der.explicit(1, crl_der),
        der.set_of(),
    )
    return der.seq(oids.SIGNED_DATA, der.explicit(0, signed_data))


_PRINTABLE = re.compile(r"[A-Za-z0-9 '()+,\-./:=?]*")


def _transaction_id_value(transaction_id: str) -> bytes:
    # PrintableString per RFC 8894 section 3.2.1.1 when the id fits its alphabet (X.680 41.4);
    # an id with other characters is echoed as a UTF8String rather than mis-tagged.
    if _PRINTABLE.fullmatch(transaction_id):
        return der.printable_string(transaction_id)
    return der.utf8_string(transaction_id)


# The attributes every CertRep of a given status carries unchanged, encoded once.
_CERT_REP_TYPE = attribute(oids.MESSAGE_TYPE, der.printable_string(str(int(MessageType.CERT_REP))))
_STATUS = {status: attribute(oids.PKI_STATUS, der.printable_string(str(int(status)))) for status in PKIStatus}


def build_cert_rep(
    signer: SignerIdentity,
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
    now = now or utc_now()
    attrs = [
        attribute(oids.SIGNING_TIME, der.utc_time(now)),
        _CERT_REP_TYPE,
        _STATUS[status],
        attribute(oids.TRANSACTION_ID, _transaction_id_value(reply_to.transaction_id)),
        attribute(oids.SENDER_NONCE, der.octet_string(os.urandom(NONCE_BYTES))),
        attribute(oids.RECIPIENT_NONCE, der.octet_string(reply_to.sender_nonce)),
    ]
    if fail_info is not None:
        attrs.append(attribute(oids.FAIL_INFO, der.printable_string(str(int(fail_info)))))
        if fail_text:
            attrs.append(attribute(oids.FAIL_INFO_TEXT, der.utf8_string(fail_text[:MAX_FAIL_TEXT])))
    # FAILURE and PENDING carry an empty eContent rather than none: OpenSSL's PKCS7_verify
    # (certmonger's scep-submit) treats absent content as detached and fails with "no content".
    return sign_message(signer, reply_to.digest, attrs, enveloped if enveloped is not None else b"")
