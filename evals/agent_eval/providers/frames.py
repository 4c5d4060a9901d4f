"""A streaming socket's frames as the simulated provider reads them: JSON objects in arrival
order, read by one task into a queue, so a turn can wait for the next frame with a deadline
(a reply cut short by the caller) without losing any."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from agent_eval.errors import REPLY_TIMEOUT_S, PathError, close_socket


class SocketClosed(PathError):
    pass


class FrameReader:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.received: list[dict[str, Any]] = []  # every frame, for the report's wire view
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                frame = json.loads(message)
                self.received.append(frame)
                await self._queue.put(frame if isinstance(frame, dict) else {"type": "?"})
        except (ConnectionClosed, ValueError):
            pass
        finally:
            await self._queue.put(None)

    async def send(self, frame: dict[str, Any]) -> None:
        try:
            await self.ws.send(json.dumps(frame))
        except ConnectionClosed as exc:
            raise SocketClosed(f"the gateway closed the socket ({exc.rcvd})") from None

    async def next(self, deadline: float | None = None) -> dict[str, Any] | None:
        """The next frame; None once the socket is closed or `deadline` (perf_counter) passed.
        Without a deadline a frame must come within `REPLY_TIMEOUT_S` (else `PathError`)."""
        limit = REPLY_TIMEOUT_S if deadline is None else max(0.0, deadline - time.perf_counter())
        try:
            frame = await asyncio.wait_for(self._queue.get(), limit)
        except TimeoutError:
            if deadline is None:
                raise PathError(f"no frame from the gateway within {REPLY_TIMEOUT_S:g} s") from None
            return None
        if frame is None:
            await self._queue.put(None)  # closed stays closed for the next reader
            return None
        return frame

    async def close(self) -> None:
        await close_socket(self.ws, self._task)

    @property
    def closed(self) -> bool:
        return self._task.done()
