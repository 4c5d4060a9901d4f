"""A turn as a responder sees it: `TurnInputs` in, `ReplyDraft` out.

The turn service (`services/`) hands these to whatever answers turns and the agent graph
(`agents/`) answers with them; they live below both so that neither package imports the other
for its vocabulary.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.store.records import Agent, Conversation, Message
from shared.contract import Action, TurnContext

# Where a streamed reply's text goes, piece by piece, as it is produced (awaited before the next).
TokenSink = Callable[[str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ToolRun:
    """A tool the turn ran, as its reply records it (`metadata.tools` of the stored reply):
    the tool's name, the arguments it was asked with, whether it succeeded."""

    name: str
    args: dict[str, Any]
    ok: bool

    def stored(self) -> dict[str, Any]:
        return {"name": self.name, "args": self.args, "ok": self.ok}


@dataclass(slots=True)
class ReplyDraft:
    """A reply before it is stored: spoken text, provider-neutral actions, per-stage timings,
    and the tools the turn ran (in the order they were asked for)."""

    text: str
    actions: list[Action]
    timings_ms: dict[str, float] = field(default_factory=dict)
    tools: list[ToolRun] = field(default_factory=list)


@dataclass(slots=True)
class TurnInputs:
    conversation: Conversation
    agent: Agent
    turn_id: str
    message: str
    context: TurnContext
    history: list[Message]  # oldest first, this turn excluded
