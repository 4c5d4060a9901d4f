"""TwiML as the simulated Twilio reads it: what the caller hears (`<Say>`), where Twilio posts
next (`<Gather action>`, `<Dial action>`, `<Connect action>`), and what the call does
(`<Gather>`: listen, `<Dial><Number>`: transfer, `<Hangup/>`), or a ConversationRelay session to
open (`<Connect><ConversationRelay url welcomeGreeting>` with its `<Parameter>`s)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from defusedxml.ElementTree import ParseError, fromstring

from agent_eval.errors import PathError


@dataclass
class Relay:
    url: str
    greeting: str
    action_url: str
    parameters: dict[str, str] = field(default_factory=dict)


@dataclass
class TwimlReply:
    said: str
    actions: list[dict[str, Any]]
    gather_url: str | None = None
    dial_url: str | None = None
    relay: Relay | None = None


def read_twiml(text: str) -> TwimlReply:
    try:
        root = fromstring(text)
    except ParseError as exc:
        raise PathError(f"the gateway's answer is not TwiML: {exc}") from None
    if root.tag != "Response":
        raise PathError(f"the gateway's TwiML root is <{root.tag}>, not <Response>")
    said: list[str] = []
    reply = TwimlReply("", [])
    for verb in root:
        if verb.tag == "Say":
            said.append((verb.text or "").strip())
        elif verb.tag == "Gather":
            said += [(s.text or "").strip() for s in verb if s.tag == "Say"]
            reply.gather_url = verb.get("action")
            reply.actions.append({"type": "gather"})
        elif verb.tag == "Dial":
            numbers = [(n.text or "").strip() for n in verb if n.tag == "Number"]
            reply.actions.append({"type": "transfer", "to": numbers[0] if numbers else None})
            reply.dial_url = verb.get("action")
        elif verb.tag == "Hangup":
            if not any(a["type"] == "transfer" for a in reply.actions):
                reply.actions.append({"type": "hangup"})
        elif verb.tag == "Connect":
            reply.relay = _relay(verb)
    reply.said = " ".join(s for s in said if s)
    return reply


def _relay(connect: Any) -> Relay | None:
    for noun in connect:
        if noun.tag == "ConversationRelay":
            params = {p.get("name"): p.get("value") for p in noun if p.tag == "Parameter"}
            return Relay(
                url=str(noun.get("url") or ""),
                greeting=str(noun.get("welcomeGreeting") or ""),
                action_url=str(connect.get("action") or ""),
                parameters={str(k): str(v) for k, v in params.items() if k},
            )
    return None
