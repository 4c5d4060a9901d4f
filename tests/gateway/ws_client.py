"""A small `/ws` reader for tests: collect events until a condition or a quiet period."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection


async def collect(
    ws: ClientConnection,
    until: Callable[[list[dict[str, Any]]], bool],
    timeout_s: float = 5.0,
    settle_s: float = 0.3,
) -> list[dict[str, Any]]:
    """Call events (`type` with a dot) until `until(events)` holds, then `settle_s` more, so a
    wrong extra event (e.g. a second `call.ended`) would be seen."""
    events: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    done_at: float | None = None
    while True:
        now = loop.time()
        limit = min(deadline, done_at) if done_at is not None else deadline
        if now >= limit:
            return events
        try:
            raw = await asyncio.wait_for(ws.recv(), timeout=limit - now)
        except TimeoutError:
            return events
        msg = json.loads(raw)
        if "." in str(msg.get("type", "")):
            events.append(msg)
        if done_at is None and until(events):
            done_at = loop.time() + settle_s


async def next_control(ws: ClientConnection, timeout_s: float = 2.0) -> dict[str, Any]:
    """The next non-event message (subscription ack, error, pong)."""
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), timeout=timeout_s))
        if "." not in str(msg.get("type", "")):
            return dict(msg)
