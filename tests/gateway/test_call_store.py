"""The call store contract, on both backends: in process and the real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from realtime_gateway.calls import CallStore, LiveCall, MemoryCallStore, RedisCallStore


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[CallStore]:
    if request.param == "memory":
        yield MemoryCallStore()
        return
    s = RedisCallStore(aioredis.from_url(redis_url))
    yield s
    await s.aclose()


async def test_create_is_create_if_absent(store: CallStore) -> None:
    call = LiveCall("c1", "generic-http", caller="+15550001111", metadata={"k": [1, 2]})
    assert await store.create(call) is True
    assert await store.create(LiveCall("c1", "twilio")) is False
    got = await store.get("c1")
    assert got is not None
    assert (got.provider, got.caller, got.metadata, got.status) == (
        "generic-http",
        "+15550001111",
        {"k": [1, 2]},
        "in-progress",
    )
    assert await store.get("nope") is None


async def test_concurrent_creates_have_one_winner(store: CallStore) -> None:
    results = await asyncio.gather(*(store.create(LiveCall("race", "p")) for _ in range(20)))
    assert results.count(True) == 1


async def test_status_never_moves_backwards_and_terminal_is_final(store: CallStore) -> None:
    await store.create(LiveCall("c2", "twilio", status="ringing"))
    assert await store.update_status("c2", "in-progress") is True
    assert await store.update_status("c2", "ringing") is False  # late, out-of-order delivery
    assert await store.update_status("c2", "in-progress") is False  # repeat
    assert await store.update_status("c2", "completed") is True
    assert await store.update_status("c2", "failed") is False
    assert await store.update_status("c2", "bogus") is False
    assert await store.update_status("unknown", "completed") is False
    got = await store.get("c2")
    assert got is not None and got.status == "completed"


async def test_turns_count_up(store: CallStore) -> None:
    await store.create(LiveCall("c3", "p"))
    assert [await store.next_turn("c3") for _ in range(3)] == [1, 2, 3]
    assert await store.next_turn("unknown") == 0
    got = await store.get("c3")
    assert got is not None and got.turns == 3


async def test_mark_ended_is_true_exactly_once(store: CallStore) -> None:
    await store.create(LiveCall("c4", "p"))
    results = await asyncio.gather(*(store.mark_ended("c4", "hangup") for _ in range(10)))
    assert results.count(True) == 1
    got = await store.get("c4")
    assert got is not None and got.ended and got.end_reason == "hangup"
    assert got.status == "completed"
    # an unknown call can be ended once too (its end must still be reported once)
    assert await store.mark_ended("ghost", "completed") is True
    assert await store.mark_ended("ghost", "completed") is False


async def test_first_time_dedupes_until_the_ttl(store: CallStore) -> None:
    assert await store.first_time("evt-1", 60) is True
    assert await store.first_time("evt-1", 60) is False
    assert await store.first_time("evt-2", 0.2) is True
    assert await store.first_time("evt-2", 0.2) is False
    await asyncio.sleep(0.3)
    assert await store.first_time("evt-2", 0.2) is True


async def test_list_recent_newest_first_with_status_filter(store: CallStore) -> None:
    for i in range(5):
        await store.create(LiveCall(f"r{i}", "p", started_at=1000.0 + i))
    await store.mark_ended("r1", "completed")
    recent = await store.list_recent(limit=3)
    assert [c.call_id for c in recent] == ["r4", "r3", "r2"]
    assert [c.call_id for c in await store.list_recent(status="ended")] == ["r1"]
    assert "r1" not in [c.call_id for c in await store.list_recent(status="active")]


async def test_health_names_the_backend(store: CallStore) -> None:
    assert await store.health() in ("in-memory", "connected")


async def test_redis_store_reports_unavailable_when_redis_is_down() -> None:
    s = RedisCallStore(aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2))
    assert await s.health() == "unavailable"
    await s.aclose()


def test_memory_ttl_keys_expire_and_stay_bounded() -> None:
    import time as _time

    from realtime_gateway.calls import TtlKeys

    keys = TtlKeys(max_keys=100)
    assert keys.add_if_absent("a", 0.05) and not keys.add_if_absent("a", 0.05)
    _time.sleep(0.06)
    assert "a" not in keys and keys.add_if_absent("a", 60)
    t0 = _time.perf_counter()
    for i in range(20_000):
        keys.add_if_absent(f"k{i}", 60)
    assert _time.perf_counter() - t0 < 1.0
    assert len(keys) == 100  # bounded: the soonest to expire were forgotten
    assert "k19999" in keys


async def test_metadata_updates_merge_into_the_call(store: CallStore) -> None:
    await store.create(LiveCall("c-meta", "twilio", metadata={"k": 1}))
    recording = {"sid": "RE1", "url": "https://api.twilio.com/rec/RE1", "duration_s": 12}
    assert await store.merge_metadata("c-meta", {"recording": recording}) is True
    assert await store.merge_metadata("c-meta", {"answered_by": "human"}) is True
    assert await store.merge_metadata("unknown", {"answered_by": "human"}) is False
    got = await store.get("c-meta")
    assert got is not None
    assert got.metadata == {"k": 1, "recording": recording, "answered_by": "human"}


async def _lose_record(store: CallStore, call_id: str) -> None:
    """The call's record is gone (expired, or evicted from a full in-process store) while its
    ended marker is still kept."""
    if isinstance(store, MemoryCallStore):
        store._calls.pop(call_id)
    else:
        assert isinstance(store, RedisCallStore)
        await store._r.delete(store._key(call_id))


async def test_an_ended_call_never_comes_back_to_life(store: CallStore) -> None:
    await store.create(LiveCall("gone", "twilio"))
    assert await store.mark_ended("gone", "completed")
    await _lose_record(store, "gone")
    assert await store.create(LiveCall("gone", "twilio")) is False
    step = await store.begin_turn(LiveCall("gone", "twilio"), "turn:gone:1")
    assert (step.call, step.created, step.ended) == (None, False, True)
    status = await store.apply_status(LiveCall("gone", "twilio"), "in-progress", {})
    assert (status.call, status.created) == (None, False)
    assert [c.call_id for c in await store.list_recent(status="active")] == []


async def test_a_turn_after_the_ended_marker_expired_still_finds_the_call_ended(
    store: CallStore,
) -> None:
    """The record outlives the ended marker (in process, records are bounded by count, not
    time): its own `ended_at` still says the call is over."""
    await store.create(LiveCall("old-end", "twilio"))
    assert await store.mark_ended("old-end", "completed")
    if isinstance(store, MemoryCallStore):
        store._ended = type(store._ended)()  # the day-long marker has expired
    else:
        assert isinstance(store, RedisCallStore)
        await store._r.delete(f"{store._p}ended:old-end")
    step = await store.begin_turn(LiveCall("old-end", "twilio"), "turn:old-end:9")
    assert step.ended is True and step.call is not None and step.call.ended


async def test_begin_turn_tracks_a_new_call_and_counts_each_turn_once(store: CallStore) -> None:
    first = await store.begin_turn(LiveCall("t1", "vonage", caller="+15550001111"), "turn:t1:1")
    assert (first.created, first.first, first.ended) == (True, True, False)
    assert first.call is not None and (first.call.turns, first.call.caller) == (1, "+15550001111")
    again = await store.begin_turn(LiveCall("t1", "vonage"), "turn:t1:1")  # a provider retry
    assert (again.created, again.first) == (False, False)
    assert again.call is not None and again.call.turns == 1
    second = await store.begin_turn(LiveCall("t1", "vonage"), "turn:t1:2")
    assert second.first and second.call is not None and second.call.turns == 2


async def test_apply_status_tracks_an_unknown_call_and_moves_forward_only(
    store: CallStore,
) -> None:
    step = await store.apply_status(LiveCall("s1", "twilio"), "ringing", {"answered_by": "human"})
    assert (step.created, step.changed) == (True, True)
    assert step.call is not None and step.call.status == "ringing"
    assert step.call.metadata == {"answered_by": "human"}
    step = await store.apply_status(LiveCall("s1", "twilio"), "initiated", {})
    assert (step.created, step.changed) == (False, False)  # late, out of order
    step = await store.apply_status(LiveCall("s1", "twilio"), "completed", {})
    assert step.changed and step.call is not None and step.call.status == "completed"


async def test_begin_turn_sets_metadata_on_the_call_in_the_same_step(store: CallStore) -> None:
    """A streamed turn keeps its prompt's digest on the live call in its one call-store step:
    on a new call, and on a known one (its other metadata kept)."""
    meta = {"last_prompt": "d1"}
    new = await store.begin_turn(LiveCall("m1", "twilio"), "turn:m1:1", metadata=meta)
    assert new.created and new.call is not None and new.call.metadata["last_prompt"] == "d1"
    await store.merge_metadata("m1", {"language": "fr-FR"})
    known = await store.begin_turn(
        LiveCall("m1", "twilio"), "turn:m1:2", metadata={"last_prompt": "d2"}
    )
    assert known.call is not None and known.call.turns == 2
    assert known.call.metadata == {"last_prompt": "d2", "language": "fr-FR"}
    stored = await store.get("m1")
    assert stored is not None and stored.metadata["last_prompt"] == "d2"


async def test_merge_metadata_on_a_call_that_is_gone_creates_nothing(store: CallStore) -> None:
    assert await store.merge_metadata("gone-meta", {"answered_by": "human"}) is False
    assert await store.get("gone-meta") is None
