"""Test doubles for the SaaS side of provider tests, plus a recording `CallFlow`.

`RecordingFlow` stands in for the gateway core (`realtime_gateway.turns`) only in the drivers'
unit tests: it records what a driver asked of the flow and answers scripted replies, idempotent
per (call, turn) as the real flow is. Whole-call tests use the real gateway app instead.
`FakeTwilioApi` is a real `TwilioHttpClient` subclass: the SDK builds and sends real requests,
only the network hop is replaced.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from defusedxml.ElementTree import fromstring
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response as TwilioResponse

from realtime_gateway.callflow import CallFlow
from realtime_gateway.vocabulary import CallerInput, CallInfo, FlowReply
from shared.contract import TERMINAL_STATUSES, Action


class RecordingFlow(CallFlow):
    """The real `CallFlow` rules on recorded primitives: records what the driver's events asked
    of the flow and answers scripted replies (`greeting`, `replies` by text), idempotent per
    (call, turn) as the live flow is."""

    def __init__(self) -> None:
        self.greeting = "Hello, this is Ada. How can I help?"
        self.replies: dict[str, list[Action]] = {}
        self.starts: list[CallInfo] = []
        self.turns: list[tuple[str, CallerInput]] = []
        self.statuses: list[tuple[str, str, dict[str, Any]]] = []
        self.ends: list[tuple[str, str]] = []
        self.seen: set[str] = set()
        self.ensured: list[str] = []
        self.broken = False  # every call raises, as a failing call store would
        self._answers: dict[tuple[str, str], FlowReply] = {}
        self._started: dict[str, FlowReply] = {}

    async def start(self, call: CallInfo) -> FlowReply:
        if self.broken:
            raise RuntimeError("call store unreachable")
        if call.call_id not in self._started:
            self.starts.append(call)
            self._started[call.call_id] = FlowReply(
                actions=[Action.say(self.greeting), Action.gather()], text=self.greeting
            )
        reply = self._started[call.call_id]
        return FlowReply(actions=list(reply.actions), text=reply.text)

    async def turn(self, call: CallInfo, heard: CallerInput) -> FlowReply:
        if self.broken:
            raise RuntimeError("call store unreachable")
        if call.call_id not in self._started and call.call_id not in self.ensured:
            self.ensured.append(call.call_id)
        key = (call.call_id, heard.turn_id)
        if key not in self._answers:
            self.turns.append((call.call_id, heard))
            said = heard.text or heard.digits or ""
            actions = self.replies.get(said) or [Action.say(f"You said {said}."), Action.gather()]
            text = " ".join(a.text or "" for a in actions if a.type == "say")
            self._answers[key] = FlowReply(actions=actions, text=text, turn_id=heard.turn_id)
        reply = self._answers[key]
        return FlowReply(actions=list(reply.actions), text=reply.text, turn_id=reply.turn_id)

    async def status(self, call: CallInfo, status: str, extra: Mapping[str, Any]) -> None:
        if self.broken:
            raise RuntimeError("call store unreachable")
        self.statuses.append((call.call_id, status, dict(extra)))
        if status in TERMINAL_STATUSES:
            await self.end(call.call_id, reason=status)

    async def end(
        self, call_id: str, reason: str = "completed", duration_s: float | None = None
    ) -> bool:
        if any(c == call_id for c, _ in self.ends):
            return False
        self.ends.append((call_id, reason))
        return True

    async def first_time(self, key: str, ttl_s: float = 86400) -> bool:
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


@dataclass
class SentRequest:
    method: str
    url: str
    params: dict[str, Any]
    data: dict[str, Any]
    auth: tuple[str, str] | None

    @property
    def path(self) -> str:
        return urlsplit(self.url).path


class FakeTwilioApi(TwilioHttpClient):
    """Twilio's REST API at the HTTP layer: records each request, answers from `handler`."""

    def __init__(self, handler: Callable[[SentRequest], tuple[int, Any]]) -> None:
        super().__init__(pool_connections=False)
        self.handler = handler
        self.sent: list[SentRequest] = []

    def request(  # type: ignore[override]
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> TwilioResponse:
        sent = SentRequest(method.upper(), url, dict(params or {}), dict(data or {}), auth)
        self.sent.append(sent)
        status, body = self.handler(sent)
        return TwilioResponse(status, body if isinstance(body, str) else json.dumps(body))


def twilio_call_resource(sid: str, status: str = "queued", **fields: Any) -> dict[str, Any]:
    account = "AC" + "0" * 32
    return {
        "sid": sid,
        "account_sid": account,
        "status": status,
        "direction": "outbound-api",
        "to": fields.get("to", "+15550002222"),
        "from": fields.get("from", "+15550001111"),
        "uri": f"/2010-04-01/Accounts/{account}/Calls/{sid}.json",
        **fields,
    }


def form_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


# ---- TwiML checked against the verbs and attributes Twilio documents -------------------------

_VERBS: dict[str, tuple[set[str], set[str]]] = {
    # verb: (allowed attributes, allowed child elements)
    "Response": (
        set(),
        {
            "Say",
            "Play",
            "Gather",
            "Dial",
            "Hangup",
            "Connect",
            "Pause",
            "Redirect",
            "Reject",
            "Record",
            "Enqueue",
            "Leave",
            "Refer",
            "Start",
            "Stop",
        },
    ),
    "Say": ({"voice", "language", "loop"}, set()),
    "Play": ({"loop", "digits"}, set()),
    "Pause": ({"length"}, set()),
    "Gather": (
        {
            "action",
            "actionOnEmptyResult",
            "enhanced",
            "finishOnKey",
            "hints",
            "input",
            "language",
            "method",
            "numDigits",
            "partialResultCallback",
            "partialResultCallbackMethod",
            "profanityFilter",
            "speechModel",
            "speechTimeout",
            "timeout",
        },
        {"Say", "Play", "Pause"},
    ),
    "Dial": (
        {
            "action",
            "answerOnBridge",
            "callerId",
            "hangupOnStar",
            "method",
            "record",
            "recordingStatusCallback",
            "recordingStatusCallbackMethod",
            "recordingStatusCallbackEvent",
            "recordingTrack",
            "referUrl",
            "referMethod",
            "ringTone",
            "timeLimit",
            "timeout",
            "trim",
            "sequential",
            "events",
        },
        {"Number", "Client", "Conference", "Queue", "Sip", "Application"},
    ),
    "Number": (
        {
            "sendDigits",
            "url",
            "method",
            "statusCallbackEvent",
            "statusCallback",
            "statusCallbackMethod",
            "byoc",
            "machineDetection",
            "amdStatusCallback",
        },
        set(),
    ),
    "Hangup": (set(), set()),
    "Connect": ({"action", "method"}, {"Stream", "ConversationRelay", "Room", "VirtualAgent"}),
    "Stream": ({"url", "name", "track", "statusCallback", "statusCallbackMethod"}, {"Parameter"}),
    "Parameter": ({"name", "value"}, set()),
    # ConversationRelay's documented attributes (Twilio's TwiML reference)
    "ConversationRelay": (
        {
            "url",
            "welcomeGreeting",
            "welcomeGreetingInterruptible",
            "language",
            "ttsLanguage",
            "ttsProvider",
            "voice",
            "transcriptionLanguage",
            "transcriptionProvider",
            "speechModel",
            "interruptible",
            "dtmfDetection",
            "reportInputDuringAgentSpeech",
            "preemptible",
            "hints",
            "debug",
            "elevenlabsTextNormalization",
            "interruptSensitivity",
            "partialPrompts",
            "applicationReconnect",
        },
        {"Language", "Parameter"},
    ),
}
_ENUMS: dict[tuple[str, str], Callable[[str], bool]] = {
    ("Gather", "input"): lambda v: set(v.split()) <= {"speech", "dtmf"} and bool(v.split()),
    ("Gather", "method"): lambda v: v in ("GET", "POST"),
    ("Gather", "speechTimeout"): lambda v: v == "auto" or v.isdigit(),
    ("Gather", "actionOnEmptyResult"): lambda v: v in ("true", "false"),
    ("Gather", "timeout"): lambda v: v.isdigit() and int(v) > 0,
    ("Gather", "action"): lambda v: v.startswith(("https://", "http://")),
    ("Dial", "answerOnBridge"): lambda v: v in ("true", "false"),
    ("Dial", "timeout"): lambda v: v.isdigit() and 5 <= int(v) <= 600,
    ("Play", "digits"): lambda v: all(c in "0123456789*#wW" for c in v),
}


def parse_twiml(text: str) -> ET.Element:
    """Parse TwiML safely and fail on any verb, attribute or value Twilio does not document."""
    root: ET.Element = fromstring(text)
    assert root.tag == "Response", f"root is <{root.tag}>, not <Response>"

    def check(el: ET.Element) -> None:
        assert el.tag in _VERBS, f"<{el.tag}> is not a TwiML verb/noun"
        attrs, children = _VERBS[el.tag]
        for name, value in el.attrib.items():
            assert name in attrs, f"<{el.tag}> has undocumented attribute {name}"
            rule = _ENUMS.get((el.tag, name))
            assert rule is None or rule(value), f"<{el.tag} {name}={value!r}> is invalid"
        for child in el:
            assert child.tag in children, f"<{child.tag}> is not allowed in <{el.tag}>"
            check(child)
        if el.tag == "Say":
            assert (el.text or "").strip(), "<Say> must have text"
        if el.tag == "Number":
            assert (el.text or "").startswith("+"), "<Number> must be E.164"
        if el.tag == "Play":
            assert (el.text or "").strip() or el.get("digits"), "<Play> needs a URL or digits"

    check(root)
    return root


def load_forwarder() -> Any:
    """`deploy/aws-connect/forwarder.py` (a Lambda file, not a package), imported from its path."""
    import importlib.util
    import sys
    from pathlib import Path

    name = "aws_connect_forwarder"
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parents[2] / "deploy" / "aws-connect" / "forwarder.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


async def insert_routed_agent(pg_dsn: str, transfer_number: str, greeting: str) -> str:
    """An orchestrator agent routed by a fresh dialled number, with a transfer number (test data
    in the real Postgres). Returns the dialled number in E.164."""
    import uuid

    import asyncpg

    dialled = "+1202555" + f"{uuid.uuid4().int % 10_000:04d}"
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(
            "INSERT INTO agents (id, name, agent_type, configuration) VALUES ($1, $2, 'voice', $3)",
            f"agent-{uuid.uuid4().hex[:8]}",
            "Front desk",
            json.dumps(
                {
                    "greeting": greeting,
                    "phone_numbers": [dialled],
                    "transfer_number": transfer_number,
                }
            ),
        )
    finally:
        await conn.close()
    return dialled
