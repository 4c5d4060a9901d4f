"""The realtime-gateway Starlette app: `create_app()` (uvicorn `--factory`).

Nothing happens at import: settings are read in `create_app` (tests pass their own), and the
lifespan opens what the process holds for its life (`runtime.open_runtime`): one pooled
`httpx.AsyncClient` for the orchestrator (explicit timeouts inside the turn budget), one for
provider REST calls, the call store and event bus (in process, or Redis when `REDIS_URL` is set),
the call log mirror when configured, the call flow and the lazy driver registry. Provider SDKs
are imported only by the driver of a provider in use. Once started, what start-up made is frozen
out of the cyclic GC's reach (`gc.freeze`), so full collections under load stay short. Requests
pass the middleware stack both services share (`shared.middleware_stack`), with the gateway's
access log, drain counter and management auth in it.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from realtime_gateway import __version__
from realtime_gateway.access_log import AccessLogMiddleware
from realtime_gateway.config import GatewaySettings, get_settings
from realtime_gateway.drivers.registry import DriverUnavailable
from realtime_gateway.management_auth import ManagementAuthMiddleware, is_public
from realtime_gateway.metrics import LOOP_LAG, install_metrics
from realtime_gateway.routes import build_routes
from realtime_gateway.runtime import GatewayRuntime, open_runtime
from realtime_gateway.shutdown import Drain, DrainMiddleware, install_sigterm_drain
from realtime_gateway.store_outage import on_route_error, outage_handlers
from realtime_gateway.webhook_guard import WebhookFailureLimiter
from shared import sentry
from shared.auth import SecretConfigError
from shared.config import ConfigError
from shared.errors import ApiError, on_api_error, on_http_exception
from shared.logging import log_format, setup_logging
from shared.loop_lag import LoopLagMonitor
from shared.middleware_stack import middleware_stack
from shared.ratelimit import RateLimiter

log = logging.getLogger("realtime_gateway")


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
    setup_logging(
        "realtime-gateway",
        settings.debug,
        settings.log_level,
        log_format(settings.log_format, settings.production),
    )
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
        runtime = await open_runtime(
            settings,
            jwt_secret,
            orchestrator_transport=orchestrator_transport,
            provider_transport=provider_transport,
        )
        app.state.runtime = runtime
        drain.on_begin(runtime.flow.refuse_new_calls)
        drain.on_hand_over(runtime.flow.streams.hand_over)
        undo_drain = install_sigterm_drain(drain)  # SIGTERM: drain, then uvicorn's shutdown
        try:
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
            await runtime.aclose()

    drain = Drain(settings.shutdown_drain_s)
    middleware = middleware_stack(
        settings,
        jwt_secret,
        service="gateway",
        is_public=is_public,
        per_request=[Middleware(AccessLogMiddleware), Middleware(DrainMiddleware, drain=drain)],
        auth=Middleware(
            ManagementAuthMiddleware,
            secret=jwt_secret,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
        ),
        https_public_url=settings.public_url().startswith("https://"),
        trusted_proxies=settings.proxy_trust(),
    )
    app = Starlette(
        debug=False,
        routes=build_routes(),
        middleware=middleware,
        exception_handlers={
            ApiError: on_api_error,
            HTTPException: on_http_exception,
            **outage_handlers(settings.redis_url),
            Exception: on_route_error,  # Redis down: 503 call_store_unavailable
        },
        lifespan=lifespan,
    )
    install_metrics(
        app, settings.metrics_token.get_secret_value() if settings.metrics_token else None
    )
    app.state.settings = settings
    app.state.runtime = None
    app.state.webhook_failures = _webhook_failure_limiter(settings)
    app.state.drain = drain
    return app


def _webhook_failure_limiter(settings: GatewaySettings) -> WebhookFailureLimiter:
    """Counts webhook verification failures per address; the webhook routes consult it."""
    return WebhookFailureLimiter(
        RateLimiter(settings.rate_limit_webhook_failures, settings.redis_url, "gateway-webhooks"),
        trust_proxy=settings.proxy_trust(),
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
