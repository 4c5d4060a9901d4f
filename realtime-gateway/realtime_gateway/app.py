"""The realtime-gateway Starlette app: `create_app()` (uvicorn `--factory`).

Nothing happens at import: settings are read in `create_app` (tests pass their own), and the
lifespan opens what the process holds for its life: one pooled `httpx.AsyncClient` for the
orchestrator (explicit timeouts inside the turn budget), one for provider REST calls, the call
store and event bus (in process, or Redis when `REDIS_URL` is set), the call flow and the lazy
driver registry. Provider SDKs are imported only by the driver of a provider in use. Once started,
what start-up made is frozen out of the cyclic GC's reach (`gc.freeze`), so full collections under
load stay short.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from httpx_aiohttp import AiohttpTransport
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from realtime_gateway import __version__
from realtime_gateway.access_log import AccessLogMiddleware
from realtime_gateway.call_log import attach_call_log
from realtime_gateway.calls import CallStore, MemoryCallStore, RedisCallStore
from realtime_gateway.circuit_breaker import CircuitBreaker
from realtime_gateway.config import GatewaySettings, get_settings
from realtime_gateway.drivers.base import DriverDeps
from realtime_gateway.drivers.registry import DriverRegistry, DriverUnavailable
from realtime_gateway.events import EventBus, FanoutHub, LocalEventBus, RedisEventBus
from realtime_gateway.management_auth import ManagementAuthMiddleware, is_public
from realtime_gateway.metrics import LOOP_LAG, install_metrics
from realtime_gateway.orchestrator_client import OrchestratorClient
from realtime_gateway.provider_choice import SharedProviderChoice
from realtime_gateway.routes import build_routes
from realtime_gateway.runtime import GatewayRuntime
from realtime_gateway.shutdown import Drain, DrainMiddleware, install_sigterm_drain
from realtime_gateway.turns import GatewayFlow
from realtime_gateway.webhook_guard import WebhookFailureLimiter
from shared import sentry
from shared.auth import SecretConfigError, ServiceTokenSource
from shared.body_limit import BodyLimitMiddleware
from shared.config import ConfigError
from shared.errors import ApiError, on_api_error, on_http_exception, on_unexpected_error
from shared.logging import RequestIdMiddleware, setup_logging
from shared.loop_lag import LoopLagMonitor
from shared.ratelimit import ManagementRateLimitMiddleware, RateLimiter
from shared.security_headers import CorsConfigError, SecurityHeadersMiddleware, cors_middleware

log = logging.getLogger("realtime_gateway")

SERVICE_TOKEN_TTL_S = 120.0
PROVIDER_HTTP_TIMEOUT_S = 10.0
# Connections to the orchestrator (aiohttp keeps them all alive): 50 is plenty for the
# orchestrator's own concurrency; more requests wait in the pool, within the turn budget.
ORCHESTRATOR_CONNECTIONS = 50


def _config_error(message: str) -> ConfigError:
    """Stops start-up; the interpreter prints the one line on exit."""
    return ConfigError(f"configuration error: {message}")


def create_app(
    settings: GatewaySettings | None = None,
    *,
    orchestrator_transport: httpx.AsyncBaseTransport | None = None,
    provider_transport: httpx.AsyncBaseTransport | None = None,
) -> Starlette:
    """Build the app. The transports are test seams: e.g. the real orchestrator app served
    in process through `httpx.ASGITransport`."""
    settings = settings or get_settings()
    setup_logging("realtime-gateway", settings.debug, settings.log_level)
    sentry.init_sentry(settings, "realtime-gateway", __version__)  # only when SENTRY_DSN is set
    try:
        jwt_secret = settings.resolved_jwt_secret()
    except SecretConfigError as exc:
        raise _config_error(str(exc)) from None
    if (
        settings.production
        and settings.voice_provider == "generic-http"
        and settings.generic_http_secret is None
    ):
        raise _config_error(
            "GENERIC_HTTP_SECRET is required when APP_ENV=production "
            "and VOICE_PROVIDER=generic-http"
        )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        lag = LoopLagMonitor(LOOP_LAG)
        runtime = await _open_runtime(
            settings, jwt_secret, orchestrator_transport, provider_transport
        )
        app.state.runtime = runtime
        drain.on_begin(runtime.flow.refuse_new_calls)
        undo_drain = install_sigterm_drain(drain)  # SIGTERM: drain, then uvicorn's shutdown
        try:
            await attach_call_log(runtime)  # the Supabase mirror, when configured
            if runtime.provider_choice is not None:
                await runtime.provider_choice.follow_once()  # a switch made before we started
            await _load_current_driver(runtime)
            if runtime.provider_choice is not None:
                runtime.provider_choice.start()
            _freeze_startup_objects()
            lag.start()  # from here on: start-up work is not a stall
            log.info(
                "realtime-gateway ready",
                extra={
                    "version": __version__,
                    "voice_provider": runtime.drivers.current_name,
                    "call_store": runtime.calls.backend,
                    "orchestrator_url": str(settings.orchestrator_url),
                },
            )
            yield
        finally:
            await lag.aclose()
            gc.unfreeze()  # e.g. many apps in one test process: their garbage is collectable
            undo_drain()
            app.state.runtime = None
            await _close_runtime(runtime)

    drain = Drain(settings.shutdown_drain_s)
    middleware = [
        Middleware(RequestIdMiddleware),
        Middleware(AccessLogMiddleware),
        Middleware(DrainMiddleware, drain=drain),
    ]
    security, limits = _security_middleware(settings, jwt_secret)
    middleware.extend(security)
    middleware.append(
        Middleware(
            ManagementAuthMiddleware,
            secret=jwt_secret,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
        )
    )
    app = Starlette(
        debug=False,
        routes=build_routes(),
        middleware=middleware,
        exception_handlers={
            ApiError: on_api_error,
            HTTPException: on_http_exception,
            Exception: on_unexpected_error,
        },
        lifespan=lifespan,
    )
    install_metrics(
        app, settings.metrics_token.get_secret_value() if settings.metrics_token else None
    )
    app.state.settings = settings
    app.state.runtime = None
    app.state.webhook_failures = limits
    app.state.drain = drain
    return app


def _security_middleware(
    settings: GatewaySettings, jwt_secret: str
) -> tuple[list[Middleware], WebhookFailureLimiter]:
    """Outermost first (inside request id and access log): security headers on every
    response, CORS, the body limit (413 before any parsing), the management rate limit (before
    auth, so floods of bad tokens count too). Also the webhook verification-failure limiter
    the webhook routes consult."""
    https = settings.public_url().startswith("https://")
    stack = [
        Middleware(
            SecurityHeadersMiddleware, https_public_url=https, trust_proxy=settings.trust_proxy
        )
    ]
    try:
        cors = cors_middleware(settings.cors_origin, settings.cors_credentials)
    except CorsConfigError as exc:
        raise _config_error(str(exc)) from None
    if cors is not None:
        stack.append(cors)
    stack.append(Middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes))
    stack.append(
        Middleware(
            ManagementRateLimitMiddleware,
            limiter=RateLimiter(
                settings.rate_limit_management, settings.redis_url, "gateway-management"
            ),
            secret=jwt_secret,
            trust_proxy=settings.proxy_trust(),
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            is_exempt=lambda path: is_public(path) or path.startswith("/metrics"),
        )
    )
    failures = WebhookFailureLimiter(
        RateLimiter(settings.rate_limit_webhook_failures, settings.redis_url, "gateway-webhooks"),
        trust_proxy=settings.proxy_trust(),
    )
    return stack, failures


async def _open_runtime(
    settings: GatewaySettings,
    jwt_secret: str,
    orchestrator_transport: httpx.AsyncBaseTransport | None,
    provider_transport: httpx.AsyncBaseTransport | None,
) -> GatewayRuntime:
    budget = settings.turn_timeout_s
    # One pool for the orchestrator. Turns go straight to this transport (see
    # OrchestratorClient, which does the retrying, within budget); the client wraps it for the
    # rest (health) and closes it. aiohttp under httpx's API (httpx-aiohttp): the same requests,
    # responses and httpx exceptions, with aiohttp's C HTTP parser and plain asyncio sockets
    # instead of httpcore + h11 + anyio, measured at 0.6 against 1.1-1.7 ms of gateway CPU a
    # request to the orchestrator — the biggest single share of the gateway's turn.
    orchestrator_pool = orchestrator_transport or AiohttpTransport(
        # Certificates are loaded only for an https orchestrator (a cloud URL), not for the
        # plain-http hop inside a compose network or a task: loading them costs start-up time.
        verify=str(settings.orchestrator_url).startswith("https://"),
        limits=httpx.Limits(max_connections=ORCHESTRATOR_CONNECTIONS),
    )
    orchestrator_http = httpx.AsyncClient(
        base_url=str(settings.orchestrator_url).rstrip("/"),
        timeout=httpx.Timeout(budget, connect=min(settings.orchestrator_connect_timeout_s, budget)),
        transport=orchestrator_pool,
    )
    provider_http = httpx.AsyncClient(
        timeout=httpx.Timeout(PROVIDER_HTTP_TIMEOUT_S, connect=2.0),
        transport=provider_transport,
    )
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
    await bus.start()
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
    drivers = DriverRegistry(
        DriverDeps(settings=settings, http=provider_http, flow=flow), settings.voice_provider
    )
    # With Redis, a provider switch holds for every instance (provider_choice.py).
    provider_choice = (
        SharedProviderChoice(redis_client, settings.events_channel, drivers)
        if redis_client is not None
        else None
    )
    return GatewayRuntime(
        settings=settings,
        jwt_secret=jwt_secret,
        orchestrator_http=orchestrator_http,
        provider_http=provider_http,
        calls=calls,
        bus=bus,
        orchestrator=orchestrator,
        flow=flow,
        drivers=drivers,
        redis=redis_client,
        provider_choice=provider_choice,
    )


def _freeze_startup_objects() -> None:
    """Move everything start-up made (modules, settings, the app, pools, the current driver) out
    of the cyclic GC's reach: a full collection no longer walks those ~70,000 objects, which took
    15 ms (median; 36 ms max) of a full collection in a turn's way, and ~0 ms frozen."""
    gc.collect()
    gc.freeze()


def _startup_config_error(message: str) -> ConfigError:
    """Raised in the lifespan, where the server logs a traceback: log the one line first."""
    error = _config_error(message)
    log.error(str(error))
    return error


async def _load_current_driver(rt: GatewayRuntime) -> None:
    """Load the current provider's driver now (not on the first call). A driver that cannot be
    loaded is logged and leaves the other providers working; in production a misconfigured
    current provider stops start-up, naming the variables."""
    name = rt.drivers.current_name
    try:
        driver = await rt.drivers.current()
    except DriverUnavailable as exc:
        if rt.settings.production:
            raise _startup_config_error(str(exc)) from None
        log.error(
            "current voice provider unavailable", extra={"provider": name, "reason": exc.reason}
        )
        return
    report = await driver.validate_configuration()
    if report.ok:
        return
    detail = ", ".join(report.missing + report.problems)
    if rt.settings.production:
        raise _startup_config_error(f"VOICE_PROVIDER={name} is not configured: {detail}")
    log.warning(
        "current voice provider is not fully configured", extra={"provider": name, "detail": detail}
    )


async def _close_runtime(rt: GatewayRuntime) -> None:
    if rt.provider_choice is not None:
        await rt.provider_choice.aclose()
    await rt.flow.aclose()
    if rt.call_log is not None:
        await rt.call_log.aclose()  # drains queued call log rows
    await rt.drivers.aclose()
    await rt.bus.aclose()
    await rt.calls.aclose()  # closes the shared Redis client too
    await rt.orchestrator_http.aclose()
    await rt.provider_http.aclose()
