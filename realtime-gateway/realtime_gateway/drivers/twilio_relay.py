"""Twilio ConversationRelay's wire format: the TwiML that opens a session, and its socket frames.

Twilio does speech recognition, speech synthesis, turn-taking and barge-in itself and exchanges
text with us over a WebSocket (`/voice/stream/twilio`, see `routes/streams.py`): from Twilio
`setup`, `prompt` (`voicePrompt`, `last`), `interrupt` (`utteranceUntilInterrupt`), `dtmf`
(`digit`), `error`; to Twilio `text` (`token`, `last`), `sendDigits`, `language`, `play`, and `end`
with `handoffData`, after which Twilio POSTs the `<Connect action>` URL (`relay-action`), whose
TwiML decides what happens next (a `<Dial>` for a transfer, `<Hangup/>`, or a new session). This
module only translates; the streaming rules are `streaming.py`'s.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket

from realtime_gateway.streaming import StreamSession
from realtime_gateway.vocabulary import CallInfo, FlowReply
from shared.contract import Action
from shared.languages import for_provider

if TYPE_CHECKING:
    from twilio.twiml.voice_response import VoiceResponse

log = logging.getLogger(__name__)

RESUME = "resume"  # handoffData action: reconnect the caller to a (live) instance
STREAM_PATH = "/voice/stream/twilio"


def relay_twiml(
    stream_url: str,
    action_url: str,
    greeting: str | None,
    language: str | None,
    parameters: dict[str, str],
) -> VoiceResponse:
    """`<Connect action><ConversationRelay …/></Connect>`; no greeting when a session resumes."""
    from twilio.twiml.voice_response import VoiceResponse  # the SDK only where Twilio is used

    response = VoiceResponse()
    connect = response.connect(action=action_url, method="POST")
    kwargs: dict[str, Any] = {
        "url": stream_url,
        "language": for_provider(language),
        "interruptible": "any",
        "dtmf_detection": True,
    }
    if greeting:
        kwargs["welcome_greeting"] = greeting
        kwargs["welcome_greeting_interruptible"] = "any"
    relay = connect.conversation_relay(**kwargs)
    for name, value in parameters.items():
        relay.parameter(name=name, value=value)
    return response


def relay_answer(
    public_base: str, action_url: str, call: CallInfo, greeting: FlowReply | None
) -> VoiceResponse:
    """The voice webhook's answer in relay mode (with the greeting), or a resumed session's
    (`greeting` None: the caller is back in the same conversation, nothing is repeated)."""
    stream_url = "ws" + public_base[4:] + STREAM_PATH if public_base.startswith("http") else ""
    actions = greeting.actions if greeting is not None else []
    words = " ".join(a.text or "" for a in actions if a.type == "say").strip()
    language = next((a.language for a in actions if a.language), None)
    parameters = {"agent_id": call.agent_id} if call.agent_id else {}
    return relay_twiml(stream_url, action_url, words or None, language, parameters)


def handoff(action: str, **data: Any) -> str:
    return json.dumps({"action": action, **data}, separators=(",", ":"))


def relay_handoff(raw: str | None) -> dict[str, Any]:
    """The `HandoffData` our side sent with `end` (a JSON object), or {} (none, or not ours)."""
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


class RelaySink:
    """A `streaming.Sink` writing ConversationRelay frames."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.ended = False

    async def _send(self, frame: dict[str, Any]) -> None:
        await self.websocket.send_text(json.dumps(frame, separators=(",", ":")))

    async def text(self, token: str, last: bool) -> None:
        await self._send({"type": "text", "token": token, "last": last})

    async def error(self, message: str) -> None:
        # ConversationRelay has no error frame for the app to send: logged, the call goes on.
        log.warning("relay frame refused", extra={"reason": message[:200]})

    async def action(self, action: Action) -> None:
        if action.type == "transfer" and action.to:
            await self.end(handoff("transfer", to=action.to))
        elif action.type == "hangup":
            await self.end(handoff("hangup", reason=action.reason or "completed"))
        elif action.type == "send_digits" and action.digits:
            await self._send({"type": "sendDigits", "digits": action.digits})
        elif action.type == "play" and action.url:
            await self._send({"type": "play", "source": action.url})
        elif action.type == "say" and action.language:
            tag = for_provider(action.language)
            await self._send({"type": "language", "ttsLanguage": tag, "transcriptionLanguage": tag})

    async def hand_over(self) -> None:
        await self.end(handoff(RESUME))

    async def end(self, handoff_data: str) -> None:
        if not self.ended:
            self.ended = True
            await self._send({"type": "end", "handoffData": handoff_data})


async def on_frame(session: StreamSession, frame: dict[str, Any]) -> bool:
    """One frame from Twilio after `setup`; always True (Twilio ends a session by closing the
    socket, never with a frame)."""
    kind = frame.get("type")
    if kind == "prompt":
        if frame.get("last", True) is not False:  # partial prompts are only previews
            await session.prompt(str(frame.get("voicePrompt") or ""))
    elif kind == "interrupt":
        heard = frame.get("utteranceUntilInterrupt")
        await session.interrupt(str(heard) if isinstance(heard, str) else None)
    elif kind == "dtmf":
        digit = str(frame.get("digit") or "")
        if digit:
            await session.prompt(digit, dtmf=True)
    elif kind == "error":
        log.warning("ConversationRelay reported an error", extra={"reason": str(frame)[:200]})
    elif kind not in ("setup", "info", "configUpdated"):
        await session.sink.error(f"unknown frame type {kind!r}")
    return True
