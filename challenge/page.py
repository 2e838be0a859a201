"""The NDES ``mscep_admin`` pages, rendered exactly as Windows NDES renders them.

MDM servers scrape these pages with parsers written against real NDES output, so
markup and wording follow NDES (as captured from Windows Server and kept in
public MDM test fixtures) character for character, including its quirks: the
meta tag claims UTF-8 while the body is UTF-16LE, ``<P>`` tags are left open, and
the no-permission sentence has two spaces before "Please". The parsers we know:

* ``(?i)The enrollment challenge password is: <B> (\\S*)`` (Fleet, Okta-style
  proxies): exactly one space inside each side of ``<B> ... </B>``.
* The text up to the last ``</B>`` on the page: the password is the last bold
  element, so nothing bold may follow it.
* The first run of 16 hex digits (Intune connector scripts): the thumbprint stays
  in space-separated groups of 8 so it never forms such a run.

Only fixed text, hex digits and integers go into the templates; values are still
HTML-escaped so that a future caller cannot inject markup.
"""

from __future__ import annotations

import html
import re

TITLE = "Network Device Enrollment Service"
CACHE_FULL_TEXT = "The password cache is full."
NO_PERMISSION_TEXT = (
    "You do not have sufficient permission to enroll with SCEP.  Please contact your system administrator."
)
UTF16_BOM = b"\xff\xfe"

_HEAD = (
    '<HTML><Head><Meta HTTP-Equiv="Content-Type" Content="text/html; charset=UTF-8">'
    f"<Title>{TITLE}</Title></Head>"
    '<Body BgColor=#FFFFFF><Font ID=locPageFont Face="Arial">'
    "<Table Border=0 CellSpacing=0 CellPadding=4 Width=100% BgColor=#008080><TR><TD>"
    '<Font ID=locPageTitleFont Face="Arial" Size=-1 Color=#FFFFFF>'
    f"<LocID ID=locMSCertSrv>{TITLE}</LocID></Font></TD></TR></Table>"
    "<P ID=locPageTitle> Network Device Enrollment Service allows you to obtain certificates for routers"
    " or other network devices using the Simple Certificate Enrollment Protocol (SCEP). </P>"
)
_FOOT = (
    " <P ID=locPageDesc> For more information see "
    " <A HREF=http://go.microsoft.com/fwlink/?LinkId=67852>Using Network Device Enrollment Service </A>."
    " </P></Font></Body></HTML>"
)

_MD5_HEX = re.compile(r"[0-9A-Fa-f]{32}")


def format_thumbprint(md5_hex: str) -> str:
    """NDES's thumbprint form: upper-case MD5 hex in four space-separated groups of eight."""
    if not _MD5_HEX.fullmatch(md5_hex):
        raise ValueError("expected 32 hex digits (an MD5 digest)")
    upper = md5_hex.upper()
    return " ".join(upper[i : i + 8] for i in range(0, 32, 8))


def render_challenge(thumbprint: str, challenge: str, validity_minutes: int) -> str:
    """The page that hands out a challenge; ``thumbprint`` as from ``format_thumbprint``."""
    return (
        _HEAD + "<P> To complete certificate enrollment for your network device you will need the following"
        " information: "
        f"<P> The thumbprint (hash value) for the CA certificate is: <B> {html.escape(thumbprint)} </B> "
        f"<P> The enrollment challenge password is: <B> {html.escape(challenge)} </B> "
        f"<P> This password can be used only once and will expire within {int(validity_minutes)} minutes. "
        "<P> Each enrollment requires a new challenge password. You can refresh this web page to obtain"
        " a new challenge password. </P>" + _FOOT
    )


def render_cache_full(validity_minutes: int, max_unused: int) -> str:
    """NDES's answer when ``max_unused`` unused challenges exist already (served with 200)."""
    minutes = int(validity_minutes)
    return (
        _HEAD + f"<P> {CACHE_FULL_TEXT} "
        "<P> Network Device Enrollment Service stores unused password for later use."
        f" By default, passwords are stored for {minutes} minutes."
        "<P>Use one of the existing passwords. If you cannot use an existing password: <UL>"
        " <LI> Wait until one or more existing passwords expire (by default passwords expire"
        f" {minutes} minutes after they are created). </LI>"
        " <LI> Restart Internet Information Services (IIS). </LI>"
        f" <LI> Configure the service to cache more than {int(max_unused)} passwords. </LI> </UL> </P>" + _FOOT
    )


def render_no_permission() -> str:
    """NDES's answer to an authenticated user without enrollment rights (served with 200)."""
    return _HEAD + f"<P> {NO_PERMISSION_TEXT} </P>" + _FOOT


def encode_page(page: str, bom: bool = False) -> bytes:
    """UTF-16LE, as NDES sends it; without a byte-order mark unless ``bom``."""
    body = page.encode("utf-16-le")
    return UTF16_BOM + body if bom else body
