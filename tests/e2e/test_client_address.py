"""Who the client is, against a real ``scep-ca serve``: loopback trust and a same-host proxy.

A proxy on the same host makes every client's TCP peer 127.0.0.1. Listed in
``server.trusted_proxies`` it grants nobody loopback trust, whatever header it sends or
drops, and the address it forwards is the one logged and used for the lockout.
"""

from __future__ import annotations

import base64
import http.client
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
import spnego

from tests.e2e import clients
from tests.e2e.conftest import ScepCaServer, ScepCaServerFactory


def status(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture(scope="module")
def proxied(scep_ca_module_server_factory: ScepCaServerFactory) -> Iterator[ScepCaServer]:
    yield scep_ca_module_server_factory(server={"trusted_proxies": ["127.0.0.1", "::1"]})


# Every forwarding header a proxy, CDN or load balancer adds (any X-Forwarded-* name counts).
FORWARDING_HEADERS = {
    "Forwarded": "for=203.0.113.9",
    "X-Forwarded-For": "203.0.113.9",
    "x-forwarded-for": "203.0.113.9",
    "X-Forwarded-Host": "scep.example.com",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Port": "443",
    "X-Forwarded-Server": "proxy.example.com",
    "X-Real-IP": "203.0.113.9",
    "Client-IP": "203.0.113.9",
    "X-Client-IP": "203.0.113.9",
    "True-Client-IP": "203.0.113.9",
    "X-Cluster-Client-IP": "203.0.113.9",
    "CF-Connecting-IP": "203.0.113.9",
    "Fastly-Client-IP": "203.0.113.9",
    "X-Envoy-External-Address": "203.0.113.9",
    "X-Original-Forwarded-For": "203.0.113.9",
    "Via": "1.1 proxy.example.com",
}


@pytest.mark.parametrize(("header", "value"), sorted(FORWARDING_HEADERS.items()))
def test_status_api_refuses_a_loopback_peer_sending_proxy_headers(
    scep_ca_server: ScepCaServer, header: str, value: str
) -> None:
    """No trusted proxies configured: an unlisted same-host proxy is still not loopback."""
    url = f"{scep_ca_server.base_url}/api/v1/certificates/01"
    assert status(url) == 404  # a direct loopback client is served (no such certificate)
    assert status(url, {header: value}) == 403
    assert status(f"{scep_ca_server.base_url}/metrics", {header: value}) == 403


@pytest.mark.parametrize(
    "headers", [{}, {"X-Client-IP": "127.0.0.1"}, {"True-Client-IP": "127.0.0.1"}, {"X-Forwarded-For": "127.0.0.1"}]
)
def test_nobody_is_local_through_a_trusted_same_host_proxy(proxied: ScepCaServer, headers: dict[str, str]) -> None:
    assert status(f"{proxied.base_url}/api/v1/certificates/01", headers) == 403
    assert status(f"{proxied.base_url}/metrics", headers) == 403


def test_forwarded_address_is_logged_and_basic_is_not_offered(proxied: ScepCaServer) -> None:
    integration = proxied.create_integration("proxied-ntlm")
    path = f"/challenge/{integration['id']}/certsrv/mscep_admin/"
    forwarded = {"X-Forwarded-For": "198.51.100.1, 203.0.113.77"}  # the left entry is the client's own claim
    mark = proxied.log_mark()
    conn = http.client.HTTPConnection(clients.LOOPBACK, proxied.port, timeout=10)
    try:
        conn.request("GET", path, headers=forwarded)
        bare = conn.getresponse()
        bare.read()
        assert bare.status == 401
        assert not any(v.startswith("Basic") for v in bare.headers.get_all("WWW-Authenticate") or [])
        ctx = spnego.client(integration["username"], "wrong-password", protocol="ntlm")
        type1 = ctx.step()
        assert type1 is not None
        conn.request("GET", path, headers={**forwarded, "Authorization": "NTLM " + base64.b64encode(type1).decode()})
        first = conn.getresponse()
        first.read()
        type3 = ctx.step(base64.b64decode((first.getheader("WWW-Authenticate") or "").split(" ", 1)[1]))
        assert type3 is not None
        conn.request("GET", path, headers={**forwarded, "Authorization": "NTLM " + base64.b64encode(type3).decode()})
        failed = conn.getresponse()
        failed.read()
        assert failed.status == 401
    finally:
        conn.close()
    line = proxied.wait_log(r"ntlm login failed[^\n]*", since=mark).group(0)
    assert "client=203.0.113.77" in line
