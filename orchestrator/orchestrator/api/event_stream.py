"""A server-sent event stream written by the work that produces it.

Why not Starlette's `StreamingResponse`: it pulls its body from an async iterator, and a streamed
turn's text comes from the model read in the agent graph's own task — a producer that calls a
sink, not an iterator. Turning one into the other takes a queue and a second task, so every
token waited one more turn of the event loop between the model's bytes and the gateway's: on an
instance busy with a few hundred calls, that turn is spent behind every other call's work, and
was a large part of what the orchestrator added to the time to the caller's first word. Here
the producer writes each event itself (`emit`), so a token goes out in the task that read it.

The response head goes out first, before the producer starts. When the client goes away (the
gateway closed the request: the caller barged in) the producer is cancelled at once, so the
model's request it holds is closed, not left to run and bill.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from shared.tasks import cancel_and_wait

Emit = Callable[[bytes], Awaitable[None]]


class PushedEventStream(Response):
    media_type = "text/event-stream"

    def __init__(
        self,
        write: Callable[[Emit], Coroutine[Any, Any, None]],
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.write = write
        self.status_code = 200
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})

        async def emit(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        writer = asyncio.create_task(self.write(emit))
        gone = asyncio.create_task(_stop_when_gone(receive, writer))
        try:
            await asyncio.wait((writer, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:  # the client gone: the writer stops (and closes the model's request)
            await cancel_and_wait(writer)
            await cancel_and_wait(gone)
        if writer.cancelled():
            return  # the client went away first: nothing more to send it
        writer.result()  # a failure of the writer itself (it sends its turn's errors as events)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _stop_when_gone(receive: Receive, writer: asyncio.Task[None]) -> None:
    """Cancels the writer as soon as the client is gone, from here: one turn of the event loop
    sooner than by way of the response's own task."""
    while (await receive())["type"] != "http.disconnect":
        pass
    writer.cancel()
