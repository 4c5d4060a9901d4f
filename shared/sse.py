"""Server-sent events read straight from a response's raw bytes: lines split once, no text
decoder or line-decoder generators in between.

Why: a streamed phone turn crosses two event streams token by token (the model's, read by the
orchestrator; the orchestrator's, read by the gateway), and httpx's `aiter_lines` stacks three
generators (bytes, text, lines) on each read. Both services read their stream here instead.
SSE fields are ASCII (`event:`, `data:`); a line ends at LF, CRLF or CR-LF split across reads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator


async def lines(raw: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Each line of the stream, without its line end; the last one even with none."""
    pending = b""
    async for chunk in raw:
        pending += chunk
        if b"\n" not in chunk:
            continue
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line[:-1] if line.endswith(b"\r") else line
    if pending:
        yield pending[:-1] if pending.endswith(b"\r") else pending


async def events(raw: AsyncIterator[bytes]) -> AsyncIterator[tuple[str, str]]:
    """(event, data) for each event; `message` when it names none; data lines joined by LF."""
    event, data = "message", list[str]()
    async for line in lines(raw):
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(b"event:"):
            event = line[6:].strip().decode()
        elif line.startswith(b"data:"):
            value = line[5:]
            data.append((value[1:] if value.startswith(b" ") else value).decode())
    if data:
        yield event, "\n".join(data)
