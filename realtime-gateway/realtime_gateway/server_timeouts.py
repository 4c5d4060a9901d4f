"""Read deadlines the HTTP server itself does not have: slow request headers.

uvicorn bounds a request's head only in size (h11's `h11_max_incomplete_event_size`) and idle
keep-alive connections (`timeout_keep_alive`), and cancels even that timer at the first byte of
a request: a client that sends its headers a byte at a time (slowloris) holds a connection, and
a file descriptor, for ever. `HeaderDeadlineProtocol` is uvicorn's httptools protocol with one
timer per request head: armed when a connection opens (a client that connects and says nothing
is closed too) and when the next request on it begins, cancelled once its headers are complete.
When it fires: 408 and the connection is closed. Bodies have their own deadline
(`shared.body_limit`: the whole body within `BODY_READ_TIMEOUT_S`).

`HEADER_TIMEOUT_S` (10 s) is far above what any provider or browser needs to send a few
kilobytes of headers; `MAX_HEADER_BYTES` bounds the head's size as h11 would.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shared.errors import error_body

HEADER_TIMEOUT_S = 10.0
MAX_HEADER_BYTES = 64 * 1024
KEEP_ALIVE_S = 5

_TIMEOUT_BODY = json.dumps(
    error_body("request_timeout", f"request headers not received within {HEADER_TIMEOUT_S:g} s")
).encode()
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    + f"content-length: {len(_TIMEOUT_BODY)}\r\n\r\n".encode()
    + _TIMEOUT_BODY
)


class HeaderDeadlineProtocol(HttpToolsProtocol):
    header_timeout_s = HEADER_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_head_deadline()

    def on_headers_complete(self) -> None:
        self._cancel_head_deadline()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        self._cancel_head_deadline()
        self._head_deadline = self.loop.call_later(self.header_timeout_s, self._head_too_slow)

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            self.transport.write(_TIMEOUT_RESPONSE)
            self.transport.close()


def uvicorn_limits() -> dict[str, Any]:
    """The uvicorn options that bound what one slow or greedy client holds."""
    return {
        "http": HeaderDeadlineProtocol,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        "timeout_keep_alive": KEEP_ALIVE_S,
    }
