"""The tool agent's network guard: allow-list matching and address classes (real DNS for
`localhost`), plus the built-ins' refusals."""

from __future__ import annotations

import httpx
import pytest

from orchestrator.agents.configuration import AgentConfiguration
from orchestrator.agents.tool_agent import (
    ToolAgent,
    ToolCall,
    ToolContext,
    host_allowed,
    tool_specs,
)


@pytest.mark.parametrize(
    ("host", "allowed", "ok"),
    [
        ("api.example.com", ["api.example.com"], True),
        ("API.Example.com.", ["api.example.com"], True),
        ("evil.com", ["api.example.com"], False),
        ("a.example.com", ["*.example.com"], True),
        ("example.com", ["*.example.com"], False),
        ("example.com.evil.io", ["*.example.com"], False),
        ("anything", [], False),
    ],
)
def test_host_allow_list(host: str, allowed: list[str], ok: bool) -> None:
    assert host_allowed(host, allowed) is ok


async def test_url_checks_resolve_the_host() -> None:
    async with httpx.AsyncClient() as http:
        agent = ToolAgent(http, None, None)
        config = AgentConfiguration(allowed_hosts=["localhost", "*.invalid"])
        assert "private or local" in (await agent.check_url("http://localhost:1/", config) or "")
        assert "could not be resolved" in (
            await agent.check_url("http://nothing.invalid/", config) or ""
        )
        assert "allow-list" in (await agent.check_url("http://other.test/", config) or "")
        assert "not an http(s) URL" in (await agent.check_url("file:///etc/passwd", config) or "")
        allowed = AgentConfiguration(allowed_hosts=["localhost"], allow_private_networks=True)
        assert await agent.check_url("http://localhost:1/", allowed) is None


async def test_builtins_refuse_what_they_cannot_do() -> None:
    async with httpx.AsyncClient() as http:
        agent = ToolAgent(http, None, None)
        ctx = ToolContext("a", AgentConfiguration(), "c", caller=None)
        transfer = await agent.run(ToolCall("1", "transfer_call", {"to": "+19005550000"}), ctx)
        assert not transfer.ok and transfer.action is None
        remember = await agent.run(ToolCall("2", "remember", {"fact": "x"}), ctx)
        assert not remember.ok and "unknown" in remember.content
        unknown = await agent.run(ToolCall("3", "launch_rockets", {}), ctx)
        assert unknown.content == "There is no tool named launch_rockets."
        configured = ToolContext(
            "a", AgentConfiguration(transfer_number="+15550001111"), "c", caller=None
        )
        # the model may not pick the number: the configured one is used
        out = await agent.run(ToolCall("4", "transfer_call", {"to": "+19005550000"}), configured)
        assert out.action is not None and out.action.to == "+15550001111" and out.terminal


def test_only_enabled_builtins_and_http_tools_are_offered() -> None:
    config = AgentConfiguration.model_validate(
        {
            "tools": [
                "end_call",
                {"name": "crm", "description": "CRM", "url": "https://crm.example.com/x"},
            ]
        }
    )
    names = [s["function"]["name"] for s in tool_specs(config)]
    assert names == ["end_call", "crm"]
    assert [s["function"]["name"] for s in tool_specs(AgentConfiguration())] == [
        "transfer_call",
        "end_call",
        "search_knowledge",
        "remember",
    ]


async def test_an_http_tool_connects_to_the_address_it_vetted() -> None:
    """DNS rebinding: the request goes to the vetted address, Host and TLS name unchanged.
    The remote API is faked at the HTTP layer (respx); the resolver answers as DNS would."""
    import respx

    answers = {"api.example.com": ["93.184.216.34"], "rebind.example.com": ["10.0.0.5"]}

    async def resolver(host: str, port: int) -> list[str]:
        return answers[host]

    config = AgentConfiguration.model_validate(
        {
            "allowed_hosts": ["api.example.com", "rebind.example.com"],
            "tools": [
                {
                    "name": "order",
                    "description": "d",
                    "url": "https://api.example.com/orders/{order_id}",
                    "method": "GET",
                    "headers": {"X-Api-Key": "k"},
                },
                {"name": "rebind", "description": "d", "url": "https://rebind.example.com/x"},
            ],
        }
    )
    with respx.mock() as router:
        route = router.get("https://93.184.216.34/orders/A%2F17").respond(json={"ok": True})
        async with httpx.AsyncClient() as http:
            agent = ToolAgent(http, None, None, resolver=resolver)
            ctx = ToolContext("a", config, "c", caller=None)
            out = await agent.run(ToolCall("1", "order", {"order_id": "A/17", "x": 1}), ctx)
            assert out.ok and out.content == '{"ok":true}'
            sent = route.calls[0].request
            assert sent.headers["host"] == "api.example.com" and sent.headers["x-api-key"] == "k"
            assert sent.extensions["sni_hostname"] == "api.example.com"
            assert "x" not in sent.url.params  # not a declared parameter: never sent
            refused = await agent.run(ToolCall("2", "rebind", {}), ctx)
            assert not refused.ok and "private or local" in refused.content
