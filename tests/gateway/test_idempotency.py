"""The gateway's dedupe keys (`realtime_gateway.idempotency`), on both call stores: each kind of
key lives in its own namespace, and a key is remembered for a day (any provider's retry window)
and then forgotten."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from realtime_gateway import calls as calls_module
from realtime_gateway.calls import CallStore, LiveCall, MemoryCallStore, RedisCallStore
from realtime_gateway.idempotency import (
    SEEN_TTL_S,
    delivery_key,
    event_key,
    idempotency_key,
    sent_key,
    signature_key,
    token_key,
    turn_key,
)

DAY_S = 24 * 3600


def test_each_kind_of_key_has_its_own_namespace() -> None:
    keys = [
        turn_key("c1", "t1"),
        sent_key("c1", "t1"),
        event_key("generic-http", "c1"),
        token_key("generic-http", "c1"),
        signature_key("generic-http", "c1"),
        delivery_key("generic-http", "c1"),
        event_key("vonage", "c1"),
        turn_key("c1", "t2"),
        turn_key("c2", "t1"),
    ]
    assert len(set(keys)) == len(keys)  # no two kinds, providers or turns collide
    assert idempotency_key("c1", "t1") == "c1:t1"  # the orchestrator's Idempotency-Key


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[CallStore]:
    if request.param == "memory":
        yield MemoryCallStore()
        return
    s = RedisCallStore(aioredis.from_url(redis_url), prefix=f"vao:test-idem:{id(request)}:")
    yield s
    await s.aclose()


async def test_a_dedupe_key_is_remembered_for_a_day(store: CallStore, redis_url: str) -> None:
    key = sent_key("idem-call", "turn-1")
    before_ms = int(time.time() * 1000)
    assert await store.first_time(key, SEEN_TTL_S) is True
    after_ms = int(time.time() * 1000) + 1
    assert await store.first_time(key, SEEN_TTL_S) is False
    if isinstance(store, RedisCallStore):
        await assert_expires_a_day_after(store, key, redis_url, before_ms, after_ms)


async def assert_expires_a_day_after(
    store: RedisCallStore, key: str, redis_url: str, before_ms: int, after_ms: int
) -> None:
    """The key's expiry (Redis's absolute PEXPIRETIME) is a day after it was set, to the ms."""
    client = aioredis.from_url(redis_url)
    try:
        expires_ms = await client.pexpiretime(f"{store._p}seen:{key}")
    finally:
        await client.aclose()
    assert before_ms + DAY_S * 1000 <= expires_ms <= after_ms + DAY_S * 1000


async def test_a_dedupe_key_is_forgotten_after_a_day(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_000.0]
    monkeypatch.setattr(calls_module.time, "monotonic", lambda: now[0])
    store = MemoryCallStore()
    key = turn_key("idem-call", "turn-2")
    assert await store.first_time(key, SEEN_TTL_S) is True
    now[0] += DAY_S - 0.5
    assert await store.first_time(key, SEEN_TTL_S) is False  # a retry within the day
    now[0] += 1.0
    assert await store.first_time(key, SEEN_TTL_S) is True  # a day on: forgotten


async def test_a_turn_is_counted_once_for_a_day(store: CallStore, redis_url: str) -> None:
    """`begin_turn`'s own default: a provider retrying a turn within the day is a retry."""
    call = LiveCall("idem-turns", "twilio")
    key = turn_key("idem-turns", "turn-1")
    before_ms = int(time.time() * 1000)
    assert (await store.begin_turn(call, key)).first is True
    after_ms = int(time.time() * 1000) + 1
    assert (await store.begin_turn(call, key)).first is False
    if isinstance(store, RedisCallStore):
        await assert_expires_a_day_after(store, key, redis_url, before_ms, after_ms)


async def test_a_turn_key_is_forgotten_after_a_day(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [5_000.0]
    monkeypatch.setattr(calls_module.time, "monotonic", lambda: now[0])
    store = MemoryCallStore()
    call = LiveCall("idem-day", "twilio")
    key = turn_key("idem-day", "turn-1")
    assert (await store.begin_turn(call, key)).first is True
    now[0] += DAY_S - 0.5
    assert (await store.begin_turn(call, key)).first is False
    now[0] += 1.0
    assert (await store.begin_turn(call, key)).first is True


async def test_a_ttl_goes_to_redis_in_milliseconds_never_below_one(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What Redis is asked to keep a dedupe key for (the only place a 1 ms TTL shows)."""
    store = RedisCallStore(aioredis.from_url(redis_url), prefix=f"vao:test-px:{time.time_ns()}:")
    sent: list[int] = []
    real_set = store._r.set

    async def spy(*args: object, **kwargs: object) -> object:
        sent.append(int(str(kwargs["px"])))
        return await real_set(*args, **kwargs)

    monkeypatch.setattr(store._r, "set", spy)
    for i, ttl_s in enumerate((0, 0.0004, 0.0019, 1.5, SEEN_TTL_S)):
        assert await store.first_time(f"px-{i}", ttl_s) is True
    assert sent == [1, 1, 1, 1500, DAY_S * 1000]
    await store.aclose()


async def test_a_ttl_under_a_millisecond_still_marks_the_key(store: CallStore) -> None:
    """Redis refuses `PX 0`: the shortest TTL is one millisecond, never an error."""
    assert await store.first_time("idem-tiny", 0.0001) is True
    step = await store.begin_turn(LiveCall("idem-tiny", "p"), "turn:idem-tiny:1", ttl_s=0)
    assert step.first is True
