"""Who the client of a request is, and whether it is local: the one place that decides.

Pure (no I/O, no aiohttp): ``TrustedProxies`` is parsed from ``server.trusted_proxies``
and resolves a request's client from the TCP peer address and the ``X-Forwarded-For``
header values. It lives in ``config``, the lowest layer, because ``challenge`` (Basic over
plain HTTP, the lockout key) and ``scep_ca.server`` (status API, metrics, audit and log
fields) both need it, and ``challenge`` sits below ``scep_ca.server`` in the layers contract
(pyproject.toml), so it may not import it.

Rules:

* The client is the TCP peer, unless the peer is a trusted proxy. Then it is the
  right-most ``X-Forwarded-For`` entry that is not itself a trusted proxy: each proxy
  appends the address it saw, so entries left of the first untrusted one (reading from
  the right) were written by the client and prove nothing. When every entry is trusted,
  the left-most one. No header, or a malformed entry met on the way: the proxy itself.
* A client is local (loopback-only privileges: the status API and ``/metrics`` without
  a token, Basic over plain HTTP) only when it is a DIRECT loopback peer that is not a
  trusted proxy. Behind a same-host proxy every client's TCP peer is loopback, which is
  why such a proxy must be listed: then nobody gets loopback trust through it, whatever
  headers it sends or drops. An unlisted loopback peer that sends any proxy header
  (``is_proxy_header``: ``Forwarded``, every ``X-Forwarded-*``, ``X-Real-IP``,
  ``CF-Connecting-IP``, ``X-Envoy-*`` and the like) is not local either: it is most likely
  such a proxy.
* ``::ffff:127.0.0.1`` (an IPv4 client on a dual-stack socket) is 127.0.0.1; IPv6 scope
  ids (``fe80::1%eth0``) are dropped; addresses are reported in one normal form, so the
  lockout key of one client is one key.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

FORWARDED_FOR = "X-Forwarded-For"
# Headers that only proxies add. A loopback peer that is not a listed proxy but sends one
# of these (or any header named with a ``PROXY_HEADER_PREFIXES`` prefix) is most likely an
# unlisted same-host proxy: it gets no loopback trust. Compared case-insensitively.
PROXY_HEADERS = frozenset(
    name.lower()
    for name in (
        "Forwarded",  # RFC 7239
        "Via",  # RFC 9110 section 7.6.3
        "X-Real-IP",
        "Client-IP",
        "X-Client-IP",
        "True-Client-IP",
        "X-Cluster-Client-IP",
        "CF-Connecting-IP",
        "Fastly-Client-IP",
        "X-Original-Forwarded-For",
        "X-Originating-IP",
        "X-Remote-IP",
        "X-Remote-Addr",
        "X-ProxyUser-IP",
        "X-Azure-ClientIP",
        "X-Azure-SocketIP",
        "X-Appengine-User-IP",
    )
)
# X-Forwarded-For/-Host/-Proto/-Port/-Server/-Prefix/..., and Envoy's X-Envoy-External-Address,
# X-Envoy-Original-Path and the like.
PROXY_HEADER_PREFIXES = ("x-forwarded-", "x-envoy-")


def is_proxy_header(name: str) -> bool:
    """Whether header ``name`` is one only a proxy adds (``PROXY_HEADERS``, ``PROXY_HEADER_PREFIXES``)."""
    lowered = name.lower()
    return lowered in PROXY_HEADERS or lowered.startswith(PROXY_HEADER_PREFIXES)


@dataclass(frozen=True)
class Client:
    """The resolved client of one request.

    ``address`` is the normalised client IP (or the raw peer string when the peer is not
    an IP address, "" when unknown); ``local`` grants loopback-only privileges;
    ``proxy`` is the trusted proxy's address when the request came through one.
    """

    address: str
    local: bool
    proxy: str | None = None


def parse_address(text: str | None) -> IPAddress | None:
    """An IP address from a peer address or an ``X-Forwarded-For`` entry; None if malformed.

    Accepts ``a.b.c.d``, ``a.b.c.d:port``, bare IPv6, ``[v6]`` and ``[v6]:port`` (some
    proxies append the port); drops an IPv6 scope id; maps ``::ffff:a.b.c.d`` to IPv4.
    """
    if not text:
        return None
    value = text.strip()
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or (value[end + 1 :] and not _is_port_suffix(value[end + 1 :])):
            return None
        value = value[1:end]
    elif value.count(":") == 1:  # IPv4 with a port; a bare IPv6 has at least two colons
        host, _, port = value.partition(":")
        if not port.isdigit():
            return None
        value = host
    value = value.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _is_port_suffix(suffix: str) -> bool:
    return suffix.startswith(":") and suffix[1:].isdigit()


def parse_networks(entries: Iterable[str]) -> tuple[IPNetwork, ...]:
    """``server.trusted_proxies`` entries as networks; ValueError naming the bad entry's index.

    A bare address is a /32 (/128) network. Host bits set below the prefix
    (``10.0.0.1/8``) are refused: the intent is ambiguous, and a too-wide guess would
    trust more than meant.
    """
    networks: list[IPNetwork] = []
    for index, entry in enumerate(entries):
        text = entry.strip()
        try:
            network = ipaddress.ip_network(text.split("%", 1)[0], strict=True)
        except ValueError as exc:
            raise ValueError(f"[{index}] {entry!r} is not an IP address or CIDR network ({exc})") from None
        if isinstance(network, ipaddress.IPv6Network) and network.network_address.ipv4_mapped is not None:
            mapped = network.network_address.ipv4_mapped
            network = ipaddress.ip_network(f"{mapped}/{max(0, network.prefixlen - 96)}")
        networks.append(network)
    return tuple(networks)


@dataclass(frozen=True)
class TrustedProxies:
    """The configured trusted proxies and the client resolution over them."""

    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> TrustedProxies:
        return cls(parse_networks(entries))

    def trusts(self, ip: IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self.networks)

    def resolve(self, peer: str | None, forwarded_for: Sequence[str] = (), *, proxy_headers: bool = False) -> Client:
        """The client of a request from TCP peer ``peer``.

        ``forwarded_for`` are the request's ``X-Forwarded-For`` values; ``proxy_headers``
        whether it carries any proxy header (``is_proxy_header``).
        """
        peer_ip = parse_address(peer)
        if peer_ip is None:
            return Client(peer or "", local=False)
        if not self.trusts(peer_ip):
            return Client(str(peer_ip), local=peer_ip.is_loopback and not proxy_headers)
        proxy = str(peer_ip)
        entries = [part.strip() for value in forwarded_for for part in value.split(",")]
        entries = [entry for entry in entries if entry]
        if not entries:
            return Client(proxy, local=False, proxy=proxy)
        leftmost: IPAddress | None = None
        for entry in reversed(entries):
            ip = parse_address(entry)
            if ip is None:
                return Client(proxy, local=False, proxy=proxy)
            if not self.trusts(ip):
                return Client(str(ip), local=False, proxy=proxy)
            leftmost = ip
        assert leftmost is not None
        return Client(str(leftmost), local=False, proxy=proxy)


def is_loopback_host(host: str) -> bool:
    """Whether a listen address (``server.host``) is loopback only: ``localhost`` or a loopback IP."""
    if host.strip().lower() == "localhost":
        return True
    ip = parse_address(host)
    return ip is not None and ip.is_loopback
