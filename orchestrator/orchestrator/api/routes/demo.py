"""`/demo`: the fictional business the demo agent's HTTP tool reaches (`orchestrator.demo`).

Mounted only where the demo can exist (never in production, nor with `DEMO=false`); public like
a business's own order page would be to its tool: it holds nothing but made-up statuses.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from orchestrator.demo import order_status

router = APIRouter(prefix="/demo", tags=["demo"])


@router.get("/orders/{order_id}")
async def demo_order(
    order_id: Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9-]+$")],
) -> dict[str, Any]:
    """DEMO: the status of a Harbourside Bakery order (made-up data)."""
    return order_status(order_id)
