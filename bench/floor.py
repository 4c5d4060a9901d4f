"""The floor: the same two hops as a turn (a Starlette front calling a FastAPI back over HTTP)
with no work in either, served by uvicorn processes exactly as the services are.

`uvicorn --factory bench.floor:create_front` (env FLOOR_BACK_URL) and
`uvicorn --factory bench.floor:create_back`. The front holds one pooled httpx client opened in
its lifespan, as the gateway does; its pool is large enough never to queue, so this is a floor.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

FIXED_REPLY: dict[str, Any] = {
    "actions": [
        {"type": "say", "text": "Certainly. Our opening hours are nine to five."},
        {"type": "gather", "input": ["speech", "dtmf"], "timeout_s": 5.0},
    ]
}


def create_back() -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/turn")
    async def turn() -> dict[str, Any]:
        return FIXED_REPLY

    return app


def create_front() -> Starlette:
    back_url = os.environ.get("FLOOR_BACK_URL", "http://127.0.0.1:8001")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
        async with httpx.AsyncClient(base_url=back_url, limits=limits, timeout=10.0) as http:
            yield {"http": http}

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def turn(request: Request) -> Response:
        await request.body()
        http: httpx.AsyncClient = request.state.http
        r = await http.post("/turn", content=b'{"message":"hello"}')
        return Response(r.content, media_type="application/json")

    routes = [Route("/health", health), Route("/turn", turn, methods=["POST"])]
    return Starlette(routes=routes, lifespan=lifespan)
