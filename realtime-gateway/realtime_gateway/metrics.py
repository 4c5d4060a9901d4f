"""The gateway's Prometheus metrics (the contract is `deploy/monitoring/metrics.yml`).

`install_metrics(app)` adds the request-timing middleware and `GET /metrics` (unauthenticated,
no personal data in any label: see `shared/metrics.py`); the call flow and the webhook route
record the rest through the small functions below. All labels are bounded: provider names
(`unknown` for anything else), fixed outcome and reason words.

Counts are per process (one gateway instance): `sum()` across instances gives the fleet. A call
started on one instance and ended on another leaves +1 on the first and -1 on the second; the sum
is still right.
"""

from __future__ import annotations

import contextvars
import functools
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec

import httpx
from prometheus_client import Counter, Gauge, Histogram
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import Response

from realtime_gateway.config import PROVIDERS
from realtime_gateway.orchestrator_client import OrchestratorUnavailable
from realtime_gateway.vocabulary import FlowReply
from shared.errors import ApiError
from shared.loop_lag import loop_lag_histogram
from shared.metrics import (
    METRICS_PATH,
    HttpMetricsMiddleware,
    http_duration_histogram,
    metrics_endpoint,
    service_registry,
)

REGISTRY = service_registry()

TURN_BUCKETS = (0.05, 0.1, 0.3, 0.5, 0.7, 1.0, 2.0, 3.0, 5.0, 7.0, 10.0)
UNKNOWN = "unknown"
KNOWN_PROVIDERS = frozenset(PROVIDERS)
WEBHOOK_OUTCOMES = ("ok", "invalid_signature", "bad_request", "error")
TURN_OUTCOMES = ("ok", "fallback", "error")
ERROR_REASONS = ("timeout", "unavailable", "bad_response")
# unsigned/forged, forbidden, replayed; 429: the same, from an address over its failure limit
SIGNATURE_STATUSES = frozenset({401, 403, 409, 429})

HTTP_DURATION = http_duration_histogram(REGISTRY)
LOOP_LAG = loop_lag_histogram(REGISTRY)
ACTIVE_CALLS = Gauge(
    "voice_active_calls",
    "Calls in progress on this gateway instance.",
    ["provider"],
    registry=REGISTRY,
)
CALLS = Counter(
    "voice_calls",
    "Calls started (direction inbound|outbound).",
    ["provider", "direction"],
    registry=REGISTRY,
)
TURNS = Counter(
    "voice_turns",
    "Caller turns answered (outcome ok|fallback|error; fallback = apology after a slow or "
    "failed orchestrator).",
    ["provider", "outcome"],
    registry=REGISTRY,
)
TURN_DURATION = Histogram(
    "voice_turn_duration_seconds",
    "Turn latency seen by the gateway, from the caller's input arriving to the reply being sent.",
    ["provider"],
    buckets=TURN_BUCKETS,
    registry=REGISTRY,
)
STREAM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.3, 0.5, 1.0, 2.0, 5.0)
STREAM_STAGES = ("first_token", "first_frame", "token_to_frame", "last_frame")
STREAM_TURN = Histogram(
    "voice_stream_turn_seconds",
    "Streamed turns (ConversationRelay, the generic socket), by stage: prompt -> orchestrator's "
    "first token (first_token), prompt -> first text frame sent (first_frame), first token -> "
    "first frame (token_to_frame: the gateway's own delay), prompt -> last frame (last_frame).",
    ["stage"],
    buckets=STREAM_BUCKETS,
    registry=REGISTRY,
)
WEBHOOKS = Counter(
    "voice_webhook_requests",
    "Provider webhooks received (outcome ok|invalid_signature|bad_request|error).",
    ["provider", "outcome"],
    registry=REGISTRY,
)
ORCHESTRATOR_ERRORS = Counter(
    "voice_orchestrator_errors",
    "Failed calls to the orchestrator (reason timeout|unavailable|bad_response).",
    ["reason"],
    registry=REGISTRY,
)
CALL_STORE_ROUND_TRIPS = Counter(
    "voice_call_store_round_trips",
    "Requests this gateway instance sent to its shared call store (Redis), one per network "
    "round trip (a pipeline or a script counts once).",
    registry=REGISTRY,
)
WS_CLIENTS = Gauge(
    "voice_ws_clients",
    "Clients connected to the /ws event stream on this gateway instance.",
    registry=REGISTRY,
)

# Every series exists from the start at 0, so rate() and alerts work from the first event.
for _stage in STREAM_STAGES:
    STREAM_TURN.labels(_stage)
for _provider in (*PROVIDERS, UNKNOWN):
    ACTIVE_CALLS.labels(_provider)
    TURN_DURATION.labels(_provider)
    for _direction in ("inbound", "outbound"):
        CALLS.labels(_provider, _direction)
    for _outcome in TURN_OUTCOMES:
        TURNS.labels(_provider, _outcome)
    for _outcome in WEBHOOK_OUTCOMES:
        WEBHOOKS.labels(_provider, _outcome)
for _reason in ERROR_REASONS:
    ORCHESTRATOR_ERRORS.labels(_reason)

# The provider whose webhook is being handled (set by `observe_webhook`), for the turn metrics.
webhook_provider: contextvars.ContextVar[str] = contextvars.ContextVar(
    "webhook_provider", default=UNKNOWN
)
_webhook_failed: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "webhook_failed", default=False
)
_apps: weakref.WeakSet[Starlette] = weakref.WeakSet()


def provider_label(name: str | None) -> str:
    return name if name in KNOWN_PROVIDERS else UNKNOWN


def install_metrics(app: Starlette, token: str | None = None) -> None:
    """The request-timing middleware (outermost, so auth and errors are timed too) and
    `GET /metrics`; `voice_ws_clients` reads the connected `/ws` clients at scrape time."""
    app.add_middleware(HttpMetricsMiddleware, histogram=HTTP_DURATION)
    app.add_route(METRICS_PATH, metrics_endpoint(REGISTRY, token), methods=["GET"])
    _apps.add(app)


def _ws_clients() -> int:
    count = 0
    for app in list(_apps):
        runtime = getattr(app.state, "runtime", None)
        if runtime is not None:
            count += runtime.bus.hub.connected
    return count


WS_CLIENTS.set_function(_ws_clients)


# -- calls ----------------------------------------------------------------------------------------


def call_started(provider: str, direction: str) -> None:
    label = provider_label(provider)
    CALLS.labels(label, direction if direction in ("inbound", "outbound") else "inbound").inc()
    ACTIVE_CALLS.labels(label).inc()


def call_ended(provider: str | None) -> None:
    ACTIVE_CALLS.labels(provider_label(provider or webhook_provider.get())).dec()


# -- turns ----------------------------------------------------------------------------------------

P = ParamSpec("P")
TurnMethod = Callable[P, Coroutine[Any, Any, FlowReply]]


def observed_turn(turn: TurnMethod[P]) -> TurnMethod[P]:
    """Decorates `GatewayFlow.turn`: its latency and outcome (ok, fallback = the apology, error =
    it raised and the driver answers with its own fallback)."""

    @functools.wraps(turn)
    async def observed(*args: P.args, **kwargs: P.kwargs) -> FlowReply:
        started = time.perf_counter()
        provider = provider_label(webhook_provider.get())
        try:
            reply = await turn(*args, **kwargs)
        except Exception:
            TURNS.labels(provider, "error").inc()
            raise
        TURNS.labels(provider, "fallback" if reply.fallback else "ok").inc()
        TURN_DURATION.labels(provider).observe(time.perf_counter() - started)
        return reply

    return observed


def stream_turn(timings_ms: dict[str, float]) -> None:
    """One streamed turn's stages (`streaming.StreamTimings`, in ms)."""
    for stage in STREAM_STAGES:
        value = timings_ms.get(stage)
        if value is not None:
            STREAM_TURN.labels(stage).observe(value / 1000)


def orchestrator_error(exc: OrchestratorUnavailable) -> None:
    ORCHESTRATOR_ERRORS.labels(orchestrator_error_reason(exc)).inc()


def orchestrator_error_reason(exc: OrchestratorUnavailable) -> str:
    """timeout: no answer within the turn budget; bad_response: a refusal (4xx) or a reply that
    breaks the contract; unavailable: unreachable or 5xx."""
    cause = exc.__cause__
    if isinstance(cause, TimeoutError | httpx.TimeoutException):
        return "timeout"
    if isinstance(cause, ValidationError):
        return "bad_response"
    if exc.status is not None:
        return "bad_response" if exc.status < 500 else "unavailable"
    if cause is None and "timed out" in str(exc):
        return "timeout"  # the budget ran out between attempts
    return "unavailable"


# -- webhooks -------------------------------------------------------------------------------------


async def observe_webhook(provider: str, handling: Coroutine[Any, Any, Response]) -> Response:
    """Counts one provider webhook by outcome: ok (2xx/3xx), invalid_signature (401/403/409:
    unsigned, forged or replayed; 429: failing verification too often), bad_request (other
    4xx), error (5xx, an exception, or a handling failure answered with the driver's fallback,
    see `webhook_failed`)."""
    label = provider_label(provider)
    provider_token = webhook_provider.set(label)
    failed_token = _webhook_failed.set(False)
    outcome = "error"
    try:
        response = await handling
        outcome = "error" if _webhook_failed.get() else webhook_outcome(response.status_code)
        return response
    except ApiError as exc:  # e.g. 413 body too large, answered by the error handler
        outcome = webhook_outcome(exc.status)
        raise
    except HTTPException as exc:
        outcome = webhook_outcome(exc.status_code)
        raise
    finally:
        WEBHOOKS.labels(label, outcome).inc()
        _webhook_failed.reset(failed_token)
        webhook_provider.reset(provider_token)


def webhook_outcome(status: int) -> str:
    if status >= 500:
        return "error"
    if status < 400:
        return "ok"
    return "invalid_signature" if status in SIGNATURE_STATUSES else "bad_request"


def webhook_failed() -> None:
    """The webhook's handling raised and the provider gets the driver's fallback reply."""
    _webhook_failed.set(True)
