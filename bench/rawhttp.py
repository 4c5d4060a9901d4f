"""A minimal keep-alive HTTP/1.1 client on asyncio streams for the load generator.

httpx costs the generator far more CPU per request than the servers it measures spend on the
socket; on a 2-core machine that CPU is taken from the services. This client writes one request
and reads one response (Content-Length, chunked, or close-delimited) on a connection it keeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass


class HttpError(Exception):
    pass


@dataclass(slots=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


class RawConnection:
    def __init__(self, host: str, port: int, timeout_s: float = 30.0) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _ensure(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self._reader, self._writer

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None

    async def request(
        self,
        method: str,
        target: str,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        on_chunk: Callable[[float, bytes], None] | None = None,
    ) -> Response:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._request(method, target, headers or {}, body, on_chunk)
        except BaseException:
            await self.close()
            raise

    async def _request(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        on_chunk: Callable[[float, bytes], None] | None,
    ) -> Response:
        reader, writer = await self._ensure()
        head = [f"{method} {target} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        if body or method in ("POST", "PUT", "PATCH"):
            head.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        raw_head = await reader.readuntil(b"\r\n\r\n")
        lines = raw_head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise HttpError(f"bad status line {lines[0]!r}")
        status = int(parts[1])
        resp_headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                k, _, v = line.partition(":")
                resp_headers[k.strip().lower()] = v.strip()
        chunks: list[bytes] = []
        if "content-length" in resp_headers:
            data = await reader.readexactly(int(resp_headers["content-length"]))
            if on_chunk is not None:
                on_chunk(time.monotonic(), data)
            chunks.append(data)
        elif resp_headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")  # trailers end (we send none)
                    break
                data = await reader.readexactly(size + 2)
                if on_chunk is not None:
                    on_chunk(time.monotonic(), data[:-2])
                chunks.append(data[:-2])
        elif method != "HEAD" and status not in (204, 304):
            data = await reader.read()
            chunks.append(data)
            await self.close()
        if resp_headers.get("connection", "").lower() == "close":
            await self.close()
        return Response(status, resp_headers, b"".join(chunks))
