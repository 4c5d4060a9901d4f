"""Streamed conversations over a socket: the call flow for ConversationRelay and the generic
streaming socket, provider-neutral.

A wire adapter (`drivers/twilio_relay.py`, `drivers/generic_stream.py`) parses the socket's frames
and calls a `StreamSession`; the session answers through the adapter's `Sink`. The rules, once
for every streaming provider:

- each final prompt is one turn (numbered after the call's turns so far, so a reconnected socket
  continues the same conversation); its reply is sent as text pieces **as the orchestrator writes
  them**, then `last`;
- no dead air: without a first piece within `STREAM_FIRST_TOKEN_TIMEOUT_S` the caller hears the
  holding line while the agent keeps working, up to the turn budget, then an apology; if the
  orchestrator fails mid-reply the reply ends with an apology;
- barge-in: an `interrupt` (or a new prompt while a reply streams) cancels the reply at once —
  the orchestrator's request is closed, so the model's is too — and the orchestrator is told what
  the caller heard of it, so the next turn's history is what was really said;
- a prompt replayed after a reconnect (`applicationReconnect`: the same words again within
  `REPLAY_WINDOW_S` of the socket opening) is answered once, never twice;
- the reply's actions (transfer, hang-up, digits, language) go to the adapter, which ends the
  session its provider's way;
- bad frames get an error frame and the call goes on: the socket never closes on the caller
  because of our side.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from realtime_gateway import metrics, prompts
from realtime_gateway.speech import SpeechLimits, fit
from realtime_gateway.vocabulary import CallerInput, CallInfo, FlowReply
from shared.contract import Action
from shared.logging import call_id_var

if TYPE_CHECKING:
    from realtime_gateway.turns import GatewayFlow

log = logging.getLogger(__name__)

REPLAY_WINDOW_S = 10.0
# Actions a reply can end with that a streaming adapter acts on (say is the text itself).
ENDING_ACTIONS = frozenset({"transfer", "hangup", "send_digits", "stream", "play"})


def prompt_digest(words: str) -> str:
    return hashlib.sha256(words.encode()).hexdigest()[:32]


class Sink(Protocol):
    """How a session talks back on its socket (implemented by each wire adapter)."""

    async def text(self, token: str, last: bool) -> None: ...

    async def action(self, action: Action) -> None: ...

    async def error(self, message: str) -> None: ...

    async def hand_over(self) -> None:
        """This instance is stopping: move the caller to another one, same conversation."""
        ...


@dataclass(slots=True)
class StreamTimings:
    """One streamed turn, in ms from the prompt's arrival."""

    first_token_ms: float | None = None
    first_frame_ms: float | None = None
    last_frame_ms: float | None = None

    def as_ms(self) -> dict[str, float]:
        """The stages known so far (as in `message.sent` and `voice_stream_turn_seconds`)."""
        out = {
            "first_token": self.first_token_ms,
            "first_frame": self.first_frame_ms,
            "last_frame": self.last_frame_ms,
        }
        if self.first_token_ms is not None and self.first_frame_ms is not None:
            out["token_to_frame"] = round(max(0.0, self.first_frame_ms - self.first_token_ms), 2)
        return {k: v for k, v in out.items() if v is not None}


@dataclass
class StreamSession:
    flow: GatewayFlow
    call: CallInfo
    sink: Sink
    first_token_timeout_s: float = 1.2
    turn_budget_s: float = 6.0
    limits: SpeechLimits = field(default_factory=SpeechLimits)
    next_turn: int = 1
    language: str | None = None
    opened_at: float = field(default_factory=time.monotonic)
    # sha-256 of the words of the last prompt answered on this call (kept on the live call, so a
    # reconnected socket knows it; a hash, so no caller's words are kept there)
    last_prompt: str | None = None
    timings: list[StreamTimings] = field(default_factory=list)
    _reply: asyncio.Task[None] | None = None
    _corrected: str | None = None  # the turn whose finished reply was cut to what was heard
    _turn_id: str | None = None
    _sent: list[str] = field(default_factory=list)

    @property
    def speaking(self) -> bool:
        return self._reply is not None and not self._reply.done()

    async def prompt(self, text: str, *, dtmf: bool = False) -> None:
        """A final prompt from the caller: one turn, its reply streamed."""
        words = text.strip()
        if not words:
            return
        digest = prompt_digest(words)
        if self._replayed(digest):
            log.info("replayed prompt ignored (answered before the reconnect)")
            return
        if self.speaking:  # talking over the reply is a barge-in
            await self.interrupt(None)
        turn_id = str(self.next_turn)
        self.next_turn += 1
        heard = CallerInput(
            turn_id=turn_id,
            type="dtmf" if dtmf else "speech",
            text=words if not dtmf else "",
            digits=words if dtmf else None,
        )
        self._turn_id, self._sent = turn_id, []
        self.last_prompt = None
        self._reply = asyncio.create_task(
            self._answer(heard, digest), name=f"reply-{self.call.call_id}"
        )

    def _replayed(self, digest: str) -> bool:
        if self.last_prompt is None:
            return False
        if time.monotonic() - self.opened_at > REPLAY_WINDOW_S:
            self.last_prompt = None
            return False
        return digest == self.last_prompt

    async def interrupt(self, heard: str | None) -> None:
        """The caller talked over the reply: stop it now; keep what they heard of it.

        Also after the whole text went out: the voice speaks it for seconds after the last
        frame (ConversationRelay's usual barge-in), and its `utteranceUntilInterrupt` is then
        what the caller heard, shorter than what is stored. Without `heard` once the reply was
        all sent there is nothing to correct (the caller may have heard all of it)."""
        task, turn_id = self._reply, self._turn_id
        if task is None or turn_id is None:
            return
        if task.done():
            sent = "".join(self._sent)
            if heard is None or heard.strip() == sent.strip() or self._corrected == turn_id:
                return
            self._corrected = turn_id  # one correction a turn: Twilio may repeat the event
        else:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        said = heard if heard is not None else "".join(self._sent)
        log.info("reply interrupted", extra={"turn_id": turn_id, "heard_chars": len(said)})
        await self.flow.interrupted(self.call.call_id, turn_id, said)

    async def close(self) -> None:
        if self._reply is not None and not self._reply.done():
            self._reply.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reply

    async def _answer(self, heard: CallerInput, digest: str) -> None:
        call_id_var.set(self.call.call_id)
        started = time.perf_counter()
        timing = StreamTimings()
        self.timings.append(timing)
        stream = self.flow.stream(self.call, heard, timing, prompt_digest=digest)
        try:
            reply = await self._pump(stream, started, timing)
        except Exception:
            log.exception("streamed turn failed")
            reply = None
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        if reply is None or reply.fallback:
            apology = prompts.say("apology", self.language)
            await self._send(apology if not self._sent else f" {apology}", False, started, timing)
        await self._send("", True, started, timing)
        metrics.stream_turn(timing.as_ms())
        if reply is not None:
            for action in fit(reply.actions, self.limits):
                if action.type in ENDING_ACTIONS:
                    await self.sink.action(action)
                elif action.type == "say" and action.language and action.language != self.language:
                    self.language = action.language
                    await self.sink.action(Action(type="say", language=action.language))

    async def _pump(
        self, stream: AsyncIterator[str | FlowReply], started: float, timing: StreamTimings
    ) -> FlowReply | None:
        """Send the reply's pieces as they come; the holding line if the first is late. Only
        the wait for the first piece is timed here: after it, pieces are read straight from the
        stream (no task per piece), its own read timeout bounding each wait."""
        iterator = stream.__aiter__()
        item = await self._first_piece(iterator, started, timing)
        while item is not None:
            if isinstance(item, FlowReply):
                return item
            if timing.first_token_ms is None:
                timing.first_token_ms = round((time.perf_counter() - started) * 1000, 2)
            if item:
                await self._send(item, False, started, timing)
            try:
                item = await iterator.__anext__()
            except StopAsyncIteration:
                return None
        return None

    async def _first_piece(
        self, iterator: AsyncIterator[str | FlowReply], started: float, timing: StreamTimings
    ) -> str | FlowReply | None:
        """The stream's first item; the holding line past `first_token_timeout_s`, None (and
        the read stopped) past the turn budget or at the stream's end.

        Read in this task, not in one of its own: the first piece is what the caller waits on,
        and a read handed to another task reaches the socket two event-loop turns later (the
        read's task, then the wait on it), each behind whatever else the loop has to run — on a
        busy instance the largest part of what the gateway adds to the first word. The holding
        line comes from a timer meanwhile, and always goes out before the first piece."""
        loop = asyncio.get_running_loop()
        holding: asyncio.Task[None] | None = None

        def hold() -> None:
            nonlocal holding
            line = prompts.say("holding", self.language)
            holding = loop.create_task(self._send(f"{line} ", False, started, timing, holding=True))

        now = time.perf_counter()
        timer = loop.call_later(max(0.0, started + self.first_token_timeout_s - now), hold)
        try:
            async with asyncio.timeout(max(0.0, started + self.turn_budget_s - now)):
                return await iterator.__anext__()
        except StopAsyncIteration:
            return None
        except TimeoutError:  # the read was cancelled, and the stream closed, by the timeout
            log.warning("streamed reply took longer than the turn budget")
            return None
        finally:
            timer.cancel()
            if holding is not None:
                await holding

    async def _send(
        self, token: str, last: bool, started: float, timing: StreamTimings, holding: bool = False
    ) -> None:
        await self.sink.text(token, last)
        elapsed = round((time.perf_counter() - started) * 1000, 2)
        if not holding and token and timing.first_frame_ms is None:
            timing.first_frame_ms = elapsed
        if token and not holding:
            self._sent.append(token)
        timing.last_frame_ms = elapsed


class StreamRegistry:
    """The streamed calls this instance holds a socket for: an end asked through the API (or a
    shutdown) reaches the socket's session, which ends the call its provider's way."""

    def __init__(self) -> None:
        self._sessions: dict[str, StreamSession] = {}

    def add(self, session: StreamSession) -> None:
        self._sessions[session.call.call_id] = session

    def discard(self, session: StreamSession) -> None:
        if self._sessions.get(session.call.call_id) is session:
            del self._sessions[session.call.call_id]

    async def end(self, call_id: str, reason: str = "completed") -> bool:
        """End a streamed call held here: the reply stops, the provider is told to hang up."""
        session = self._sessions.get(call_id)
        if session is None:
            return False
        await session.close()
        await session.sink.action(Action.hangup(reason))
        return True

    async def hand_over(self) -> None:
        """This instance is stopping: every streamed call moves to another instance."""
        for session in list(self._sessions.values()):
            await session.close()
            await session.sink.hand_over()
            log.info("streamed call handed over", extra={"call_id": session.call.call_id})
