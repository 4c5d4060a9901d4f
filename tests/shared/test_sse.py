"""`shared.sse`: lines and events read from raw bytes however the transport cuts them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared import sse

STREAM = (
    b'event: token\r\ndata: {"text": "We open"}\r\n\r\n'
    b": keep-alive\n\n"
    b"data: first\ndata:second\n\n"
    b'event: reply\ndata: {"done": true}\n\n'
    b"data: unterminated"
)
EVENTS = [
    ("token", '{"text": "We open"}'),
    ("message", "first\nsecond"),
    ("reply", '{"done": true}'),
    ("message", "unterminated"),
]


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, len(STREAM)])
async def test_events_are_the_same_however_the_bytes_are_cut(size: int) -> None:
    got = [event async for event in sse.events(pieces(STREAM, size))]
    assert got == EVENTS


@pytest.mark.parametrize("size", [1, 5, len(STREAM)])
async def test_lines_lose_their_line_ends_and_keep_the_last(size: int) -> None:
    got = [line async for line in sse.lines(pieces(STREAM, size))]
    assert got[:3] == [b"event: token", b'data: {"text": "We open"}', b""]
    assert got[-1] == b"data: unterminated"
    assert not any(line.endswith((b"\r", b"\n")) for line in got)


async def test_unicode_split_inside_a_character_is_whole() -> None:
    data = 'data: {"text": "café ünïcödé"}\n\n'.encode()
    got = [event async for event in sse.events(pieces(data, 1))]
    assert got == [("message", '{"text": "café ünïcödé"}')]


async def test_only_the_one_space_after_the_colon_is_dropped() -> None:
    data = b"data:  padded \n\n"
    got = [event async for event in sse.events(pieces(data, 4))]
    assert got == [("message", " padded ")]
