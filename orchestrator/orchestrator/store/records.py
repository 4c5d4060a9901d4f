"""Rows of the store as typed records (dataclasses; pydantic stays at the HTTP boundary)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal


@dataclass(slots=True)
class Agent:
    id: str
    name: str
    agent_type: str
    configuration: dict[str, Any]
    is_default: bool
    created_at: datetime
    updated_at: datetime

    @property
    def greeting(self) -> str | None:
        value = self.configuration.get("greeting")
        return value if isinstance(value, str) and value.strip() else None

    @property
    def system_prompt(self) -> str | None:
        value = self.configuration.get("system_prompt")
        return value if isinstance(value, str) and value.strip() else None

    @property
    def transfer_number(self) -> str | None:
        value = self.configuration.get("transfer_number")
        return value if isinstance(value, str) and value.strip() else None

    @property
    def phone_numbers(self) -> list[str]:
        value = self.configuration.get("phone_numbers")
        return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []

    @property
    def voice_mode(self) -> Literal["relay", "gather"] | None:
        """`relay` (streamed over ConversationRelay) or `gather` (webhook turns); None: the
        gateway's default (`TWILIO_VOICE_MODE`)."""
        value = self.configuration.get("voice_mode")
        return value if value == "relay" or value == "gather" else None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Agent:
        return cls(
            id=row["id"],
            name=row["name"],
            agent_type=row["agent_type"],
            configuration=dict(row["configuration"] or {}),
            is_default=row["is_default"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )


@dataclass(slots=True)
class Conversation:
    id: str
    call_id: str
    agent_id: str | None
    caller: str | None
    callee: str | None
    provider: str | None
    status: str
    started_at: datetime
    ended_at: datetime | None = None
    end_reason: str | None = None
    summary: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.status == "active"

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Conversation:
        return cls(
            id=row["id"],
            call_id=row["call_id"],
            agent_id=row["agent_id"],
            caller=row["caller"],
            callee=row["callee"],
            provider=row["provider"],
            status=row["status"],
            started_at=row["started_at"],
            ended_at=row["ended_at"],
            end_reason=row["end_reason"],
            summary=row["summary"],
            metadata=dict(row["metadata"] or {}),
        )


@dataclass(slots=True)
class Message:
    id: int
    conversation_id: str
    turn_id: str
    role: str
    content: str
    actions: list[dict[str, Any]]
    timings: dict[str, float]
    metadata: dict[str, Any]
    created_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Message:
        return cls(
            id=row["id"],
            conversation_id=row["conversation_id"],
            turn_id=row["turn_id"],
            role=row["role"],
            content=row["content"],
            actions=list(row["actions"] or []),
            timings=dict(row["timings"] or {}),
            metadata=dict(row["metadata"] or {}),
            created_at=row["created_at"],
        )

    @property
    def interrupted(self) -> bool:
        """The caller talked over this reply; its content is what they heard of it."""
        return self.metadata.get("interrupted") is True

    @property
    def tools(self) -> list[dict[str, Any]]:
        """The tools this reply's turn ran: `{"name", "args", "ok"}` each (redacted)."""
        tools = self.metadata.get("tools")
        return tools if isinstance(tools, list) else []


@dataclass(frozen=True, slots=True)
class StoredReply:
    """The assistant message answering a turn, and whether this call is the one that stored it."""

    message: Message
    inserted: bool


@dataclass(frozen=True, slots=True)
class ErasedRecords:
    """What erasing conversations (a caller forgotten, or past retention) removed: the
    conversations anonymised, the transcript messages deleted, the call summaries among them."""

    conversations: int = 0
    messages: int = 0
    summaries: int = 0

    def __add__(self, other: ErasedRecords) -> ErasedRecords:
        return ErasedRecords(
            self.conversations + other.conversations,
            self.messages + other.messages,
            self.summaries + other.summaries,
        )
