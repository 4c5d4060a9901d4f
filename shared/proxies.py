"""Which peers are believed when they say, in `X-Forwarded-*` headers, who the client was and
which URL it asked for.

Anybody can send `X-Forwarded-Host: bank.example` or `X-Forwarded-For: 1.2.3.4`: the headers
only mean something when the proxy that added them is ours. `TrustedProxies` is that list
(`TRUSTED_PROXIES`: comma-separated addresses or CIDRs, or `*` for any peer, which is right
only where nothing but the proxy can reach the service: an ALB in front of private subnets,
Cloud Run). One parsed value, used by the gateway's public URL, its rate limiters and
uvicorn's `forwarded_allow_ips`, so they never disagree on whom they believe.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

ANY_PEER = "*"


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    networks: tuple[IPv4Network | IPv6Network, ...] = ()
    any_peer: bool = False

    def __bool__(self) -> bool:
        return self.any_peer or bool(self.networks)

    def trusts(self, peer: str | None) -> bool:
        """True when `peer` (an address as the socket reported it) is one of our proxies."""
        if self.any_peer:
            return True
        if not peer or not self.networks:
            return False
        try:
            address = ip_address(peer.strip("[]"))
        except ValueError:  # a unix socket path or a name: not an address we listed
            return False
        return any(address in network for network in self.networks)

    def uvicorn_value(self) -> str:
        """The same list as uvicorn's `forwarded_allow_ips` (it accepts `*` and CIDRs)."""
        if self.any_peer:
            return ANY_PEER
        return ",".join(
            str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
            for net in self.networks
        )


@functools.lru_cache(maxsize=16)
def parse_trusted_proxies(value: str | None, *, trust_any: bool = False) -> TrustedProxies:
    """`10.0.0.0/8, 192.168.1.7` / `*` -> TrustedProxies; ValueError names the bad entry.

    With no list, `trust_any` (the older `TRUST_PROXY=true`) means any peer, as it always has.
    """
    entries = [entry.strip() for entry in (value or "").split(",") if entry.strip()]
    if not entries:
        return TrustedProxies(any_peer=trust_any)
    if ANY_PEER in entries:
        return TrustedProxies(any_peer=True)
    networks = []
    for entry in entries:
        try:
            networks.append(ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or CIDR: {entry!r}") from None
    return TrustedProxies(tuple(networks))
