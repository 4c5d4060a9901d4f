"""What one gateway process holds while it runs: built whole by `open_runtime`, closed by
`GatewayRuntime.aclose`, both called by the app's lifespan.

Every part is made in `open_runtime`, before the `GatewayRuntime` is: the call log mirror
already sits behind the event bus the flow publishes to, and the outbound calls' idempotency
ledger exists from the start; nothing sets a field of the runtime afterwards.

Kept on `app.state.runtime` (not only in the lifespan state) so every way of serving the app,
uvicorn or an in-process ASGI transport in tests, sees the same objects.
"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx
from httpx_aiohttp import AiohttpTransport
from starlette.requests import HTTPConnection

from realtime_gateway.call_log import CallLog, MirroringEventBus, start_call_log
from realtime_gateway.calls import CallStore, MemoryCallStore, RedisCallStore
from realtime_gateway.circuit_breaker import CircuitBreaker
from realtime_gateway.config import GatewaySettings
from realtime_gateway.drivers.base import DriverDeps
from realtime_gateway.drivers.registry import DriverRegistry
from realtime_gateway.events import EventBus, FanoutHub, LocalEventBus, RedisEventBus
from realtime_gateway.orchestrator_client import OrchestratorClient
from realtime_gateway.outbound import InitiateLedger, ledger_for
from realtime_gateway.provider_choice import SharedProviderChoice
from realtime_gateway.stream_control import StreamControl
from realtime_gateway.turns import GatewayFlow
from shared.auth import ServiceTokenSource
from shared.errors import ApiError

if TYPE_CHECKING:
    import redis.asyncio as aioredis

SERVICE_TOKEN_TTL_S = 120.0
PROVIDER_HTTP_TIMEOUT_S = 10.0
# Connections to the orchestrator (aiohttp keeps them all alive): 50 is plenty for the
# orchestrator's own concurrency; more requests wait in the pool, within the turn budget.
ORCHESTRATOR_CONNECTIONS = 50


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
    initiate_ledger: InitiateLedger  # Idempotency-Key ledger of outbound calls
    stream_control: StreamControl  # reaches a streamed call's socket on any instance
    redis: aioredis.Redis | None = None
    call_log: CallLog | None = None  # the Supabase mirror, when configured
    provider_choice: SharedProviderChoice | None = None  # the switch shared through Redis
    started_at: float = field(default_factory=time.time)

    async def aclose(self) -> None:
        """Close what `open_runtime` opened, each user before what it uses."""
        if self.provider_choice is not None:
            await self.provider_choice.aclose()
        await self.stream_control.aclose()
        await self.flow.aclose()
        if self.call_log is not None:
            await self.call_log.aclose()  # drains queued call log rows
        await self.drivers.aclose()
        await self.bus.aclose()
        await self.calls.aclose()  # closes the shared Redis client too
        await self.orchestrator_http.aclose()
        await self.provider_http.aclose()


async def open_runtime(
    settings: GatewaySettings,
    jwt_secret: str,
    *,
    orchestrator_transport: httpx.AsyncBaseTransport | None = None,
    provider_transport: httpx.AsyncBaseTransport | None = None,
) -> GatewayRuntime:
    """Open every part and return the runtime holding them; if a part fails to open, what was
    opened before it is closed again. The transports are test seams."""
    async with AsyncExitStack() as opened:
        orchestrator_pool, orchestrator_http = _orchestrator_http(settings, orchestrator_transport)
        opened.push_async_callback(orchestrator_http.aclose)
        provider_http = httpx.AsyncClient(
            timeout=httpx.Timeout(PROVIDER_HTTP_TIMEOUT_S, connect=2.0),
            transport=provider_transport,
        )
        opened.push_async_callback(provider_http.aclose)
        redis_client = None
        calls: CallStore
        bus: EventBus
        hub = FanoutHub(settings.ws_client_queue)
        if settings.redis_url:
            import redis.asyncio as aioredis  # only when configured

            redis_client = aioredis.from_url(
                settings.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0
            )
            calls = RedisCallStore(redis_client)
            bus = RedisEventBus(redis_client, hub, settings.events_channel)
        else:
            calls = MemoryCallStore()
            bus = LocalEventBus(hub)
        opened.push_async_callback(calls.aclose)  # closes the shared Redis client too
        await bus.start()
        opened.push_async_callback(bus.aclose)
        call_log = await start_call_log(settings, calls)  # the Supabase mirror, when configured
        if call_log is not None:
            opened.push_async_callback(call_log.aclose)
            bus = MirroringEventBus(bus, call_log)
        budget = settings.turn_timeout_s
        orchestrator = OrchestratorClient(
            orchestrator_http,
            ServiceTokenSource(jwt_secret, ttl_s=SERVICE_TOKEN_TTL_S),
            budget_s=budget,
            connect_timeout_s=settings.orchestrator_connect_timeout_s,
            breaker=CircuitBreaker(
                settings.orchestrator_breaker_failures, settings.orchestrator_breaker_reset_s
            ),
            transport=orchestrator_pool,
        )
        flow = GatewayFlow(calls, bus, orchestrator)
        stream_control = StreamControl(flow.streams, redis_client, settings.events_channel)
        await stream_control.start()
        opened.push_async_callback(stream_control.aclose)
        drivers = DriverRegistry(
            DriverDeps(settings=settings, http=provider_http, flow=flow), settings.voice_provider
        )
        runtime = GatewayRuntime(
            settings=settings,
            jwt_secret=jwt_secret,
            orchestrator_http=orchestrator_http,
            provider_http=provider_http,
            calls=calls,
            bus=bus,
            orchestrator=orchestrator,
            flow=flow,
            drivers=drivers,
            initiate_ledger=ledger_for(redis_client),
            stream_control=stream_control,
            redis=redis_client,
            call_log=call_log,
            # With Redis, a provider switch holds for every instance (provider_choice.py).
            provider_choice=(
                SharedProviderChoice(redis_client, settings.events_channel, drivers)
                if redis_client is not None
                else None
            ),
        )
        opened.pop_all()  # all open: from here on the runtime closes them (`aclose`)
    return runtime


def _orchestrator_http(
    settings: GatewaySettings, transport: httpx.AsyncBaseTransport | None
) -> tuple[httpx.AsyncBaseTransport, httpx.AsyncClient]:
    """One pool for the orchestrator. Turns go straight to this transport (see
    OrchestratorClient, which does the retrying, within budget); the client wraps it for the
    rest (health) and closes it. aiohttp under httpx's API (httpx-aiohttp): the same requests,
    responses and httpx exceptions, with aiohttp's C HTTP parser and plain asyncio sockets
    instead of httpcore + h11 + anyio, measured at 0.6 against 1.1-1.7 ms of gateway CPU a
    request to the orchestrator — the biggest single share of the gateway's turn."""
    budget = settings.turn_timeout_s
    pool = transport or AiohttpTransport(
        # Certificates are loaded only for an https orchestrator (a cloud URL), not for the
        # plain-http hop inside a compose network or a task: loading them costs start-up time.
        verify=str(settings.orchestrator_url).startswith("https://"),
        limits=httpx.Limits(max_connections=ORCHESTRATOR_CONNECTIONS),
    )
    client = httpx.AsyncClient(
        base_url=str(settings.orchestrator_url).rstrip("/"),
        timeout=httpx.Timeout(budget, connect=min(settings.orchestrator_connect_timeout_s, budget)),
        transport=pool,
    )
    return pool, client


def get_runtime(conn: HTTPConnection) -> GatewayRuntime:
    runtime = getattr(conn.app.state, "runtime", None)
    if not isinstance(runtime, GatewayRuntime):
        raise ApiError(503, "starting", "the gateway is starting or stopping")
    return runtime
