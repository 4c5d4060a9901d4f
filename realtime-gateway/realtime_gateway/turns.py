"""The live call flow: the `CallFlow` rules on live call state, `/ws` events and orchestrator turns.

Live call state (`calls.py`), `/ws` events (`events.py`) and orchestrator turns
(`orchestrator_client.py`) meet here. What it guarantees:

- `start` is idempotent: a retried "call started" webhook creates nothing twice and emits
  `call.started` once.
- a turn is one call-store step (`CallStore.begin_turn`: track the call if new, count the turn
  once), the orchestrator, and one more step to announce the reply once: with Redis, two round
  trips.
- a turn whose orchestrator call fails is answered with a short apology and a new listen
  (`fallback=True`), never an error: the caller just says it again.
- `end` emits `call.ended` exactly once per call, across instances when Redis is used; the
  orchestrator is told, and if it cannot be reached the telling is retried in the background.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Mapping
from typing import Any

from realtime_gateway import metrics, prompts
from realtime_gateway.callflow import CallFlow
from realtime_gateway.calls import CallStore, LiveCall
from realtime_gateway.events import EventBus
from realtime_gateway.idempotency import SEEN_TTL_S, sent_key, turn_key
from realtime_gateway.orchestrator_client import OrchestratorClient, OrchestratorUnavailable
from realtime_gateway.streaming import StreamRegistry, StreamTimings
from realtime_gateway.vocabulary import CallerInput, CallInfo, FlowReply, seconds_of
from shared.contract import (
    TERMINAL_STATUSES,
    Action,
    CallEnd,
    CallStart,
    TurnContext,
    TurnReply,
    TurnRequest,
)
from shared.events import CallEvent, EventType
from shared.logging import call_id_var
from shared.redaction import redact_secrets
from shared.tasks import cancel_and_wait

log = logging.getLogger(__name__)

# Backoff for telling the orchestrator a call ended (it may be restarting): ~9 minutes in all.
END_RETRY_DELAYS_S = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0)
# Status-callback fields kept on the live call.
KEPT_STATUS_FIELDS = ("recording", "answered_by")


def _language(actions: list[Action]) -> str | None:
    return next((a.language for a in actions if a.language), None)


class GatewayFlow(CallFlow):
    def __init__(
        self,
        calls: CallStore,
        bus: EventBus,
        orchestrator: OrchestratorClient,
        end_retry_delays_s: tuple[float, ...] = END_RETRY_DELAYS_S,
    ) -> None:
        self.calls = calls
        self.bus = bus
        self.orchestrator = orchestrator
        self.end_retry_delays_s = end_retry_delays_s
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: set[asyncio.Task[None]] = set()  # `keep`: cancelled at once on aclose
        self.accepting_calls = True  # False while draining for shutdown (shutdown.py)
        self.streams = StreamRegistry()  # the streamed calls this instance holds a socket for

    # -- primitives -----------------------------------------------------------------------------

    async def start(self, call: CallInfo) -> FlowReply:
        call_id_var.set(call.call_id)
        if not self.accepting_calls and await self.calls.get(call.call_id) is None:
            log.info("new call refused: shutting down", extra={"provider": call.provider})
            busy = prompts.say("busy")
            return FlowReply(actions=[Action.say(busy), Action.hangup("shutting down")], text=busy)
        created = await self.track(LiveCall.of(call))
        if not created:
            # e.g. an outbound call placed as "queued": the provider's start webhook means
            # it was answered (a no-op for a call already further on).
            await self.calls.update_status(call.call_id, "in-progress")
        live = await self.calls.get(call.call_id)
        if live is None or live.ended:
            return FlowReply(actions=[Action.hangup("call already ended")])
        try:
            reply = await self.orchestrator.start(call.call_id, _call_start(call))
        except OrchestratorUnavailable as exc:
            await self._error(call.call_id, "greeting", exc)
            greeting = prompts.say("greeting")
            return FlowReply(
                actions=[Action.say(greeting), Action.gather()], text=greeting, fallback=True
            )
        actions = reply.actions or [Action.say(reply.reply), Action.gather()]
        language = _language(actions)
        if language and created:
            await self.calls.merge_metadata(call.call_id, {"language": language})
        log.info("call greeted", extra={"new_call": created, "provider": call.provider})
        return FlowReply(
            actions=actions, text=reply.reply, turn_id=reply.turn_id, voice_mode=reply.voice_mode
        )

    async def track(self, live: LiveCall) -> bool:
        """Create the live call if it is new (never one that has ended), emitting
        `call.started`; True when created."""
        created = await self.calls.create(live)
        if created:
            await self._started(live)
        return created

    async def _started(self, live: LiveCall) -> None:
        metrics.call_started(live.provider, live.direction)
        await self._emit(
            EventType.CALL_STARTED,
            live.call_id,
            {
                "provider": live.provider,
                "direction": live.direction,
                "from": live.caller,
                "to": live.callee,
                "agent_id": live.agent_id,
                "status": live.status,
            },
        )

    async def _open_turn(
        self, call: CallInfo, heard: CallerInput, metadata: dict[str, Any] | None = None
    ) -> tuple[LiveCall, bool]:
        """The turn's one call-store step (`begin_turn`, which also sets `metadata` on the
        call) and its `message.received`; the call as known, and whether it has ended."""
        call_id = call.call_id
        call_id_var.set(call_id)
        step = await self.calls.begin_turn(
            LiveCall.of(call), turn_key(call_id, heard.turn_id), metadata=metadata
        )
        live = step.call
        if step.created and live is not None:
            # First seen at a turn (e.g. after a restart without Redis): announce it and open
            # its conversation (the greeting is not used).
            await self._started(live)
            try:
                await self.orchestrator.start(call_id, _call_start(call))
            except OrchestratorUnavailable as exc:
                await self._error(call_id, "start", exc)
        if step.first and not step.ended:
            await self._emit(
                EventType.MESSAGE_RECEIVED,
                call_id,
                {  # viewers read this: no card, code or PIN the caller said or keyed in
                    "turn_id": heard.turn_id,
                    "input_type": heard.type,
                    "text": redact_secrets(heard.text),
                    "digits": redact_secrets(heard.digits) if heard.digits else heard.digits,
                    "confidence": heard.confidence,
                },
            )
        return live or LiveCall.of(call), step.ended

    @staticmethod
    def _request(known: LiveCall, heard: CallerInput) -> TurnRequest:
        return TurnRequest(
            message=heard.text if heard.text else (heard.digits or ""),
            turn_id=heard.turn_id,
            # The call id travels in the path (and the Idempotency-Key), nowhere else.
            context=TurnContext(
                caller=known.caller,
                callee=known.callee,
                agent_id=known.agent_id,
                provider=known.provider,
                input_type=heard.type,
                confidence=heard.confidence,
            ),
        )

    async def _answered(
        self,
        call_id: str,
        turn_id: str,
        reply: TurnReply,
        actions: list[Action],
        latency_ms: float,
        timings_ms: Mapping[str, float] | None = None,
    ) -> None:
        """`message.sent` once per turn (a retried turn is not announced twice)."""
        if await self.calls.first_time(sent_key(call_id, turn_id), SEEN_TTL_S):
            await self._emit(
                EventType.MESSAGE_SENT,
                call_id,
                {
                    "turn_id": turn_id,
                    "text": reply.reply,
                    "actions": [a.model_dump(exclude_none=True) for a in actions],
                    "replayed": reply.replayed,
                    "latency_ms": latency_ms,
                    "timings_ms": {**reply.timings_ms, **(timings_ms or {})},
                },
            )
        log.info(
            "turn answered",
            extra={"turn_id": turn_id, "latency_ms": latency_ms, "replayed": reply.replayed},
        )

    def _apology(self, known: LiveCall, turn_id: str) -> FlowReply:
        language = known.metadata.get("language")
        apology = prompts.say("apology", language)
        return FlowReply(
            actions=[Action.say(apology, language), Action.gather(language=language)],
            text=apology,
            fallback=True,
            turn_id=turn_id,
        )

    @metrics.observed_turn
    async def turn(self, call: CallInfo, heard: CallerInput) -> FlowReply:
        known, ended = await self._open_turn(call, heard)
        if ended:
            return FlowReply(actions=[Action.hangup("call already ended")], turn_id=heard.turn_id)
        started = time.perf_counter()
        try:
            reply = await self.orchestrator.post_turn(
                call.call_id, heard.turn_id, self._request(known, heard)
            )
        except OrchestratorUnavailable as exc:
            await self._error(call.call_id, "turn", exc, turn_id=heard.turn_id)
            return self._apology(known, heard.turn_id)
        latency_ms = round((time.perf_counter() - started) * 1000, 1)
        actions = reply.actions or [Action.say(reply.reply), Action.gather()]
        await self._answered(call.call_id, heard.turn_id, reply, actions, latency_ms)
        return FlowReply(actions=actions, text=reply.reply, turn_id=heard.turn_id)

    async def stream(
        self,
        call: CallInfo,
        heard: CallerInput,
        timing: StreamTimings | None = None,
        prompt_digest: str | None = None,
    ) -> AsyncIterator[str | FlowReply]:
        """One streamed turn: the reply's text pieces as the orchestrator writes them, then the
        whole reply (`FlowReply`: its actions, `fallback=True` when it failed). Closing the
        iterator (barge-in) closes the orchestrator's request at once. Announces the turn on
        `/ws` like `turn`, with the stream's own timings. `prompt_digest` (the prompt's words,
        hashed) is kept on the live call in the turn's one call-store step, as `last_prompt`:
        a socket that reconnects recognises a replay of it (`streaming.StreamSession`)."""
        remembered = None if prompt_digest is None else {"last_prompt": prompt_digest}
        known, ended = await self._open_turn(call, heard, remembered)
        if ended:
            yield FlowReply(actions=[Action.hangup("call already ended")], turn_id=heard.turn_id)
            return
        started = time.perf_counter()
        first_ms: float | None = None
        pieces = self.orchestrator.stream_turn(
            call.call_id, heard.turn_id, self._request(known, heard)
        )
        try:
            async for item in pieces:
                if isinstance(item, str):
                    if first_ms is None:
                        first_ms = round((time.perf_counter() - started) * 1000, 1)
                    yield item
                    continue
                latency_ms = round((time.perf_counter() - started) * 1000, 1)
                actions = item.actions or [Action.say(item.reply), Action.gather()]
                stream_ms = {"first_token": first_ms if first_ms is not None else latency_ms}
                if timing is not None:  # what the socket has sent so far (first frame, ...)
                    stream_ms.update(timing.as_ms())
                await self._answered(
                    call.call_id, heard.turn_id, item, actions, latency_ms, stream_ms
                )
                yield FlowReply(actions=actions, text=item.reply, turn_id=heard.turn_id)
                return
        except OrchestratorUnavailable as exc:
            await self._error(call.call_id, "turn", exc, turn_id=heard.turn_id)
            yield self._apology(known, heard.turn_id)
        finally:
            await pieces.aclose()  # type: ignore[attr-defined]

    async def interrupted(self, call_id: str, turn_id: str, heard: str) -> None:
        """The caller talked over the reply to `turn_id`: the orchestrator keeps what was heard."""
        try:
            await self.orchestrator.interrupted(call_id, turn_id, heard)
        except OrchestratorUnavailable as exc:
            if exc.status == 404:  # cut before the orchestrator had the turn: nothing to keep
                log.info("interrupted before the turn reached the orchestrator")
                return
            await self._error(call_id, "interrupt", exc, turn_id=turn_id)

    async def status(self, call: CallInfo, status: str, extra: Mapping[str, Any]) -> None:
        call_id_var.set(call.call_id)
        kept = {k: extra[k] for k in KEPT_STATUS_FIELDS if extra.get(k)}
        step = await self.calls.apply_status(LiveCall.of(call, status), status, kept)
        if step.created and step.call is not None:
            await self._started(step.call)
        if step.changed:
            log.info("call status", extra={"status": status})
        if status in TERMINAL_STATUSES:
            reason = str(extra.get("end_reason") or status)
            duration = seconds_of(extra.get("duration_s"))
            await self.end(call.call_id, reason=reason, duration_s=duration)

    async def end(
        self, call_id: str, reason: str = "completed", duration_s: float | None = None
    ) -> bool:
        call_id_var.set(call_id)
        if not await self.calls.mark_ended(call_id, reason):
            return False
        live = await self.calls.get(call_id)
        metrics.call_ended(live.provider if live is not None else None)
        if duration_s is None and live is not None:
            duration_s = live.duration_s
        status = live.status if live is not None else "completed"
        await self._emit(
            EventType.CALL_ENDED,
            call_id,
            {
                "reason": reason,
                "status": status,
                "duration_s": duration_s,
                "turns": live.turns if live else None,
            },
        )
        body = CallEnd(reason=reason[:64], status=status, duration_s=duration_s)
        try:
            await self.orchestrator.end(call_id, body)
        except OrchestratorUnavailable as exc:
            if exc.status is not None and 400 <= exc.status < 500 and exc.status not in (408, 429):
                # refused (e.g. a conversation it never saw): a retry would be refused too
                log.warning("orchestrator refused the call end", extra={"error": str(exc)})
            else:
                log.warning(
                    "orchestrator not told of the call end; retrying in the background",
                    extra={"error": str(exc)},
                )
                self._hold(asyncio.create_task(self._retry_end(call_id, body)))
        log.info("call ended", extra={"reason": reason, "duration_s": duration_s})
        return True

    async def first_time(self, key: str, ttl_s: float = SEEN_TTL_S) -> bool:
        return await self.calls.first_time(key, ttl_s)

    async def language_of(self, call_id: str) -> str | None:
        live = await self.calls.get(call_id)
        language = live.metadata.get("language") if live is not None else None
        return language if isinstance(language, str) else None

    def refuse_new_calls(self) -> None:
        """Shutdown has begun: new calls get the busy words and a hang-up; calls go on."""
        self.accepting_calls = False

    # -- internals ------------------------------------------------------------------------------

    async def get_call(self, call_id: str) -> LiveCall | None:
        return await self.calls.get(call_id)

    async def _retry_end(self, call_id: str, body: CallEnd) -> None:
        call_id_var.set(call_id)
        for delay in self.end_retry_delays_s:
            await asyncio.sleep(delay)
            try:
                await self.orchestrator.end(call_id, body)
            except OrchestratorUnavailable:
                continue
            log.info("orchestrator told of the call end after a retry")
            return
        log.error("orchestrator never told of the call end; its conversation stays open")

    def _hold(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def keep(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` in the background until it is done or the gateway stops (cancelled then,
        with no grace: it waits on a timer, not on a peer)."""
        task = asyncio.create_task(work)
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)

    @property
    def pending_tasks(self) -> int:
        return len(self._tasks)

    async def _emit(self, type_: EventType, call_id: str, data: dict[str, Any]) -> None:
        await self.bus.publish(CallEvent(type=type_, call_id=call_id, data=data))

    async def _error(
        self, call_id: str, stage: str, exc: OrchestratorUnavailable, turn_id: str | None = None
    ) -> None:
        metrics.orchestrator_error(exc)
        log.warning(
            "orchestrator unavailable; caller gets the fallback",
            extra={"stage": stage, "error": str(exc)},
        )
        await self._emit(
            EventType.ERROR_OCCURRED,
            call_id,
            {
                "stage": stage,
                "code": "orchestrator_unavailable",
                "message": str(exc),
                "turn_id": turn_id,
            },
        )

    async def aclose(self, grace_s: float = 5.0) -> None:
        """Give background end-retries a moment, then cancel what is left."""
        await asyncio.gather(*(cancel_and_wait(task) for task in set(self._timers)))
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
        await asyncio.gather(*(cancel_and_wait(task) for task in pending))


def _call_start(call: CallInfo) -> CallStart:
    return CallStart(**call.described())
