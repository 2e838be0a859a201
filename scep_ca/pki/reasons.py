"""CRL reason codes (RFC 5280 §5.3.1): names, codes, and parsing operator input.

The store keeps the RFC 5280 ASN.1 name (``keyCompromise``); the CRL carries the
ENUMERATED code; OCSP (RFC 6960 §4.2.1, ``RevokedInfo.revocationReason``) carries the
same code through cryptography's ``ReasonFlags``, whose values are those same names.
"""

from __future__ import annotations

import enum
from types import MappingProxyType

from cryptography import x509


class ReasonError(ValueError):
    """The text is not a revocation reason an operator may use."""


class Reason(enum.IntEnum):
    """CRLReason ::= ENUMERATED (RFC 5280 §5.3.1). Value 7 is not used."""

    UNSPECIFIED = 0
    KEY_COMPROMISE = 1
    CA_COMPROMISE = 2
    AFFILIATION_CHANGED = 3
    SUPERSEDED = 4
    CESSATION_OF_OPERATION = 5
    CERTIFICATE_HOLD = 6
    REMOVE_FROM_CRL = 8
    PRIVILEGE_WITHDRAWN = 9
    AA_COMPROMISE = 10

    @property
    def rfc_name(self) -> str:
        """The ASN.1 identifier from RFC 5280 (``keyCompromise``), as stored."""
        return _NAMES[self]

    @property
    def flag(self) -> x509.ReasonFlags:
        return x509.ReasonFlags(self.rfc_name)


_NAMES: MappingProxyType[Reason, str] = MappingProxyType(
    {
        Reason.UNSPECIFIED: "unspecified",
        Reason.KEY_COMPROMISE: "keyCompromise",
        Reason.CA_COMPROMISE: "cACompromise",
        Reason.AFFILIATION_CHANGED: "affiliationChanged",
        Reason.SUPERSEDED: "superseded",
        Reason.CESSATION_OF_OPERATION: "cessationOfOperation",
        Reason.CERTIFICATE_HOLD: "certificateHold",
        Reason.REMOVE_FROM_CRL: "removeFromCRL",
        Reason.PRIVILEGE_WITHDRAWN: "privilegeWithdrawn",
        Reason.AA_COMPROMISE: "aACompromise",
    }
)

# Lookup key: the name lowercased with separators removed, so that ``keyCompromise``,
# ``key-compromise``, ``key_compromise`` and ``KEYCOMPROMISE`` all meet.
_BY_KEY: MappingProxyType[str, Reason] = MappingProxyType({name.lower(): reason for reason, name in _NAMES.items()})

# removeFromCRL only exists in delta CRLs (RFC 5280 §5.3.1), which we do not issue;
# certificateHold would need a release path, which this CA does not have: a "hold"
# would silently be permanent. Neither is accepted from an operator.
_NOT_FOR_OPERATORS = frozenset({Reason.REMOVE_FROM_CRL, Reason.CERTIFICATE_HOLD})


def _key(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch not in "-_ ")


def parse_reason(text: str) -> Reason:
    """Operator input (name in any case, with or without ``-``/``_``, or the numeric code)."""
    stripped = text.strip()
    if stripped.isdigit():
        try:
            reason = Reason(int(stripped))
        except ValueError:
            raise ReasonError(f"unknown reason code {stripped}") from None
    else:
        found = _BY_KEY.get(_key(stripped))
        if found is None:
            raise ReasonError(f"unknown reason {text!r}; use one of: {', '.join(operator_reason_names())}")
        reason = found
    if reason in _NOT_FOR_OPERATORS:
        raise ReasonError(f"reason {reason.rfc_name} is not supported by this CA")
    return reason


def operator_reason_names() -> list[str]:
    """The reasons ``cert revoke --reason`` accepts, in code order."""
    return [r.rfc_name for r in Reason if r not in _NOT_FOR_OPERATORS]


def from_stored(name: str | None) -> Reason | None:
    """The reason of a stored record; None when absent or not a name we know.

    Lenient on purpose: a record written by an older or foreign tool must not stop
    the CRL or an OCSP answer from being produced (the entry is then listed without
    a reason, which RFC 5280 §5.3.1 equates with ``unspecified``).
    """
    if name is None:
        return None
    return _BY_KEY.get(_key(name))
