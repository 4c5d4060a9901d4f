"""The LLM client over `LLM_HTTP_TRANSPORT=aiohttp` (the default), against a real HTTP server on
127.0.0.1 (respx cannot stand in for aiohttp's sockets): replies, streamed tokens, tool calls,
retries on a 5xx and a dead server, all through the same `call_llm` the agent uses."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from langchain_core.messages import HumanMessage, SystemMessage
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from orchestrator.agents.configuration import AgentConfiguration
from orchestrator.agents.tool_agent import tool_specs
from orchestrator.config import OrchestratorSettings
from orchestrator.llm.calls import LLMUnavailable, RetryPolicy, call_llm
from orchestrator.llm.factory import LLMFactory


class ScriptedServer:
    """Chat completions as OpenAI sends them; `fail_next` answers that many 503s first."""

    def __init__(self) -> None:
        self.fail_next = 0
        self.bodies: list[dict[str, Any]] = []
        self.app = Starlette(routes=[Route("/v1/chat/completions", self.chat, methods=["POST"])])

    async def chat(self, request: Request) -> Response:
        req = await request.json()
        self.bodies.append(req)
        if self.fail_next:
            self.fail_next -= 1
            return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)
        if req.get("stream"):
            deltas: list[dict[str, Any]] = [{"content": w} for w in ("Open ", "nine ", "to five.")]
            events = [
                {
                    "id": "c",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": "m",
                    "choices": [{"index": 0, "delta": d, "finish_reason": None if d else "stop"}],
                }
                for d in [*deltas, {}]
            ]
            sse = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
            return Response(sse, media_type="text/event-stream")
        message: dict[str, Any] = {"role": "assistant", "content": "Open nine to five."}
        if "bye" in json.dumps(req["messages"][-1]):
            call = {"name": "end_call", "arguments": '{"reason": "bye"}'}
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "call_1", "type": "function", "function": call}],
            }
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        completion = {"id": "x", "object": "chat.completion", "created": 1, "model": "m"}
        return JSONResponse({**completion, "choices": [choice]})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def server() -> AsyncIterator[tuple[ScriptedServer, str]]:
    app = ScriptedServer()
    port = free_port()
    config = uvicorn.Config(
        app.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    srv = uvicorn.Server(config)
    task = asyncio.create_task(srv.serve())
    while not srv.started:
        await asyncio.sleep(0.01)
    yield app, f"http://127.0.0.1:{port}/v1"
    srv.should_exit = True
    await task


def factory(data_dir: Path, base_url: str) -> tuple[LLMFactory, httpx.AsyncClient]:
    settings = OrchestratorSettings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=data_dir,
        openai_api_key="sk-test",
        openai_base_url=base_url,
        llm_http_transport="aiohttp",
    )
    handed_in = httpx.AsyncClient()
    return LLMFactory(settings, handed_in), handed_in


MESSAGES = [SystemMessage("You are the front desk."), HumanMessage("When are you open?")]


async def test_replies_tokens_and_tool_calls_over_aiohttp(
    server: tuple[ScriptedServer, str], data_dir: Path
) -> None:
    app, base = server
    llm, handed_in = factory(data_dir, base)
    try:
        chat = llm.chat()
        assert chat.http_async_client is not handed_in  # our own aiohttp-backed client
        plain = await call_llm(chat, MESSAGES)
        assert plain.message.content == "Open nine to five."
        tokens: list[str] = []

        async def sink(token: str) -> None:
            tokens.append(token)

        streamed = await call_llm(chat, MESSAGES, on_token=sink)
        assert tokens == ["Open ", "nine ", "to five."]
        assert streamed.message.content == "Open nine to five."
        tools = tool_specs(AgentConfiguration())
        bye = await call_llm(chat, [*MESSAGES, HumanMessage("ok bye")], tools=tools)
        assert bye.message.tool_calls[0]["name"] == "end_call"
        assert app.bodies[-1]["tools"] and app.bodies[-1]["messages"][-1]["content"] == "ok bye"
    finally:
        await llm.aclose()
        await handed_in.aclose()


async def test_a_5xx_is_retried_and_a_dead_server_is_unavailable(
    server: tuple[ScriptedServer, str], data_dir: Path
) -> None:
    app, base = server
    llm, handed_in = factory(data_dir, base)
    policy = RetryPolicy(max_retries=2, backoff_s=0.01)
    try:
        app.fail_next = 1
        result = await call_llm(llm.chat(), MESSAGES, policy=policy)
        assert result.attempts == 2 and result.message.content == "Open nine to five."
        app.fail_next = 5
        with pytest.raises(LLMUnavailable, match="503"):
            await call_llm(llm.chat(), MESSAGES, policy=policy)
    finally:
        await llm.aclose()
        await handed_in.aclose()
    # Nobody listening: retried, then unavailable at once (never a hang). httpx-aiohttp maps
    # aiohttp's refused connection to httpx.ConnectTimeout, which openai reports as a timeout;
    # our error names the refusal (what an operator needs to look for).
    llm, handed_in = factory(data_dir, f"http://127.0.0.1:{free_port()}/v1")
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(LLMUnavailable, match=r"\(connection refused\)$"):
            await call_llm(llm.chat(), MESSAGES, policy=policy)
        assert asyncio.get_running_loop().time() - started < 2.0
    finally:
        await llm.aclose()
        await handed_in.aclose()
