"""What one gateway process holds while it runs, made by the app's lifespan.

Kept on `app.state.runtime` (not only in the lifespan state) so every way of serving the app,
uvicorn or an in-process ASGI transport in tests, sees the same objects.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx
from starlette.requests import HTTPConnection

from realtime_gateway.calls import CallStore
from realtime_gateway.config import GatewaySettings
from realtime_gateway.drivers.registry import DriverRegistry
from realtime_gateway.events import EventBus
from realtime_gateway.orchestrator_client import OrchestratorClient
from realtime_gateway.turns import GatewayFlow
from shared.errors import ApiError

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from realtime_gateway.call_log import CallLog
    from realtime_gateway.outbound import InitiateLedger
    from realtime_gateway.provider_choice import SharedProviderChoice


@dataclass(slots=True)
class GatewayRuntime:
    settings: GatewaySettings
    jwt_secret: str
    orchestrator_http: httpx.AsyncClient
    provider_http: httpx.AsyncClient
    calls: CallStore
    bus: EventBus
    orchestrator: OrchestratorClient
    flow: GatewayFlow
    drivers: DriverRegistry
    redis: aioredis.Redis | None = None
    call_log: CallLog | None = None  # the Supabase mirror, when configured
    initiate_ledger: InitiateLedger | None = None  # Idempotency-Key ledger, made on first use
    provider_choice: SharedProviderChoice | None = None  # the switch shared through Redis
    started_at: float = field(default_factory=time.time)


def get_runtime(conn: HTTPConnection) -> GatewayRuntime:
    runtime = getattr(conn.app.state, "runtime", None)
    if not isinstance(runtime, GatewayRuntime):
        raise ApiError(503, "starting", "the gateway is starting or stopping")
    return runtime
