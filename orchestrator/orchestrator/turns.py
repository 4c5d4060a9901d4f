"""A turn as a responder sees it: `TurnInputs` in, `ReplyDraft` out.

The turn service (`services/`) hands these to whatever answers turns and the agent graph
(`agents/`) answers with them; they live below both so that neither package imports the other
for its vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.store.records import Agent, Conversation, Message
from shared.contract import Action, TurnContext


@dataclass(slots=True)
class ReplyDraft:
    """A reply before it is stored: spoken text, provider-neutral actions, per-stage timings."""

    text: str
    actions: list[Action]
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class TurnInputs:
    conversation: Conversation
    agent: Agent
    turn_id: str
    message: str
    context: TurnContext
    history: list[Message]  # oldest first, this turn excluded
