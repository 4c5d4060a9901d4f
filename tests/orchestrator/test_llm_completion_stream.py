"""`PhoneChatOpenAI.stream_message` (`llm/completion_stream.py`) reads a streamed completion off
the wire and must give what stock langchain-openai's `astream` gives, merged: the same request
on the wire, the same text piece by piece, the same tool calls (valid and not), the same errors.
OpenAI is faked at the HTTP layer (respx); both models are the real langchain-openai + openai
2.x clients."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx
from langchain_core.messages import AIMessage, AIMessageChunk

from orchestrator.agents.configuration import AgentConfiguration
from orchestrator.agents.tool_agent import tool_specs
from orchestrator.llm.calls import LLMUnavailable, RetryPolicy, call_llm
from tests.orchestrator.test_llm_chat_model import BASE, conversation, models, wire


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-s",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def sse(*items: dict[str, Any] | str, crlf: bool = False) -> bytes:
    end = "\r\n" if crlf else "\n"
    lines = []
    for item in items:
        data = item if isinstance(item, str) else json.dumps(item)
        lines.append(f"data: {data}{end}{end}")
    return "".join(lines).encode()


def streamed(body: bytes) -> httpx.Response:
    return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})


TEXT = [chunk({"role": "assistant", "content": ""})] + [
    chunk({"content": piece}) for piece in ("We open ", "at nine", " on Sundays.")
]
TOOLS = [
    chunk({"role": "assistant", "content": "One moment."}),
    chunk(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "transfer_call", "arguments": ""},
                }
            ]
        }
    ),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"reason": "a per'}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'son"}'}}]}),
    chunk(
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "end_call", "arguments": "{not json"},
                }
            ]
        }
    ),
    chunk({}, finish="tool_calls"),
]


async def both(body: bytes) -> tuple[AIMessage, list[str], AIMessage, list[str], list[Any]]:
    """Stock `astream` merged, and `stream_message`, on the same streamed answer; the bodies."""
    seen: list[Any] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return streamed(body)

    specs = tool_specs(AgentConfiguration())
    with respx.mock(assert_all_called=True) as router:
        router.post(f"{BASE}/chat/completions").mock(side_effect=answer)
        async with httpx.AsyncClient() as http:
            stock, phone = models(http)
            full: AIMessageChunk | None = None
            stock_pieces: list[str] = []
            async for part in stock.bind_tools(specs).astream(conversation()):
                full = part if full is None else full + part  # type: ignore[assignment]
                if part.content:
                    stock_pieces.append(str(part.content))
            assert full is not None
            stock_message = AIMessage(
                content=full.content,
                tool_calls=full.tool_calls,
                invalid_tool_calls=full.invalid_tool_calls,
            )
            pieces: list[str] = []

            async def sink(text: str) -> None:
                pieces.append(text)

            assert phone.streams_lean()
            message = await phone.stream_message(conversation(), tools=specs, on_token=sink)
    return stock_message, stock_pieces, message, pieces, seen


@pytest.mark.parametrize("crlf", [False, True])
async def test_text_arrives_piece_by_piece_as_stock_gives_it(crlf: bool) -> None:
    stock, stock_pieces, message, pieces, seen = await both(sse(*TEXT, "[DONE]", crlf=crlf))
    assert pieces == stock_pieces == ["We open ", "at nine", " on Sundays."]
    assert message.content == stock.content == "We open at nine on Sundays."
    assert seen[0] == seen[1] and seen[1]["stream"] is True and seen[1]["tools"]


async def test_tool_calls_merge_as_stock_merges_them() -> None:
    stock, _, message, pieces, _ = await both(sse(*TOOLS, "[DONE]"))
    assert pieces == ["One moment."]
    assert message.tool_calls == stock.tool_calls
    assert message.tool_calls[0] == {
        "name": "transfer_call",
        "args": {"reason": "a person"},
        "id": "call_1",
        "type": "tool_call",
    }
    assert [c["id"] for c in message.tool_calls] == ["call_1", "call_2"]
    assert message.invalid_tool_calls == stock.invalid_tool_calls


async def test_a_stream_that_ends_without_done_keeps_what_came() -> None:
    stock, _, message, _, _ = await both(sse(*TEXT) + b": keep-alive\n\nevent: x\n")
    assert message.content == stock.content == "We open at nine on Sundays."


async def test_a_data_line_split_across_reads_is_read_whole() -> None:
    """The transport hands bytes as they come: a line cut anywhere is joined before parsing."""
    body = sse(*TEXT, "[DONE]")

    async def trickle() -> Any:
        for i in range(0, len(body), 7):
            yield body[i : i + 7]

    specs = tool_specs(AgentConfiguration())
    with respx.mock(assert_all_called=True) as router:
        router.post(f"{BASE}/chat/completions").mock(
            return_value=httpx.Response(200, content=trickle())
        )
        async with httpx.AsyncClient() as http:
            _, phone = models(http)
            pieces: list[str] = []

            async def sink(text: str) -> None:
                pieces.append(text)

            message = await phone.stream_message(conversation(), tools=specs, on_token=sink)
    assert pieces == ["We open ", "at nine", " on Sundays."]
    assert message.content == "We open at nine on Sundays."


ERRORS: dict[str, httpx.Response | Exception] = {
    "error-in-stream": streamed(
        sse(TEXT[1], {"error": {"message": "overloaded", "type": "server_error"}})
    ),
    "status-500": httpx.Response(500, json={"error": {"message": "boom", "type": "server"}}),
    "status-429": httpx.Response(429, json={"error": {"message": "slow down", "type": "rate"}}),
    "status-400": httpx.Response(400, json={"error": {"message": "bad", "type": "invalid"}}),
    "timeout": httpx.ReadTimeout("read timed out"),
    "connect-error": httpx.ConnectError("connection refused"),
}


@pytest.mark.parametrize("failure", list(ERRORS.values()), ids=list(ERRORS))
@pytest.mark.parametrize("learnt", [False, True], ids=["sdk-request", "replayed-request"])
async def test_failures_raise_what_stock_raises(failure: Any, learnt: bool) -> None:
    def bad(request: httpx.Request) -> httpx.Response:
        if isinstance(failure, Exception):
            raise failure
        return failure

    good = streamed(sse(*TEXT, "[DONE]"))
    raised: list[tuple[type[BaseException], str]] = []

    async def sink(text: str) -> None:
        pass

    with respx.mock(assert_all_called=True) as router:
        route = router.post(f"{BASE}/chat/completions")
        async with httpx.AsyncClient() as http:
            stock, phone = models(http)
            route.mock(side_effect=bad)
            try:
                async for _ in stock.astream(conversation()):
                    pass
            except Exception as exc:
                raised.append((type(exc), str(exc)))
            if learnt:
                route.mock(return_value=good)
                await phone.stream_message(conversation(), tools=None, on_token=sink)
                assert phone._sent is not None
                route.mock(side_effect=bad)
            try:
                await phone.stream_message(conversation(), tools=None, on_token=sink)
            except Exception as exc:
                raised.append((type(exc), str(exc)))
    assert len(raised) == 2, "both models must raise"
    assert raised[0] == raised[1]


async def test_later_streams_replay_the_sdks_request_with_their_own_body() -> None:
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return streamed(sse(*TEXT, "[DONE]"))

    async def sink(text: str) -> None:
        pass

    specs = tool_specs(AgentConfiguration())
    extra = {"organization": "org-7", "default_headers": {"X-Team": "front-desk"}}
    with respx.mock(assert_all_called=True) as router:
        router.post(f"{BASE}/chat/completions").mock(side_effect=answer)
        async with httpx.AsyncClient() as http:
            stock, phone = models(http, **extra)
            async for _ in stock.bind_tools(specs).astream(conversation()):
                pass
            await phone.stream_message(conversation(), tools=specs, on_token=sink)
            assert phone._sent is not None
            message = await phone.stream_message(conversation(), tools=specs, on_token=sink)
    assert len(sent) == 3
    assert wire(sent[2]) == wire(sent[0])
    assert message.content == "We open at nine on Sundays."


async def test_call_llm_does_not_retry_once_a_word_went_out() -> None:
    """A stream that fails after its first words is not asked again (the caller heard them);
    one that fails before any is retried."""
    calls = 0

    def answer(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return streamed(sse(TEXT[1], {"error": {"message": "overloaded"}}))

    heard: list[str] = []

    async def sink(text: str) -> None:
        heard.append(text)

    with respx.mock(assert_all_called=True) as router:
        router.post(f"{BASE}/chat/completions").mock(side_effect=answer)
        async with httpx.AsyncClient() as http:
            _, phone = models(http)
            with pytest.raises(LLMUnavailable, match="APIError"):
                await call_llm(
                    phone, conversation(), on_token=sink, policy=RetryPolicy(backoff_s=0.0)
                )
    assert calls == 1 and heard == ["We open "]

    calls = 0
    with respx.mock(assert_all_called=True) as router:
        router.post(f"{BASE}/chat/completions").mock(
            side_effect=[
                httpx.Response(503, json={"error": {"message": "later"}}),
                streamed(sse(*TEXT, "[DONE]")),
            ]
        )
        async with httpx.AsyncClient() as http:
            _, phone = models(http)
            result = await call_llm(
                phone, conversation(), on_token=sink, policy=RetryPolicy(backoff_s=0.0)
            )
    assert result.attempts == 2 and result.message.content == "We open at nine on Sundays."


async def test_callbacks_or_tracing_keep_langchains_stream() -> None:
    from langchain_core.callbacks import AsyncCallbackHandler
    from langchain_core.tracers.context import tracing_v2_callback_var

    async with httpx.AsyncClient() as http:
        _, phone = models(http)
        assert phone.streams_lean()
        traced = tracing_v2_callback_var.set(object())  # type: ignore[arg-type]
        try:
            assert not phone.streams_lean()
        finally:
            tracing_v2_callback_var.reset(traced)
        assert phone.streams_lean()
        _, watched = models(http, callbacks=[AsyncCallbackHandler()])
        assert not watched.streams_lean()
