"""A stored call as an evaluation scenario (`GET /conversations/{id}/scenario`), so a call that
went wrong in production becomes a regression test in one command (`make eval-record`).

The scenario is YAML in the schema `make eval` reads (evals/README.md): the agent, the provider
path the call took, the caller's turns as they were stored (words, keypad digits, silence), and
the agent's replies as expectations: each reply word for word (`equals`), what it did next
(`action`: listen, transfer to a number, hang up) and the tools its turn ran (`tool`: name,
redacted arguments, outcome), to loosen by hand where wording may change.
What it leaves out, and why:
- the caller's number (personal data; the replay calls from a fresh number, so what earlier
  calls left in memory is not there: a "Welcome back" greeting will differ);
- a reply the caller talked over: what they heard depends on timing, so that turn has no
  expectation, and on a streamed call the next turn talks over it again (`interrupt_after_ms`).
The words of the call are personal data: only operators and admins may export.
"""

from __future__ import annotations

from typing import Any

import yaml

from orchestrator.store.conversations import GREETING_TURN_ID
from orchestrator.store.records import Conversation, Message

STREAMED = {("generic-http", "stream"): "generic-http-stream", ("twilio", "relay"): "twilio-relay"}
PROVIDERS = ("generic-http", "twilio", "vonage", "aws-connect")


def provider_path(conversation: Conversation) -> str:
    """The eval's provider path for the way this call came in."""
    provider = conversation.provider if conversation.provider in PROVIDERS else "generic-http"
    mode = conversation.metadata.get("voice_mode")
    return STREAMED.get((provider, str(mode)), provider)


def action_expectation(actions: list[dict[str, Any]]) -> str | dict[str, str]:
    """What the reply did next, as the scenario's `action` writes it."""
    for action in actions:
        if action.get("type") == "transfer" and action.get("to"):
            return {"transfer": str(action["to"])}
        if action.get("type") == "hangup":
            return "hangup"
    return "gather"


def _expectation(reply: Message | None) -> dict[str, Any]:
    if reply is None or reply.interrupted:
        return {}
    expect: dict[str, Any] = {}
    if reply.content.strip():
        expect["equals"] = reply.content
    expect["action"] = action_expectation(reply.actions)
    if reply.tools:
        expect["tool"] = [_tool_expectation(tool) for tool in reply.tools]
    return expect


def _tool_expectation(tool: dict[str, Any]) -> dict[str, Any]:
    """A tool the turn ran, as the scenario's `tool` writes it (arguments only when it had
    some)."""
    out: dict[str, Any] = {"name": tool.get("name")}
    if tool.get("args"):
        out["args"] = tool["args"]
    out["ok"] = bool(tool.get("ok"))
    return out


def _caller_turn(question: Message) -> dict[str, Any]:
    kind = question.metadata.get("input_type")
    words = question.content.strip()
    if kind == "timeout" or not words:
        return {"silence": True}
    if kind == "dtmf":
        return {"dtmf": words}
    return {"say": words}


def scenario(conversation: Conversation, messages: list[Message]) -> dict[str, Any]:
    path = provider_path(conversation)
    replies = {m.turn_id: m for m in messages if m.role == "assistant"}
    greeting = replies.get(GREETING_TURN_ID)
    turns: list[dict[str, Any]] = []
    talked_over = False
    for question in (m for m in messages if m.role == "user"):
        turn = _caller_turn(question)
        if talked_over and "say" in turn and path in STREAMED.values():
            turn["interrupt_after_ms"] = 0
        reply = replies.get(question.turn_id)
        expect = _expectation(reply)
        if expect:
            turn["expect"] = expect
        talked_over = reply is not None and reply.interrupted
        turns.append(turn)
    data: dict[str, Any] = {
        "name": f"conversation-{conversation.id}",
        "description": f"Recorded from conversation {conversation.id} "
        f"({conversation.provider or 'unknown provider'}, "
        f"{conversation.started_at:%Y-%m-%d %H:%M} UTC).",
        "agent": conversation.agent_id or "default",
        "provider": path,
    }
    if greeting is not None:
        data["greeting"] = _expectation(greeting)
    data["turns"] = turns
    return data


HEADER = """\
# Recorded call: the caller's turns as stored, the agent's replies expected word for word
# (`equals`) and its actions as they were. Loosen what may change (`equals` -> `contains` or
# `matches`) before keeping it as a regression test. Not exported: the caller's number (the
# replay calls from a fresh one, so nothing from their earlier calls is remembered).
"""


def scenario_yaml(conversation: Conversation, messages: list[Message]) -> str:
    body = yaml.safe_dump(
        scenario(conversation, messages),
        sort_keys=False,
        allow_unicode=True,
        width=100,
        default_flow_style=False,
    )
    return HEADER + body
