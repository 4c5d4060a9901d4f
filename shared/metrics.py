"""Prometheus plumbing both services share: request timing by route template, and `GET /metrics`.

Each service keeps its own metric objects and its own `CollectorRegistry` (its `metrics.py`),
so a process exposes only its own series; this module holds what is common:

- `HttpMetricsMiddleware` (pure ASGI, HTTP only) observes `http_request_duration_seconds` by
  method, route *template* (`/voice/calls/{call_id}/status`, never the raw path: no call ids or
  phone numbers in labels, and a bounded number of series) and status code. The template is the
  route the router matched (`scope["route"]`, set by Starlette's router); a request answered before
  routing (e.g. a 401 from the auth middleware) is matched against the app's routes afterwards,
  and anything else (the router's 404s) is `unmatched`. Methods outside the standard set are
  `other`.
- `metrics_endpoint(registry)`: the `/metrics` handler (Prometheus text, or OpenMetrics when
  the scraper asks for it).

Access decision: `/metrics` is unauthenticated by default, as Prometheus scrapers expect (a
private port or network, no JWT to rotate in the scrape config); with `METRICS_TOKEN` set it
needs `Authorization: Bearer <METRICS_TOKEN>` (Prometheus' `authorization.credentials_file`),
for deployments whose load balancer forwards every path to the service. Either way it exposes
no personal data: labels hold only route templates, status codes, provider names and fixed
outcome words, never call ids, phone numbers, tokens or raw paths. The management auth's
default-deny lets exactly `/metrics` through to this check.

The services run one process per container (replicas scale out), so the default in-process
collectors are right; no multiprocess mode is needed.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable, Iterable

from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics
from prometheus_client.exposition import choose_encoder
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import error_response

# The spec's buckets, with finer ones below 100 ms: most requests (health, webhooks answered
# from memory) take a few milliseconds and would all land in the first spec bucket.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.3, 0.5, 0.7, 1.0, 3.0, 5.0, 7.0, 10.0)
UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
METRICS_PATH = "/metrics"

# No `<counter>_created` timestamp series: Prometheus derives resets itself, and they would
# double the series each scrape carries.
disable_created_metrics()  # type: ignore[no-untyped-call]


def service_registry() -> CollectorRegistry:
    """A service's own registry, with the process, platform and GC collectors."""
    from prometheus_client.gc_collector import GCCollector
    from prometheus_client.platform_collector import PlatformCollector
    from prometheus_client.process_collector import ProcessCollector

    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def http_duration_histogram(registry: CollectorRegistry) -> Histogram:
    return Histogram(
        "http_request_duration_seconds",
        "Duration of HTTP requests in seconds, by route template (not raw path) and status code.",
        ["method", "route", "code"],
        buckets=HTTP_BUCKETS,
        registry=registry,
    )


def route_template(scope: Scope, status: int) -> str:
    """The matched route's path format, else (answered before routing) a route of the app that
    matches, else `unmatched`. A 404 without a route is the router's own: nothing to scan."""
    route = scope.get("route")
    if route is None and status != 404:
        app = scope.get("app")
        router = getattr(app, "router", None)
        route = _match(getattr(router, "routes", ()), scope)
    if route is None:
        return UNMATCHED
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) and template else UNMATCHED


def _match(routes: Iterable[BaseRoute], scope: Scope) -> BaseRoute | None:
    """Only for requests answered before routing (401s, 429s, 413s): the first route whose path
    pattern matches (methods do not matter to name it)."""
    path = scope.get("path", "")
    for route in routes:
        pattern = getattr(route, "path_regex", None)
        if pattern is not None and pattern.match(path):
            return route
    return None


class HttpMetricsMiddleware:
    """Times each HTTP request, from its arrival to the end of the response body.

    Hot path: a clock read before and after, one dict lookup for the labelled child (cached
    per method/route/code, all bounded), one histogram observe."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram
        self._children: dict[tuple[str, str, int], Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            elapsed = time.perf_counter() - started
            method = scope.get("method", "GET")
            key = (method if method in METHODS else "other", route_template(scope, status), status)
            child = self._children.get(key)
            if child is None:
                child = self.histogram.labels(key[0], key[1], str(status))
                self._children[key] = child
            child.observe(elapsed)


def metrics_endpoint(
    registry: CollectorRegistry, token: str | None = None
) -> Callable[[Request], Awaitable[Response]]:
    """`GET /metrics` for this registry (text format 0.0.4, or OpenMetrics when asked); with a
    `token`, only for `Authorization: Bearer <token>` (401 JSON otherwise)."""
    expected = f"Bearer {token}".encode() if token else None

    async def metrics(request: Request) -> Response:
        if expected is not None:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return error_response(
                    401,
                    "unauthorized",
                    "GET /metrics needs Authorization: Bearer <METRICS_TOKEN>",
                    {"WWW-Authenticate": "Bearer"},
                )
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(registry), media_type=None, headers={"Content-Type": content_type})

    return metrics
