"""The HTTP contract between realtime-gateway and orchestrator.

The gateway is the only caller. Conversation id = the gateway's call id. Routes (orchestrator):

- `POST /conversations/{conversation_id}/start`     body `CallStart`   -> `TurnReply` (the greeting)
- `POST /conversations/{conversation_id}/messages`  body `TurnRequest` -> `TurnReply`
  (`Idempotency-Key: <call_id>:<turn_id>`; a retry returns the stored reply, `replayed=true`)
- `POST /conversations/{conversation_id}/end`       body `CallEnd`     -> `ConversationEnded`

Every request carries `Authorization: Bearer <service JWT>` and `X-Request-ID`.
The orchestrator knows nothing of TwiML/NCCO: it answers provider-neutral `Action`s, which each
gateway driver renders in its provider's format.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

IDEMPOTENCY_HEADER = "Idempotency-Key"
REQUEST_ID_HEADER = "X-Request-ID"

MAX_MESSAGE_CHARS = 4000
MAX_ID_CHARS = 128

# Call, conversation, turn and event ids: what every route and event accepts.
ID_PATTERN = r"^[A-Za-z0-9._:@+\-]+$"
ID_RE = re.compile(ID_PATTERN[1:-2] + rf"{{1,{MAX_ID_CHARS}}}")  # for fullmatch

Identifier = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ID_CHARS, pattern=ID_PATTERN),
]

InputType = Literal["speech", "dtmf", "timeout", "text"]
ActionType = Literal["say", "play", "gather", "transfer", "send_digits", "hangup", "stream"]


def idempotency_key(call_id: str, turn_id: str) -> str:
    return f"{call_id}:{turn_id}"


class Action(BaseModel):
    """One step for the provider to perform; `gather` is last when present."""

    model_config = ConfigDict(extra="ignore")

    type: ActionType
    text: str | None = None  # say
    url: str | None = None  # play, stream
    to: str | None = None  # transfer (E.164)
    digits: str | None = None  # send_digits
    reason: str | None = None  # hangup
    input: list[Literal["speech", "dtmf"]] | None = None  # gather
    timeout_s: float | None = None  # gather
    language: str | None = None  # say, gather
    voice: str | None = None  # say: the agent's configured TTS voice (provider-specific name)

    @classmethod
    def say(cls, text: str, language: str | None = None, voice: str | None = None) -> Action:
        return cls(type="say", text=text, language=language, voice=voice)

    @classmethod
    def gather(cls, timeout_s: float = 5.0, language: str | None = None) -> Action:
        return cls(type="gather", input=["speech", "dtmf"], timeout_s=timeout_s, language=language)

    @classmethod
    def transfer(cls, to: str) -> Action:
        return cls(type="transfer", to=to)

    @classmethod
    def hangup(cls, reason: str = "completed") -> Action:
        return cls(type="hangup", reason=reason)


def without_nul(value: Any) -> Any:
    """`value` with NUL characters removed from every string in it (keys included). Postgres
    cannot store U+0000 in text or jsonb: one in a caller id or a metadata value would make the
    call's start fail on every retry, and the call could never be stored."""
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nul(v) for v in value]
    return value


class _Clean(BaseModel):
    """A request body whose strings never carry NUL characters (`without_nul`)."""

    @model_validator(mode="before")
    @classmethod
    def _drop_nul(cls, data: Any) -> Any:
        return without_nul(data)


class TurnContext(_Clean):
    """The spec's `context` plus what the gateway knows of the call."""

    model_config = ConfigDict(extra="ignore")

    user_id: str | None = Field(None, max_length=MAX_ID_CHARS)
    session_id: str | None = Field(None, max_length=MAX_ID_CHARS)
    call_id: Identifier | None = None
    caller: str | None = Field(None, max_length=32, description="caller's number, E.164")
    callee: str | None = Field(None, max_length=32, description="dialled number, E.164")
    agent_id: str | None = Field(None, max_length=MAX_ID_CHARS)
    provider: str | None = Field(None, max_length=32)
    input_type: InputType = "speech"
    confidence: float | None = Field(None, ge=0.0, le=1.0)


class TurnRequest(_Clean):
    """`POST /conversations/{id}/messages`: the spec's `{message, context}` plus the turn id."""

    model_config = ConfigDict(extra="ignore")

    message: str = Field("", max_length=MAX_MESSAGE_CHARS)
    context: TurnContext = Field(default_factory=TurnContext)
    turn_id: Identifier | None = Field(
        None, description="unique per conversation; defaults to the Idempotency-Key's turn part"
    )


class CallStart(_Clean):
    """`POST /conversations/{id}/start`: the call began; answer the greeting, prefetch memory."""

    model_config = ConfigDict(extra="ignore")

    call_id: Identifier
    provider: str = Field(max_length=32)
    direction: Literal["inbound", "outbound"] = "inbound"
    caller: str | None = Field(None, max_length=32)
    callee: str | None = Field(None, max_length=32)
    agent_id: str | None = Field(None, max_length=MAX_ID_CHARS)
    metadata: dict[str, Any] = Field(default_factory=dict)


class CallEnd(_Clean):
    """`POST /conversations/{id}/end`: close the conversation, write the caller's memory."""

    model_config = ConfigDict(extra="ignore")

    reason: str = Field("completed", max_length=64)
    status: str = Field("completed", max_length=32)
    duration_s: float | None = Field(None, ge=0)


class TurnReply(BaseModel):
    conversation_id: str
    turn_id: str
    reply: str
    actions: list[Action]
    timings_ms: dict[str, float] = Field(default_factory=dict)
    replayed: bool = False
    agent_id: str | None = None
    # The agent's voice mode (on the greeting): `relay` streams over ConversationRelay, `gather`
    # is webhook turns; None: the gateway's default (`TWILIO_VOICE_MODE`).
    voice_mode: Literal["relay", "gather"] | None = None
    interrupted: bool = False  # the caller talked over this reply; `reply` is what they heard


class Interruption(_Clean):
    """`POST /conversations/{id}/messages/{turn_id}/interrupted`: the caller talked over the reply
    to that turn; `heard` is what was spoken of it (ConversationRelay's `utteranceUntilInterrupt`).
    The agent's message is stored as heard, marked interrupted, so the next turn's history is what
    was really said."""

    heard: str = Field("", max_length=MAX_MESSAGE_CHARS)


class ConversationEnded(BaseModel):
    conversation_id: str
    status: Literal["ended"] = "ended"
    already_ended: bool = False


# The call status vocabulary, Twilio's words (the generic-http protocol and the call API use it).
CallStatus = Literal[
    "queued",
    "initiated",
    "ringing",
    "in-progress",
    "completed",
    "busy",
    "failed",
    "no-answer",
    "canceled",
]
CALL_STATUSES: tuple[str, ...] = CallStatus.__args__  # type: ignore[attr-defined]
TERMINAL_STATUSES: frozenset[str] = frozenset(
    {"completed", "busy", "failed", "no-answer", "canceled"}
)
# Forward order: a status that would move a call backwards is ignored; terminal is final.
STATUS_ORDER: dict[str, int] = {
    "queued": 0,
    "initiated": 1,
    "ringing": 2,
    "in-progress": 3,
    **dict.fromkeys(TERMINAL_STATUSES, 4),
}
