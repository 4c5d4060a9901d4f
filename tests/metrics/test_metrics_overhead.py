"""The request-timing middleware is on every request's path: its cost per request is measured
here (10k requests straight through the ASGI interface, with and without it, best of several
interleaved rounds so machine noise does not count) and must stay a few microseconds."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.metrics import HttpMetricsMiddleware, http_duration_histogram

REQUESTS = 10_000
ROUNDS = 3
BUDGET_US = 25.0  # measured ~4-8 us on the 2-core CI machine; a tenth of a turn's budget of 0.1 ms


async def status(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


class DenyBeforeRouting:
    """Answers `/voice/calls/denied/...` with 401 before the router, as the auth middleware does
    for a request without a token."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"].startswith("/voice/calls/denied/"):
            await PlainTextResponse("no token", status_code=401)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def build(with_metrics: bool) -> tuple[Starlette, CollectorRegistry]:
    registry = CollectorRegistry()
    middleware = [Middleware(DenyBeforeRouting)]
    if with_metrics:
        middleware.insert(
            0, Middleware(HttpMetricsMiddleware, histogram=http_duration_histogram(registry))
        )
    routes = [Route(f"/r{i}/{{x}}", status) for i in range(20)]  # a realistic route table
    routes.append(Route("/voice/calls/{call_id}/status", status))
    return Starlette(routes=routes, middleware=middleware), registry


def driver(app: ASGIApp, path: str) -> Callable[[], Awaitable[None]]:
    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        return None

    async def one() -> None:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
            "root_path": "", "headers": [(b"host", b"gw")], "server": ("gw", 80),
            "client": ("127.0.0.1", 1),
        }  # fmt: skip
        await app(scope, receive, send)

    return one


async def per_request_us(request: Callable[[], Awaitable[None]]) -> float:
    started = time.perf_counter()
    for _ in range(REQUESTS):
        await request()
    return (time.perf_counter() - started) / REQUESTS * 1e6


async def measure(path: str, route: str, code: str) -> tuple[float, float]:
    bare, _ = build(False)
    timed, registry = build(True)
    bare_req, timed_req = driver(bare, path), driver(timed, path)
    for req in (bare_req, timed_req):  # warm up (route compilation, label children)
        for _ in range(200):
            await req()
    bare_us, timed_us = [], []
    for _ in range(ROUNDS):
        bare_us.append(await per_request_us(bare_req))
        timed_us.append(await per_request_us(timed_req))
    labels = {"method": "GET", "route": route, "code": code}
    count = registry.get_sample_value("http_request_duration_seconds_count", labels)
    assert count == 200 + ROUNDS * REQUESTS
    return min(bare_us), min(timed_us)


async def test_middleware_costs_a_few_microseconds_per_request() -> None:
    route = "/voice/calls/{call_id}/status"
    cases = [
        ("matched route", "/voice/calls/CA123/status", route, "200", BUDGET_US),
        ("router's 404", "/no/such/route", "unmatched", "404", BUDGET_US),
        # answered before routing: the route table is scanned to name the route
        ("401 before routing", "/voice/calls/denied/status", route, "401", BUDGET_US),
    ]
    print()
    for name, path, label, code, budget in cases:
        bare, timed = await measure(path, label, code)
        overhead = timed - bare
        print(f"{name}: {bare:.1f} us bare, {timed:.1f} us timed, +{overhead:.1f} us/request")
        assert overhead < budget, name
