"""Barge-in over ConversationRelay, end to end (issue 18): the real gateway and the real
orchestrator each under uvicorn, the LLM faked at the HTTP layer streaming slowly. The first
`text` frame leaves the gateway before the fake model has finished; an `interrupt` mid-reply
closes the model's request (observed at the fake) and the agent's message is stored as the
caller heard it, marked interrupted."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import respx
import uvicorn
import websockets

from tests.gateway import test_relay as relay
from tests.gateway import test_twilio_call as tw
from tests.gateway.conftest import JWT_SECRET, admin_token, auth, served
from tests.gateway.ws_client import collect
from tests.orchestrator.conftest import make_settings
from tests.orchestrator.llm_fakes import OPENAI_BASE, FakeOpenAI

WORDS = ["Well", " let", " me", " think", " about", " that", " for", " a", " bit", "."]
TOKEN_PAUSE_S = 0.2


def _chunk(content: str) -> bytes:
    body = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


@asynccontextmanager
async def orchestrator_on(
    pg_dsn: str, data_dir: Path, tokens: Callable[[], AsyncIterator[bytes]]
) -> AsyncIterator[tuple[str, FakeOpenAI]]:
    """The real orchestrator under uvicorn, its model a fake streaming `tokens()`; its base URL
    and the fake (to script later turns)."""
    from orchestrator.main import create_app as create_orchestrator

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    orch_settings = make_settings(
        data_dir / "orch",
        pg_dsn,
        jwt_secret=JWT_SECRET,  # the gateway's service tokens are signed with it
        openai_api_key="sk-test",
        openai_base_url=OPENAI_BASE,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_orchestrator(orch_settings), host="127.0.0.1", port=port, log_config=None
        )
    )
    with respx.mock(assert_all_called=False) as router:
        router.route(host="127.0.0.1").pass_through()
        fake = FakeOpenAI(router)
        fake.route.mock(
            side_effect=lambda request: httpx.Response(
                200, headers={"content-type": "text/event-stream"}, content=tokens()
            )
        )
        task = asyncio.create_task(server.serve())
        try:
            for _ in range(200):
                if server.started:
                    break
                await asyncio.sleep(0.05)
            yield f"http://127.0.0.1:{port}", fake
        finally:
            server.should_exit = True
            await task


async def test_an_interrupt_closes_the_models_request_and_keeps_what_was_heard(
    pg_dsn: str, data_dir: Path
) -> None:
    model_closed_at: list[float] = []
    sent: list[tuple[float, str]] = []

    async def slow_tokens() -> AsyncIterator[bytes]:
        try:
            for word in WORDS:
                sent.append((time.monotonic(), word))
                yield _chunk(word)
                await asyncio.sleep(TOKEN_PAUSE_S)
            yield b"data: [DONE]\n\n"
        finally:
            model_closed_at.append(time.monotonic())

    async with orchestrator_on(pg_dsn, data_dir, slow_tokens) as (base, fake):
        settings = relay.relay_settings(
            data_dir / "gw",
            orchestrator_url=base,
            turn_timeout_s=6.0,
            stream_first_token_timeout_s=5.0,  # no holding line, even on a loaded machine
        )
        sid = tw.new_sid()
        async with served(settings) as gw:
            await tw.twilio_post(gw, "/voice/webhook/twilio", tw.call_form(sid))
            async with relay.relay_socket(gw) as ws:
                await ws.send(relay.setup_frame(sid))
                await ws.send(relay.prompt("Tell me a story"))
                first = json.loads(await asyncio.wait_for(ws.recv(), 5))
                first_at = time.monotonic()
                assert first == {"type": "text", "token": "Well", "last": False}
                assert len(sent) < len(WORDS)  # the model was still writing
                heard = "Well let"
                await ws.send(
                    json.dumps(
                        {
                            "type": "interrupt",
                            "utteranceUntilInterrupt": heard,
                            "durationUntilInterruptMs": 900,
                        }
                    )
                )
                interrupted_at = time.monotonic()
                for _ in range(100):
                    if model_closed_at:
                        break
                    await asyncio.sleep(0.02)
                assert model_closed_at, "the model's request was left running"
                assert model_closed_at[0] - interrupted_at < 1.0
                assert len(sent) < len(WORDS)  # abandoned midway, not run to the end
                assert first_at - sent[0][0] < 1.0
                # the next prompt is answered normally, with what was heard in its history
                fake.route.mock(side_effect=fake._answer)
                fake.reply("Once upon a time.")
                await ws.send(relay.prompt("Go on then"))
                frames = await relay.reply_frames(ws)
                assert relay.words(frames) == "Once upon a time."
            view = (
                await httpx.AsyncClient(base_url=base).get(f"/conversations/{sid}", headers=auth())
            ).json()
        said = [(m["role"], m["content"], m.get("interrupted")) for m in view["messages"]]
        assert ("assistant", heard, True) in said
        history = [(m["role"], m["content"]) for m in fake.requests[-1]["messages"][1:]]
        assert history[-3:] == [
            ("user", "Tell me a story"),
            ("assistant", heard),
            ("user", "Go on then"),
        ]


async def test_a_late_first_token_gets_the_holding_line_and_a_failure_midway_an_apology(
    pg_dsn: str, data_dir: Path
) -> None:
    """No dead air: with no first token within STREAM_FIRST_TOKEN_TIMEOUT_S the caller hears
    the holding line, then the reply; a model that fails mid-reply ends with an apology. The
    turn's stages are in `message.sent` and in voice_stream_turn_seconds."""
    from realtime_gateway.prompts import say

    mode = {"fail": False}

    async def late_tokens() -> AsyncIterator[bytes]:
        await asyncio.sleep(0.8)
        for word in ["Our", " hours", " are", " nine", " to", " five."]:
            yield _chunk(word)
            await asyncio.sleep(0.02)
            if mode["fail"] and word == " are":
                raise RuntimeError("the model's connection broke")
        yield b"data: [DONE]\n\n"

    async with orchestrator_on(pg_dsn, data_dir, late_tokens) as (base, _fake):
        settings = relay.relay_settings(
            data_dir / "gw",
            orchestrator_url=base,
            turn_timeout_s=6.0,
            stream_first_token_timeout_s=0.3,
        )
        sid = tw.new_sid()
        async with served(settings) as gw:
            await tw.twilio_post(gw, "/voice/webhook/twilio", tw.call_form(sid))
            events_url = f"{gw.ws_url}?call_id={sid}&token={admin_token()}"
            async with relay.relay_socket(gw) as ws, websockets.connect(events_url) as events:
                await ws.send(relay.setup_frame(sid))
                await ws.send(relay.prompt("When are you open?"))
                frames = await relay.reply_frames(ws)
                tokens = [f["token"] for f in frames]
                assert tokens[0].strip() == say("holding")
                assert "".join(tokens[1:]) == "Our hours are nine to five."
                sent = await collect(
                    events, lambda evs: any(e["type"] == "message.sent" for e in evs)
                )
                timings = next(e for e in sent if e["type"] == "message.sent")["data"]["timings_ms"]
                assert {"first_token", "first_frame", "token_to_frame"} <= set(timings)
                assert timings["first_token"] >= 700  # the model was late
                metrics_text = (await gw.client.get("/metrics")).text
                counted = re.search(
                    r'voice_stream_turn_seconds_count\{stage="token_to_frame"\} (\d+)',
                    metrics_text,
                )
                assert counted is not None and int(counted.group(1)) >= 1

                mode["fail"] = True
                await ws.send(relay.prompt("And on Sundays?"))
                frames = await relay.reply_frames(ws)
                said = "".join(f["token"] for f in frames)
                # the orchestrator's own apology follows what was already said
                assert said.startswith("One moment") and "sorry" in said.lower()
                assert frames[-1] == {"type": "text", "token": "", "last": True}
