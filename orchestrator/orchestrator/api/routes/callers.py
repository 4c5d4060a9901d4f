"""A caller's memory: `GET /callers/{phone}/memory` shows what is kept about a number (so an
operator can answer a caller's request to see it), `DELETE` forgets the caller entirely, in
every store and every form the number was stored in (matched on digits):
- Postgres: their conversations' transcripts are deleted and the numbers, summaries and metadata
  erased; the anonymised rows stay (agent, provider, times, duration: what billing reconciliation
  and statistics need, nothing that says who called or what was said). A call live at that
  moment is erased too; nothing it says afterwards is kept past its end, and it writes no summary
  or memory (the conversation's `forgotten_at` tombstone).
- Chroma: every memory of the number (facts, call summaries).
Postgres goes first: its tombstone is what stops a live call's memory write that races the
Chroma deletion (`orchestrator.memory.caller_memory`). If Chroma fails, the answer is 503 and the
request can be repeated (it is idempotent). The number may be given as providers and people
write it (`+1 (555) 000-1111`, `15550002222`: the one normaliser, `shared.phone.to_e164`);
answers mask it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from orchestrator.deps import ResponderDep, StoreDep, require_roles
from orchestrator.memory.caller_memory import MemoryUnavailable
from shared.auth import Principal
from shared.errors import ApiError
from shared.logging import mask_phone
from shared.phone import to_e164

router = APIRouter(prefix="/callers", tags=["callers"])

OperatorDep = Annotated[Principal, Depends(require_roles("admin", "operator"))]


def _number(phone: str) -> str:
    number = to_e164(phone)
    if number is None:
        raise ApiError(
            422,
            "validation_error",
            f"phone: {phone!r} is not a phone number; write it in E.164, e.g. +15551234567",
        )
    return number


@router.get("/{phone}/memory")
async def caller_memory(
    phone: Annotated[str, Path(min_length=1, max_length=32)],
    responder: ResponderDep,
    _: OperatorDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    number = _number(phone)
    memory = getattr(responder, "caller_memory", None)
    if memory is None:
        raise ApiError(503, "memory_unavailable", "caller memory (Chroma) is not available")
    records = await memory.recent(number, limit=limit, scan=max(limit, 200))
    return {
        "phone": mask_phone(number),
        "memories": [
            {
                "id": r.id,
                "kind": r.kind,
                "text": r.text,
                "conversation_id": r.conversation_id or None,
                "created_at": datetime.fromtimestamp(r.created_at, UTC).isoformat(),
            }
            for r in records
        ],
    }


@router.delete("/{phone}/memory")
async def forget_caller(
    phone: Annotated[str, Path(min_length=1, max_length=32)],
    store: StoreDep,
    responder: ResponderDep,
    _: OperatorDep,
) -> dict[str, Any]:
    number = _number(phone)
    erased = await store.forget_number(number)  # first: the tombstone (module docstring)
    deleted = 0
    forget = getattr(responder, "forget_caller", None)  # a responder without memory has none
    if forget is not None:
        try:
            deleted = await forget(number)
        except MemoryUnavailable as exc:
            raise ApiError(
                503,
                "memory_unavailable",
                f"the caller's conversations were erased, but their long-term memories could "
                f"not be deleted: {exc}; repeat the request",
            ) from None
    return {
        "phone": mask_phone(number),
        "deleted": deleted,
        "summaries_cleared": erased.summaries,
        "conversations_erased": erased.conversations,
        "messages_deleted": erased.messages,
    }
