"""Live call state: what the gateway knows of each call while it lasts.

Two stores behind one `CallStore` Protocol. `MemoryCallStore` (the default) keeps calls in this
process. `RedisCallStore` (when `REDIS_URL` is set) keeps them in Redis, so several gateway
instances behind a load balancer act as one: a webhook retried on another instance sees the same
call, `mark_ended` is an atomic `SET NX` (so `call.ended` is emitted exactly once across
instances), and `first_time` dedupes event ids and idempotency tokens with `SET NX EX`.

Durable data (conversations, messages) belongs to the orchestrator; this is only live state, kept
for a day after a call starts.
"""

from __future__ import annotations

import heapq
import json
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from realtime_gateway.metrics import CALL_STORE_ROUND_TRIPS as _ROUND_TRIPS
from realtime_gateway.vocabulary import CallInfo
from shared.contract import STATUS_ORDER, TERMINAL_STATUSES

if TYPE_CHECKING:
    import redis.asyncio as aioredis

CALL_TTL_S = 86_400
ENDED_TTL_S = 86_400
MAX_MEMORY_CALLS = 10_000
MAX_RECENT = 1_000
MAX_TTL_KEYS = 200_000
_TERMINAL_RANK = max(STATUS_ORDER.values())


@dataclass(slots=True)
class LiveCall(CallInfo):
    """The call as a provider described it (`CallInfo`, the same record from webhook to
    store) and what the gateway knows of it while it lasts."""

    status: str = "in-progress"
    started_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    end_reason: str | None = None
    turns: int = 0

    @classmethod
    def of(cls, call: CallInfo, status: str = "in-progress") -> LiveCall:
        return cls(**call.described(), status=status)

    @property
    def ended(self) -> bool:
        return self.ended_at is not None

    @property
    def duration_s(self) -> float:
        end = self.ended_at if self.ended_at is not None else time.time()
        return round(max(0.0, end - self.started_at), 3)

    def to_public(self) -> dict[str, Any]:
        """The shape `GET /voice/calls/{callId}/status` answers."""
        return {
            "call_id": self.call_id,
            "provider": self.provider,
            "direction": self.direction,
            "status": self.status,
            "from": self.caller,
            "to": self.callee,
            "agent_id": self.agent_id,
            "started_at": _iso(self.started_at),
            "ended_at": _iso(self.ended_at) if self.ended_at is not None else None,
            "end_reason": self.end_reason,
            "duration_s": self.duration_s,
            "turns": self.turns,
            "metadata": self.metadata,
        }


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def status_moves_forward(current: str, new: str) -> bool:
    """A status update applies only if it moves the call forward; terminal is final."""
    if new == current or new not in STATUS_ORDER:
        return False
    cur_rank = STATUS_ORDER.get(current, -1)
    return cur_rank < _TERMINAL_RANK and STATUS_ORDER[new] >= cur_rank


@dataclass(slots=True)
class TurnStep:
    """What `begin_turn` found: the call (None if it ended and is gone), whether this step
    created it, whether the turn is new, and whether the call has ended."""

    call: LiveCall | None
    created: bool
    first: bool
    ended: bool


@dataclass(slots=True)
class StatusStep:
    call: LiveCall | None
    created: bool
    changed: bool


class CallStore(Protocol):
    backend: str  # "memory" | "redis"

    async def create(self, call: LiveCall) -> bool:
        """Store `call` unless one with its id exists or has ended (a call never comes back to
        life); True when this call created it."""
        ...

    async def begin_turn(
        self,
        call: LiveCall,
        turn_key: str,
        ttl_s: float = 86_400,
        metadata: dict[str, Any] | None = None,
    ) -> TurnStep:
        """One step for a caller's turn: create `call` if it is new (and has not ended), mark
        `turn_key` seen, count the turn the first time, set `metadata` keys on the stored call
        (e.g. a streamed prompt's digest), and return the call as stored."""
        ...

    async def apply_status(
        self, call: LiveCall, status: str, metadata: dict[str, Any]
    ) -> StatusStep:
        """One step for a status callback: create `call` (with `status`) if it is new and has
        not ended, else move it forward to `status`; set `metadata` keys."""
        ...

    async def get(self, call_id: str) -> LiveCall | None: ...

    async def update_status(self, call_id: str, status: str) -> bool:
        """Apply `status` if it moves the call forward (see `status_moves_forward`)."""
        ...

    async def next_turn(self, call_id: str) -> int:
        """Count one more caller turn; returns the new count."""
        ...

    async def mark_ended(self, call_id: str, reason: str, ended_at: float | None = None) -> bool:
        """True only the first time for this call id (across instances with Redis)."""
        ...

    async def first_time(self, key: str, ttl_s: float) -> bool:
        """True the first time `key` is seen within `ttl_s`."""
        ...

    async def merge_metadata(self, call_id: str, updates: dict[str, Any]) -> bool:
        """Set these metadata keys on the call (e.g. recording, answered_by); False if unknown."""
        ...

    async def list_recent(self, limit: int = 50, status: str | None = None) -> list[LiveCall]:
        """Most recently started first; `status="active"` means not ended."""
        ...

    async def health(self) -> str:
        """ "in-memory", "connected" or "unavailable"."""
        ...

    async def aclose(self) -> None: ...


def _matches(call: LiveCall, status: str | None) -> bool:
    if status is None:
        return True
    if status == "active":
        return not call.ended
    if status == "ended":
        return call.ended
    return call.status == status


class TtlKeys:
    """Keys that expire, for the in-process store: O(log n) per add, bounded in size."""

    def __init__(self, max_keys: int = MAX_TTL_KEYS) -> None:
        self._expires: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._max_keys = max_keys

    def add_if_absent(self, key: str, ttl_s: float) -> bool:
        now = time.monotonic()
        self._purge(now)
        expires = self._expires.get(key)
        if expires is not None and expires > now:
            return False
        self._expires[key] = now + ttl_s
        heapq.heappush(self._heap, (now + ttl_s, key))
        while len(self._expires) > self._max_keys:  # full: forget the soonest to expire
            _, old = heapq.heappop(self._heap)
            self._expires.pop(old, None)
        return True

    def __len__(self) -> int:
        return len(self._expires)

    def __contains__(self, key: str) -> bool:
        expires = self._expires.get(key)
        return expires is not None and expires > time.monotonic()

    def _purge(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            expires, key = heapq.heappop(self._heap)
            if self._expires.get(key) == expires:
                del self._expires[key]


class MemoryCallStore:
    """In-process store; bounded (oldest calls are forgotten past `max_calls`)."""

    backend = "memory"

    def __init__(self, max_calls: int = MAX_MEMORY_CALLS) -> None:
        self._calls: OrderedDict[str, LiveCall] = OrderedDict()
        self._ended = TtlKeys()
        self._seen = TtlKeys()
        self._max_calls = max_calls

    async def create(self, call: LiveCall) -> bool:
        if call.call_id in self._calls or call.call_id in self._ended:
            return False
        self._calls[call.call_id] = call
        while len(self._calls) > self._max_calls:
            self._calls.popitem(last=False)
        return True

    async def begin_turn(
        self,
        call: LiveCall,
        turn_key: str,
        ttl_s: float = 86_400,
        metadata: dict[str, Any] | None = None,
    ) -> TurnStep:
        created = await self.create(call)
        first = self._seen.add_if_absent(turn_key, ttl_s)
        stored = self._calls.get(call.call_id)
        if first and stored is not None:
            stored.turns += 1
        if metadata and stored is not None:
            stored.metadata.update(metadata)
        ended = call.call_id in self._ended or (stored is not None and stored.ended)
        return TurnStep(call=stored, created=created, first=first, ended=ended)

    async def apply_status(
        self, call: LiveCall, status: str, metadata: dict[str, Any]
    ) -> StatusStep:
        if call.call_id not in self._calls and call.call_id not in self._ended:
            call.status = status
            await self.create(call)
            changed = created = True
        else:
            created = False
            changed = await self.update_status(call.call_id, status)
        stored = self._calls.get(call.call_id)
        if stored is not None and metadata:
            stored.metadata.update(metadata)
        return StatusStep(call=stored, created=created, changed=changed)

    async def get(self, call_id: str) -> LiveCall | None:
        return self._calls.get(call_id)

    async def update_status(self, call_id: str, status: str) -> bool:
        call = self._calls.get(call_id)
        if call is None or not status_moves_forward(call.status, status):
            return False
        call.status = status
        return True

    async def next_turn(self, call_id: str) -> int:
        call = self._calls.get(call_id)
        if call is None:
            return 0
        call.turns += 1
        return call.turns

    async def mark_ended(self, call_id: str, reason: str, ended_at: float | None = None) -> bool:
        if not self._ended.add_if_absent(call_id, ENDED_TTL_S):
            return False
        now = time.time()
        call = self._calls.get(call_id)
        if call is not None:
            call.ended_at = ended_at or now
            call.end_reason = reason
            if call.status not in TERMINAL_STATUSES:
                call.status = "completed"
        return True

    async def merge_metadata(self, call_id: str, updates: dict[str, Any]) -> bool:
        call = self._calls.get(call_id)
        if call is None:
            return False
        call.metadata.update(updates)
        return True

    async def first_time(self, key: str, ttl_s: float) -> bool:
        return self._seen.add_if_absent(key, ttl_s)

    async def list_recent(self, limit: int = 50, status: str | None = None) -> list[LiveCall]:
        out: list[LiveCall] = []
        for call in reversed(self._calls.values()):
            if _matches(call, status):
                out.append(call)
                if len(out) >= limit:
                    break
        return out

    async def health(self) -> str:
        return "in-memory"

    async def aclose(self) -> None:
        return None


# Creating a call, shared by the scripts below: KEYS[1] call hash, KEYS[2] recent zset,
# KEYS[3] ended marker; ARGV[1] id, ARGV[2] started_at, ARGV[3] ttl, ARGV[4] recent kept,
# ARGV[5] index of the first field/value pair. A call that has ended is never created again.
_CREATE_FN = """
local function create_call()
  if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
  local fields = {}
  for i = tonumber(ARGV[5]), #ARGV do fields[#fields + 1] = ARGV[i] end
  redis.call('HSET', KEYS[1], unpack(fields))
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
  redis.call('ZADD', KEYS[2], tonumber(ARGV[2]), ARGV[1])
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -tonumber(ARGV[4]) - 1)
  return 1
end
"""

_CREATE_LUA = _CREATE_FN + "return create_call()"

# Setting metadata on a call, shared by the scripts below: `encoded` is a JSON object of hash
# fields (`_meta_json`); a call that is gone is not brought back as a hash of metadata.
_SET_META_FN = """
local function set_meta(encoded)
  if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
  for field, value in pairs(cjson.decode(encoded)) do redis.call('HSET', KEYS[1], field, value) end
  return 1
end
"""

# + KEYS[4] the turn's seen key; ARGV[6] its ttl in ms; ARGV[7] a JSON object of metadata
# fields to set (`{}` for none); fields from ARGV[8]
_BEGIN_TURN_LUA = (
    _CREATE_FN
    + _SET_META_FN
    + """
local created = create_call()
local first = 0
if redis.call('SET', KEYS[4], '1', 'NX', 'PX', tonumber(ARGV[6])) then
  first = 1
  if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HINCRBY', KEYS[1], 'turns', 1) end
end
set_meta(ARGV[7])
return {created, first, redis.call('EXISTS', KEYS[3]), redis.call('HGETALL', KEYS[1])}
"""
)

# ARGV[6] status, ARGV[7] its rank, ARGV[8] terminal rank, ARGV[9] a JSON object of metadata
# fields to set; fields from ARGV[10]
_APPLY_STATUS_LUA = (
    _CREATE_FN
    + _SET_META_FN
    + """
local created = 0
local changed = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  created = create_call()
  changed = created
else
  local cur = redis.call('HGET', KEYS[1], 'status')
  local rank = tonumber(redis.call('HGET', KEYS[1], 'status_rank') or '-1')
  local new_rank = tonumber(ARGV[7])
  if not (cur == ARGV[6] or rank >= tonumber(ARGV[8]) or new_rank < rank) then
    redis.call('HSET', KEYS[1], 'status', ARGV[6], 'status_rank', ARGV[7])
    changed = 1
  end
end
set_meta(ARGV[9])
return {created, changed, redis.call('HGETALL', KEYS[1])}
"""
)

# KEYS[1] call hash; ARGV[1] new status, ARGV[2] its rank, ARGV[3] terminal rank
_STATUS_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local cur = redis.call('HGET', KEYS[1], 'status')
local rank = tonumber(redis.call('HGET', KEYS[1], 'status_rank') or '-1')
local new_rank = tonumber(ARGV[2])
if cur == ARGV[1] or rank >= tonumber(ARGV[3]) or new_rank < rank then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'status_rank', ARGV[2])
return 1
"""

# KEYS[1] ended marker, KEYS[2] call hash; ARGV[1] reason, ARGV[2] ended_at, ARGV[3] ttl,
# ARGV[4] terminal rank
_END_LUA = """
if not redis.call('SET', KEYS[1], ARGV[2], 'NX', 'EX', tonumber(ARGV[3])) then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HSET', KEYS[2], 'ended_at', ARGV[2], 'end_reason', ARGV[1])
  local rank = tonumber(redis.call('HGET', KEYS[2], 'status_rank') or '-1')
  if rank < tonumber(ARGV[4]) then
    redis.call('HSET', KEYS[2], 'status', 'completed', 'status_rank', ARGV[4])
  end
end
return 1
"""


# KEYS[1] call hash; ARGV[1] a JSON object of metadata fields to set
_MERGE_LUA = _SET_META_FN + "return set_meta(ARGV[1])"


def _meta_json(metadata: dict[str, Any]) -> str:
    """Metadata as the call hash holds it (a `meta:<key>` field per key, its value as JSON),
    encoded as one JSON object: the scripts' `set_meta` argument."""
    return json.dumps({f"meta:{k}": json.dumps(v) for k, v in metadata.items()})


class RedisCallStore:
    """Call state in Redis (hash per call + a sorted set of recent call ids)."""

    backend = "redis"

    def __init__(self, client: aioredis.Redis, prefix: str = "vao:gw:") -> None:
        self._r = client
        self._p = prefix
        self._create = client.register_script(_CREATE_LUA)
        self._begin_turn = client.register_script(_BEGIN_TURN_LUA)
        self._apply_status = client.register_script(_APPLY_STATUS_LUA)
        self._status = client.register_script(_STATUS_LUA)
        self._end = client.register_script(_END_LUA)
        self._merge = client.register_script(_MERGE_LUA)

    def _key(self, call_id: str) -> str:
        return f"{self._p}call:{call_id}"

    def _create_keys(self, call_id: str) -> list[str]:
        return [self._key(call_id), f"{self._p}recent", f"{self._p}ended:{call_id}"]

    @staticmethod
    def _create_args(call: LiveCall, extra: list[str | float | int]) -> list[str | float | int]:
        """ARGV for `_CREATE_FN`: the call's id, start, ttl, the recent list's size, where its
        fields start (after `extra`), then `extra`, then the fields."""
        head: list[str | float | int] = [call.call_id, call.started_at, CALL_TTL_S, MAX_RECENT]
        argv = [*head, len(head) + 1 + len(extra) + 1, *extra]
        for k, v in _to_hash(call).items():
            argv += [k, v]
        return argv

    async def create(self, call: LiveCall) -> bool:
        _ROUND_TRIPS.inc()
        created = await self._create(
            keys=self._create_keys(call.call_id), args=self._create_args(call, [])
        )
        return bool(created)

    async def begin_turn(
        self,
        call: LiveCall,
        turn_key: str,
        ttl_s: float = 86_400,
        metadata: dict[str, Any] | None = None,
    ) -> TurnStep:
        extra: list[str | float | int] = [max(1, int(ttl_s * 1000)), _meta_json(metadata or {})]
        _ROUND_TRIPS.inc()
        created, first, ended, raw = await self._begin_turn(
            keys=[*self._create_keys(call.call_id), f"{self._p}seen:{turn_key}"],
            args=self._create_args(call, extra),
        )
        stored = _from_pairs(raw)
        ended = bool(ended) or (stored is not None and stored.ended)
        return TurnStep(call=stored, created=bool(created), first=bool(first), ended=ended)

    async def apply_status(
        self, call: LiveCall, status: str, metadata: dict[str, Any]
    ) -> StatusStep:
        if status not in STATUS_ORDER:
            return StatusStep(call=await self.get(call.call_id), created=False, changed=False)
        call.status = status
        extra: list[str | float | int] = [
            status,
            STATUS_ORDER[status],
            _TERMINAL_RANK,
            _meta_json(metadata),
        ]
        _ROUND_TRIPS.inc()
        created, changed, raw = await self._apply_status(
            keys=self._create_keys(call.call_id), args=self._create_args(call, extra)
        )
        return StatusStep(call=_from_pairs(raw), created=bool(created), changed=bool(changed))

    async def get(self, call_id: str) -> LiveCall | None:
        _ROUND_TRIPS.inc()
        raw = await self._r.hgetall(self._key(call_id))
        return _from_hash(raw) if raw else None

    async def update_status(self, call_id: str, status: str) -> bool:
        if status not in STATUS_ORDER:
            return False
        _ROUND_TRIPS.inc()
        changed = await self._status(
            keys=[self._key(call_id)], args=[status, STATUS_ORDER[status], _TERMINAL_RANK]
        )
        return bool(changed)

    async def next_turn(self, call_id: str) -> int:
        key = self._key(call_id)
        _ROUND_TRIPS.inc()
        if not await self._r.exists(key):
            return 0
        _ROUND_TRIPS.inc()
        return int(await self._r.hincrby(key, "turns", 1))

    async def mark_ended(self, call_id: str, reason: str, ended_at: float | None = None) -> bool:
        _ROUND_TRIPS.inc()
        done = await self._end(
            keys=[f"{self._p}ended:{call_id}", self._key(call_id)],
            args=[reason, ended_at or time.time(), ENDED_TTL_S, _TERMINAL_RANK],
        )
        return bool(done)

    async def merge_metadata(self, call_id: str, updates: dict[str, Any]) -> bool:
        """One hash field per metadata key (`meta:<key>`), so concurrent updates don't clobber;
        one round trip (a call that is gone is not brought back as a hash of metadata)."""
        if not updates:
            return False
        _ROUND_TRIPS.inc()
        done = await self._merge(keys=[self._key(call_id)], args=[_meta_json(updates)])
        return bool(done)

    async def first_time(self, key: str, ttl_s: float) -> bool:
        _ROUND_TRIPS.inc()
        ok = await self._r.set(f"{self._p}seen:{key}", "1", nx=True, px=max(1, int(ttl_s * 1000)))
        return bool(ok)

    async def list_recent(self, limit: int = 50, status: str | None = None) -> list[LiveCall]:
        _ROUND_TRIPS.inc()
        ids = await self._r.zrevrange(f"{self._p}recent", 0, MAX_RECENT - 1)
        out: list[LiveCall] = []
        batch = 100
        for start in range(0, len(ids), batch):
            pipe = self._r.pipeline(transaction=False)
            for raw_id in ids[start : start + batch]:
                cid = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
                pipe.hgetall(self._key(cid))
            _ROUND_TRIPS.inc()
            for raw in await pipe.execute():
                if raw:
                    call = _from_hash(raw)
                    if _matches(call, status):
                        out.append(call)
                        if len(out) >= limit:
                            return out
        return out

    async def health(self) -> str:
        try:
            _ROUND_TRIPS.inc()
            await self._r.ping()
        except Exception:  # any Redis or socket failure means the same to a health check
            return "unavailable"
        return "connected"

    async def aclose(self) -> None:
        await self._r.aclose()


def _to_hash(call: LiveCall) -> dict[str, str | float | int]:
    data = asdict(call)
    out: dict[str, str | float | int] = {}
    for key, value in data.items():
        if value is None:
            continue
        if key == "metadata":
            out[key] = json.dumps(value)
        else:
            out[key] = value
    out["status_rank"] = STATUS_ORDER.get(call.status, 3)
    return out


def _from_pairs(raw: list[Any]) -> LiveCall | None:
    """A call from a script's HGETALL reply (a flat field, value list)."""
    if not raw:
        return None
    return _from_hash(dict(zip(raw[::2], raw[1::2], strict=True)))


def _from_hash(raw: dict[Any, Any]) -> LiveCall:
    d = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }

    def opt(name: str) -> str | None:
        value = d.get(name)
        return str(value) if value not in (None, "") else None

    ended_at = opt("ended_at")
    return LiveCall(
        call_id=d["call_id"],
        provider=d.get("provider", ""),
        direction="outbound" if d.get("direction") == "outbound" else "inbound",
        caller=opt("caller"),
        callee=opt("callee"),
        agent_id=opt("agent_id"),
        status=d.get("status", "in-progress"),
        started_at=float(d.get("started_at", 0.0)),
        ended_at=float(ended_at) if ended_at else None,
        end_reason=opt("end_reason"),
        turns=int(d.get("turns", 0)),
        metadata={
            **json.loads(d.get("metadata") or "{}"),
            **{k[5:]: json.loads(v) for k, v in d.items() if k.startswith("meta:")},
        },
    )
