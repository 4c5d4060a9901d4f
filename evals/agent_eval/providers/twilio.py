"""Twilio Programmable Voice in webhook mode, as Twilio drives it: form POSTs to the voice
webhook and to each `<Gather action>`, every one signed with `X-Twilio-Signature` computed by
the twilio SDK's `RequestValidator` with the gateway's auth token over the public URL (what
the gateway checks); the TwiML answers are followed as Twilio follows them. The call's end is
the status callback (`CallStatus=completed`); a transfer first posts the `<Dial action>` (the
person answered)."""

from __future__ import annotations

import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from twilio.request_validator import RequestValidator

from agent_eval.providers.base import CallerTurn, PathError, ProviderCall, check_status, elapsed_ms
from agent_eval.providers.twiml import TwimlReply, read_twiml
from agent_eval.transcript import Reply

VOICE_PATH = "/voice/webhook/twilio"


class TwilioCall(ProviderCall):
    relay_expected: bool | None = False  # webhook turns: a <Gather> must come back
    twiml: TwimlReply | None = None  # the last TwiML the gateway answered

    def new_call_id(self) -> str:
        return "CA" + uuid.uuid4().hex

    def form(self, **extra: str) -> dict[str, str]:
        return {
            "AccountSid": "AC" + "0" * 32,
            "ApiVersion": "2010-04-01",
            "CallSid": self.call_id,
            "From": self.setup.caller,
            "Caller": self.setup.caller,
            "To": self.setup.to,
            "Called": self.setup.to,
            "Direction": "inbound",
            **extra,
        }

    async def post(self, public_url: str, form: dict[str, str]) -> tuple[TwimlReply, Reply]:
        token = self.target.twilio_auth_token
        if not token:
            raise PathError("the twilio path needs the gateway's TWILIO_AUTH_TOKEN (see --help)")
        signature = RequestValidator(token).compute_signature(public_url, form)
        started = time.perf_counter()
        r = await self.http.post(
            self.target.local(public_url),
            content=urlencode(form).encode(),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": signature,
            },
        )
        took = elapsed_ms(started)
        check_status("Twilio webhook", r)
        twiml = read_twiml(r.text)
        return twiml, Reply(twiml.said, twiml.actions, took, took, wire=r.text)

    async def start(self) -> Reply:
        query = urlencode({"agent_id": self.setup.agent_id})
        url = f"{self.target.public_base}{VOICE_PATH}?{query}"
        twiml, reply = await self.post(url, self.form(CallStatus="ringing"))
        self.twiml = twiml
        if twiml.relay is not None and self.relay_expected is False:
            raise PathError(
                "the gateway answered ConversationRelay: the agent talks in relay mode; use "
                "provider: twilio-relay (or set the agent's voice_mode: gather)"
            )
        reply.turn_id = "greeting"
        return reply

    async def turn(self, turn: CallerTurn) -> Reply:
        url = self.twiml.gather_url if self.twiml is not None else None
        if not url:
            raise PathError("the last TwiML did not listen (<Gather>): nothing to answer")
        self.turns += 1
        fields: dict[str, Any] = {"CallStatus": "in-progress"}
        if turn.action == "say":
            fields.update(SpeechResult=turn.text, Confidence="0.92")
        elif turn.action == "dtmf":
            fields["Digits"] = turn.text
        twiml, reply = await self.post(url, self.form(**fields))
        self.twiml = twiml
        reply.turn_id = parse_qs(urlsplit(url).query).get("turn", [str(self.turns)])[0]
        return reply

    async def hang_up(self) -> None:
        dial_url = self.twiml.dial_url if self.twiml is not None else None
        if dial_url:  # the transfer: the person answered, and the call went on with them
            await self.post(dial_url, self.form(DialCallStatus="completed"))
        await self.post(
            f"{self.target.public_base}{VOICE_PATH}/status",
            self.form(CallStatus="completed", CallDuration="30"),
        )
