"""Response bodies of the orchestrator's own endpoints (the gateway contract is shared.contract)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from orchestrator.store.records import Conversation, Message


class ToolRunView(BaseModel):
    """A tool the reply's turn ran (in the order asked for), its arguments redacted."""

    name: str
    args: dict[str, Any] | None  # None: withheld from this reader (`api/read_model.py`)
    ok: bool


class MessageView(BaseModel):
    turn_id: str
    role: str
    content: str | None  # None: withheld from this reader (`api/read_model.py`)
    actions: list[dict[str, Any]]
    timings_ms: dict[str, float]
    created_at: datetime
    interrupted: bool = False  # the caller talked over this reply; `content` is what was heard
    tools: list[ToolRunView] = []  # an assistant message: the tools its turn ran

    @classmethod
    def of(cls, message: Message) -> MessageView:
        return cls(
            turn_id=message.turn_id,
            role=message.role,
            content=message.content,
            actions=message.actions,
            timings_ms=message.timings,
            created_at=message.created_at,
            interrupted=message.interrupted,
            tools=[ToolRunView.model_validate(t) for t in message.tools],
        )


class ConversationView(BaseModel):
    conversation_id: str
    call_id: str
    agent_id: str | None
    status: str
    provider: str | None
    caller: str | None
    callee: str | None
    started_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    summary: str | None
    messages: list[MessageView]
    personal_data: Literal["shown", "withheld"] = "shown"  # by role: `api/read_model.py`

    @classmethod
    def of(cls, conversation: Conversation, messages: list[Message]) -> ConversationView:
        return cls(
            conversation_id=conversation.id,
            call_id=conversation.call_id,
            agent_id=conversation.agent_id,
            status=conversation.status,
            provider=conversation.provider,
            caller=conversation.caller,
            callee=conversation.callee,
            started_at=conversation.started_at,
            ended_at=conversation.ended_at,
            end_reason=conversation.end_reason,
            summary=conversation.summary,
            messages=[MessageView.of(m) for m in messages],
        )
