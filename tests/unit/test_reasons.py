"""Revocation reasons (scep_ca.pki.reasons, RFC 5280 §5.3.1)."""

from __future__ import annotations

import pytest
from cryptography import x509

from scep_ca.pki.reasons import Reason, ReasonError, from_stored, operator_reason_names, parse_reason


@pytest.mark.parametrize(
    "text", ["keyCompromise", "key-compromise", "keycompromise", "KEY_COMPROMISE", " Key Compromise ", "1"]
)
def test_key_compromise_spellings(text: str) -> None:
    assert parse_reason(text) is Reason.KEY_COMPROMISE


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("cACompromise", Reason.CA_COMPROMISE),
        ("ca-compromise", Reason.CA_COMPROMISE),
        ("cessation-of-operation", Reason.CESSATION_OF_OPERATION),
        ("superseded", Reason.SUPERSEDED),
        ("affiliationChanged", Reason.AFFILIATION_CHANGED),
        ("privilege-withdrawn", Reason.PRIVILEGE_WITHDRAWN),
        ("aa-compromise", Reason.AA_COMPROMISE),
        ("unspecified", Reason.UNSPECIFIED),
        ("0", Reason.UNSPECIFIED),
        ("10", Reason.AA_COMPROMISE),
    ],
)
def test_names_and_codes(text: str, reason: Reason) -> None:
    assert parse_reason(text) is reason


@pytest.mark.parametrize("text", ["removeFromCRL", "remove-from-crl", "8", "certificateHold", "6"])
def test_reasons_without_meaning_here_are_refused(text: str) -> None:
    with pytest.raises(ReasonError, match="not supported"):
        parse_reason(text)


@pytest.mark.parametrize("text", ["7", "11", "stolen", "", "key compromised"])
def test_unknown_reasons(text: str) -> None:
    with pytest.raises(ReasonError):
        parse_reason(text)


def test_codes_names_and_cryptography_flags_agree() -> None:
    # The wire codes are RFC 5280's; the names are what cryptography's ReasonFlags use.
    expected = {0, 1, 2, 3, 4, 5, 6, 8, 9, 10}
    assert {int(r) for r in Reason} == expected
    for reason in Reason:
        assert reason.flag == x509.ReasonFlags(reason.rfc_name)
    assert Reason.CESSATION_OF_OPERATION.rfc_name == "cessationOfOperation"
    assert Reason.CESSATION_OF_OPERATION.flag is x509.ReasonFlags.cessation_of_operation


def test_operator_names_exclude_hold_and_remove() -> None:
    names = operator_reason_names()
    assert "keyCompromise" in names and "cessationOfOperation" in names
    assert "certificateHold" not in names and "removeFromCRL" not in names


def test_from_stored_is_lenient() -> None:
    assert from_stored("cessationOfOperation") is Reason.CESSATION_OF_OPERATION
    assert from_stored("certificateHold") is Reason.CERTIFICATE_HOLD
    assert from_stored(None) is None
    assert from_stored("garbage") is None
