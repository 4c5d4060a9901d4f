"""An instant OpenAI-compatible server, so the services' real langchain/openai path runs in the
benchmark with the model's own time taken out.

`uvicorn --factory bench.fake_llm:create_app`. Serves `POST /v1/chat/completions` (plain and
SSE-streamed), `POST /v1/embeddings` (deterministic unit vectors, float or base64) and
`GET /v1/models`. For the stream scenario it records, per request nonce (`bench-<12 hex>` found
in the messages), the `time.monotonic()` at which the first content token was handed to the
socket; `GET /bench/marks` returns and clears them. CLOCK_MONOTONIC is system-wide on Linux, so
the load generator compares it with its own first-byte time.

Instant by default. With `FAKE_LLM_FIRST_TOKEN_MS` / `FAKE_LLM_TOKEN_MS` in its environment (the
relay scenario: 300 / 25) it answers with a model's timing: the first token after that many ms,
then one token every so many ms (a plain completion takes as long as the stream would). Then it
also records each streamed request (`GET /bench/requests` returns and clears them): its nonce,
when its first token was handed to the socket, when it finished, and when the client closed it
before the end (`closed`: the caller's barge-in reaching the model's request), all
`time.monotonic()`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import numpy as np

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

REPLY = "Certainly. Our opening hours are nine to five, Monday to Friday."
NONCE = re.compile(r"bench-[0-9a-f]{12}")
DEFAULT_DIM = 1536


def reply_tokens() -> list[str]:
    words = REPLY.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def schema_instance(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> Any:
    """A minimal value that satisfies a JSON schema (for structured-output requests)."""
    defs = defs if defs is not None else schema.get("$defs", {})
    if "$ref" in schema:
        return schema_instance(defs.get(schema["$ref"].rsplit("/", 1)[-1], {}), defs)
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return schema_instance(schema[key][0], defs)
    if "default" in schema:
        return schema["default"]
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: schema_instance(props[name], defs) for name in props}
    return {"string": "", "integer": 0, "number": 0.0, "boolean": False, "array": []}.get(kind)


def last_user_nonce(messages: list[dict[str, Any]]) -> str | None:
    """The nonce of this turn: in the last user message (earlier ones are history)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            found = NONCE.findall(json.dumps(message.get("content")))
            return found[-1] if found else None
    return None


def embedding(text: str, dim: int) -> np.ndarray[Any, Any]:
    seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
    vec = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return vec / np.linalg.norm(vec)


class FakeLLM:
    def __init__(self, first_token_ms: float = 0.0, token_ms: float = 0.0) -> None:
        self.marks: dict[str, float] = {}
        self.counts: dict[str, int] = {"chat": 0, "chat_stream": 0, "embeddings": 0}
        self.first_token_s = first_token_ms / 1000
        self.token_s = token_ms / 1000
        self.timed = bool(first_token_ms or token_ms)
        self.requests: list[dict[str, Any]] = []  # streamed requests (timed mode only)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        path: str = scope["path"]
        method: str = scope["method"]
        if path.endswith("/chat/completions") and method == "POST":
            await self.chat(json.loads(body or b"{}"), send, receive)
        elif path.endswith("/embeddings") and method == "POST":
            await self.embeddings(json.loads(body or b"{}"), send)
        elif path.endswith("/models"):
            await self.json(send, {"object": "list", "data": [{"id": "bench", "object": "model"}]})
        elif path == "/bench/marks":
            marks, self.marks = self.marks, {}
            await self.json(send, {"marks": marks, "counts": self.counts})
        elif path == "/bench/requests":
            requests, self.requests = self.requests, []
            await self.json(send, {"requests": requests, "counts": self.counts})
        elif path == "/health":
            await self.json(send, {"status": "ok"})
        else:
            await self.json(send, {"error": {"message": f"no route {path}"}}, status=404)

    async def json(self, send: Send, payload: Any, status: int = 200) -> None:
        data = json.dumps(payload).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    def content_for(self, req: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]] | None]:
        """Plain text, or a forced tool call / JSON-schema answer when the request demands one."""
        fmt = req.get("response_format") or {}
        if fmt.get("type") == "json_schema":
            schema = fmt.get("json_schema", {}).get("schema", {})
            return json.dumps(schema_instance(schema)), None
        if fmt.get("type") == "json_object":
            return "{}", None
        choice = req.get("tool_choice")
        tools = req.get("tools") or []
        forced = None
        if isinstance(choice, dict):
            forced = choice.get("function", {}).get("name")
        elif choice == "required" and tools:
            forced = tools[0]["function"]["name"]
        if forced:
            params = next(
                (
                    t["function"].get("parameters", {})
                    for t in tools
                    if t["function"]["name"] == forced
                ),
                {},
            )
            call = {
                "id": "call_bench",
                "type": "function",
                "function": {"name": forced, "arguments": json.dumps(schema_instance(params))},
            }
            return None, [call]
        return REPLY, None

    async def chat(self, req: dict[str, Any], send: Send, receive: Receive) -> None:
        model = req.get("model", "bench")
        created = int(time.time())
        content, tool_calls = self.content_for(req)
        nonce = last_user_nonce(req.get("messages") or [])
        if not req.get("stream"):
            self.counts["chat"] += 1
            if self.timed:  # as long as the same answer streamed would take
                await asyncio.sleep(self.first_token_s + self.token_s * (len(reply_tokens()) - 1))
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if tool_calls:
                message["tool_calls"] = tool_calls
            await self.json(
                send,
                {
                    "id": "chatcmpl-bench",
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": message,
                            "finish_reason": "tool_calls" if tool_calls else "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 12, "total_tokens": 22},
                },
            )
            return
        self.counts["chat_stream"] += 1
        if self.timed:
            await self.timed_stream(req, send, receive, nonce, content, tool_calls)
            return
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return sse_chunk(created, model, delta, finish)

        await send(
            {
                "type": "http.response.body",
                "body": chunk({"role": "assistant", "content": ""}),
                "more_body": True,
            }
        )
        if tool_calls:
            delta = {"tool_calls": [{"index": 0, **tool_calls[0]}]}
            await send({"type": "http.response.body", "body": chunk(delta), "more_body": True})
        else:
            for i, token in enumerate(reply_tokens()):
                if i == 0 and nonce and nonce not in self.marks:
                    self.marks[nonce] = time.monotonic()
                body = chunk({"content": token})
                await send({"type": "http.response.body", "body": body, "more_body": True})
        tail = sse_tail(req, created, model, tool_calls)
        await send({"type": "http.response.body", "body": tail})

    async def timed_stream(
        self,
        req: dict[str, Any],
        send: Send,
        receive: Receive,
        nonce: str | None,
        content: str | None,
        tool_calls: list[dict[str, Any]] | None,
    ) -> None:
        """The stream with a model's timing; stops when the client closes the request (the
        disconnect is watched all along, so `closed` is when the close reached this server)."""
        model, created = req.get("model", "bench"), int(time.time())
        record: dict[str, Any] = {"nonce": nonce, "first_token": None, "done": None, "closed": None}
        self.requests.append(record)
        gone = asyncio.Event()

        async def watch() -> None:
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    if record["done"] is None:
                        record["closed"] = time.monotonic()
                    gone.set()
                    return

        watcher = asyncio.create_task(watch())

        async def pause(seconds: float) -> bool:
            """Wait like the model; False if the client went away meanwhile."""
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gone.wait(), seconds)
            return not gone.is_set()

        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            if not await pause(self.first_token_s):
                return
            role = sse_chunk(created, model, {"role": "assistant", "content": ""})
            if tool_calls:
                delta = {"tool_calls": [{"index": 0, **tool_calls[0]}]}
                pieces = [role + sse_chunk(created, model, delta)]
            else:
                tokens = reply_tokens() if content == REPLY else [content or ""]
                pieces = [sse_chunk(created, model, {"content": t}) for t in tokens]
                pieces[0] = role + pieces[0]
            for i, body in enumerate(pieces):
                if i and not await pause(self.token_s):
                    return
                if i == 0:
                    record["first_token"] = time.monotonic()
                    if nonce and nonce not in self.marks:
                        self.marks[nonce] = record["first_token"]
                await send({"type": "http.response.body", "body": body, "more_body": True})
            record["done"] = time.monotonic()
            tail = sse_tail(req, created, model, tool_calls)
            await send({"type": "http.response.body", "body": tail})
        finally:
            watcher.cancel()

    async def embeddings(self, req: dict[str, Any], send: Send) -> None:
        self.counts["embeddings"] += 1
        inputs = req.get("input", [])
        if isinstance(inputs, str) or (inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        dim = int(req.get("dimensions") or DEFAULT_DIM)
        as_b64 = req.get("encoding_format") == "base64"
        data = []
        for i, item in enumerate(inputs):
            vec = embedding(item if isinstance(item, str) else repr(item), dim)
            value: Any = base64.b64encode(vec.tobytes()).decode() if as_b64 else vec.tolist()
            data.append({"object": "embedding", "index": i, "embedding": value})
        await self.json(
            send,
            {
                "object": "list",
                "data": data,
                "model": req.get("model", "bench-embedding"),
                "usage": {"prompt_tokens": 1, "total_tokens": 1},
            },
        )


def sse_chunk(created: int, model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    payload = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def sse_tail(
    req: dict[str, Any], created: int, model: str, tool_calls: list[dict[str, Any]] | None
) -> bytes:
    tail = sse_chunk(created, model, {}, "tool_calls" if tool_calls else "stop")
    if (req.get("stream_options") or {}).get("include_usage"):
        usage = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": {"prompt_tokens": 10, "completion_tokens": 12, "total_tokens": 22},
        }
        tail += b"data: " + json.dumps(usage).encode() + b"\n\n"
    return tail + b"data: [DONE]\n\n"


def create_app() -> FakeLLM:
    """`FAKE_LLM_FIRST_TOKEN_MS` / `FAKE_LLM_TOKEN_MS` (default 0: instant)."""
    return FakeLLM(
        float(os.environ.get("FAKE_LLM_FIRST_TOKEN_MS") or 0),
        float(os.environ.get("FAKE_LLM_TOKEN_MS") or 0),
    )
