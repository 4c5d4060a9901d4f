"""Which network addresses an agent's HTTP tool may connect to: the SSRF guard's address logic.

An HTTP tool is a URL an operator configures and a model fills in during a call, so every
address its host resolves to is classified before the request goes out (the tool agent then
connects to that vetted address, so DNS cannot change it in between):

- **public**: globally routable unicast. Always allowed.
- **internal**: loopback (127/8, ::1), private (10/8, 172.16/12, 192.168/16, fc00::/7 ULA),
  shared CGNAT space (100.64/10) and local-use NAT64 (64:ff9b:1::/48). Allowed only for an
  agent with `allow_private_networks`, which only an admin may set (`api/routes/agents.py`).
- **forbidden**: never allowed, whatever the agent's configuration: link-local (169.254/16,
  fe80::/10: the cloud metadata service lives there and hands out credentials), known metadata
  addresses outside it (AWS's fd00:ec2::254, Alibaba's 100.100.100.200, Oracle's 192.0.0.192 in
  the IETF protocol block 192.0.0.0/24), unspecified, multicast,
  broadcast, documentation, benchmarking and reserved ranges (nothing legitimate answers there).

IPv6 forms that carry an IPv4 address are judged by that address, because that is where the
packets go: IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d, deprecated but still
routed to the IPv4 host by some stacks), IPv4-translated (::ffff:0:a.b.c.d), NAT64
(64:ff9b::/96), 6to4 (2002::/16) and Teredo (2001::/32, its client address). Python's
`ipaddress.is_global` calls several of these public (`::127.0.0.1`, `64:ff9b::10.0.0.1`,
`2002:7f00:1::`), which is why this module does not rely on it alone.
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressClass(StrEnum):
    PUBLIC = "public"
    INTERNAL = "internal"
    FORBIDDEN = "forbidden"


_V4_INTERNAL = tuple(
    ipaddress.ip_network(n)
    for n in ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")
)
_V6_INTERNAL = tuple(ipaddress.ip_network(n) for n in ("fc00::/7", "64:ff9b:1::/48"))
_METADATA = frozenset(ipaddress.ip_address(a) for a in ("fd00:ec2::254", "100.100.100.200"))
# IETF protocol assignments: `ipaddress` calls most of it global (Oracle's metadata: .192).
_V4_FORBIDDEN = (ipaddress.ip_network("192.0.0.0/24"),)
_V4_COMPATIBLE = ipaddress.ip_network("::/96")
_V4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def parse(address: str) -> IPAddress:
    """An address as `getaddrinfo` or a URL writes it (`fe80::1%eth0`, `[::1]`)."""
    return ipaddress.ip_address(address.strip("[]").split("%", 1)[0])


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (and delivers to), if it is one of those forms."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _NAT64 or ip in _V4_TRANSLATED:
        return low32
    if ip in _V4_COMPATIBLE and int(ip) > 1:  # not :: and ::1, judged as IPv6 below
        return low32
    return None


def classify(address: str | IPAddress) -> AddressClass:
    ip = parse(address) if isinstance(address, str) else address
    if ip in _METADATA or any(ip in net for net in _V4_FORBIDDEN):
        return AddressClass.FORBIDDEN
    if isinstance(ip, ipaddress.IPv6Address):
        v4 = embedded_ipv4(ip)
        if v4 is not None:
            return classify(v4)
        if ip.is_loopback or any(ip in net for net in _V6_INTERNAL):
            return AddressClass.INTERNAL
    elif any(ip in net for net in _V4_INTERNAL):
        return AddressClass.INTERNAL
    if ip.is_global and not ip.is_multicast and not ip.is_link_local:
        return AddressClass.PUBLIC
    return AddressClass.FORBIDDEN


def is_public(address: str | IPAddress) -> bool:
    return classify(address) is AddressClass.PUBLIC


def refusal(address: str, *, allow_private: bool) -> str | None:
    """None when a tool may connect to `address`, else why not (read by the model and logged)."""
    kind = classify(address)
    if kind is AddressClass.PUBLIC:
        return None
    if kind is AddressClass.INTERNAL:
        return None if allow_private else "a private or local address"
    return "a link-local, metadata or reserved address, never reachable by tools"
