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
