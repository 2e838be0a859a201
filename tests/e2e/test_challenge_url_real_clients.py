"""The Microsoft-style challenge URL end to end: real HTTP clients against a real ``scep-ca serve``.

curl's NTLM and Basic clients and a Python NTLM client (pyspnego on one keep-alive
``http.client`` connection) log in with an integration's username and password and get
NDES's ``mscep_admin`` page, UTF-16LE without a byte-order mark. Three parsers that MDM servers
use read the same challenge from it: Fleet's regex, "the token before the last ``</B>``", and
"the first run of 16 hex digits". The challenge enrolls once with micromdm's ``scepclient``,
never twice and never on another integration. Five unused challenges fill the cache (NDES's
``The password cache is full.`` page); once they expire they no longer enroll and the cache
has room again. Wrong credentials, NTLMv1 and another integration's password get 401,
another integration's full credentials get NDES's no-permission page, none of them creates a
challenge, and the configured number of failures locks the user out (429).

Expiry without waiting: the smallest validity the config accepts is one minute
(``challenge.validity_minutes``, an integer), and neither the service nor the store reads a
clock that a test could move from outside the process. So the test checks that the server
stored ``expires_at = created_at + 1 minute``, then moves those stored times 61 seconds into
the past (``ScepCaServer.backdate_challenges``), which is what the server would see 61 seconds
later; every decision is still the server's own.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.client
import re
import struct
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import spnego
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from challenge import ntlm
from tests.e2e.clients import CommandResult, openssl_verify, require_binary, run_command, run_scepclient

if TYPE_CHECKING:
    from tests.e2e.conftest import ScepCaServer, ScepCaServerFactory

CURL = "curl"

FLEET_REGEX = re.compile(r"(?i)The enrollment challenge password is: <B> (\S*)")
HEX_RUN = re.compile(r"[0-9A-Fa-f]{16}")
CACHE_FULL = "The password cache is full."
NO_PERMISSION = "You do not have sufficient permission to enroll with SCEP.  Please contact your system administrator."
CHALLENGE_REFUSED = "failInfo=BAD_REQUEST detail=the challenge password is invalid, expired or used"
SCEPCLIENT_BAD_REQUEST = "PKCSReq (19) request failed, failInfo: badRequest (2)"

# The settings of the second server: 1-minute challenges, NDES's default cache of 5, lockout
# after 3 failures.
SHORT = {"validity_minutes": 1, "max_unused": 5, "lockout_failures": 3, "lockout_seconds": 900}


# --------------------------------------------------------------------------------------------
# Reading the page
# --------------------------------------------------------------------------------------------


def decode_page(body: bytes) -> str:
    assert body[:2] == "<".encode("utf-16-le"), f"not UTF-16LE without a byte-order mark: {body[:8]!r}"
    return body.decode("utf-16-le")


def parse_three_ways(html: str) -> str:
    """The challenge as Fleet's regex, a last-``</B>`` parser and a 16-hex-digit parser read it."""
    fleet = FLEET_REGEX.search(html)
    assert fleet is not None, html
    last_bold = html[: html.rindex("</B>")].split()[-1]
    hex_run = HEX_RUN.search(html)
    assert hex_run is not None, html
    assert fleet.group(1) == last_bold == hex_run.group(0), (fleet.group(1), last_bold, hex_run.group(0))
    assert re.fullmatch(r"[0-9A-F]{16}", last_bold)
    return last_bold


def ndes_thumbprint(server: ScepCaServer) -> str:
    """NDES's CA thumbprint: MD5 of the CA certificate, upper-case hex, four groups of eight."""
    der = x509.load_pem_x509_certificate(server.ca_pem.read_bytes()).public_bytes(serialization.Encoding.DER)
    digest = hashlib.md5(der).hexdigest().upper()
    return " ".join(digest[i : i + 8] for i in range(0, 32, 8))


def check_challenge_page(server: ScepCaServer, html: str, minutes: int = 60) -> str:
    assert "<Title>Network Device Enrollment Service</Title>" in html
    assert f"The thumbprint (hash value) for the CA certificate is: <B> {ndes_thumbprint(server)} </B>" in html
    assert f"This password can be used only once and will expire within {minutes} minutes." in html
    return parse_three_ways(html)


# --------------------------------------------------------------------------------------------
# curl
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CurlResult:
    command: CommandResult
    status: int
    headers: str  # the last response's header block
    body: bytes

    @property
    def trace(self) -> str:
        """curl -v's trace (request and response headers, connection reuse)."""
        return self.command.stderr


def curl(url: str, user: str, password: str, auth: str, workdir: Path) -> CurlResult:
    """``curl --ntlm|--basic -u USER:PASS URL``, keeping the body's bytes and the last headers."""
    workdir.mkdir(parents=True, exist_ok=True)
    body, headers = workdir / "body", workdir / "headers"
    result = run_command(
        [
            require_binary(CURL),
            "-sS",
            "-v",
            f"--{auth}",
            "-u",
            f"{user}:{password}",
            "-D",
            str(headers),
            "-o",
            str(body),
            "-w",
            "%{http_code}",
            url,
        ],
        timeout=20,
    )
    assert result.ok, result.describe()
    blocks = [b for b in headers.read_text().replace("\r\n", "\n").split("\n\n") if b.strip()]
    return CurlResult(result, int(result.stdout), blocks[-1], body.read_bytes())


def header(block: str, name: str) -> list[str]:
    return [line.split(":", 1)[1].strip() for line in block.splitlines() if line.lower().startswith(name.lower() + ":")]


# --------------------------------------------------------------------------------------------
# A Python NTLM client on one keep-alive connection
# --------------------------------------------------------------------------------------------


class KeepAliveClient:
    """``http.client`` on one TCP connection; raises if the server closes it."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        self.path = parts.path
        self.hostname = parts.hostname
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        self.conn.connect()
        assert self.conn.sock is not None
        self.local_address = self.conn.sock.getsockname()

    def get(self, authorization: str | None = None) -> http.client.HTTPResponse:
        headers = {"Authorization": authorization} if authorization else {}
        self.conn.request("GET", self.path, headers=headers)
        resp = self.conn.getresponse()
        resp.read()
        # http.client would silently reconnect for the next request: prove it never has to.
        assert self.conn.sock is not None and self.conn.sock.getsockname() == self.local_address
        assert resp.getheader("Connection", "").lower() != "close"
        return resp

    def ntlm(self, user: str, password: str, type3: bytes | None = None) -> tuple[http.client.HTTPResponse, bytes]:
        """Type 1 -> 401 with our Type 2 -> Type 3 (pyspnego's, or ``type3``): the final answer."""
        ctx = spnego.client(user, password, hostname=self.hostname, service="HTTP", protocol="ntlm")
        type1 = ctx.step()
        assert isinstance(type1, bytes)
        challenge = self.get(f"NTLM {base64.b64encode(type1).decode()}")
        assert challenge.status == 401
        (offer,) = challenge.headers.get_all("WWW-Authenticate") or []
        scheme, _, token = offer.partition(" ")
        assert scheme == "NTLM"
        type2 = base64.b64decode(token)
        assert ntlm.message_type(type2) == ntlm.CHALLENGE
        if type3 is None:
            answer = ctx.step(type2)
            assert isinstance(answer, bytes)
            type3 = answer
        self.conn.request("GET", self.path, headers={"Authorization": f"NTLM {base64.b64encode(type3).decode()}"})
        resp = self.conn.getresponse()
        body = resp.read()
        assert self.conn.sock is not None and self.conn.sock.getsockname() == self.local_address
        return resp, body

    def close(self) -> None:
        self.conn.close()


def ntlmv1_type3(user: str) -> bytes:
    """A Type 3 with a 24-byte (NTLMv1) NT response and an LM response: crackable, must be refused."""
    fields = [b"\x22" * 24, b"\x11" * 24, b"", user.encode("utf-16-le"), "WS".encode("utf-16-le"), b""]
    offset, descriptors = 64, b""
    for value in fields:  # LM, NT, domain, user, workstation, session key
        descriptors += struct.pack("<HHI", len(value), len(value), offset)
        offset += len(value)
    flags = ntlm.Flag.UNICODE | ntlm.Flag.NTLM
    return (
        ntlm.SIGNATURE
        + struct.pack("<I", ntlm.AUTHENTICATE)
        + descriptors
        + struct.pack("<I", flags)
        + b"".join(fields)
    )


def scepclient_refused(server: ScepCaServer, url: str, challenge: str, workdir: Path, integration_id: str) -> None:
    """scepclient fails with badRequest and the server logs why."""
    mark = server.log_mark()
    result = run_scepclient(url, challenge, workdir, subject_cn=workdir.name)
    assert not result.issued and result.returncode == 1, result.describe()
    assert SCEPCLIENT_BAD_REQUEST in result.output, result.describe()
    server.wait_log(rf"scep failure integration={integration_id} .*{re.escape(CHALLENGE_REFUSED)}", mark)


def scepclient_enrolls(server: ScepCaServer, url: str, challenge: str, workdir: Path) -> None:
    result = run_scepclient(url, challenge, workdir, subject_cn=workdir.name)
    assert result.issued, result.describe()
    verify = openssl_verify(result.cert_path, server.ca_pem)
    assert verify.ok, verify.describe()


# --------------------------------------------------------------------------------------------
# Fetching pages with curl and Python, and what the challenge is good for
# --------------------------------------------------------------------------------------------


def test_curl_ntlm_page_challenge_enrolls_once(scep_ca_server: ScepCaServer, tmp_path: Path) -> None:
    server = scep_ca_server
    a = server.create_integration("curl-ntlm")
    assert a["challenge_url"] == server.challenge_url(a["id"])
    got = curl(a["challenge_url"], a["username"], a["password"], "ntlm", tmp_path / "curl")
    assert got.status == 200, got.command.describe()
    assert header(got.headers, "Content-Type") == ["text/html"]  # no charset, as NDES sends it
    # The three legs on one connection: Type 1, our Type 2 in a 401, Type 3 on the reused connection.
    trace = got.trace
    assert trace.count("* Connected to") == 1 and "Re-using existing connection" in trace, trace
    assert "> Authorization: NTLM TlRMTVNTUAAB" in trace and "> Authorization: NTLM TlRMTVNTUAAD" in trace, trace
    assert "< WWW-Authenticate: NTLM TlRMTVNTUAAC" in trace, trace
    type3 = base64.b64decode(re.findall(r"> Authorization: NTLM (\S+)", trace)[-1])
    assert len(ntlm.parse_authenticate(type3, 0).nt_response) > 24  # curl answered with NTLMv2

    challenge = check_challenge_page(server, decode_page(got.body))
    assert server.unused_challenges(a["id"]) == 1
    scepclient_enrolls(server, a["scep_url"], challenge, tmp_path / "first")
    scepclient_refused(server, a["scep_url"], challenge, tmp_path / "second", a["id"])
    assert server.certificate_count(a["id"]) == 1


def test_curl_basic_page_challenge_is_bound_to_its_integration(scep_ca_server: ScepCaServer, tmp_path: Path) -> None:
    server = scep_ca_server
    a = server.create_integration("curl-basic-a")
    b = server.create_integration("curl-basic-b")
    got = curl(a["challenge_url"], a["username"], a["password"], "basic", tmp_path / "curl")
    assert got.status == 200, got.command.describe()
    assert header(got.headers, "Content-Type") == ["text/html"]
    assert "> Authorization: Basic " in got.trace and "NTLM" not in got.trace
    challenge = check_challenge_page(server, decode_page(got.body))

    scepclient_refused(server, b["scep_url"], challenge, tmp_path / "on-b", b["id"])
    assert server.certificate_count(b["id"]) == 0
    scepclient_enrolls(server, a["scep_url"], challenge, tmp_path / "on-a")  # not consumed by B's refusal
    assert server.certificate_count(a["id"]) == 1


def test_python_ntlm_client_on_one_keepalive_connection(scep_ca_server: ScepCaServer) -> None:
    server = scep_ca_server
    a = server.create_integration("python-ntlm")
    client = KeepAliveClient(a["challenge_url"])
    try:
        anonymous = client.get()
        assert anonymous.status == 401
        offers = anonymous.headers.get_all("WWW-Authenticate") or []
        assert offers == ["Negotiate", "NTLM", 'Basic realm="scep-ca"'], offers  # Basic: loopback client
        challenges = []
        for _ in range(2):  # every page needs its own handshake, on the same connection
            resp, body = client.ntlm(a["username"], a["password"])
            assert resp.status == 200 and resp.getheader("Content-Type") == "text/html"
            challenges.append(check_challenge_page(server, decode_page(body)))
    finally:
        client.close()
    assert challenges[0] != challenges[1]
    assert server.unused_challenges(a["id"]) == 2


# --------------------------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------------------------


def test_refused_logins_issue_nothing(scep_ca_server: ScepCaServer, tmp_path: Path) -> None:
    server = scep_ca_server
    a = server.create_integration("refusals-a")
    b = server.create_integration("refusals-b")
    url = a["challenge_url"]
    mark = server.log_mark()

    for auth in ("ntlm", "basic"):
        for user, password in [
            (a["username"], "wrong-password"),
            ("scep-nosuchuser", a["password"]),  # unknown user
            (a["username"], b["password"]),  # this user, another integration's password
        ]:
            got = curl(url, user, password, auth, tmp_path / f"{auth}-{user}-{password}")
            assert got.status == 401, (auth, user, got.command.describe())
            assert "The enrollment challenge password is" not in got.body.decode("utf-16-le", errors="replace")

    client = KeepAliveClient(url)
    try:
        v1, _ = client.ntlm(a["username"], a["password"], type3=ntlmv1_type3(a["username"]))
        assert v1.status == 401
        # The other integration's own, valid credentials: authenticated, but no rights here.
        other, body = client.ntlm(b["username"], b["password"])
        assert other.status == 200
        html = decode_page(body)
        assert f"<P> {NO_PERMISSION} </P>" in html
        assert FLEET_REGEX.search(html) is None and HEX_RUN.search(html) is None
    finally:
        client.close()
    basic_other = curl(url, b["username"], b["password"], "basic", tmp_path / "basic-other")
    assert basic_other.status == 200 and NO_PERMISSION in decode_page(basic_other.body)

    assert server.unused_challenges(a["id"]) == 0 and server.unused_challenges(b["id"]) == 0
    log = server.log(mark)
    assert "challenge issued" not in log, log
    assert "ntlm login failed (ntlmv1-or-lm-refused)" in log, log
    assert len(re.findall(r"login failed \(wrong-password\)", log)) == 2, log  # Basic: wrong, B's password
    assert len(re.findall(r"login failed \(unknown-user\)", log)) == 2, log
    assert len(re.findall(r"ntlm login failed \(bad-response\)", log)) == 2, log
    assert len(re.findall(rf"login of integration {b['id']}'s user on integration {a['id']}: no permission", log)) == 2


# --------------------------------------------------------------------------------------------
# A server with 1-minute challenges and a lockout after 3 failures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_server(scep_ca_module_server_factory: ScepCaServerFactory) -> ScepCaServer:
    """Two worker processes: failed logins are counted in the store (challenge/lockout.py), so
    the lockout test's connections, spread over the workers, still lock out at the threshold."""
    return scep_ca_module_server_factory(challenge=SHORT, server={"workers": 2})


def test_cache_full_then_expiry_frees_it(short_server: ScepCaServer, tmp_path: Path) -> None:
    server = short_server
    a = server.create_integration("cache")
    client = KeepAliveClient(a["challenge_url"])
    try:
        issued = []
        for _ in range(SHORT["max_unused"]):
            resp, body = client.ntlm(a["username"], a["password"])
            assert resp.status == 200
            issued.append(check_challenge_page(server, decode_page(body), minutes=1))
        assert len(set(issued)) == 5
        rows = server.challenge_rows(a["id"])
        assert len(rows) == 5 and all(
            r["expires_at"] - r["created_at"] == datetime.timedelta(minutes=1) for r in rows
        ), rows

        # The sixth unused one: NDES's cache-full page, with nothing a parser could take for a challenge.
        resp, body = client.ntlm(a["username"], a["password"])
        assert resp.status == 200
        html = decode_page(body)
        assert f"<P> {CACHE_FULL} <P>" in html and "cache more than 5 passwords" in html
        assert FLEET_REGEX.search(html) is None and HEX_RUN.search(html) is None
        full_cli = server.cli("challenge", "new", a["id"], check=False)
        assert full_cli.returncode == 1 and "is full" in full_cli.stderr, full_cli
        assert server.unused_challenges(a["id"]) == 5

        # A minute and a second later (stored times moved back, see the module docstring).
        assert server.backdate_challenges(a["id"], datetime.timedelta(seconds=61)) == 5
        assert server.unused_challenges(a["id"]) == 0
        scepclient_refused(server, a["scep_url"], issued[0], tmp_path / "expired", a["id"])
        scepclient_refused(server, a["scep_url"], issued[-1], tmp_path / "expired-too", a["id"])
        assert server.certificate_count(a["id"]) == 0

        resp, body = client.ntlm(a["username"], a["password"])  # room again
        assert resp.status == 200
        fresh = check_challenge_page(server, decode_page(body), minutes=1)
    finally:
        client.close()
    assert fresh not in issued
    assert server.unused_challenges(a["id"]) == 1
    scepclient_enrolls(server, a["scep_url"], fresh, tmp_path / "fresh")
    assert server.certificate_count(a["id"]) == 1


def test_lockout_after_configured_failures(short_server: ScepCaServer, tmp_path: Path) -> None:
    server = short_server
    a = server.create_integration("lockout")
    url = a["challenge_url"]
    mark = server.log_mark()
    for i in range(SHORT["lockout_failures"]):
        got = curl(url, a["username"], f"wrong-{i}", "ntlm", tmp_path / f"wrong-{i}")
        assert got.status == 401, got.command.describe()
    tripped = curl(url, a["username"], "wrong-again", "basic", tmp_path / "tripped")
    assert tripped.status == 429, tripped.command.describe()
    assert header(tripped.headers, "Retry-After") == [str(SHORT["lockout_seconds"])]
    # Locked: the right password gets 429 too, over either method, and nothing is issued.
    for auth in ("ntlm", "basic"):
        right = curl(url, a["username"], a["password"], auth, tmp_path / f"right-{auth}")
        assert right.status == 429, right.command.describe()
    client = KeepAliveClient(url)
    try:
        resp, _ = client.ntlm(a["username"], a["password"])
        assert resp.status == 429
    finally:
        client.close()
    assert server.unused_challenges(a["id"]) == 0
    log = server.log(mark)
    assert "now locked out" in log and "challenge issued" not in log, log
    assert len(re.findall(rf"locked out: integration={a['id']} user={a['username']} client=127\.0\.0\.1", log)) == 3
