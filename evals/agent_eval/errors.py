"""What goes wrong driving a call, and closing what was opened, shared by the provider paths
and the /ws watch."""

from __future__ import annotations

import asyncio
import contextlib

from websockets.asyncio.client import ClientConnection

REPLY_TIMEOUT_S = 30.0  # far above the gateway's own turn budget: a hang is a failure, not a wait


async def close_socket(ws: ClientConnection, reader: asyncio.Task[None]) -> None:
    """Close a client socket and stop the task reading it, whatever state either is in."""
    with contextlib.suppress(Exception):
        await ws.close()
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await reader


class PathError(RuntimeError):
    """The gateway answered outside the provider's protocol (a 4xx/5xx, a malformed answer, no
    answer in time)."""
