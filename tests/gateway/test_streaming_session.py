"""The streaming session's rules with the orchestrator failing under it (issue 18: "if the
orchestrator dies mid-reply, finish with an apology"; "bad frames get an error frame"): the
session is driven through a real `GatewayFlow` whose orchestrator is a real HTTP server that
drops the connection midway through its event stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from realtime_gateway.events import CallEvent
from realtime_gateway.prompts import say
from realtime_gateway.streaming import StreamSession
from realtime_gateway.vocabulary import CallInfo
from shared.contract import Action
from tests.gateway.conftest import gateway, new_call_id, settings_for


class Recorder:
    def __init__(self) -> None:
        self.frames: list[tuple[str, bool]] = []
        self.actions: list[Action] = []
        self.errors: list[str] = []
        self.done = asyncio.Event()

    async def text(self, token: str, last: bool) -> None:
        self.frames.append((token, last))
        if last:
            self.done.set()

    async def action(self, action: Action) -> None:
        self.actions.append(action)

    async def error(self, message: str) -> None:
        self.errors.append(message)

    async def hand_over(self) -> None:
        return None


def dying_orchestrator() -> httpx.MockTransport:
    """An orchestrator that starts a reply and dies: the event stream breaks after one piece."""

    async def pieces() -> AsyncIterator[bytes]:
        yield b'event: token\ndata: {"text": "Our hours "}\n\n'
        await asyncio.sleep(0.05)
        raise httpx.ReadError("connection reset by peer")

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/start"):
            body = {"conversation_id": "c", "turn_id": "greeting", "reply": "Hi", "actions": []}
            return httpx.Response(200, json=body)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=pieces())

    return httpx.MockTransport(handler)


async def test_an_orchestrator_that_dies_mid_reply_ends_it_with_an_apology(
    data_dir: Path,
) -> None:
    async with gateway(settings_for(data_dir), dying_orchestrator()) as gw:
        sink = Recorder()
        call = CallInfo(call_id=new_call_id(), provider="generic-http")
        session = StreamSession(gw.rt.flow, call, sink)
        await session.prompt("When are you open?")
        await asyncio.wait_for(sink.done.wait(), 5)
        said = "".join(token for token, _ in sink.frames)
        assert said.startswith("Our hours ") and said.endswith(say("apology"))
        assert sink.frames[-1] == ("", True)
        assert json.dumps(sink.frames).count(say("apology")) == 1


def scripted_orchestrator(
    interrupted: list[dict[str, object]], *, pause_s: float = 0.0, known_turn: bool = True
) -> httpx.MockTransport:
    """An orchestrator that streams "We open at nine. See you then." (a pause between pieces),
    and records each `interrupted` it is told of (404 when it never had the turn)."""

    async def pieces() -> AsyncIterator[bytes]:
        for text in ("We open at nine. ", "See you then."):
            yield f"event: token\ndata: {json.dumps({'text': text})}\n\n".encode()
            await asyncio.sleep(pause_s)
        reply = {"conversation_id": "c", "turn_id": "1", "reply": REPLY, "actions": []}
        yield f"event: reply\ndata: {json.dumps(reply)}\n\n".encode()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/interrupted"):
            interrupted.append(json.loads(request.content))
            if not known_turn:
                return httpx.Response(404, json={"error": {"code": "turn_not_found"}})
            body = {"conversation_id": "c", "turn_id": "1", "reply": "", "interrupted": True}
            return httpx.Response(200, json=body)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=pieces())

    return httpx.MockTransport(handler)


REPLY = "We open at nine. See you then."


async def test_an_interrupt_after_the_text_went_out_keeps_what_the_caller_heard(
    data_dir: Path,
) -> None:
    """ConversationRelay's voice speaks for seconds after the last frame: an `interrupt` then
    carries what was heard, shorter than the reply, and that is what must be kept — once."""
    told: list[dict[str, object]] = []
    async with gateway(settings_for(data_dir), scripted_orchestrator(told)) as gw:
        sink = Recorder()
        call = CallInfo(call_id=new_call_id(), provider="twilio")
        session = StreamSession(gw.rt.flow, call, sink)
        await session.prompt("When are you open?")
        await asyncio.wait_for(sink.done.wait(), 5)
        assert "".join(token for token, _ in sink.frames) == REPLY
        await session.interrupt(None)  # nothing said of what was heard: nothing to correct
        await session.interrupt(REPLY)  # heard it all: nothing to correct
        assert told == []
        await session.interrupt("We open at nine.")
        await session.interrupt("We open at nine.")  # Twilio repeating itself
        assert told == [{"heard": "We open at nine."}]


async def test_an_interrupt_before_the_orchestrator_had_the_turn_is_no_error(
    data_dir: Path,
) -> None:
    told: list[dict[str, object]] = []
    transport = scripted_orchestrator(told, pause_s=1.0, known_turn=False)
    async with gateway(settings_for(data_dir), transport) as gw:
        sink = Recorder()
        call = CallInfo(call_id=new_call_id(), provider="twilio")
        session = StreamSession(gw.rt.flow, call, sink)
        published: list[str] = []
        bus = gw.rt.flow.bus
        publish = bus.publish

        async def recorded(event: CallEvent) -> None:
            published.append(event.type)
            await publish(event)

        bus.publish = recorded  # type: ignore[method-assign]
        await session.prompt("When are you open?")
        for _ in range(250):
            if sink.frames:
                break
            await asyncio.sleep(0.02)
        await session.interrupt("We")
        assert told == [{"heard": "We"}]
        assert published, "the flow publishes through the recorder"
        assert "error.occurred" not in published


async def test_a_streamed_turn_the_orchestrator_refuses_is_reported_with_its_status(
    data_dir: Path,
) -> None:
    """A 4xx to the streamed turn is a refusal (its status in the error event), not a stream
    that happened to end early; the caller hears the apology."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(409, json={"error": {"code": "conversation_ended"}})

    async with gateway(settings_for(data_dir), httpx.MockTransport(handler)) as gw:
        sink = Recorder()
        session = StreamSession(
            gw.rt.flow, CallInfo(call_id=new_call_id(), provider="twilio"), sink
        )
        errors: list[str] = []
        publish = gw.rt.flow.bus.publish

        async def recorded(event: CallEvent) -> None:
            if event.type == "error.occurred":
                errors.append(str(event.data.get("message")))
            await publish(event)

        gw.rt.flow.bus.publish = recorded  # type: ignore[method-assign]
        await session.prompt("When are you open?")
        await asyncio.wait_for(sink.done.wait(), 5)
        assert "".join(token for token, _ in sink.frames).strip() == say("apology")
        assert any("refused the streamed turn (409)" in e for e in errors), errors


async def test_a_reply_that_never_starts_gets_the_holding_line_then_the_apology_at_the_budget(
    data_dir: Path,
) -> None:
    """No dead air, no endless wait: the holding line at the first-token timeout, the apology
    at the turn budget, in that order, and the orchestrator's stream is closed (so is the
    model's request behind it) rather than left to run."""
    closed = asyncio.Event()

    async def silent() -> AsyncIterator[bytes]:
        try:
            await asyncio.sleep(30)
            yield b""
        finally:
            closed.set()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=silent())

    async with gateway(settings_for(data_dir), httpx.MockTransport(handler)) as gw:
        sink = Recorder()
        call = CallInfo(call_id=new_call_id(), provider="twilio")
        session = StreamSession(
            gw.rt.flow, call, sink, first_token_timeout_s=0.1, turn_budget_s=0.5
        )
        loop = asyncio.get_running_loop()
        began = loop.time()
        await session.prompt("When are you open?")
        await asyncio.wait_for(sink.done.wait(), 5)
        took = loop.time() - began
        tokens = [token.strip() for token, _ in sink.frames]
        assert tokens == [say("holding"), say("apology"), ""], tokens
        assert 0.45 <= took < 2.0, took
        await asyncio.wait_for(closed.wait(), 1)
