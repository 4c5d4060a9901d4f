"""Twilio ConversationRelay, as Twilio drives it: the voice webhook answers
`<Connect><ConversationRelay>` (its `welcomeGreeting` is the greeting), Twilio opens the
socket with `X-Twilio-Signature` over its public `wss://` URL (the SDK's `RequestValidator`,
the gateway's auth token), sends `setup`, then `prompt` / `dtmf` / `interrupt` frames and reads
`text` frames; an `end` frame's `handoffData` makes Twilio post the `<Connect action>`
(`relay-action`), whose TwiML transfers (`<Dial>`) or hangs up."""

from __future__ import annotations

import json
import uuid
from typing import Any

from twilio.request_validator import RequestValidator
from websockets.asyncio.client import connect

from agent_eval.providers.base import CallerTurn, PathError
from agent_eval.providers.frames import FrameReader
from agent_eval.providers.streaming import StreamCall
from agent_eval.providers.twilio import TwilioCall
from agent_eval.transcript import Reply


class TwilioRelayCall(StreamCall):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.webhooks = TwilioCall(*args, **kwargs)  # the same call's form webhooks
        self.webhooks.relay_expected = True
        self.webhooks.call_id = self.call_id

    def new_call_id(self) -> str:
        return "CA" + uuid.uuid4().hex

    async def start(self) -> Reply:
        reply = await self.webhooks.start()
        relay = self.webhooks.twiml.relay if self.webhooks.twiml is not None else None
        if relay is None:
            raise PathError(
                "the gateway answered <Gather>, not ConversationRelay: the agent talks in "
                "webhook mode; set its voice_mode: relay (or TWILIO_VOICE_MODE=relay)"
            )
        self.relay = relay
        token = self.target.twilio_auth_token or ""
        signature = RequestValidator(token).compute_signature(relay.url, {})
        local = self.target.local("http" + relay.url[2:]) if relay.url.startswith("ws") else ""
        ws_url = "ws" + local[4:]
        ws = await connect(ws_url, additional_headers={"X-Twilio-Signature": signature})
        self.reader = FrameReader(ws)
        await self.reader.send(
            {
                "type": "setup",
                "sessionId": "VX" + uuid.uuid4().hex,
                "callSid": self.call_id,
                "from": self.setup.caller,
                "to": self.setup.to,
                "direction": "inbound",
                "customParameters": relay.parameters,
            }
        )
        return Reply(
            relay.greeting,
            [{"type": "gather"}],
            reply.latency_ms,
            reply.total_ms,
            reply.wire,
            turn_id="greeting",
        )

    def prompt_frame(self, turn: CallerTurn) -> dict[str, Any]:
        if turn.action == "dtmf":
            if len(turn.text) != 1:
                raise PathError("ConversationRelay sends each key as its own frame: one key a turn")
            return {"type": "dtmf", "digit": turn.text}
        return {"type": "prompt", "voicePrompt": turn.text, "lang": "en-US", "last": True}

    def interrupt_frame(self, heard: str) -> dict[str, Any]:
        return {
            "type": "interrupt",
            "utteranceUntilInterrupt": heard,
            "durationUntilInterruptMs": 0,
        }

    async def ending(self, frame: dict[str, Any]) -> list[dict[str, Any]] | None:
        """`end` with our `handoffData`: Twilio posts the `<Connect action>`; its TwiML says
        what happens to the caller."""
        if frame.get("type") != "end":
            return None
        handoff = str(frame.get("handoffData") or "")
        twiml, _ = await self.webhooks.post(
            self.relay.action_url,
            self.webhooks.form(
                CallStatus="in-progress", SessionStatus="ended", HandoffData=handoff
            ),
        )
        self.webhooks.twiml = twiml
        if twiml.actions:
            return twiml.actions
        data = json.loads(handoff) if handoff.startswith("{") else {}
        return [{"type": str(data.get("action") or "hangup"), "to": data.get("to")}]

    async def hang_up(self) -> None:
        await self.close()  # Twilio closes the socket when the call ends
        await self.webhooks.hang_up()
