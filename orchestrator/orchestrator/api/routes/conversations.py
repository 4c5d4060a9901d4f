"""`/conversations/{conversation_id}/…`: the gateway's turn contract (shared.contract) and a read
view for operators. Thin: parse, call `ConversationService`, render."""

from __future__ import annotations

import functools
import json
import logging
import re
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path
from fastapi.responses import PlainTextResponse

from orchestrator.api.event_stream import Emit, PushedEventStream
from orchestrator.api.read_model import conversation_view
from orchestrator.api.scenario_export import scenario_yaml
from orchestrator.api.schemas import ConversationView
from orchestrator.deps import ReaderDep, ServiceDep, StoreDep, WriterDep, require_roles
from orchestrator.metrics import count_error, observe_turn
from orchestrator.services.conversations import StreamedTurn
from shared.auth import Principal
from shared.contract import (
    ID_PATTERN,
    IDEMPOTENCY_HEADER,
    MAX_ID_CHARS,
    CallEnd,
    CallStart,
    ConversationEnded,
    Interruption,
    TurnReply,
    TurnRequest,
)
from shared.errors import ApiError, error_body
from shared.logging import call_id_var

log = logging.getLogger(__name__)

router = APIRouter(prefix="/conversations", tags=["conversations"])

_ID = re.compile(ID_PATTERN)  # the contract's `Identifier`, for the turn id of a header
ConversationId = Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS, pattern=ID_PATTERN)]
TurnId = Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS, pattern=ID_PATTERN)]
# What the caller said, whole: operators and admins (`orchestrator.api.read_model`).
PersonalDataReaderDep = Annotated[Principal, Depends(require_roles("admin", "operator"))]


@router.post("/{conversation_id}/start", response_model=TurnReply, response_model_exclude_none=True)
async def start_conversation(
    conversation_id: ConversationId, body: CallStart, service: ServiceDep, _: WriterDep
) -> TurnReply:
    call_id_var.set(body.call_id)
    return await service.start(conversation_id, body)


@router.post(
    "/{conversation_id}/messages", response_model=TurnReply, response_model_exclude_none=True
)
async def post_message(
    conversation_id: ConversationId,
    body: TurnRequest,
    service: ServiceDep,
    _: WriterDep,
    idempotency_key: Annotated[str | None, Header(alias=IDEMPOTENCY_HEADER)] = None,
    accept: Annotated[str | None, Header()] = None,
) -> TurnReply | PushedEventStream:
    """JSON `TurnReply`; with `Accept: text/event-stream` the reply streams as server-sent events:
    `event: token` (`{"text": "..."}`) as the text is produced, then `event: reply` (the stored
    `TurnReply`), or `event: error` (`{"error": {"code", "message"}}`) if it fails midway. Errors
    found before the turn is accepted (404, 409, 400) are plain JSON errors; once it is, the
    stream opens at once (its head goes out while the model thinks, not with its first token)."""
    call_id_var.set(body.context.call_id or conversation_id)
    turn_id = resolve_turn_id(conversation_id, body.turn_id, idempotency_key)
    if accept and "text/event-stream" in accept:
        turn = await service.open_stream(conversation_id, turn_id, body.message, body.context)
        return PushedEventStream(
            functools.partial(turn_events, turn),
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    reply = await service.message(conversation_id, turn_id, body.message, body.context)
    observe_turn(reply)
    return reply


async def turn_events(turn: StreamedTurn, emit: Emit) -> None:
    """Runs the turn, writing `event: token` for each piece of its text as it comes, then
    `event: reply`, or `event: error` where it fails."""

    async def token(text: str) -> None:
        if text:
            await emit(_event("token", json.dumps({"text": text})))

    try:
        reply = await turn(token)
    except ApiError as exc:
        await emit(_event("error", json.dumps(error_body(exc.code, exc.message))))
        return
    except Exception:
        count_error("internal")
        log.exception("streamed turn failed")
        body = error_body("internal_error", "internal error; see the service logs")
        await emit(_event("error", json.dumps(body)))
        return
    observe_turn(reply)
    await emit(_event("reply", reply.model_dump_json(exclude_none=True)))


def _event(name: str, data: str) -> bytes:
    return f"event: {name}\ndata: {data}\n\n".encode()


@router.post(
    "/{conversation_id}/messages/{turn_id}/interrupted",
    response_model=TurnReply,
    response_model_exclude_none=True,
)
async def message_interrupted(
    conversation_id: ConversationId,
    turn_id: TurnId,
    body: Interruption,
    service: ServiceDep,
    _: WriterDep,
) -> TurnReply:
    """The caller talked over the reply to `turn_id` (barge-in, on a streamed call): the reply
    is stored as `heard`, marked interrupted, and answered (`interrupted: true`). Idempotent."""
    call_id_var.set(conversation_id)
    return await service.interrupted(conversation_id, turn_id, body.heard)


@router.post("/{conversation_id}/end", response_model=ConversationEnded)
async def end_conversation(
    conversation_id: ConversationId,
    service: ServiceDep,
    _: WriterDep,
    body: CallEnd | None = None,
) -> ConversationEnded:
    call_id_var.set(conversation_id)
    _conversation, ended_now = await service.end(conversation_id, body or CallEnd())
    return ConversationEnded(conversation_id=conversation_id, already_ended=not ended_now)


@router.get("/{conversation_id}", response_model=ConversationView)
async def get_conversation(
    conversation_id: ConversationId, store: StoreDep, reader: ReaderDep
) -> ConversationView:
    """Operators and admins read everything; viewers the conversation's shape, numbers masked
    and words withheld (`orchestrator.api.read_model`)."""
    conversation = await store.get(conversation_id)
    if conversation is None:
        raise ApiError(404, "conversation_not_found", f"no conversation {conversation_id!r}")
    return conversation_view(conversation, await store.messages(conversation_id), reader)


@router.get(
    "/{conversation_id}/scenario",
    response_class=PlainTextResponse,
    responses={200: {"content": {"application/yaml": {}}, "description": "the call as a scenario"}},
)
async def export_scenario(
    conversation_id: ConversationId, store: StoreDep, _: PersonalDataReaderDep
) -> PlainTextResponse:
    """The call as an evaluation scenario for `make eval` (YAML): its turns, the agent's replies
    as expectations (`orchestrator.api.scenario_export`). Operators and admins only: it holds
    what the caller said."""
    conversation = await store.get(conversation_id)
    if conversation is None:
        raise ApiError(404, "conversation_not_found", f"no conversation {conversation_id!r}")
    text = scenario_yaml(conversation, await store.messages(conversation_id))
    return PlainTextResponse(
        text,
        media_type="application/yaml",
        headers={"Content-Disposition": f'attachment; filename="{conversation_id}.yaml"'},
    )


def resolve_turn_id(conversation_id: str, body_turn_id: str | None, header: str | None) -> str:
    """The body's `turn_id`, else the key's turn part (`Idempotency-Key: <call_id>:<turn_id>`,
    as the gateway sends it, or a bare `Idempotency-Key: <key>`), else a server-assigned id.

    The spec's own request (`{"message", "context": {"user_id", "session_id"}}`) has neither:
    it is answered with a fresh `turn_id` (returned in the reply), so it is NOT idempotent, and
    a client retrying it after a timeout gets a second answer stored. A client that needs
    retries to be safe sends a `turn_id` or an `Idempotency-Key`."""
    from_header = None
    if header is not None:
        header = header.strip()
        prefix = f"{conversation_id}:"
        if header.startswith(prefix):
            from_header = header[len(prefix) :]
        else:
            _, sep, from_header = header.rpartition(":")
            if not sep:
                from_header = header
        if not from_header or len(from_header) > MAX_ID_CHARS or not _ID.match(from_header):
            raise ApiError(
                400,
                "invalid_idempotency_key",
                f"{IDEMPOTENCY_HEADER}: expected '<call_id>:<turn_id>' or a key of letters, "
                "digits and ._@+-",
            )
    if body_turn_id is not None:
        if from_header is not None and from_header != body_turn_id:
            raise ApiError(
                400,
                "turn_id_mismatch",
                f"turn_id: {body_turn_id!r} differs from the {IDEMPOTENCY_HEADER} turn "
                f"{from_header!r}",
            )
        return body_turn_id
    return from_header if from_header is not None else server_turn_id()


def server_turn_id() -> str:
    """Unique per conversation (a uuid4), marked as assigned here, not by a client."""
    return f"srv-{uuid.uuid4().hex}"
