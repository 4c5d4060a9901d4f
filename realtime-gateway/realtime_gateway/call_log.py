"""The call log mirror: call lifecycle rows copied to the customer's Supabase `calls` table.

On when `SUPABASE_URL` and `SUPABASE_SERVICE_ROLE_KEY` are both set (supabase-py is imported
only then). It is kept off the call path: the event bus hands each `call.started` /
`call.ended` to `CallLog.record`, which only merges a row into memory and puts the call id on a
bounded queue (`put_nowait`, never awaited by a call). One worker task upserts rows through
supabase-py's async client (PostgREST, `on_conflict=call_id`), retrying a failed write with
backoff; a failure is logged (call id and error, never a phone number) and never reaches a
caller. Rows for the same call are coalesced while they wait, so an outage costs one pending
row per call, at most `queue_size` calls (further calls are counted as dropped and logged).
On shutdown the queue is drained for a few seconds.

Each row is built from the event and, when the gateway still knows the call, from its live state
(so a row is complete even if an earlier one was lost). Real numbers are stored, since the table
is the customer's own; logs never show them. The table (run once in the Supabase SQL editor):

    create table if not exists public.calls (
      call_id      text primary key,
      provider     text not null,
      direction    text not null,
      from_number  text,
      to_number    text,
      agent_id     text,
      status       text not null,
      end_reason   text,
      started_at   timestamptz,
      ended_at     timestamptz,
      duration_s   double precision,
      turns        integer not null default 0,
      updated_at   timestamptz not null default now()
    );
    alter table public.calls enable row level security;  -- service role only

`status()` feeds `GET /health/database`: `not_configured`, `configured` (no write yet),
`connected` (the last write succeeded) or `failing` (the last write failed; retrying).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

from realtime_gateway.calls import CallStore, LiveCall
from realtime_gateway.config import GatewaySettings
from shared.events import CallEvent, EventType
from shared.logging import scrub_text
from shared.tasks import cancel_and_wait

if TYPE_CHECKING:
    from realtime_gateway.events import EventBus, FanoutHub

log = logging.getLogger(__name__)

TABLE = "calls"
QUEUE_SIZE = 1_000
RETRY_DELAYS_S: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
WRITE_TIMEOUT_S = 5.0
DRAIN_TIMEOUT_S = 5.0
MIRRORED = frozenset({EventType.CALL_STARTED, EventType.CALL_ENDED})


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def row_from_event(event: CallEvent) -> dict[str, Any]:
    """The columns an event tells (used as is when the live call is no longer known)."""
    data = event.data
    row: dict[str, Any] = {"call_id": event.call_id}
    if event.type == EventType.CALL_STARTED:
        row.update(
            provider=data.get("provider"),
            direction=data.get("direction"),
            from_number=data.get("from"),
            to_number=data.get("to"),
            agent_id=data.get("agent_id"),
            status=data.get("status") or "in-progress",
            started_at=event.timestamp,
        )
    elif event.type == EventType.CALL_ENDED:
        row.update(
            status=data.get("status") or "completed",
            end_reason=data.get("reason"),
            ended_at=event.timestamp,
            duration_s=data.get("duration_s"),
        )
        if isinstance(data.get("turns"), int):
            row["turns"] = data["turns"]
    return {k: v for k, v in row.items() if v is not None}


def row_from_live(call: LiveCall) -> dict[str, Any]:
    row: dict[str, Any] = {
        "call_id": call.call_id,
        "provider": call.provider,
        "direction": call.direction,
        "from_number": call.caller,
        "to_number": call.callee,
        "agent_id": call.agent_id,
        "status": call.status,
        "end_reason": call.end_reason,
        "started_at": _iso(call.started_at),
        "ended_at": _iso(call.ended_at),
        "duration_s": call.duration_s if call.ended else None,
        "turns": call.turns,
    }
    return {k: v for k, v in row.items() if v is not None}


@dataclass(slots=True)
class CallLogStats:
    written: int = 0
    failures: int = 0
    dropped: int = 0
    last_success_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    failing: bool = False


Upsert = Callable[[dict[str, Any]], Any]


class CallLog:
    """The Supabase mirror: a bounded queue and one worker (see the module docstring)."""

    def __init__(
        self,
        url: str,
        key: str,
        calls: CallStore,
        *,
        queue_size: int = QUEUE_SIZE,
        retry_delays_s: tuple[float, ...] = RETRY_DELAYS_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._key = key
        self._calls = calls
        self.queue_size = queue_size
        self.retry_delays_s = retry_delays_s
        self.drain_timeout_s = DRAIN_TIMEOUT_S
        self._transport = transport
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize=queue_size)
        self._pending: dict[str, dict[str, Any]] = {}
        self._worker: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None
        self._client: Any = None  # supabase.AsyncClient, imported only when configured
        self.stats = CallLogStats()

    @classmethod
    def from_settings(cls, settings: GatewaySettings, calls: CallStore) -> CallLog | None:
        if settings.supabase_url is None or settings.supabase_service_role_key is None:
            return None
        return cls(
            str(settings.supabase_url), settings.supabase_service_role_key.get_secret_value(), calls
        )

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Build the client (no network I/O) and start the worker."""
        from supabase import AsyncClientOptions, acreate_client  # only when configured

        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(WRITE_TIMEOUT_S, connect=2.0), transport=self._transport
        )
        self._client = await acreate_client(
            self.url,
            self._key,
            options=AsyncClientOptions(
                httpx_client=self._http,
                postgrest_client_timeout=WRITE_TIMEOUT_S,
                auto_refresh_token=False,
                persist_session=False,
            ),
        )
        self._worker = asyncio.create_task(self._run(), name="call-log-mirror")
        log.info("call log mirror on", extra={"table": TABLE})

    async def aclose(self) -> None:
        """Drain what is queued (up to `drain_timeout_s`), then stop."""
        if self._worker is not None:
            try:
                async with asyncio.timeout(self.drain_timeout_s):
                    await self._queue.join()
            except TimeoutError:
                log.error(
                    "call log mirror stopped with rows not written",
                    extra={"rows": self._queue.qsize() + 1},
                )
            worker, self._worker = self._worker, None
            await cancel_and_wait(worker)
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # -- the call path's side: never waits ------------------------------------------------------

    def record(self, event: CallEvent) -> bool:
        """Queue the row an event implies; False (counted, logged) when the queue is full."""
        if event.type not in MIRRORED:
            return False
        row = row_from_event(event)
        pending = self._pending.get(event.call_id)
        if pending is not None:  # already waiting: the newer columns win, no second entry
            pending.update(row)
            return True
        try:
            self._queue.put_nowait(event.call_id)
        except asyncio.QueueFull:
            self.stats.dropped += 1
            log.error(
                "call log mirror queue full; row dropped",
                extra={"call_id": event.call_id, "queue_size": self.queue_size},
            )
            return False
        self._pending[event.call_id] = row
        return True

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def status(self) -> dict[str, Any]:
        s = self.stats
        if s.failing:
            state = "failing"
        elif s.last_success_at is not None:
            state = "connected"
        else:
            state = "configured"
        return {
            "status": state,
            "table": TABLE,
            "queue_depth": self.queue_depth,
            "queue_size": self.queue_size,
            "written": s.written,
            "failures": s.failures,
            "dropped": s.dropped,
            "last_success_at": _iso(s.last_success_at),
            "last_error": s.last_error,
            "last_error_at": _iso(s.last_error_at),
        }

    # -- the worker -----------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            call_id = await self._queue.get()
            try:
                await self._write(call_id)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one row stop the mirror
                log.exception("call log mirror: unexpected error", extra={"call_id": call_id})
            finally:
                self._queue.task_done()

    async def _write(self, call_id: str) -> None:
        row = self._pending.pop(call_id, None)
        if row is None:
            return
        try:
            live = await self._calls.get(call_id)
        except Exception:  # the call store is down: the event's own columns still go
            live = None
        if live is not None:
            row = {**row, **row_from_live(live)}
        row["updated_at"] = _iso(time.time())
        attempts = len(self.retry_delays_s) + 1
        for attempt in range(1, attempts + 1):
            try:
                await self._upsert(row)
            except Exception as exc:
                self._failed(call_id, attempt, exc)
                if attempt == attempts:
                    log.error(
                        "call log row not written after retries",
                        extra={"call_id": call_id, "attempts": attempts},
                    )
                    return
                # A newer event for this call meanwhile queues the call again (record() finds
                # nothing pending), so it is written after this row, with the live state.
                await asyncio.sleep(self.retry_delays_s[attempt - 1])
                continue
            self.stats.written += 1
            self.stats.last_success_at = time.time()
            if self.stats.failing:
                log.info("call log mirror recovered", extra={"call_id": call_id})
            self.stats.failing = False
            return

    async def _upsert(self, row: dict[str, Any]) -> None:
        await (
            self._client.table(TABLE)
            .upsert(row, on_conflict="call_id", returning="minimal")
            .execute()
        )

    def _failed(self, call_id: str, attempt: int, exc: Exception) -> None:
        message = scrub_text(f"{type(exc).__name__}: {exc}")[:300]
        self.stats.failures += 1
        self.stats.failing = True
        self.stats.last_error = message
        self.stats.last_error_at = time.time()
        log.warning(
            "call log write failed; will retry",
            extra={"call_id": call_id, "attempt": attempt, "error": message},
        )


class MirroringEventBus:
    """An `EventBus` that also hands lifecycle events to the call log (after publishing)."""

    def __init__(self, inner: EventBus, call_log: CallLog) -> None:
        self.inner = inner
        self.call_log = call_log

    @property
    def backend(self) -> str:
        return self.inner.backend

    @backend.setter
    def backend(self, value: str) -> None:
        self.inner.backend = value

    @property
    def hub(self) -> FanoutHub:
        return self.inner.hub

    @hub.setter
    def hub(self, value: FanoutHub) -> None:
        self.inner.hub = value

    @property
    def events_published(self) -> int:
        return self.inner.events_published

    @events_published.setter
    def events_published(self, value: int) -> None:
        self.inner.events_published = value

    async def start(self) -> None:
        await self.inner.start()

    async def publish(self, event: CallEvent) -> None:
        try:
            await self.inner.publish(event)
        finally:
            if event.type in MIRRORED:
                self.call_log.record(event)

    def stats(self) -> dict[str, Any]:
        return self.inner.stats()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def start_call_log(settings: GatewaySettings, calls: CallStore) -> CallLog | None:
    """The mirror, started, when configured; the runtime's builder puts it behind the event bus
    (`MirroringEventBus`). None when it is off (a half-done configuration is logged)."""
    call_log = CallLog.from_settings(settings, calls)
    if call_log is None:
        s = settings
        if (s.supabase_url is None) != (s.supabase_service_role_key is None):
            missing = "SUPABASE_URL" if s.supabase_url is None else "SUPABASE_SERVICE_ROLE_KEY"
            log.warning("call log mirror off: %s is not set", missing)
        return None
    await call_log.start()
    return call_log
