"""`/ws` fan-out load: N subscribers (one stalled) and a publisher at a fixed event rate.

Events enter the way a second gateway instance's events do: published on the gateway's Redis
channel (the run's own `EVENTS_CHANNEL`), which every instance relays to its own `/ws` clients.
Each event carries the publisher's `time.monotonic()` in `data.t`; an observing subscriber
subtracts it from its own clock at receipt (CLOCK_MONOTONIC is system-wide on Linux).

Subscribers: a few *observers* parse every frame and record latencies; the rest *drain* their
socket without parsing (so the load generator's CPU goes to reading, not to JSON); one is
*stalled*: it completes the handshake with a tiny receive buffer and never reads.

`python -m bench.fanout subscribe '<spec>'` and `python -m bench.fanout publish '<spec>'`, both
started before `start_at` (a monotonic time) and done after `start_at + duration_s + grace_s`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import sys
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from bench.results_io import write_result


def call_ids(n: int) -> list[str]:
    return [f"bench-fan-{i}" for i in range(n)]


async def ws_open(
    host: str, port: int, path: str, rcvbuf: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await loop.sock_connect(sock, (host, port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise ConnectionError(f"handshake refused: {head[:200]!r}")
    return reader, writer


def masked_frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    data = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + data


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    b0, b1 = await reader.readexactly(2)
    length = b1 & 0x7F
    if length == 126:
        (length,) = struct.unpack(">H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack(">Q", await reader.readexactly(8))
    mask = await reader.readexactly(4) if b1 & 0x80 else None
    payload = await reader.readexactly(length)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return b0 & 0x0F, payload


async def subscribe(spec: dict[str, Any]) -> dict[str, Any]:
    url = urlsplit(spec["url"])
    host, port = url.hostname or "127.0.0.1", url.port or 80
    n, observers = spec["subscribers"], spec["observers"]
    ids = call_ids(n)
    end_at = spec["start_at"] + spec["duration_s"] + spec["grace_s"]
    latencies: list[float] = []
    received: dict[int, int] = {}
    closed: list[int] = []
    drained = [0]
    errors: list[str] = []

    frames = [0]

    def path(i: int) -> str:
        p = f"/ws?token={spec['token']}" + ("&batch=1" if spec.get("batch") else "")
        return p + f"&call_id={ids[i]}" if spec["mode"] == "per_call" else p

    async def observer(i: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received[i] = 0
        while True:
            opcode, payload = await read_frame(reader)
            now = time.monotonic()
            if opcode == 1:
                frames[0] += 1
                message = json.loads(payload)
                for one_message in message if isinstance(message, list) else [message]:
                    data = one_message.get("data") or {}
                    if "t" in data and "seq" in data:
                        latencies.append((now - data["t"]) * 1000)
                        received[i] += 1
            elif opcode == 9:
                writer.write(masked_frame(10, payload))
            elif opcode == 8:
                closed.append(i)
                return

    async def drainer(reader: asyncio.StreamReader) -> None:
        while True:
            chunk = await reader.read(1 << 16)
            if not chunk:
                return
            drained[0] += len(chunk)

    async def one(i: int) -> None:
        stalled = i == n - 1
        try:
            reader, writer = await ws_open(host, port, path(i), 2048 if stalled else None)
        except Exception as exc:
            errors.append(f"{i}: {type(exc).__name__}: {exc}")
            return
        try:
            remaining = end_at - time.monotonic()
            if stalled:
                await asyncio.sleep(remaining)
            else:
                work = observer(i, reader, writer) if i < observers else drainer(reader)
                async with asyncio.timeout(max(0.1, remaining)):
                    await work
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    connect_started = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(n)))
    return {
        "latencies_ms": latencies,
        "received": received,
        "observers_closed": closed,
        "drained_bytes": drained[0],
        "frames": frames[0],
        "errors": errors[:5],
        "connect_errors": len(errors),
        "ran_s": time.monotonic() - connect_started,
    }


async def publish(spec: dict[str, Any]) -> dict[str, Any]:
    import redis.asyncio as aioredis

    r = aioredis.from_url(spec["redis_url"])
    ids = call_ids(spec["subscribers"])
    rate, duration = spec["rate"], spec["duration_s"]
    total = int(rate * duration)
    per_call: dict[str, int] = {}
    await asyncio.sleep(max(0.0, spec["start_at"] - time.monotonic()))
    start = time.monotonic()
    sent = 0
    tick = 0.002
    try:
        while sent < total:
            due = min(total, int((time.monotonic() - start) * rate) + 1)
            if due > sent:
                pipe = r.pipeline(transaction=False)
                for seq in range(sent, due):
                    call_id = ids[seq % len(ids)]
                    event = {
                        "type": "message.sent",
                        "call_id": call_id,
                        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                        "data": {"seq": seq, "t": time.monotonic(), "text": "Certainly."},
                    }
                    payload = json.dumps({"call_id": call_id, "event": json.dumps(event)})
                    pipe.publish(spec["channel"], payload)  # the gateway's EVENTS_CHANNEL
                    per_call[call_id] = per_call.get(call_id, 0) + 1
                await pipe.execute()
                sent = due
            await asyncio.sleep(tick)
    finally:
        await r.aclose()
    elapsed = time.monotonic() - start
    return {"published": sent, "elapsed_s": elapsed, "per_call": per_call}


def main() -> None:
    role, spec = sys.argv[1], json.loads(sys.argv[2])
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(subscribe(spec) if role == "subscribe" else publish(spec))
    write_result(spec, result)


if __name__ == "__main__":
    main()
