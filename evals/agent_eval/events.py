"""The gateway's `/ws` event stream, watched for the run's own calls: one socket per run.

A streamed reply's text arrives as socket frames, but what the reply *does* (gather, transfer,
hang up) and whether a turn was answered at all are announced on `/ws`: `message.sent` (the
turn id, the reply and its actions) or `error.occurred` (the caller got an apology) once per
turn. Reading them here costs one management request per run, where reading each turn from
the conversation record would cost one per turn (and the management API is rate limited per
client). Events of one call are published in order, so when turn N's outcome is known, whether
turn N-1 was answered whole is known too.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from agent_eval.errors import REPLY_TIMEOUT_S, PathError, close_socket

SENT, FAILED = "message.sent", "error.occurred"


class EventWatch:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._calls: set[str] = set()
        self._outcomes: dict[tuple[str, str], dict[str, Any]] = {}
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._read())
        self.closed_reason: str | None = None

    @classmethod
    async def open(cls, gateway_url: str, token: str) -> EventWatch:
        url = "ws" + gateway_url[4:] + f"/ws?token={token}&batch=1"
        try:
            return cls(await connect(url, max_size=2**22))
        except (OSError, WebSocketException) as exc:
            raise PathError(f"cannot watch the gateway's /ws events: {exc}") from None

    def watch(self, call_id: str) -> None:
        self._calls.add(call_id)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                message = json.loads(raw)
                for event in message if isinstance(message, list) else [message]:
                    await self._take(event)
        except (ConnectionClosed, ValueError) as exc:
            self.closed_reason = str(exc)
        finally:
            async with self._changed:
                self._changed.notify_all()

    async def _take(self, event: Any) -> None:
        if not isinstance(event, dict) or event.get("type") not in (SENT, FAILED):
            return
        call_id, data = event.get("call_id"), event.get("data") or {}
        if not isinstance(data, dict) or call_id not in self._calls:
            return
        turn_id = data.get("turn_id")
        if turn_id is None or (event["type"] == FAILED and data.get("stage") != "turn"):
            return  # e.g. an interruption the orchestrator could not record: not an answer
        key = (str(call_id), str(turn_id))
        if key not in self._outcomes:
            self._outcomes[key] = {"event": event["type"], **data}
            async with self._changed:
                self._changed.notify_all()

    def answered_whole(self, call_id: str, turn_id: str) -> bool:
        """`message.sent` was announced for the turn (its reply went out to the end)."""
        found = self._outcomes.get((call_id, turn_id))
        return found is not None and found["event"] == SENT

    async def outcome(self, call_id: str, turn_id: str) -> dict[str, Any]:
        """The turn's `message.sent` data (`event: message.sent`), or its `error.occurred`."""

        def ready() -> bool:
            return (call_id, turn_id) in self._outcomes or self._task.done()

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(ready), REPLY_TIMEOUT_S)
            except TimeoutError:
                raise PathError(f"the gateway announced no outcome of turn {turn_id}") from None
        found = self._outcomes.get((call_id, turn_id))
        if found is None:
            raise PathError(f"the /ws event stream closed ({self.closed_reason})")
        return found

    async def close(self) -> None:
        await close_socket(self.ws, self._task)
