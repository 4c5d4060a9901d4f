"""`/ws` fan-out: auth, filters, counters, and a slow client dropped without slowing anyone."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from realtime_gateway.events import FanoutHub, LocalEventBus
from shared.events import CallEvent, EventType
from tests.gateway.conftest import admin_token, auth, served, settings_for
from tests.gateway.ws_client import collect, next_control


def ev(call_id: str, n: int = 0, pad: int = 0) -> CallEvent:
    return CallEvent(type=EventType.MESSAGE_SENT, call_id=call_id, data={"n": n, "pad": "x" * pad})


async def test_ws_without_a_valid_token_is_refused(data_dir: Path) -> None:
    async with served(settings_for(data_dir)) as gw:
        for url in (gw.ws_url, f"{gw.ws_url}?token=not-a-jwt"):
            with pytest.raises(InvalidStatus) as info:
                async with websockets.connect(url):
                    pass
            assert info.value.response.status_code in (401, 403)
        assert gw.rt.bus.hub.connected == 0


async def test_ws_accepts_a_bearer_header_too(data_dir: Path) -> None:
    async with served(settings_for(data_dir)) as gw:
        async with websockets.connect(gw.ws_url, additional_headers=auth()) as ws:
            await gw.rt.bus.publish(ev("c1"))
            events = await collect(ws, lambda evs: len(evs) == 1, timeout_s=2, settle_s=0)
        assert events[0]["call_id"] == "c1"


async def test_filters_by_query_and_by_subscribe_message(data_dir: Path) -> None:
    async with served(settings_for(data_dir)) as gw:
        token = admin_token()
        async with (
            websockets.connect(f"{gw.ws_url}?token={token}&call_id=a,b") as ab,
            websockets.connect(f"{gw.ws_url}?token={token}") as everything,
            websockets.connect(f"{gw.ws_url}?token={token}&call_id=none") as later,
        ):
            await later.send(json.dumps({"subscribe": "c"}))
            ack = await next_control(later)
            assert ack == {"type": "subscribed", "call_ids": ["c", "none"]}
            await later.send(json.dumps({"unsubscribe": "none"}))
            assert (await next_control(later))["call_ids"] == ["c"]
            await later.send("not json")
            assert (await next_control(later))["type"] == "error"
            for call_id in ("a", "b", "c", "d"):
                await gw.rt.bus.publish(ev(call_id))
            got_ab = await collect(ab, lambda evs: len(evs) == 2, timeout_s=2)
            got_all = await collect(everything, lambda evs: len(evs) == 4, timeout_s=2)
            got_later = await collect(later, lambda evs: len(evs) == 1, timeout_s=2)
        assert [e["call_id"] for e in got_ab] == ["a", "b"]
        assert [e["call_id"] for e in got_all] == ["a", "b", "c", "d"]
        assert [e["call_id"] for e in got_later] == ["c"]
        status = (await gw.client.get("/ws/status", headers=auth())).json()
        assert status["events_published"] == 4
        assert status["events_sent"] >= 7
        assert status["clients_dropped"] == 0


async def test_ws_status_counts_connected_clients(data_dir: Path) -> None:
    async with served(settings_for(data_dir)) as gw:
        async with websockets.connect(f"{gw.ws_url}?token={admin_token()}"):
            body = (await gw.client.get("/ws/status", headers=auth())).json()
            assert body["connected_clients"] == 1 and body["backend"] == "memory"
        for _ in range(100):
            if gw.rt.bus.hub.connected == 0:
                break
            await asyncio.sleep(0.01)
        assert (await gw.client.get("/ws/status", headers=auth())).json()["connected_clients"] == 0


async def read_until_closed(ws: ClientConnection) -> None:
    while True:
        await asyncio.wait_for(ws.recv(), timeout=5)


class StalledSocket:
    """A peer that never reads: every send blocks forever (a dead or congested client)."""

    def __init__(self) -> None:
        self.closed_with: int | None = None
        self.sent = 0

    async def send_text(self, data: str) -> None:
        await asyncio.Event().wait()

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed_with = code


class FastSocket:
    def __init__(self) -> None:
        self.received: list[str] = []

    async def send_text(self, data: str) -> None:
        self.received.append(data)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        return None


async def test_a_stalled_client_is_dropped_and_never_slows_publishing() -> None:
    hub = FanoutHub(queue_size=8)
    bus = LocalEventBus(hub)
    stalled, fast = StalledSocket(), FastSocket()
    hub.add(stalled)
    hub.add(fast)
    t0 = time.perf_counter()
    for i in range(2000):
        await bus.publish(ev("c", i))
        await asyncio.sleep(0)  # a call yields between events; the fast sender runs then
    elapsed = time.perf_counter() - t0
    await asyncio.sleep(0.05)
    assert elapsed < 1.0, elapsed
    assert hub.clients_dropped == 1 and hub.connected == 1
    assert stalled.closed_with == 1013
    assert len(fast.received) == 2000
    assert [json.loads(m)["data"]["n"] for m in fast.received] == list(range(2000))
    await bus.aclose()


async def test_a_real_client_that_stops_reading_is_dropped(data_dir: Path) -> None:
    """Over a real socket: a client that never reads fills the kernel buffers, its queue fills,
    and it is closed with 1013 while a reading client keeps receiving everything."""
    async with served(settings_for(data_dir, ws_client_queue=4)) as gw:
        token = admin_token()
        url = f"{gw.ws_url}?token={token}"
        async with (
            websockets.connect(url, max_queue=1, max_size=None, compression=None) as slow,
            websockets.connect(url, max_size=None) as reader,
        ):
            received = 0

            async def read_all() -> None:
                nonlocal received
                async for _ in reader:
                    received += 1

            reading = asyncio.create_task(read_all())
            t0 = time.perf_counter()
            published = 0
            while gw.rt.bus.hub.clients_dropped == 0 and published < 3000:
                await gw.rt.bus.publish(ev("c", published, pad=64_000))
                published += 1
                await asyncio.sleep(0)
            publish_s = time.perf_counter() - t0
            assert gw.rt.bus.hub.clients_dropped == 1, published
            for _ in range(300):
                if received >= published:
                    break
                await asyncio.sleep(0.01)
            assert received == published
            reading.cancel()
            with pytest.raises(ConnectionClosed) as closed:
                await read_until_closed(slow)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        assert publish_s < 10


async def test_too_many_call_ids_in_the_filter_are_refused(data_dir: Path) -> None:
    ids = ",".join(f"c{i}" for i in range(101))
    async with served(settings_for(data_dir)) as gw:
        with pytest.raises(InvalidStatus):
            async with websockets.connect(f"{gw.ws_url}?token={admin_token()}&call_id={ids}"):
                pass
        assert gw.rt.bus.hub.connected == 0


async def frames_until(ws: ClientConnection, count: int, timeout_s: float = 3.0) -> list[object]:
    """Raw decoded frames until `count` call events have arrived (arrays unpacked to count)."""
    frames: list[object] = []
    seen = 0
    async with asyncio.timeout(timeout_s):
        while seen < count:
            frame = json.loads(await ws.recv())
            frames.append(frame)
            for msg in frame if isinstance(frame, list) else [frame]:
                seen += "." in str(msg.get("type", ""))
    return frames


async def test_batch_opt_in_sends_a_behind_clients_backlog_as_one_array_in_order(
    data_dir: Path,
) -> None:
    """`/ws?batch=1`: events queued while the client is behind arrive as JSON arrays, oldest
    first, nothing lost; without it every frame is one JSON object (the default contract)."""
    async with served(settings_for(data_dir)) as gw:
        url = f"{gw.ws_url}?token={admin_token()}"
        async with (
            websockets.connect(url + "&batch=1") as batched,
            websockets.connect(url) as plain,
        ):
            while gw.rt.bus.hub.connected < 2:
                await asyncio.sleep(0.01)
            for n in range(50):  # no await between events inside publish: all queue at once
                await gw.rt.bus.publish(ev("c1", n))
            got_batched = await frames_until(batched, 50)
            got_plain = await frames_until(plain, 50)
    assert any(isinstance(f, list) and len(f) > 1 for f in got_batched)
    flat = [m for f in got_batched for m in (f if isinstance(f, list) else [f])]
    assert [m["data"]["n"] for m in flat] == list(range(50))
    assert all(isinstance(f, dict) for f in got_plain)
    assert [f["data"]["n"] for f in got_plain] == list(range(50))  # type: ignore[index]
