"""Barge-in over real HTTP: a client that stops reading the event stream cancels the turn.

The app runs under a real uvicorn server in this process; OpenAI is faked at the HTTP layer with
a slow token stream. When the client goes away after the first token, the model's stream is
abandoned and no reply is stored for that turn, but the caller's words are. The gateway then
records what the caller heard (`…/messages/1/interrupted`): the reply is stored as that, marked
interrupted, and it is what the model is sent as history on the next turn."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import respx
import uvicorn

from orchestrator.main import create_app
from tests.orchestrator.conftest import make_settings, new_id
from tests.orchestrator.llm_fakes import OPENAI_BASE, FakeOpenAI


def _chunk(content: str) -> bytes:
    body = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


@contextlib.asynccontextmanager
async def served(
    pg_dsn: str, data_dir: Path, chat: Callable[[], AsyncIterator[bytes]]
) -> AsyncIterator[tuple[httpx.AsyncClient, FakeOpenAI]]:
    """The orchestrator under a real uvicorn server; the model's chat answers stream `chat()`."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = make_settings(
        data_dir, pg_dsn, openai_api_key="sk-test", openai_base_url=OPENAI_BASE
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None)
    )
    with respx.mock(assert_all_called=False) as router:
        router.route(host="127.0.0.1").pass_through()
        fake = FakeOpenAI(router)  # embeddings as usual; chat answers with the given stream
        fake.route.mock(
            side_effect=lambda request: httpx.Response(
                200, headers={"content-type": "text/event-stream"}, content=chat()
            )
        )
        task = asyncio.create_task(server.serve())
        try:
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base, timeout=10) as client:
                for _ in range(200):
                    if server.started:
                        break
                    await asyncio.sleep(0.05)
                yield client, fake
        finally:
            server.should_exit = True
            await task


async def start_call(client: httpx.AsyncClient, cid: str, headers: dict[str, str]) -> None:
    body = {"call_id": cid, "provider": "generic-http", "caller": "+15550101010"}
    r = await client.post(f"/conversations/{cid}/start", json=body, headers=headers)
    assert r.status_code == 200, r.text


async def test_the_event_stream_opens_before_the_model_has_written_a_word(
    pg_dsn: str, data_dir: Path, service_headers: dict[str, str]
) -> None:
    """The stream's head goes out once the turn is accepted, not with the first token (so the
    first token's way to the caller is only its own event), and then the reply comes whole:
    each token as an event, the stored reply last."""
    cid = new_id()
    words = ["We", " open", " at", " nine."]
    sent_tokens: list[str] = []

    async def late_tokens() -> AsyncIterator[bytes]:
        await asyncio.sleep(0.8)
        for word in words:
            sent_tokens.append(word)
            yield _chunk(word)
        yield b"data: [DONE]\n\n"

    async with served(pg_dsn, data_dir, late_tokens) as (client, _fake):
        await start_call(client, cid, service_headers)
        loop = asyncio.get_running_loop()
        began = loop.time()
        async with client.stream(
            "POST",
            f"/conversations/{cid}/messages",
            json={"message": "When are you open?", "turn_id": "1"},
            headers={**service_headers, "Accept": "text/event-stream"},
        ) as response:
            opened = loop.time() - began
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert sent_tokens == [] and opened < 0.6, opened
            events = [line async for line in response.aiter_lines() if line]
    kinds = [line.split(": ", 1)[1] for line in events if line.startswith("event:")]
    assert kinds == ["token"] * len(words) + ["reply"]
    data = [json.loads(line[5:]) for line in events if line.startswith("data:")]
    assert "".join(d["text"] for d in data[:-1]) == "We open at nine."
    assert data[-1]["reply"] == "We open at nine." and data[-1]["turn_id"] == "1"


async def test_a_client_that_goes_away_cancels_the_streamed_turn(
    pg_dsn: str, data_dir: Path, service_headers: dict[str, str], admin_headers: dict[str, str]
) -> None:
    cid = new_id()
    model_stream_closed = asyncio.Event()
    sent_tokens: list[str] = []

    async def slow_tokens() -> AsyncIterator[bytes]:
        try:
            for word in ["Well", " let", " me", " think", " about", " that", " for", " a", " bit"]:
                sent_tokens.append(word)
                yield _chunk(word)
                await asyncio.sleep(0.2)
            yield b"data: [DONE]\n\n"
        finally:
            model_stream_closed.set()

    async with served(pg_dsn, data_dir, slow_tokens) as (client, fake):
        await start_call(client, cid, service_headers)
        headers = {**service_headers, "Accept": "text/event-stream"}
        async with client.stream(
            "POST",
            f"/conversations/{cid}/messages",
            json={"message": "Tell me a story", "turn_id": "1"},
            headers=headers,
        ) as response:
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    assert json.loads(line[5:]) == {"text": "Well"}
                    break  # the caller barged in: stop listening
        await asyncio.wait_for(model_stream_closed.wait(), 5)
        assert len(sent_tokens) < 9  # the model's stream was abandoned midway
        view = await client.get(f"/conversations/{cid}", headers=admin_headers)
        said = [(m["turn_id"], m["role"]) for m in view.json()["messages"]]
        assert said == [("greeting", "assistant"), ("1", "user")]

        r = await client.post(
            f"/conversations/{cid}/messages/1/interrupted",
            json={"heard": "Well"},
            headers=service_headers,
        )
        assert r.status_code == 200, r.text
        assert r.json()["interrupted"] is True and r.json()["reply"] == "Well"
        view = await client.get(f"/conversations/{cid}", headers=admin_headers)
        last = view.json()["messages"][-1]
        assert (last["turn_id"], last["role"], last["content"]) == (
            "1",
            "assistant",
            "Well",
        )
        assert last["interrupted"] is True

        fake.route.mock(side_effect=fake._answer)  # the next turn: a scripted answer
        fake.reply("Once upon a time.")
        r = await client.post(
            f"/conversations/{cid}/messages",
            json={"message": "Go on then", "turn_id": "2"},
            headers=service_headers,
        )
        assert r.status_code == 200, r.text
        sent = [(m["role"], m["content"]) for m in fake.requests[-1]["messages"][1:]]
        assert sent[-3:] == [
            ("user", "Tell me a story"),
            ("assistant", "Well"),  # what the caller heard, not what the model wrote
            ("user", "Go on then"),
        ]
