"""The `/ws` event stream: the spec's five event types and the envelope every event uses."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class EventType(StrEnum):
    CALL_STARTED = "call.started"
    CALL_ENDED = "call.ended"
    MESSAGE_RECEIVED = "message.received"
    MESSAGE_SENT = "message.sent"
    ERROR_OCCURRED = "error.occurred"


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class CallEvent(BaseModel):
    """`{"type", "call_id", "timestamp", "data"}` as sent to every `/ws` subscriber."""

    type: EventType
    call_id: str
    timestamp: str = Field(default_factory=utc_now_iso)
    data: dict[str, Any] = Field(default_factory=dict)
