"""`PhoneChatOpenAI` sends, on the wire, the very request stock `ChatOpenAI` sends (only the SDK's
identity transform is skipped), and reads the answers the same way. OpenAI is faked at the HTTP
layer; both models are the real langchain-openai + openai 2.x clients."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_openai import ChatOpenAI

from orchestrator.agents.configuration import AgentConfiguration
from orchestrator.agents.tool_agent import tool_specs
from orchestrator.llm.chat_model import PhoneChatOpenAI

BASE = "https://api.openai.test/v1"


def conversation() -> list[BaseMessage]:
    return [
        SystemMessage("You are the front desk of Acme Dental. Be brief."),
        HumanMessage("Hi, what are your opening hours?"),
        AIMessage("We're open nine to five, Monday to Friday."),
        HumanMessage("Can you put me through to someone?"),
        AIMessage(
            "",
            tool_calls=[
                {"id": "call_7", "name": "transfer_call", "args": {"reason": "asked for a person"}}
            ],
        ),
        ToolMessage("Transfer is not available right now.", tool_call_id="call_7"),
        HumanMessage("Okay — café opening hours then? ünïcödé"),
    ]


def completion(message: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def models(http: httpx.AsyncClient, **extra: Any) -> tuple[ChatOpenAI, PhoneChatOpenAI]:
    common: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "temperature": 0.3,
        "api_key": "sk-test",
        "base_url": BASE,
        "max_retries": 0,
        "http_async_client": http,
        "stream_usage": False,
        **extra,
    }
    return ChatOpenAI(**common), PhoneChatOpenAI(**common)


async def bodies(
    run: Any, reply: dict[str, Any], **extra: Any
) -> tuple[dict[str, Any], dict[str, Any], Any, Any]:
    seen: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json=completion(reply))

    with respx.mock(assert_all_called=True) as router:
        router.post(f"{BASE}/chat/completions").mock(side_effect=answer)
        async with httpx.AsyncClient() as http:
            stock, phone = models(http, **extra)
            a = await run(stock)
            b = await run(phone)
    assert len(seen) == 2
    return seen[0], seen[1], a, b


async def test_the_body_on_the_wire_is_the_stock_one_with_tools() -> None:
    specs = tool_specs(AgentConfiguration())
    reply = {"role": "assistant", "content": "Nine to five."}
    stock_body, phone_body, a, b = await bodies(
        lambda m: m.bind_tools(specs).ainvoke(conversation()), reply
    )
    assert phone_body == stock_body
    assert phone_body["tools"] and len(phone_body["messages"]) == 7
    assert a.content == b.content == "Nine to five."


async def test_the_body_on_the_wire_is_the_stock_one_without_tools() -> None:
    reply = {"role": "assistant", "content": "Hello."}
    stock_body, phone_body, _, b = await bodies(lambda m: m.ainvoke(conversation()), reply)
    assert phone_body == stock_body
    assert "tools" not in phone_body
    assert b.content == "Hello."


async def test_tool_calls_in_the_answer_are_parsed_the_same() -> None:
    specs = tool_specs(AgentConfiguration())
    reply = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_9",
                "type": "function",
                "function": {"name": "end_call", "arguments": json.dumps({"reason": "bye"})},
            }
        ],
    }
    _, _, a, b = await bodies(lambda m: m.bind_tools(specs).ainvoke(conversation()), reply)
    assert a.tool_calls == b.tool_calls
    assert b.tool_calls[0]["name"] == "end_call"


async def test_a_callers_own_extra_body_is_kept_and_sent() -> None:
    reply = {"role": "assistant", "content": "Hi."}
    stock_body, phone_body, _, _ = await bodies(
        lambda m: m.ainvoke(conversation()), reply, extra_body={"top_k": 5}
    )
    assert phone_body == stock_body
    assert phone_body["top_k"] == 5


async def test_streamed_requests_carry_the_same_body() -> None:
    seen: list[dict[str, Any]] = []
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"content": "Hi there"}, "finish_reason": "stop"}],
    }

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(
            200,
            content=f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode(),
            headers={"content-type": "text/event-stream"},
        )

    specs = tool_specs(AgentConfiguration())
    with respx.mock(assert_all_called=True) as router:
        router.post(f"{BASE}/chat/completions").mock(side_effect=answer)
        async with httpx.AsyncClient() as http:
            texts = []
            for model in models(http):
                text = ""
                async for part in model.bind_tools(specs).astream(conversation()):
                    text += str(part.content)
                texts.append(text)
    assert seen[0] == seen[1] and seen[1]["stream"] is True
    assert texts == ["Hi there", "Hi there"]


def test_structured_output_requests_are_left_to_langchain() -> None:
    http = httpx.AsyncClient()
    _, phone = models(http)
    payload = phone._get_request_payload(conversation(), response_format={"type": "json_object"})
    assert payload["messages"] and "extra_body" not in payload


@pytest.mark.parametrize("history", [0, 18])
def test_the_payload_keeps_messages_out_of_the_transformed_body(history: int) -> None:
    http = httpx.AsyncClient()
    _, phone = models(http)
    msgs: list[BaseMessage] = [SystemMessage("s")]
    msgs += [HumanMessage("q") if i % 2 == 0 else AIMessage("a") for i in range(history)]
    msgs.append(HumanMessage("last"))
    payload = phone._get_request_payload(msgs)
    assert payload["messages"] == []
    assert len(payload["extra_body"]["messages"]) == history + 2


def without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    return value


def same_message(a: Any, b: Any) -> None:
    """Everything but the run id langchain gives each call. The one difference: `token_usage`
    in the response metadata is the API's own object, where the SDK's model dump adds the
    fields the API left out (`completion_tokens_details`...) as nulls."""
    da, db = a.model_dump(exclude={"id"}), b.model_dump(exclude={"id"})
    for d in (da, db):
        usage = d["response_metadata"].get("token_usage")
        if usage is not None:
            d["response_metadata"]["token_usage"] = without_nulls(usage)
    assert da == db


@pytest.mark.parametrize(
    ("reply", "top"),
    [
        ({"role": "assistant", "content": "Nine to five."}, {}),
        ({"role": "assistant", "content": "No.", "refusal": "I can't help with that."}, {}),
        (
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_3",
                        "type": "function",
                        "function": {"name": "remember", "arguments": '{"fact": "likes tea"}'},
                    },
                    {
                        "id": "call_4",
                        "type": "function",
                        "function": {"name": "end_call", "arguments": "{not json"},
                    },
                ],
            },
            {"system_fingerprint": "fp_1", "service_tier": "default"},
        ),
        ({"role": "assistant", "content": "Hi."}, {"usage": None, "id": None}),
    ],
    ids=["text", "refusal", "tool-calls", "no-usage"],
)
async def test_the_answer_is_the_stock_message(reply: dict[str, Any], top: dict[str, Any]) -> None:
    """The completion's JSON goes to langchain-openai's `_create_chat_result` as a dict (no SDK
    model, no thread hop): the AIMessage is the one stock `ChatOpenAI` makes, field for field."""
    specs = tool_specs(AgentConfiguration())
    body = {**completion(reply), **top}
    with respx.mock(assert_all_called=True) as router:
        router.post(f"{BASE}/chat/completions").mock(return_value=httpx.Response(200, json=body))
        async with httpx.AsyncClient() as http:
            stock, phone = models(http)
            a = await stock.bind_tools(specs).ainvoke(conversation())
            b = await phone.bind_tools(specs).ainvoke(conversation())
    same_message(a, b)
    assert b.content == (reply["content"] or "")


BAD_ANSWERS = {
    "html": httpx.Response(200, text="<html>moved</html>", headers={"content-type": "text/html"}),
    "json-list": httpx.Response(200, json=["not", "an", "object"]),
    "400": httpx.Response(400, json={"error": {"message": "bad", "type": "invalid_request_error"}}),
    "429": httpx.Response(429, json={"error": {"message": "slow down"}}),
    "503": httpx.Response(503, text="unavailable"),
}


@pytest.mark.parametrize("response", list(BAD_ANSWERS.values()), ids=list(BAD_ANSWERS))
async def test_bad_answers_raise_what_stock_raises(response: httpx.Response) -> None:
    raised: list[tuple[type[BaseException], str]] = []
    with respx.mock(assert_all_called=True) as router:
        router.post(f"{BASE}/chat/completions").mock(return_value=response)
        async with httpx.AsyncClient() as http:
            for model in models(http):
                try:
                    await model.ainvoke(conversation())
                except Exception as exc:  # whatever stock raises, ours must raise too
                    raised.append((type(exc), str(exc)))
    assert len(raised) == 2, "both models must refuse the answer"
    assert raised[0] == raised[1]


# -- the replayed request (second call on) ------------------------------------------------------


def wire(request: httpx.Request) -> tuple[str, dict[str, str], dict[str, Any]]:
    headers = {k: v for k, v in request.headers.items() if k != "content-length"}
    return str(request.url), headers, json.loads(request.content)


async def test_later_calls_replay_the_sdks_request_with_their_own_body() -> None:
    """From the second call on the SDK is not asked to build the request: the URL, every header
    it set (auth, user agent, X-Stainless-*, organisation, default headers and query) and the
    body encoding are what stock `ChatOpenAI` sends for the same conversation."""
    specs = tool_specs(AgentConfiguration())
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json=completion({"role": "assistant", "content": "Hi."}))

    extra = {
        "organization": "org-7",
        "default_headers": {"X-Team": "front-desk"},
        "default_query": {"api-version": "2026-01"},
    }
    later = [HumanMessage("And on Saturdays?")]
    with respx.mock(assert_all_called=True) as router:
        router.post(f"{BASE}/chat/completions").mock(side_effect=answer)
        async with httpx.AsyncClient() as http:
            stock, phone = models(http, **extra)
            await stock.bind_tools(specs).ainvoke(later)
            await phone.bind_tools(specs).ainvoke(conversation())  # learns the request
            assert phone._sent is not None
            replayed = await phone.bind_tools(specs).ainvoke(later)
    assert len(sent) == 3
    stock_url, stock_headers, stock_body = wire(sent[0])
    url, headers, body = wire(sent[2])
    assert url == stock_url and "api-version=2026-01" in url
    assert headers["authorization"] == "Bearer sk-test"
    assert headers["openai-organization"] == "org-7" and headers["x-team"] == "front-desk"
    assert headers == stock_headers
    assert body == stock_body
    assert body["messages"] == [{"role": "user", "content": "And on Saturdays?"}]
    assert replayed.content == "Hi."


async def test_replayed_answers_are_the_stock_message() -> None:
    reply = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_5",
                "type": "function",
                "function": {"name": "end_call", "arguments": json.dumps({"reason": "bye"})},
            }
        ],
    }
    specs = tool_specs(AgentConfiguration())
    with respx.mock(assert_all_called=True) as router:
        router.post(f"{BASE}/chat/completions").mock(
            return_value=httpx.Response(200, json=completion(reply))
        )
        async with httpx.AsyncClient() as http:
            stock, phone = models(http)
            a = await stock.bind_tools(specs).ainvoke(conversation())
            await phone.bind_tools(specs).ainvoke(conversation())
            b = await phone.bind_tools(specs).ainvoke(conversation())
    same_message(a, b)


FAILURES: dict[str, httpx.Response | Exception] = {
    **BAD_ANSWERS,
    "timeout": httpx.ReadTimeout("read timed out"),
    "connect-error": httpx.ConnectError("connection refused"),
}


@pytest.mark.parametrize("failure", list(FAILURES.values()), ids=list(FAILURES))
async def test_replayed_failures_raise_what_stock_raises(failure: Any) -> None:
    good = httpx.Response(200, json=completion({"role": "assistant", "content": "Hi."}))

    def bad(request: httpx.Request) -> httpx.Response:
        if isinstance(failure, Exception):
            raise failure
        return failure

    raised: list[tuple[type[BaseException], str]] = []
    with respx.mock(assert_all_called=True) as router:
        route = router.post(f"{BASE}/chat/completions")
        async with httpx.AsyncClient() as http:
            stock, phone = models(http)
            route.mock(side_effect=bad)
            try:
                await stock.ainvoke(conversation())
            except Exception as exc:
                raised.append((type(exc), str(exc)))
            route.mock(return_value=good)
            await phone.ainvoke(conversation())  # learns the request
            route.mock(side_effect=bad)
            try:
                await phone.ainvoke(conversation())
            except Exception as exc:
                raised.append((type(exc), str(exc)))
    assert len(raised) == 2, "both models must refuse the answer"
    assert raised[0] == raised[1]


async def phone_calls(run: Any) -> tuple[PhoneChatOpenAI, list[httpx.Request]]:
    """`run(phone)` against an API that answers "Hi." to everything; the requests it sent."""
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json=completion({"role": "assistant", "content": "Hi."}))

    with respx.mock(assert_all_called=True) as router:
        router.post(f"{BASE}/chat/completions").mock(side_effect=answer)
        async with httpx.AsyncClient() as http:
            _, phone = models(http)
            await run(phone)
    return phone, sent


async def test_per_call_headers_keep_the_sdks_path() -> None:
    async def run(phone: PhoneChatOpenAI) -> None:
        await phone.ainvoke(conversation())
        await phone.ainvoke(conversation(), extra_headers={"X-Trace": "t-1"})

    _, sent = await phone_calls(run)
    assert sent[1].headers["x-trace"] == "t-1"


async def test_a_request_with_per_call_headers_is_not_the_one_replayed() -> None:
    async def run(phone: PhoneChatOpenAI) -> None:
        await phone.ainvoke(conversation(), extra_headers={"X-Trace": "t-1"})
        assert phone._sent is None
        await phone.ainvoke(conversation())  # learns from this one
        await phone.ainvoke(conversation())  # replayed

    phone, sent = await phone_calls(run)
    assert phone._sent is not None
    assert [r.headers.get("x-trace") for r in sent] == ["t-1", None, None]
