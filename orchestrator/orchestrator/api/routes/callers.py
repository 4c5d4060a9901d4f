"""A caller's memory: `GET /callers/{phone}/memory` shows what is kept about a number (so an
operator can answer a caller's request to see it), `DELETE` forgets the caller entirely: every
memory of that number in Chroma and the call summaries kept with their conversations. The number
may be given as providers and people write it (`+1 (555) 000-1111`, `15550002222`: the one
normaliser, `shared.phone.to_e164`); answers mask it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from orchestrator.deps import ResponderDep, require_roles
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
    responder: ResponderDep,
    _: OperatorDep,
) -> dict[str, Any]:
    number = _number(phone)
    forget = getattr(responder, "forget_caller", None)
    if forget is None:
        raise ApiError(503, "memory_unavailable", "caller memory (Chroma) is not available")
    deleted, summaries = await forget(number)
    return {"phone": mask_phone(number), "deleted": deleted, "summaries_cleared": summaries}
