"""HTTP and WebSocket routes: thin; each parses, calls the runtime's parts, renders."""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute

from realtime_gateway.openapi import openapi_json
from realtime_gateway.routes import calls, console, health, providers, streams, webhooks, ws


def build_routes() -> list[BaseRoute]:
    return [
        Route("/health", health.health, methods=["GET"]),
        Route("/health/database", health.database, methods=["GET"]),
        Route("/voice/webhook", webhooks.current_provider_webhook, methods=["GET", "POST"]),
        Route("/voice/webhook/{provider}", webhooks.provider_webhook, methods=["GET", "POST"]),
        Route(
            "/voice/webhook/{provider}/{step:path}",
            webhooks.provider_webhook,
            methods=["GET", "POST"],
        ),
        Route("/voice/providers", providers.list_providers, methods=["GET"]),
        Route("/voice/providers/current", providers.current, methods=["GET"]),
        Route("/voice/providers/test", providers.test, methods=["GET"]),
        Route("/voice/providers/switch", providers.switch, methods=["POST"]),
        Route("/voice/providers/{provider}/capabilities", providers.capabilities, methods=["GET"]),
        Route("/voice/calls", calls.list_calls, methods=["GET"]),
        Route("/voice/calls/initiate", calls.initiate, methods=["POST"]),
        Route("/voice/calls/{call_id}/status", calls.status, methods=["GET"]),
        Route("/voice/calls/{call_id}/end", calls.end, methods=["POST"]),
        Route("/ws/status", ws.status, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/voice/calls/stream-tokens", streams.call_token, methods=["POST"]),
        WebSocketRoute("/voice/stream/twilio", streams.twilio),
        WebSocketRoute("/voice/stream/generic-http", streams.generic),
        WebSocketRoute("/ws", ws.events),
        Mount("/console", routes=console.routes()),  # the operator console (issue 21)
    ]
