"""GetCert's request (RFC 8894 section 3.3.4): which certificate, by issuer and serial number.

The decrypted content of a GetCert pkiMessage is an IssuerAndSerialNumber (RFC 5652 section
10.2.4). The issuer is kept as the Name's content octets: it is compared with the CA's subject
octet for octet, as RFC 5280 section 7.1 compares names when chaining.
"""

from __future__ import annotations

from dataclasses import dataclass

from scep_ca.asn1.ber import BERError, children, read_tlv, subject_der
from scep_ca.protocol.errors import BadRequest


@dataclass(frozen=True)
class CertId:
    """A certificate named by its issuer and serial number."""

    issuer: bytes  # the issuer Name's content octets
    serial: int

    @property
    def serial_hex(self) -> str:
        """The serial as the store keys it: lowercase hex without leading zeros."""
        return format(self.serial, "x")

    def issued_by(self, ca_subject: bytes) -> bool:
        """Whether the issuer is the CA whose subject Name content is ``ca_subject`` (``subject_octets``)."""
        return self.issuer == ca_subject


def read_get_cert(content: bytes) -> CertId:
    """The IssuerAndSerialNumber of a GetCert, or BadRequest when the content is not one."""
    try:
        issuer, serial = children(read_tlv(content).content)
    except (BERError, ValueError) as exc:
        raise BadRequest("GetCert carries no IssuerAndSerialNumber") from exc
    return CertId(issuer.content, int.from_bytes(serial.content, "big", signed=True))


def subject_octets(cert_der: bytes) -> bytes:
    """A certificate's subject Name content octets, as ``CertId.issued_by`` compares them."""
    return read_tlv(subject_der(cert_der)).content
