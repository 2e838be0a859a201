"""The NDES pages: wording, markup, encoding, and the parsers MDM servers use on them."""

from __future__ import annotations

import re

import pytest

from challenge import page

MD5 = "a656fa66ab12b433a2da5cf7cc153d9a"
CHALLENGE = "8CE317021F690069"

# The three ways MDM servers read the password off an NDES page.
FLEET_REGEX = re.compile(r"(?i)The enrollment challenge password is: <B> (\S*)")
HEX_RUN = re.compile(r"[0-9A-Fa-f]{16}")


def fleet_parser(html: str) -> str:
    match = FLEET_REGEX.search(html)
    assert match
    return match.group(1)


def last_bold_parser(html: str) -> str:
    """Text between the password label's <B> and the last </B> on the page."""
    start = html.index("The enrollment challenge password is: <B>") + len("The enrollment challenge password is: <B>")
    return html[start : html.rindex("</B>")].strip()


def hex_run_parser(html: str) -> str:
    match = HEX_RUN.search(html)
    assert match
    return match.group(0)


def test_thumbprint_format() -> None:
    assert page.format_thumbprint(MD5) == "A656FA66 AB12B433 A2DA5CF7 CC153D9A"
    assert page.format_thumbprint(MD5.upper()) == "A656FA66 AB12B433 A2DA5CF7 CC153D9A"


@pytest.mark.parametrize("bad", ["", "a656fa66", MD5 + "00", "g" * 32])
def test_thumbprint_rejects_non_md5(bad: str) -> None:
    with pytest.raises(ValueError):
        page.format_thumbprint(bad)


def test_challenge_page_wording_and_order() -> None:
    html = page.render_challenge(page.format_thumbprint(MD5), CHALLENGE, 60)
    lines = [
        "<Title>Network Device Enrollment Service</Title>",
        "The thumbprint (hash value) for the CA certificate is: <B> A656FA66 AB12B433 A2DA5CF7 CC153D9A </B>",
        f"The enrollment challenge password is: <B> {CHALLENGE} </B>",
        "This password can be used only once and will expire within 60 minutes.",
        "Each enrollment requires a new challenge password. You can refresh this web page to obtain a new"
        " challenge password.",
    ]
    positions = [html.index(line) for line in lines]
    assert positions == sorted(positions)
    assert html.startswith('<HTML><Head><Meta HTTP-Equiv="Content-Type" Content="text/html; charset=UTF-8">')
    assert html.endswith("</Font></Body></HTML>")
    assert html.count("<P>") >= 4


def test_validity_minutes_follow_config() -> None:
    html = page.render_challenge(page.format_thumbprint(MD5), CHALLENGE, 15)
    assert "will expire within 15 minutes." in html


@pytest.mark.parametrize("challenge", [CHALLENGE, "0123456789ABCDEF", "FFFFFFFFFFFFFFFF"])
def test_three_mdm_parsers_agree(challenge: str) -> None:
    html = page.render_challenge(page.format_thumbprint("ffffffff" * 4), challenge, 60)
    assert fleet_parser(html) == last_bold_parser(html) == hex_run_parser(html) == challenge


def test_longer_challenges_still_parse() -> None:
    challenge = "0123456789ABCDEF0123456789ABCDEF"
    html = page.render_challenge(page.format_thumbprint(MD5), challenge, 60)
    assert fleet_parser(html) == last_bold_parser(html) == challenge


def test_cache_full_page() -> None:
    html = page.render_cache_full(60, 5)
    assert "<P> The password cache is full. <P>" in html
    assert "Configure the service to cache more than 5 passwords." in html
    assert "<Title>Network Device Enrollment Service</Title>" in html
    assert not FLEET_REGEX.search(html)
    assert "by default passwords expire 30 minutes" in page.render_cache_full(30, 9)


def test_no_permission_page_has_two_spaces() -> None:
    html = page.render_no_permission()
    assert (
        "You do not have sufficient permission to enroll with SCEP.  Please contact your system administrator." in html
    )
    assert not FLEET_REGEX.search(html)


def test_encoding_utf16le_without_bom_by_default() -> None:
    html = page.render_challenge(page.format_thumbprint(MD5), CHALLENGE, 60)
    body = page.encode_page(html)
    assert body[:2] == b"<\x00"
    assert body.decode("utf-16-le") == html
    with_bom = page.encode_page(html, bom=True)
    assert with_bom[:2] == b"\xff\xfe"
    assert with_bom.decode("utf-16") == html


def test_values_are_escaped() -> None:
    html = page.render_challenge("<x>", "<script>", 60)
    assert "<script>" not in html and "&lt;script&gt;" in html
