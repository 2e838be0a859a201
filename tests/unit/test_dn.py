"""Subject templates: RFC 4514 and slash form, MobileIron variables, exact matching in either RDN order."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from scep_ca.protocol.client import build_csr
from scep_ca.protocol.csr import CsrPolicy, check_csr
from scep_ca.protocol.dn import DNError, SubjectMismatch, is_variable, match_subject, ordered_subject, parse_dn
from scep_ca.protocol.errors import BadRequest


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


TEMPLATE = "CN=$USERID$,OU=MDM,O=scep-client,C=US"


def _rdns(name: x509.Name) -> list[str]:
    """The RDNs in DER order, as text."""
    return [rdn.rfc4514_string() for rdn in name.rdns]


def test_template_string_and_certmonger_n_run_opposite_ways() -> None:
    """Why both orders occur: RFC 4514 lists C last but encodes it first; ``-N`` encodes as written."""
    assert _rdns(parse_dn(TEMPLATE)) == ["C=US", "O=scep-client", "OU=MDM", "CN=$USERID$"]
    certmonger_n = x509.Name([x509.RelativeDistinguishedName([a]) for a in reversed(list(parse_dn(TEMPLATE)))])
    assert _rdns(certmonger_n)[0] == "CN=$USERID$"


@pytest.mark.parametrize(
    ("der_order", "accepted"),
    [
        (["C=US", "O=scep-client", "OU=MDM", "CN=dave"], True),  # the template's DER order
        (["CN=dave", "OU=MDM", "O=scep-client", "C=US"], True),  # exactly reversed (certmonger -N)
        (["O=scep-client", "C=US", "OU=MDM", "CN=dave"], False),  # any other permutation
        (["CN=dave", "C=US", "O=scep-client", "OU=MDM"], False),
        (["C=US", "O=scep-client", "CN=dave", "OU=MDM"], False),
        (["CN=dave", "OU=MDM", "O=other", "C=US"], False),  # reversed, one fixed RDN differs
        (["CN= ", "OU=MDM", "O=scep-client", "C=US"], False),  # reversed, the variable RDN empty
        (["CN=dave", "OU=MDM", "O=scep-client"], False),  # reversed, one RDN short
    ],
)
def test_ordered_subject_accepts_template_order_or_its_exact_reverse(der_order: list[str], accepted: bool) -> None:
    template = parse_dn(TEMPLATE)
    oids = {"C": x509.NameOID.COUNTRY_NAME, "O": x509.NameOID.ORGANIZATION_NAME}
    oids |= {"OU": x509.NameOID.ORGANIZATIONAL_UNIT_NAME, "CN": x509.NameOID.COMMON_NAME}
    attrs = [r.split("=", 1) for r in der_order]
    subject = x509.Name([x509.RelativeDistinguishedName([x509.NameAttribute(oids[k], v)]) for k, v in attrs])
    if not accepted:
        with pytest.raises(SubjectMismatch):
            ordered_subject(template, subject)
        return
    assert _rdns(ordered_subject(template, subject)) == ["C=US", "O=scep-client", "OU=MDM", "CN=dave"]


def test_mismatch_reason_is_the_template_order_one() -> None:
    subject = x509.Name.from_rfc4514_string("C=US,O=scep-client,OU=MDM,CN=dave")  # CN first in DER, O swapped
    swapped = x509.Name([subject.rdns[0], subject.rdns[2], subject.rdns[1], subject.rdns[3]])
    with pytest.raises(SubjectMismatch, match="attribute types differ"):
        ordered_subject(parse_dn(TEMPLATE), swapped)


def test_multi_valued_rdn_reversal_keeps_the_rdn_whole() -> None:
    template = parse_dn("CN=$USERID$+UID=$UID$,O=Example")
    subject = x509.Name(
        [
            x509.RelativeDistinguishedName(
                [x509.NameAttribute(x509.NameOID.USER_ID, "7"), x509.NameAttribute(x509.NameOID.COMMON_NAME, "ann")]
            ),
            x509.RelativeDistinguishedName([x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "Example")]),
        ]
    )
    ordered = ordered_subject(template, subject)
    assert ordered.rdns == [subject.rdns[1], subject.rdns[0]]


@pytest.fixture(scope="module")
def device_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_check_csr_gives_the_template_order_either_way(device_key: rsa.RSAPrivateKey) -> None:
    """CheckedCsr.subject (what is issued, and what renewals compare) is byte-identical for both orders."""
    policy = CsrPolicy(key_sizes=(2048,), subject_template=parse_dn(TEMPLATE))
    forward = parse_dn("CN=dave,OU=MDM,O=scep-client,C=US")
    backward = x509.Name(list(reversed(forward.rdns)))
    assert forward.public_bytes() != backward.public_bytes()
    subjects = [check_csr(build_csr(device_key, name, "x"), policy).subject for name in (forward, backward)]
    assert subjects[0].public_bytes() == subjects[1].public_bytes()
    assert subjects[0].rfc4514_string() == "CN=dave,OU=MDM,O=scep-client,C=US"


def test_check_csr_refuses_another_permutation(device_key: rsa.RSAPrivateKey) -> None:
    policy = CsrPolicy(key_sizes=(2048,), subject_template=parse_dn(TEMPLATE))
    with pytest.raises(BadRequest) as info:
        check_csr(build_csr(device_key, parse_dn("CN=dave,O=scep-client,OU=MDM,C=US"), "x"), policy)
    assert info.value.detail == "subject attribute types differ from the template"
