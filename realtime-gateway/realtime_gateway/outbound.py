"""The call API's service: place an outbound call, end a call, the idempotency ledger.

Placing a call (`POST /voice/calls/initiate`):
- the number is parsed with `phonenumbers` and must be written in E.164 and be a valid number;
- the driver of the requested (else the current) provider dials it (SDK calls run in threads
  inside the drivers);
- the call is recorded as a live call (direction outbound, its provider), so its later webhooks,
  status and end go to that provider even after a provider switch;
- `call.started` is emitted when the provider accepts the call (at initiate, with its first
  status, e.g. `queued`), not when the callee answers: the gateway tracks the call from then on,
  and one never answered (busy, no-answer) still ends with `call.ended`, as inbound calls do.
  If the provider's first callback arrives before the dial returns, that callback created the
  call and emitted `call.started`; it is never emitted twice.

An `Idempotency-Key` header makes a retried initiate return the first call instead of dialling
again (per token subject, for a day; across instances when Redis is configured). The key is
claimed before dialling; a concurrent duplicate waits for the first to finish, a failed dial
releases the key, and the same key with a different body is refused (422).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from realtime_gateway.calls import LiveCall
from realtime_gateway.drivers.registry import DRIVERS, DriverUnavailable
from realtime_gateway.vocabulary import CallOptions, ProviderConfigError, ProviderError
from shared import phone
from shared.contract import STATUS_ORDER
from shared.errors import ApiError
from shared.logging import call_id_var, mask_phone

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from realtime_gateway.runtime import GatewayRuntime

log = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_TTL_S = 86_400
PENDING_TTL_S = 60  # a claim whose dial never finished (process died) frees the key after this
PENDING_WAIT_S = 15.0
PENDING_POLL_S = 0.05
MAX_LEDGER_KEYS = 10_000
_KEY_RE = re.compile(r"[\x21-\x7e]{1,255}")
END_REASON = "ended_by_api"


# -- request bodies ------------------------------------------------------------------------


class CallRequestOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recording: bool = False
    transcription: bool = False
    machine_detection: bool = False


class InitiateCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phone_number: str = Field(max_length=64)
    options: CallRequestOptions = Field(default_factory=CallRequestOptions)
    agent_id: str | None = Field(None, min_length=1, max_length=128)
    provider: str | None = None
    from_number: str | None = Field(None, max_length=64)

    def fingerprint(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()


def parse_e164(value: str, field: str = "phone_number") -> str:
    """The number in E.164, or `ApiError` 400 saying which check failed (`shared.phone`)."""
    try:
        return phone.parse_e164(value, field)
    except phone.InvalidPhone as exc:
        raise ApiError(400, "invalid_phone_number", str(exc)) from None


def check_provider(name: str) -> str:
    if name not in DRIVERS:
        raise ApiError(
            400,
            "unknown_provider",
            f"provider: unknown voice provider {name!r}; one of {', '.join(DRIVERS)}",
        )
    return name


# -- idempotency ledger --------------------------------------------------------------------


@dataclass(slots=True)
class LedgerEntry:
    state: Literal["pending", "done"]
    fingerprint: str
    result: dict[str, Any] | None = None

    def dumps(self) -> str:
        return json.dumps({"state": self.state, "fp": self.fingerprint, "result": self.result})

    @classmethod
    def loads(cls, raw: str | bytes) -> LedgerEntry:
        data = json.loads(raw)
        return cls(state=data["state"], fingerprint=data["fp"], result=data.get("result"))


class InitiateLedger(Protocol):
    async def claim(self, key: str, fingerprint: str) -> LedgerEntry | None:
        """None when this request now owns `key`; else the entry already there."""
        ...

    async def complete(self, key: str, entry: LedgerEntry) -> None: ...

    async def release(self, key: str) -> None: ...


class MemoryInitiateLedger:
    def __init__(self, max_keys: int = MAX_LEDGER_KEYS) -> None:
        self._entries: OrderedDict[str, tuple[float, LedgerEntry]] = OrderedDict()
        self._max_keys = max_keys

    async def claim(self, key: str, fingerprint: str) -> LedgerEntry | None:
        now = time.monotonic()
        held = self._entries.get(key)
        if held is not None and held[0] > now:
            return held[1]
        self._put(key, LedgerEntry("pending", fingerprint), PENDING_TTL_S)
        return None

    async def complete(self, key: str, entry: LedgerEntry) -> None:
        self._put(key, entry, IDEMPOTENCY_TTL_S)

    async def release(self, key: str) -> None:
        self._entries.pop(key, None)

    def _put(self, key: str, entry: LedgerEntry, ttl_s: float) -> None:
        self._entries[key] = (time.monotonic() + ttl_s, entry)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_keys:
            self._entries.popitem(last=False)


class RedisInitiateLedger:
    def __init__(self, client: aioredis.Redis, prefix: str = "vao:gw:initiate:") -> None:
        self._r = client
        self._p = prefix

    async def claim(self, key: str, fingerprint: str) -> LedgerEntry | None:
        pending = LedgerEntry("pending", fingerprint).dumps()
        if await self._r.set(self._p + key, pending, nx=True, ex=PENDING_TTL_S):
            return None
        raw = await self._r.get(self._p + key)
        if raw is None:  # released or expired just now: try once more
            if await self._r.set(self._p + key, pending, nx=True, ex=PENDING_TTL_S):
                return None
            raw = await self._r.get(self._p + key)
        return LedgerEntry.loads(raw) if raw is not None else LedgerEntry("pending", fingerprint)

    async def complete(self, key: str, entry: LedgerEntry) -> None:
        await self._r.set(self._p + key, entry.dumps(), ex=IDEMPOTENCY_TTL_S)

    async def release(self, key: str) -> None:
        await self._r.delete(self._p + key)


def ledger_for(redis: aioredis.Redis | None) -> InitiateLedger:
    """The runtime's ledger, made with it: in Redis when the call store is (a retry on another
    instance finds the key), else in process."""
    return RedisInitiateLedger(redis) if redis is not None else MemoryInitiateLedger()


def check_idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not _KEY_RE.fullmatch(value):
        raise ApiError(
            400,
            "invalid_idempotency_key",
            f"{IDEMPOTENCY_HEADER}: 1 to 255 printable ASCII characters without spaces",
        )
    return value


# -- placing and ending calls --------------------------------------------------------------


@dataclass(slots=True)
class Initiated:
    body: dict[str, Any]
    replayed: bool = False


async def initiate(
    rt: GatewayRuntime, request: InitiateCall, subject: str, idempotency_key: str | None
) -> Initiated:
    to = parse_e164(request.phone_number)
    from_number = parse_e164(request.from_number, "from_number") if request.from_number else None
    provider = check_provider(request.provider or rt.drivers.current_name)
    if idempotency_key is None:
        return Initiated(await _shielded(_place(rt, request, to, from_number, provider, subject)))
    ledger = rt.initiate_ledger
    key = f"{subject}:{idempotency_key}"
    fingerprint = request.fingerprint()
    deadline = time.monotonic() + PENDING_WAIT_S
    while True:
        try:
            held = await ledger.claim(key, fingerprint)
        except Exception:  # e.g. Redis unreachable: cannot promise a single dial
            log.exception("idempotency ledger unavailable")
            raise ApiError(
                503, "idempotency_unavailable", f"cannot check {IDEMPOTENCY_HEADER} now; retry"
            ) from None
        if held is None:
            break
        if held.fingerprint != fingerprint:
            raise ApiError(
                422,
                "idempotency_key_reused",
                f"{IDEMPOTENCY_HEADER} {idempotency_key!r} was used with a different request",
            )
        if held.state == "done" and held.result is not None:
            log.info("initiate replayed", extra={"call_id": held.result.get("call_id")})
            return Initiated(held.result, replayed=True)
        if time.monotonic() >= deadline:
            raise ApiError(
                409,
                "idempotency_key_in_use",
                f"a request with {IDEMPOTENCY_HEADER} {idempotency_key!r} is still in progress",
            )
        await asyncio.sleep(PENDING_POLL_S)

    async def place_and_record() -> dict[str, Any]:
        try:
            body = await _place(rt, request, to, from_number, provider, subject, idempotency_key)
        except Exception:
            await ledger.release(key)  # nothing was dialled (or it failed): a retry may dial
            raise
        await ledger.complete(key, LedgerEntry("done", fingerprint, body))
        return body

    return Initiated(await _shielded(place_and_record()))


_PLACING: set[asyncio.Task[dict[str, Any]]] = set()


async def _shielded(placing: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """Run the dial to its end even if the request is cancelled (client gone, shutdown): a call
    the provider placed is always recorded, and its idempotency key completed."""
    task = asyncio.create_task(placing)
    _PLACING.add(task)
    task.add_done_callback(_PLACING.discard)
    return await asyncio.shield(task)


async def _place(
    rt: GatewayRuntime,
    request: InitiateCall,
    to: str,
    from_number: str | None,
    provider: str,
    subject: str,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    explicit = request.provider is not None
    try:
        driver = await rt.drivers.get(provider)
    except DriverUnavailable as exc:
        raise ApiError(503, "provider_unavailable", str(exc)) from None
    options = CallOptions(
        recording=request.options.recording,
        transcription=request.options.transcription,
        machine_detection=request.options.machine_detection,
        agent_id=request.agent_id,
        from_number=from_number,
        idempotency_key=f"{subject}:{idempotency_key}"[:200] if idempotency_key else None,
    )
    try:
        placed = await driver.make_call(to, options)
    except ProviderConfigError as exc:
        # asked for by name: the request chose a provider that cannot dial (400); the
        # current provider unable to dial is the server's configuration (503)
        raise ApiError(
            400 if explicit else 503, "provider_not_configured", f"{provider}: {exc}"
        ) from None
    except ProviderError as exc:
        raise ApiError(exc.status, exc.code, str(exc)) from None
    call_id_var.set(placed.call_id)
    status = placed.status if placed.status in STATUS_ORDER else "queued"
    caller = from_number or _str_or_none(placed.raw.get("from"))
    metadata: dict[str, Any] = {
        "initiated_by": subject,
        "options": request.options.model_dump(),
    }
    live = LiveCall(
        call_id=placed.call_id,
        provider=provider,
        direction="outbound",
        caller=caller,
        callee=to,
        agent_id=request.agent_id,
        status=status,
        metadata=metadata,
    )
    try:
        await _record(rt, live, metadata)
    except Exception:  # placed but not tracked here: its own webhooks will track it later
        log.exception("outbound call placed but not recorded", extra={"provider": provider})
    log.info(
        "outbound call placed",
        extra={"provider": provider, "to": mask_phone(to), "status": status},
    )
    return {
        "call_id": placed.call_id,
        "provider": provider,
        "status": status,
        "direction": "outbound",
        "to": to,
        "agent_id": request.agent_id,
    }


async def _record(rt: GatewayRuntime, live: LiveCall, metadata: dict[str, Any]) -> None:
    """Track the placed call; `call.started` once (the provider's first callback may have
    been faster and created it)."""
    if not await rt.flow.track(live):
        await rt.calls.merge_metadata(live.call_id, metadata)


async def end(rt: GatewayRuntime, call_id: str) -> dict[str, Any]:
    """Hang up at the call's own provider, then end it here (`call.ended` once). Idempotent:
    an ended call answers its status."""
    live = await rt.calls.get(call_id)
    if live is None:
        raise ApiError(404, "call_not_found", f"no live call {call_id!r}")
    call_id_var.set(call_id)
    if live.ended:
        return {**live.to_public(), "already_ended": True}
    try:
        driver = await rt.drivers.get(live.provider)
    except (DriverUnavailable, LookupError) as exc:
        raise ApiError(503, "provider_unavailable", str(exc)) from None
    mode = live.metadata.get("voice_mode")
    # a streamed call's socket (here or on another instance) hangs up its provider's way; a
    # browser call (`stream`) has no provider to ask
    ended_socket = mode in ("relay", "stream") and await rt.stream_control.end(call_id, END_REASON)
    if ended_socket and mode == "stream":
        first = await rt.flow.end(call_id, reason=END_REASON)
        after = await rt.calls.get(call_id)
        return {**(after or live).to_public(), "already_ended": not first}
    try:
        await driver.end_call(call_id, live.metadata)
    except ProviderConfigError as exc:
        raise ApiError(503, "provider_not_configured", f"{live.provider}: {exc}") from None
    except ProviderError as exc:
        # the line may still be open at the provider: not marked ended, the client may retry
        raise ApiError(exc.status, exc.code, str(exc)) from None
    first = await rt.flow.end(call_id, reason=END_REASON)
    log.info("call ended through the API", extra={"provider": live.provider, "first": first})
    after = await rt.calls.get(call_id)
    return {**(after or live).to_public(), "already_ended": not first}


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
