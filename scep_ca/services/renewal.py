"""A renewal renews one identity: the subject and SANs of the certificate it replaces.

RFC 8894 section 3.3.1.2 has a RenewalReq signed by the certificate being renewed; what the
signature proves is possession of that certificate's key, so the new certificate may carry
that certificate's identity and nothing else. The comparison is made on what the CA would
issue (``CheckedCsr.subject`` after the subject policy, ``CheckedCsr.sans`` after the SAN
policy), not on the CSR's own text: a client that writes the subject's RDNs in the other
order still renews the same, normalised subject.
"""

from __future__ import annotations

from cryptography import x509

from scep_ca.protocol.csr import CheckedCsr


def _sans(cert: x509.Certificate) -> frozenset[x509.GeneralName]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return frozenset()
    return frozenset(ext.value)


def identity_mismatch(renewed: x509.Certificate, checked: CheckedCsr) -> str | None:
    """Why the certificate ``checked`` would become is not ``renewed``'s identity, or None.

    The subject must be the same DER (every RDN, in the same order, with the same string
    types), and the set of SANs the same.
    """
    if checked.subject.public_bytes() != renewed.subject.public_bytes():
        return f"subject {checked.subject.rfc4514_string()!r} is not {renewed.subject.rfc4514_string()!r}"
    if frozenset(checked.sans) != _sans(renewed):
        return "subjectAltName differs from the renewed certificate's"
    return None
