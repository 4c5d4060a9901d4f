"""HTTP tools through the real app (agents API, `/start`, `/messages`, real Postgres, the real
resolver, real loopback servers; only OpenAI is faked, at the HTTP layer): who may let a tool
reach private networks, which addresses a tool can never reach, redirects, URL placeholders and
the arguments a model may send."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import respx

from tests.orchestrator.conftest import (
    RunningApp,
    make_settings,
    management_headers,
    new_id,
    run_app,
)
from tests.orchestrator.llm_fakes import OPENAI_BASE, FakeOpenAI

ADMIN = management_headers("admin")
OPERATOR = management_headers("operator")


@dataclass
class LlmApp:
    app: RunningApp
    fake: FakeOpenAI
    router: respx.MockRouter


@pytest.fixture
async def llm_app(pg_dsn: str, data_dir: Path) -> AsyncIterator[LlmApp]:
    settings = make_settings(
        data_dir, pg_dsn, openai_api_key="sk-test", openai_base_url=OPENAI_BASE
    )
    with respx.mock(assert_all_called=False) as router:
        router.route(host="127.0.0.1").pass_through()  # our loopback tool servers
        fake = FakeOpenAI(router)
        async with run_app(settings) as app:
            yield LlmApp(app, fake, router)


class LoopbackServer:
    """A real HTTP server on 127.0.0.1 answering every request with one canned response."""

    def __init__(self, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.headers = headers or {}
        self.requests: list[bytes] = []
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def __aenter__(self) -> LoopbackServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        body = await reader.readexactly(length) if length else b""
        self.requests.append(head + body)
        payload = b'{"secret": "internal data"}'
        extra = "".join(f"{k}: {v}\r\n" for k, v in self.headers.items()).encode()
        writer.write(
            f"HTTP/1.1 {self.status} X\r\n".encode()
            + extra
            + b"content-type: application/json\r\ncontent-length: "
            + str(len(payload)).encode()
            + b"\r\nconnection: close\r\n\r\n"
            + payload
        )
        await writer.drain()
        writer.close()


def tool(url: str, **extra: Any) -> dict[str, Any]:
    return {"name": "lookup", "description": "look something up", "url": url, **extra}


async def create_agent(
    app: RunningApp, headers: dict[str, str], **configuration: Any
) -> dict[str, Any]:
    r = await app.client.post(
        "/agents/create", json={"configuration": configuration}, headers=headers
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


async def tool_turn(llm: LlmApp, agent_id: str, args: dict[str, Any]) -> str:
    """One call, one turn in which the model calls `lookup` with `args`; the tool's result as the
    model read it."""
    cid = new_id()
    service = {"Authorization": ADMIN["Authorization"]}
    r = await llm.app.client.post(
        f"/conversations/{cid}/start",
        json={"call_id": cid, "provider": "generic-http", "agent_id": agent_id},
        headers=service,
    )
    assert r.status_code == 200, r.text
    llm.fake.tool_call("lookup", args).reply("Done.")
    r = await llm.app.client.post(
        f"/conversations/{cid}/messages",
        json={"message": "look it up", "turn_id": "1", "context": {"call_id": cid}},
        headers=service,
    )
    assert r.status_code == 200, r.text
    (result,) = llm.fake.tool_results()
    return str(result)


# -- who may open private networks ----------------------------------------------------------------


async def test_only_an_admin_may_let_an_agent_reach_private_networks(llm_app: LlmApp) -> None:
    app = llm_app.app
    config = {
        "allowed_hosts": ["127.0.0.1"],
        "allow_private_networks": True,
        "tools": [tool("http://127.0.0.1:9/x")],
    }
    r = await app.client.post("/agents/create", json={"configuration": config}, headers=OPERATOR)
    assert r.status_code == 403, r.text
    assert "allow_private_networks" in r.json()["error"]["message"]
    # An operator cannot turn it on later, by PATCH or PUT.
    plain = await create_agent(app, OPERATOR, allowed_hosts=["127.0.0.1"])
    patch = await app.client.patch(
        f"/agents/{plain['id']}",
        json={"configuration": {"allow_private_networks": True}},
        headers=OPERATOR,
    )
    assert patch.status_code == 403, patch.text
    put = await app.client.put(
        f"/agents/{plain['id']}", json={"configuration": config}, headers=OPERATOR
    )
    assert put.status_code == 403, put.text
    # An admin can; an operator then cannot re-aim that agent's tools, but may switch it off.
    private = await create_agent(app, ADMIN, **config)
    assert private["configuration"]["allow_private_networks"] is True
    reaim = await app.client.patch(
        f"/agents/{private['id']}",
        json={"configuration": {"tools": [tool("http://127.0.0.1:6379/")]}},
        headers=OPERATOR,
    )
    assert reaim.status_code == 403, reaim.text
    off = await app.client.patch(
        f"/agents/{private['id']}",
        json={"configuration": {"allow_private_networks": False}},
        headers=OPERATOR,
    )
    assert off.status_code == 200 and off.json()["configuration"]["allow_private_networks"] is False


# -- addresses a tool never reaches ---------------------------------------------------------------


async def test_link_local_metadata_is_refused_even_with_private_networks_allowed(
    llm_app: LlmApp,
) -> None:
    metadata = llm_app.router.get("http://169.254.169.254/latest/meta-data/iam").respond(
        json={"AccessKeyId": "AKIA..."}
    )
    agent = await create_agent(
        llm_app.app,
        ADMIN,
        allowed_hosts=["169.254.169.254"],
        allow_private_networks=True,
        tools=[tool("http://169.254.169.254/latest/meta-data/iam", method="GET")],
    )
    result = await tool_turn(llm_app, agent["id"], {})
    assert "is not allowed" in result and "link-local" in result, result
    assert not metadata.called


@pytest.mark.parametrize(
    "host",
    [
        "localhost",  # a DNS name resolving to loopback
        "127.0.0.1",
        "::127.0.0.1",  # IPv4-compatible
        "::ffff:127.0.0.1",  # IPv4-mapped
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    ],
)
async def test_loopback_in_any_spelling_is_refused_without_private_networks(
    llm_app: LlmApp, host: str
) -> None:
    async with LoopbackServer() as server:
        netloc = f"[{host}]" if ":" in host else host
        agent = await create_agent(
            llm_app.app,
            OPERATOR,
            allowed_hosts=[host],
            tools=[tool(f"http://{netloc}:{server.port}/x")],
        )
        result = await tool_turn(llm_app, agent["id"], {})
    assert "is not allowed" in result and "private or local" in result, result
    assert server.requests == []


# -- what a reachable tool is sent ----------------------------------------------------------------


async def test_a_redirect_is_not_followed(llm_app: LlmApp) -> None:
    async with LoopbackServer() as target:
        location = {"location": f"http://127.0.0.1:{target.port}/admin"}
        async with LoopbackServer(302, location) as tool_server:
            agent = await create_agent(
                llm_app.app,
                ADMIN,
                allowed_hosts=["127.0.0.1"],
                allow_private_networks=True,
                tools=[tool(f"http://127.0.0.1:{tool_server.port}/x", method="GET")],
            )
            result = await tool_turn(llm_app, agent["id"], {})
    assert len(tool_server.requests) == 1 and target.requests == []
    assert "redirect (HTTP 302)" in result and "internal data" not in result, result


@pytest.mark.parametrize("value", ["..", ".", " .. "])
async def test_a_url_placeholder_cannot_walk_out_of_the_configured_path(
    llm_app: LlmApp, value: str
) -> None:
    async with LoopbackServer() as server:
        agent = await create_agent(
            llm_app.app,
            ADMIN,
            allowed_hosts=["127.0.0.1"],
            allow_private_networks=True,
            tools=[
                tool(
                    f"http://127.0.0.1:{server.port}/api/orders/{{order_id}}/status",
                    method="GET",
                )
            ],
        )
        result = await tool_turn(llm_app, agent["id"], {"order_id": value})
    assert server.requests == [], server.requests
    assert "needs a value for `order_id`" in result, result


async def test_a_placeholder_value_stays_one_segment_and_undeclared_arguments_are_dropped(
    llm_app: LlmApp,
) -> None:
    async with LoopbackServer() as get_server, LoopbackServer() as post_server:
        params = {
            "type": "object",
            "properties": {"order_id": {"type": "string"}, "note": {"type": "string"}},
        }
        agent = await create_agent(
            llm_app.app,
            ADMIN,
            allowed_hosts=["127.0.0.1"],
            allow_private_networks=True,
            tools=[
                tool(
                    f"http://127.0.0.1:{get_server.port}/api/orders/{{order_id}}",
                    method="GET",
                    parameters=params,
                ),
            ],
        )
        result = await tool_turn(
            llm_app, agent["id"], {"order_id": "../../admin", "note": "hi", "admin": "true"}
        )
        assert "internal data" in result
        post_agent = await create_agent(
            llm_app.app,
            ADMIN,
            allowed_hosts=["127.0.0.1"],
            allow_private_networks=True,
            tools=[tool(f"http://127.0.0.1:{post_server.port}/api/notes", parameters=params)],
        )
        await tool_turn(llm_app, post_agent["id"], {"note": "hi", "role": "admin"})
    (sent,) = get_server.requests
    assert sent.startswith(b"GET /api/orders/..%2F..%2Fadmin?note=hi HTTP/1.1"), sent
    (posted,) = post_server.requests
    assert json.loads(posted.split(b"\r\n\r\n", 1)[1]) == {"note": "hi"}, posted
