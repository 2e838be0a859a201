"""config.clients: who the client is, and whether it is local (the one place that decides)."""

from __future__ import annotations

import pytest

from config.clients import Client, TrustedProxies, is_loopback_host, is_proxy_header, parse_address, parse_networks

NGINX = TrustedProxies.parse(["127.0.0.1", "::1"])
CHAIN = TrustedProxies.parse(["10.0.0.0/8", "2001:db8:1::/48"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("::FFFF:10.1.2.3", "10.1.2.3"),
        ("fe80::1%eth0", "fe80::1"),
        ("::1%lo", "::1"),
        ("203.0.113.7:51234", "203.0.113.7"),
        ("[2001:db8::5]", "2001:db8::5"),
        ("[2001:db8::5]:443", "2001:db8::5"),
        ("2001:DB8:0::5", "2001:db8::5"),
        (" 198.51.100.1 ", "198.51.100.1"),
    ],
)
def test_parse_address_normalises(text: str, expected: str) -> None:
    assert str(parse_address(text)) == expected


@pytest.mark.parametrize(
    "text",
    [None, "", "unknown", "not-an-ip", "1.2.3", "1.2.3.4:port", "[2001:db8::5", "[::1]x", "_hidden", "300.1.1.1"],
)
def test_parse_address_rejects(text: str | None) -> None:
    assert parse_address(text) is None


@pytest.mark.parametrize("peer", ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1", "::1%lo"])
def test_direct_loopback_peer_is_local_without_trusted_proxies(peer: str) -> None:
    client = TrustedProxies().resolve(peer)
    assert client.local and client.proxy is None


@pytest.mark.parametrize("peer", ["10.0.0.1", "::ffff:10.0.0.1", "2001:db8::1", "fe80::1%eth0", None, "", "garbage"])
def test_other_peers_are_not_local(peer: str | None) -> None:
    assert not TrustedProxies().resolve(peer).local


def test_unlisted_peer_headers_are_ignored() -> None:
    # A client that is not a trusted proxy cannot choose its address with X-Forwarded-For.
    assert TrustedProxies().resolve("203.0.113.9", ["198.51.100.1"]) == Client("203.0.113.9", local=False)
    assert CHAIN.resolve("203.0.113.9", ["10.0.0.5"]) == Client("203.0.113.9", local=False)


def test_unlisted_loopback_peer_with_proxy_headers_is_not_local() -> None:
    # Most likely an unlisted proxy on this host (nginx adds X-Forwarded-For or X-Real-IP).
    client = TrustedProxies().resolve("127.0.0.1", ["203.0.113.9"], proxy_headers=True)
    assert client == Client("127.0.0.1", local=False)


@pytest.mark.parametrize("forwarded_for", [[], ["203.0.113.9"], ["127.0.0.1"]])
@pytest.mark.parametrize("proxy_headers", [False, True])
def test_trusted_loopback_proxy_grants_nobody_loopback_trust(forwarded_for: list[str], proxy_headers: bool) -> None:
    # X-Client-IP, True-Client-IP or no header at all (nginx's default proxy_pass, TCP mode).
    client = NGINX.resolve("127.0.0.1", forwarded_for, proxy_headers=proxy_headers)
    assert not client.local
    assert client.proxy == "127.0.0.1"


def test_trusted_proxy_without_header_is_the_proxy_itself() -> None:
    assert NGINX.resolve("::ffff:127.0.0.1") == Client("127.0.0.1", local=False, proxy="127.0.0.1")


def test_rightmost_untrusted_entry_wins_over_spoofed_left_entries() -> None:
    # The client sent "X-Forwarded-For: 1.1.1.1, 127.0.0.1"; nginx appended the address it saw.
    assert NGINX.resolve("127.0.0.1", ["1.1.1.1, 127.0.0.1, 203.0.113.9"]).address == "203.0.113.9"
    # Garbage left of the real entry is never read.
    assert NGINX.resolve("127.0.0.1", ["garbage, <script>, 203.0.113.9"]).address == "203.0.113.9"


def test_chain_of_trusted_proxies_is_skipped() -> None:
    client = CHAIN.resolve("10.0.0.1", ["198.51.100.7, 203.0.113.9, 10.2.3.4", "10.9.9.9"])
    assert client == Client("203.0.113.9", local=False, proxy="10.0.0.1")


def test_all_trusted_gives_the_leftmost() -> None:
    assert CHAIN.resolve("10.0.0.1", ["10.1.1.1, 10.2.2.2"]).address == "10.1.1.1"


def test_ipv6_entries() -> None:
    client = CHAIN.resolve("2001:db8:1::2", ["[2001:db8:2::9]:4711, 2001:db8:1::3"])
    assert client.address == "2001:db8:2::9"
    assert CHAIN.resolve("2001:db8:1::2", ["::ffff:198.51.100.4"]).address == "198.51.100.4"


def test_mapped_peer_matches_ipv4_proxy() -> None:
    assert NGINX.resolve("::ffff:127.0.0.1", ["203.0.113.9"]).address == "203.0.113.9"


@pytest.mark.parametrize("forwarded_for", [["unknown"], ["203.0.113.9, bogus"], ["203.0.113.9,  , 999.1.1.1"]])
def test_malformed_entry_means_the_proxy_itself(forwarded_for: list[str]) -> None:
    client = NGINX.resolve("127.0.0.1", forwarded_for)
    assert client == Client("127.0.0.1", local=False, proxy="127.0.0.1")


def test_parse_networks() -> None:
    assert [str(n) for n in parse_networks(["10.0.0.0/8", "::1", " 192.0.2.1 ", "::ffff:127.0.0.0/104"])] == [
        "10.0.0.0/8",
        "::1/128",
        "192.0.2.1/32",
        "127.0.0.0/8",
    ]
    for bad in ("10.0.0.1/8", "nginx", "", "10.0.0.0/33"):
        with pytest.raises(ValueError, match=r"^\[0\] "):
            parse_networks([bad])


@pytest.mark.parametrize(
    ("host", "loopback"), [("localhost", True), ("127.0.0.1", True), ("::1", True), ("0.0.0.0", False), ("::", False)]
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize(
    "name",
    [
        "Forwarded",
        "x-forwarded-for",
        "X-Forwarded-Host",
        "X-Forwarded-Proto",
        "X-Forwarded-Port",
        "X-Forwarded-Anything",
        "X-Real-IP",
        "Client-IP",
        "True-Client-IP",
        "CF-Connecting-IP",
        "X-Envoy-External-Address",
        "Via",
    ],
)
def test_forwarding_headers_are_proxy_headers(name: str) -> None:
    assert is_proxy_header(name)


@pytest.mark.parametrize("name", ["Host", "User-Agent", "Authorization", "X-Forwarded", "Forwarded-X", "Content-Type"])
def test_other_headers_are_not(name: str) -> None:
    assert not is_proxy_header(name)
