"""`/console`: the operator console's page and files, and the few orchestrator routes the console
reads and writes through the gateway (`/console/api/...`).

Why a proxy: the page is served under a Content-Security-Policy that lets it talk to its own
origin only (`connect-src 'self'`), and the orchestrator is often unreachable from a browser (a
private network behind the gateway). So agents and conversations go through here: each request
keeps the signed-in user's own token (the orchestrator checks their role as if they had called
it), only the listed routes pass, and the orchestrator's answer (status, JSON body, its
validation messages naming the field) comes back as it is.

The page and its files are public (they hold no data); `/console/api/` needs a management JWT
like every other management route (`management_auth`), counted by the same rate limit.
"""

from __future__ import annotations

import logging
import re

import httpx
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from realtime_gateway.console import STATIC_DIR
from realtime_gateway.management_auth import require_role
from realtime_gateway.routes.webhooks import read_body
from realtime_gateway.runtime import get_runtime
from shared.contract import ID_RE
from shared.errors import ApiError
from shared.logging import request_id_var

log = logging.getLogger(__name__)

# Self only: no inline script or style, no other origin, no framing, no plugins, no <base>; and
# Trusted Types, so no string ever becomes markup (the console writes text nodes only).
CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; media-src 'self'; manifest-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'; object-src 'none'; "
    "require-trusted-types-for 'script'; trusted-types 'none'"
)
PAGE_HEADERS = {"Content-Security-Policy": CONSOLE_CSP, "Cache-Control": "no-cache"}

# What the console reaches on the orchestrator: path pattern -> methods.
_ID = r"[^/]+"  # checked with shared.contract.ID_RE below
ORCHESTRATOR_ROUTES: tuple[tuple[re.Pattern[str], frozenset[str]], ...] = (
    (re.compile(r"agents"), frozenset({"GET"})),
    (re.compile(r"agents/create"), frozenset({"POST"})),
    (re.compile(rf"agents/({_ID})"), frozenset({"GET", "PUT", "PATCH"})),
    (re.compile(rf"conversations/({_ID})"), frozenset({"GET"})),
)
LISTED = "GET agents, POST agents/create, GET/PUT/PATCH agents/{id}, GET conversations/{id}"
PASSED_HEADERS = ("retry-after", "x-ratelimit-limit", "x-ratelimit-remaining")


def routes() -> list[BaseRoute]:
    """Mounted at `/console` (`/console` itself redirects to `/console/`)."""
    return [
        Route("/", page, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="console-static"),
        Route("/api/{path:path}", orchestrator, methods=["GET", "POST", "PUT", "PATCH"]),
    ]


async def page(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)


def _methods(path: str) -> frozenset[str] | None:
    for pattern, methods in ORCHESTRATOR_ROUTES:
        match = pattern.fullmatch(path)
        if match is not None and all(ID_RE.fullmatch(part) for part in match.groups()):
            return methods
    return None


async def orchestrator(request: Request) -> Response:
    """`/console/api/<path>` -> the orchestrator's `/<path>`, for the listed routes only."""
    path, method = request.path_params["path"], request.method
    methods = _methods(path)
    if methods is None:
        raise ApiError(404, "not_found", f"the console reaches only: {LISTED}")
    if method not in methods:
        raise ApiError(405, "method_not_allowed", f"{method} {path}: use {', '.join(methods)}")
    if method == "GET":
        require_role(request, "viewer", "reading agents and conversations")
    else:
        require_role(request, "operator", "changing an agent")
    rt = get_runtime(request)
    body = b"" if method == "GET" else await read_body(request, rt.settings.max_body_bytes)
    headers = {"Authorization": request.headers.get("authorization", "")}
    if body:
        headers["Content-Type"] = "application/json"
    if (request_id := request_id_var.get()) is not None:
        headers["X-Request-ID"] = request_id
    try:
        answer = await rt.orchestrator_http.request(
            method, f"/{path}", params=request.query_params, content=body, headers=headers
        )
    except httpx.HTTPError as exc:
        log.warning("console request to the orchestrator failed", extra={"error": repr(exc)})
        raise ApiError(
            503, "orchestrator_unavailable", "the orchestrator did not answer; try again"
        ) from None
    passed = {k: v for k in PASSED_HEADERS if (v := answer.headers.get(k)) is not None}
    return Response(
        answer.content,
        status_code=answer.status_code,
        headers=passed,
        media_type=answer.headers.get("content-type", "application/json"),
    )
