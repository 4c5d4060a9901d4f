"""`DELETE /callers/{phone}/memory`: forget a caller entirely: every memory of that number in
Chroma and the call summaries kept with their conversations. The number may be given with or
without `+` (providers differ); the answer masks it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path

from orchestrator.deps import ResponderDep, require_roles
from orchestrator.memory.caller_memory import InvalidPhone, normalize_caller
from shared.auth import Principal
from shared.errors import ApiError
from shared.logging import mask_phone

router = APIRouter(prefix="/callers", tags=["callers"])

OperatorDep = Annotated[Principal, Depends(require_roles("admin", "operator"))]


@router.delete("/{phone}/memory")
async def forget_caller(
    phone: Annotated[str, Path(min_length=1, max_length=32)],
    responder: ResponderDep,
    _: OperatorDep,
) -> dict[str, Any]:
    try:
        number = normalize_caller(phone)
    except InvalidPhone as exc:
        raise ApiError(422, "validation_error", f"phone: {exc}") from None
    forget = getattr(responder, "forget_caller", None)
    if forget is None:
        raise ApiError(503, "memory_unavailable", "caller memory (Chroma) is not available")
    deleted, summaries = await forget(number)
    return {"phone": mask_phone(number), "deleted": deleted, "summaries_cleared": summaries}
