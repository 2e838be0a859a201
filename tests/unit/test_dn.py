"""Subject templates: RFC 4514 and slash form, MobileIron variables, exact matching."""

from __future__ import annotations

import pytest

from scep_ca.dn import DNError, is_variable, match_subject, parse_dn


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("CN=$USERID$,O=Example,C=US", "CN=$USERID$,O=Example,C=US"),
        ("/C=US/O=Example/CN=$USERID$", "CN=$USERID$,O=Example,C=US"),
        ("cn=foo, o=Bar", "CN=foo,O=Bar"),
        ("CN=a\\, b,O=x", "CN=a\\, b,O=x"),
    ],
)
def test_parse_forms(text: str, expected: str) -> None:
    assert parse_dn(text).rfc4514_string() == expected


@pytest.mark.parametrize("text", ["", "   ", "CN", "=x", "/", "CN=a,,O=b"])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(DNError):
        parse_dn(text)


def test_variables() -> None:
    assert is_variable("$USERID$") and is_variable("$DEVICE_UUID$")
    assert not is_variable("USERID") and not is_variable("$USER ID$") and not is_variable("$$")


@pytest.mark.parametrize(
    ("template", "subject", "ok"),
    [
        ("CN=$USERID$,O=Example", "CN=bob,O=Example", True),
        ("CN=$USERID$,O=Example", "CN=bob,O=Example ", True),
        ("CN=$USERID$,O=Example", "CN=bob,O=Other", False),
        ("CN=$USERID$,O=Example", "O=Example,CN=bob", False),
        ("CN=$USERID$,O=Example", "CN=bob", False),
        ("CN=$USERID$,O=Example", "CN=bob,OU=x,O=Example", False),
        ("CN=$EMAIL$,OU=$DEVICE_UUID$,O=Example", "CN=a@b.c,OU=1234,O=Example", True),
        ("CN=fixed", "CN=fixed", True),
        ("CN=fixed", "CN=Fixed", False),
    ],
)
def test_match_subject(template: str, subject: str, ok: bool) -> None:
    assert (match_subject(parse_dn(template), parse_dn(subject)) is None) is ok
