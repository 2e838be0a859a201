"""Distinguished names: parsing operator input and matching CSR subjects to templates.

Templates are RFC 4514 strings (most specific RDN first, as ``Name.rfc4514_string()``
and ``openssl -nameopt RFC2253`` print them) or OpenSSL's slash form
(``/C=US/O=Example/CN=$USERID$``, least specific first). An attribute value that is a
MobileIron variable (``$USERID$``, ``$EMAIL$``, any ``$NAME$``) matches any non-empty
value; every other attribute must match exactly.

Clients disagree on which way a subject string runs (RFC 4514 strings are most specific
first, the reverse of the DER; OpenSSL's slash form and certmonger's ``getcert request -N``
are written in DER order), so a CSR whose RDNs follow the template in DER order or in
exactly the reverse order is accepted, and the certificate gets the template's order.
"""

from __future__ import annotations

import re

from cryptography import x509
from cryptography.x509.oid import NameOID

_OVERRIDES = {
    "E": NameOID.EMAIL_ADDRESS,
    "EMAIL": NameOID.EMAIL_ADDRESS,
    "EMAILADDRESS": NameOID.EMAIL_ADDRESS,
    "emailAddress": NameOID.EMAIL_ADDRESS,
    "SERIALNUMBER": NameOID.SERIAL_NUMBER,
    "serialNumber": NameOID.SERIAL_NUMBER,
    "UID": NameOID.USER_ID,
    "T": NameOID.TITLE,
    "TITLE": NameOID.TITLE,
    "GN": NameOID.GIVEN_NAME,
    "SN": NameOID.SURNAME,
}

_VARIABLE = re.compile(r"^\$[A-Za-z0-9_]+\$$")
_SLASH_SPLIT = re.compile(r"(?<!\\)/")


class DNError(ValueError):
    """The text is not a distinguished name we can parse."""


_KNOWN_UPPER = {"CN", "C", "L", "ST", "O", "OU", "STREET", "DC", "UID", "E", "EMAIL", "SN", "GN", "T"}
_SEPARATOR = re.compile(r"(?<!\\)([,+])")


def _canonical_rfc4514(text: str) -> str:
    """Tidy what operators type ("cn=foo, o=Bar") into what the strict parser reads."""
    out: list[str] = []
    for piece in _SEPARATOR.split(text):
        if piece in {",", "+"}:
            out.append(piece)
            continue
        key, eq, value = piece.partition("=")
        if not eq:
            raise DNError(f"missing '=' in {piece.strip()!r}")
        key = key.strip()
        # from_rfc4514_string matches attribute keywords case-sensitively.
        if key.upper() in _KNOWN_UPPER:
            key = key.upper()
        out.append(f"{key}={value.strip()}")
    return "".join(out)


def parse_dn(text: str) -> x509.Name:
    """Parse RFC 4514 or OpenSSL slash form into an ``x509.Name``."""
    text = text.strip()
    if not text:
        raise DNError("empty distinguished name")
    try:
        if text.startswith("/"):
            pieces = [p for p in _SLASH_SPLIT.split(text[1:]) if p]
            # Slash form lists the least specific RDN first; RFC 4514 the most specific.
            text = ",".join(reversed([p.replace("\\/", "/").replace(",", "\\,") for p in pieces]))
        name = x509.Name.from_rfc4514_string(_canonical_rfc4514(text), attr_name_overrides=_OVERRIDES)
    except ValueError as exc:
        raise DNError(f"not a distinguished name: {exc}") from exc
    if not list(name):
        raise DNError("empty distinguished name")
    for attr in name:
        if not isinstance(attr.value, str) or attr.value == "":
            raise DNError(f"empty value for {attr.oid.dotted_string}")
    return name


def is_variable(value: str) -> bool:
    return bool(_VARIABLE.match(value))


def _norm(value: str) -> str:
    # Normalise as RFC 4518 would for the common cases: surrounding and repeated spaces.
    return " ".join(value.split())


def match_subject(template: x509.Name, subject: x509.Name) -> str | None:
    """Compare a CSR subject with a template; None when it matches, else the reason.

    String types (PrintableString vs UTF8String) are ignored: the check is on
    attribute types and values, order preserved.
    """
    t_rdns = list(template.rdns)
    s_rdns = list(subject.rdns)
    if len(t_rdns) != len(s_rdns):
        return f"subject has {len(s_rdns)} RDNs, template {len(t_rdns)}"
    for t_rdn, s_rdn in zip(t_rdns, s_rdns, strict=True):
        t_attrs = sorted(t_rdn, key=lambda a: a.oid.dotted_string)
        s_attrs = sorted(s_rdn, key=lambda a: a.oid.dotted_string)
        if [a.oid for a in t_attrs] != [a.oid for a in s_attrs]:
            return "subject attribute types differ from the template"
        for t_attr, s_attr in zip(t_attrs, s_attrs, strict=True):
            t_val, s_val = str(t_attr.value), str(s_attr.value)
            if is_variable(t_val):
                if not _norm(s_val):
                    return f"empty value for {t_attr.oid._name}"
            elif _norm(t_val) != _norm(s_val):
                return f"{t_attr.oid._name} does not match the template"
    return None


class SubjectMismatch(ValueError):
    """The CSR subject matches the template in neither order; the message is the reason."""


def ordered_subject(template: x509.Name, subject: x509.Name) -> x509.Name:
    """The CSR subject in the template's RDN order, when it matches in DER order or exactly reversed.

    Any other permutation is refused. A template that reads the same both ways (one RDN)
    is compared once; the reason given for a mismatch is the one for the template's order.
    """
    reason = match_subject(template, subject)
    if reason is None:
        return subject
    reversed_subject = x509.Name(list(reversed(subject.rdns)))
    if match_subject(template, reversed_subject) is None:
        return reversed_subject
    raise SubjectMismatch(reason)


def rebuild_subject(subject: x509.Name) -> x509.Name:
    """The checked subject with every value as UTF8String (C stays PrintableString)."""
    rdns = []
    for rdn in subject.rdns:
        attrs = [x509.NameAttribute(a.oid, _norm(str(a.value))) for a in rdn]
        rdns.append(x509.RelativeDistinguishedName(attrs))
    return x509.Name(rdns)
