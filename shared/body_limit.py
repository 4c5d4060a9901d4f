"""Request bodies are bounded before any parser sees them (pure ASGI, both services).

`BodyLimitMiddleware` answers 413 JSON when `Content-Length` declares more than `max_bytes`, or
when the streamed (e.g. chunked) body grows past it; nothing reaches the app. A JSON body is also
checked for nesting depth with a linear scan before it is handed on: Python's `json` parser
recurses per level, so a few hundred kilobytes of `[[[[...` would otherwise surface as a
RecursionError (a 500) deep inside a route. Deeper than `max_json_depth` -> 400 JSON. Bodies
that open like JSON are checked whatever their declared type (routes that parse raw bodies).

The body is read here in full (it is at most `max_bytes`) and replayed to the app; after the
replay, `receive` goes back to the server's, so disconnect detection still works.

The whole body must arrive within `read_timeout_s` (`BODY_READ_TIMEOUT_S`, 10 s) of the request's
headers, else 408 JSON and the connection is closed: a client trickling a byte a second would
otherwise hold a connection (and a webhook's turn) open for as long as it likes. A deadline for
the whole body, not an idle timeout per chunk, which a byte a second never trips. Providers send
a webhook's few kilobytes in one go; 10 s is far above any honest upload of `MAX_BODY_BYTES`.
"""

from __future__ import annotations

import asyncio
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import error_body

DEFAULT_MAX_JSON_DEPTH = 64
BODY_READ_TIMEOUT_S = 10.0
_OPEN = frozenset(b"[{")
_CLOSE = frozenset(b"]}")


def json_depth_exceeds(body: bytes, limit: int) -> bool:
    """True when the JSON text nests arrays/objects deeper than `limit` (strings skipped)."""
    depth = 0
    in_string = False
    escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in _OPEN:
            depth += 1
            if depth > limit:
                return True
        elif byte in _CLOSE:
            depth -= 1
    return False


def _may_be_parsed_as_json(scope: Scope, body: bytes) -> bool:
    """A JSON content type, or any body that opens like JSON: some routes parse the raw body
    whatever its declared type (and FastAPI parses a body without a content type as JSON)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            media: str = value.decode("latin-1").split(";")[0].strip().lower()
            if media == "application/json" or media.endswith("+json"):
                return True
            break
    return body.lstrip()[:1] in (b"[", b"{")


async def _reject(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps(error_body(code, message)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        max_json_depth: int = DEFAULT_MAX_JSON_DEPTH,
        read_timeout_s: float | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_json_depth = max_json_depth
        self.read_timeout_s = BODY_READ_TIMEOUT_S if read_timeout_s is None else read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = f"request body larger than {self.max_bytes} bytes"
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                declared = value.decode("latin-1").strip()
                if not declared.isdigit():
                    await _reject(send, 400, "bad_request", "Content-Length is not a number")
                    return
                if int(declared) > self.max_bytes:
                    await _reject(send, 413, "payload_too_large", too_large)
                    return
        try:
            async with asyncio.timeout(self.read_timeout_s):
                body = await self._read(receive)
        except TimeoutError:
            await _reject(
                send,
                408,
                "request_timeout",
                f"request body not received within {self.read_timeout_s:g} s",
            )
            return
        if body is None:  # the client left
            return
        if len(body) > self.max_bytes:
            await _reject(send, 413, "payload_too_large", too_large)
            return
        if (
            body
            and _may_be_parsed_as_json(scope, body)
            and json_depth_exceeds(body, self.max_json_depth)
        ):
            await _reject(
                send,
                400,
                "invalid_json",
                f"body: JSON nested deeper than {self.max_json_depth} levels",
            )
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> bytes | None:
        """The body, or None when the client left; stops reading one chunk past `max_bytes`."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # http.disconnect
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            chunks.append(chunk)
            if size > self.max_bytes or not message.get("more_body", False):
                return b"".join(chunks)
