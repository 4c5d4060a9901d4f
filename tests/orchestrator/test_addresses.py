"""The SSRF guard's address classes (`orchestrator.agents.addresses`): every form an address
can take, including IPv6 spellings of an IPv4 address that `ipaddress.is_global` calls public,
and what `allow_private_networks` does and does not open. DNS names: real DNS for `localhost`
through the tool agent's own check."""

from __future__ import annotations

import httpx
import pytest

from orchestrator.agents.addresses import AddressClass, classify, refusal
from orchestrator.agents.configuration import AgentConfiguration
from orchestrator.agents.tool_agent import ToolAgent

PUBLIC, INTERNAL, FORBIDDEN = AddressClass.PUBLIC, AddressClass.INTERNAL, AddressClass.FORBIDDEN


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        # public
        ("8.8.8.8", PUBLIC),
        ("93.184.216.34", PUBLIC),
        ("2606:4700:4700::1111", PUBLIC),
        ("::ffff:8.8.8.8", PUBLIC),
        ("64:ff9b::808:808", PUBLIC),  # NAT64 of 8.8.8.8
        ("2002:808:808::1", PUBLIC),  # 6to4 of 8.8.8.8
        # private and loopback: reachable only with allow_private_networks
        ("10.0.0.1", INTERNAL),
        ("10.255.255.255", INTERNAL),
        ("172.16.0.1", INTERNAL),
        ("172.31.255.254", INTERNAL),
        ("192.168.1.1", INTERNAL),
        ("127.0.0.1", INTERNAL),
        ("127.8.9.10", INTERNAL),
        ("100.64.0.1", INTERNAL),  # CGNAT
        ("::1", INTERNAL),
        ("[::1]", INTERNAL),
        ("fc00::1", INTERNAL),
        ("fd12:3456::1", INTERNAL),
        ("::ffff:10.0.0.1", INTERNAL),  # IPv4-mapped
        ("::ffff:127.0.0.1", INTERNAL),
        ("::127.0.0.1", INTERNAL),  # IPv4-compatible
        ("::10.0.0.1", INTERNAL),
        ("::2", FORBIDDEN),  # IPv4-compatible 0.0.0.2 (`is_global` calls the IPv6 form global)
        ("::ffff:0:7f00:1", INTERNAL),  # IPv4-translated
        ("64:ff9b::127.0.0.1", INTERNAL),  # NAT64 with an embedded private v4
        ("64:ff9b::a00:1", INTERNAL),
        ("64:ff9b::c0a8:101", INTERNAL),
        ("64:ff9b:1::a00:1", INTERNAL),  # local-use NAT64
        ("2002:a00:1::1", INTERNAL),  # 6to4 of 10.0.0.1
        ("2002:7f00:1::", INTERNAL),  # 6to4 of 127.0.0.1
        ("2002:c0a8:101::1", INTERNAL),  # 6to4 of 192.168.1.1
        # Teredo: judged by its client (the last 32 bits, inverted), not its server
        ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", PUBLIC),  # server 65.54.227.120, client 8.8.8.8
        ("2001:0:a00:1:8000:63bf:f7f7:f7f7", PUBLIC),  # server 10.0.0.1, client 8.8.8.8
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", INTERNAL),  # client 10.0.0.1
        ("2001:0:4136:e378:8000:63bf:5601:5601", FORBIDDEN),  # client 169.254.169.254
        # never: link-local / metadata, unspecified, multicast, reserved
        ("169.254.169.254", FORBIDDEN),
        ("169.254.0.1", FORBIDDEN),
        ("fe80::1", FORBIDDEN),
        ("fe80::1%eth0", FORBIDDEN),
        ("febf::1", FORBIDDEN),
        ("::ffff:169.254.169.254", FORBIDDEN),
        ("::169.254.169.254", FORBIDDEN),
        ("64:ff9b::a9fe:a9fe", FORBIDDEN),  # NAT64 of 169.254.169.254
        ("2002:a9fe:a9fe::1", FORBIDDEN),  # 6to4 of 169.254.169.254
        ("fd00:ec2::254", FORBIDDEN),  # AWS metadata over IPv6 (inside fc00::/7)
        ("100.100.100.200", FORBIDDEN),  # Alibaba metadata (inside CGNAT)
        ("0.0.0.0", FORBIDDEN),
        ("::", FORBIDDEN),
        ("224.0.0.1", FORBIDDEN),
        ("ff02::1", FORBIDDEN),
        ("255.255.255.255", FORBIDDEN),
        ("240.0.0.1", FORBIDDEN),
        ("192.0.2.1", FORBIDDEN),  # documentation
        ("198.18.0.1", FORBIDDEN),  # benchmarking
        ("192.0.0.192", FORBIDDEN),  # IETF protocol assignments (Oracle metadata)
        ("2001:db8::1", FORBIDDEN),
    ],
)
def test_every_form_of_an_address_is_classified_by_where_it_delivers(
    address: str, expected: AddressClass
) -> None:
    assert classify(address) is expected


@pytest.mark.parametrize(
    ("address", "closed", "opened"),
    [
        ("8.8.8.8", None, None),
        ("10.0.0.1", "private or local", None),
        ("::127.0.0.1", "private or local", None),
        ("169.254.169.254", "link-local", "link-local"),
        ("fe80::1", "link-local", "link-local"),
    ],
)
def test_allow_private_networks_opens_private_ranges_never_link_local(
    address: str, closed: str | None, opened: str | None
) -> None:
    for allow, expected in ((False, closed), (True, opened)):
        why = refusal(address, allow_private=allow)
        assert (why is None) if expected is None else (why is not None and expected in why)


async def test_a_dns_name_is_judged_by_every_address_it_resolves_to() -> None:
    answers = {
        "api.example.com": ["93.184.216.34"],
        "mixed.example.com": ["93.184.216.34", "10.0.0.7"],
        "sneaky.example.com": ["64:ff9b::a9fe:a9fe"],
    }

    async def resolver(host: str, port: int) -> list[str]:
        return answers[host]

    config = AgentConfiguration(allowed_hosts=["*.example.com", "localhost"])
    async with httpx.AsyncClient() as http:
        fake_dns = ToolAgent(http, None, None, resolver=resolver)
        assert await fake_dns.check_url("https://api.example.com/", config) is None
        mixed = await fake_dns.check_url("https://mixed.example.com/", config)
        assert mixed is not None and "private or local" in mixed
        sneaky = await fake_dns.check_url("https://sneaky.example.com/", config)
        assert sneaky is not None and "link-local" in sneaky
        real_dns = ToolAgent(http, None, None)
        local = await real_dns.check_url("http://localhost:1/", config)
        assert local is not None and "private or local" in local
