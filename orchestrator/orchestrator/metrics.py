"""The orchestrator's Prometheus metrics (the contract is `deploy/monitoring/metrics.yml`).

`install_metrics(app)` adds the request-timing middleware and `GET /metrics` (unauthenticated,
no personal data in any label: see `shared/metrics.py`). `observe_turn` turns the per-stage
timings the turn service already measures (`TurnReply.timings_ms`) into
`voice_turn_stage_duration_seconds`; `count_errors` wraps an exception handler so that the
errors it answers are counted in `voice_orchestrator_errors_total`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from prometheus_client import Counter, Histogram
from starlette.requests import Request
from starlette.responses import Response

from shared.contract import TurnReply
from shared.loop_lag import loop_lag_histogram
from shared.metrics import (
    METRICS_PATH,
    HttpMetricsMiddleware,
    http_duration_histogram,
    metrics_endpoint,
    service_registry,
)

REGISTRY = service_registry()

# Stages take from a fraction of a millisecond (input) to seconds (llm): finer buckets below
# the spec's 100 ms.
STAGE_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.3, 0.5, 0.7, 1.0, 3.0, 5.0, 7.0, 10.0
)  # fmt: skip
# stage label -> the `timings_ms` keys it sums (agent graph nodes and the turn service's laps)
STAGES: dict[str, tuple[str, ...]] = {
    "input": ("input",),
    "memory": ("memory",),
    "llm": ("llm",),
    "tool": ("tools",),
    "store": ("store_read", "store_write"),
    "total": ("total",),
}
ERROR_REASONS = ("llm", "tool", "store", "internal")

HTTP_DURATION = http_duration_histogram(REGISTRY)
LOOP_LAG = loop_lag_histogram(REGISTRY)
STAGE_DURATION = Histogram(
    "voice_turn_stage_duration_seconds",
    "Per-stage turn latency in the orchestrator (stage input|memory|llm|tool|store|total).",
    ["stage"],
    buckets=STAGE_BUCKETS,
    registry=REGISTRY,
)
ORCHESTRATOR_ERRORS = Counter(
    "voice_orchestrator_errors",
    "Errors while answering (reason llm|tool|store|internal).",
    ["reason"],
    registry=REGISTRY,
)
_STAGE_CHILDREN = {stage: STAGE_DURATION.labels(stage) for stage in STAGES}
_ERROR_CHILDREN = {reason: ORCHESTRATOR_ERRORS.labels(reason) for reason in ERROR_REASONS}


def install_metrics(app: FastAPI, token: str | None = None) -> None:
    """The request-timing middleware (outermost, so auth and errors are timed too) and
    `GET /metrics`, outside the OpenAPI schema."""
    app.add_middleware(HttpMetricsMiddleware, histogram=HTTP_DURATION)
    app.add_route(METRICS_PATH, metrics_endpoint(REGISTRY, token), methods=["GET"])


def observe_turn(reply: TurnReply) -> None:
    """A caller turn's stage timings; a replayed turn (answered from the store) is not new work."""
    if reply.replayed:
        return
    timings = reply.timings_ms
    for stage, keys in STAGES.items():
        values = [timings[k] for k in keys if k in timings]
        if values:
            _STAGE_CHILDREN[stage].observe(sum(values) / 1000)


def count_error(reason: str) -> None:
    _ERROR_CHILDREN.get(reason, _ERROR_CHILDREN["internal"]).inc()


Handler = Callable[[Request, Exception], Awaitable[Response]]


def count_errors(handler: Handler, reason: str) -> Handler:
    """`handler`, counting each error it answers under `reason`."""

    async def counted(request: Request, exc: Exception) -> Response:
        count_error(reason)
        return await handler(request, exc)

    return counted
