"""The relay scenario's floor: the least a ConversationRelay server can do, on the same machine,
with the same client and the same fake LLM (`uvicorn --factory bench.relay_floor:create_app`).

A bare ASGI app (no framework, no middleware) on uvicorn's own WebSocket protocol, as ours and
the peer's: each `prompt` becomes one streamed chat completion (aiohttp, as our orchestrator's
LLM client), each content delta one `text` frame as it arrives, then `last: true`; `interrupt`
(or the next prompt, or the socket closing) cancels the reply, which closes the LLM request. No
signature check, no history, nothing stored: what is left of the added latency and of its tail
at 200 calls is the machine's (the client, the fake, the scheduler), not any server's work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]
Receive = Callable[[], Awaitable[Message]]


def create_app() -> Callable[[Message, Receive, Send], Awaitable[None]]:
    import aiohttp

    base = os.environ["FLOOR_OPENAI_BASE_URL"].rstrip("/")
    session: aiohttp.ClientSession | None = None

    async def reply(prompt: str, send: Send) -> None:
        nonlocal session
        if session is None:
            session = aiohttp.ClientSession()
        body = {"model": "bench", "messages": [{"role": "user", "content": prompt}], "stream": True}
        async with session.post(f"{base}/chat/completions", json=body) as response:
            async for line in response.content:
                if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                    continue
                choices = json.loads(line[6:]).get("choices") or [{}]
                token = (choices[0].get("delta") or {}).get("content")
                if token:
                    frame = {"type": "text", "token": token, "last": False}
                    await send({"type": "websocket.send", "text": json.dumps(frame)})
        last = {"type": "text", "token": "", "last": True}
        await send({"type": "websocket.send", "text": json.dumps(last)})

    async def socket(receive: Receive, send: Send) -> None:
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        task: asyncio.Task[None] | None = None
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
                frame = json.loads(message.get("text") or "{}")
                if frame.get("type") in ("prompt", "interrupt") and task is not None:
                    task.cancel()
                if frame.get("type") == "prompt":
                    task = asyncio.create_task(reply(str(frame.get("voicePrompt", "")), send))
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    async def app(scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await socket(receive, send)
        elif scope["type"] == "http":  # /health only (no /metrics: the bench reads none)
            found = scope["path"] == "/health"
            await send(
                {
                    "type": "http.response.start",
                    "status": 200 if found else 404,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send(
                {"type": "http.response.body", "body": b'{"status":"ok"}' if found else b"{}"}
            )
        elif scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            if session is not None:
                await session.close()
            await send({"type": "lifespan.shutdown.complete"})

    return app
