"""The call flow's rules: what happens for each provider-neutral call event.

A provider adapter parses a request into a `CallEvent` and renders the `FlowReply` it gets back;
everything between is decided here, once, for every provider:

- a redelivered event (its `dedupe` keys seen before) is acknowledged and changes nothing;
- a call starts with the agent's greeting; an answering machine gets the agent's words and a
  hang-up (no listening, no transfer);
- silence is answered by the silence policy (`silence.py`) and never reaches the agent;
- a turn goes to the agent (the live flow tracks a call it has not seen yet, in the same step);
- status callbacks move a call forward only, a call never ends twice nor comes back to life, and
  an unknown call is tracked first, so `/ws` never shows an end before a start;
- a transfer nobody answered gives the caller back to the agent;
- every reply is fitted to the provider's languages and length limits (`speech.fit`);
- when handling fails, `fallback` answers: the caller is asked again, never dropped.

`CallFlow` holds the rules; its primitives (`start`, `turn`, `status`, `end`, `first_time`,
`language_of`) are implemented by the live flow (`turns.GatewayFlow`: call store, `/ws`
events, orchestrator) and by the webhook self-test's dry run.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from realtime_gateway import prompts
from realtime_gateway.idempotency import SEEN_TTL_S
from realtime_gateway.silence import on_silence
from realtime_gateway.speech import SpeechLimits, fit
from realtime_gateway.vocabulary import (
    Acknowledged,
    CallerInput,
    CallEvent,
    CallInfo,
    Ended,
    FlowReply,
    Heard,
    MachineAnswered,
    SessionEnded,
    Started,
    StatusChanged,
    TransferEnded,
)
from shared.contract import Action
from shared.errors import ApiError

log = logging.getLogger(__name__)


def is_machine(answered_by: str | None) -> bool:
    """Twilio's `AnsweredBy` (`machine_start`, `machine_end_beep`, `fax`, …) or Vonage's
    `machine`: not a person."""
    value = (answered_by or "").lower()
    return value.startswith("machine") or value == "fax"


def voicemail(actions: list[Action]) -> list[Action]:
    """A machine answered: the agent's words only, then a hang-up."""
    return [a for a in actions if a.type in ("say", "play")] + [Action.hangup("voicemail")]


class CallFlow(ABC):
    # ---- primitives --------------------------------------------------------------------------

    @abstractmethod
    async def start(self, call: CallInfo) -> FlowReply:
        """Track the call (idempotent), emit `call.started` once, return the greeting."""

    @abstractmethod
    async def turn(self, call: CallInfo, heard: CallerInput) -> FlowReply:
        """One caller turn, idempotent per turn id; tracks the call first if it is new."""

    @abstractmethod
    async def status(self, call: CallInfo, status: str, extra: Mapping[str, Any]) -> None:
        """Record a status (forward only); a terminal one ends the call once."""

    @abstractmethod
    async def end(
        self, call_id: str, reason: str = "completed", duration_s: float | None = None
    ) -> bool:
        """End the call: `call.ended` exactly once (True the first time)."""

    @abstractmethod
    async def first_time(self, key: str, ttl_s: float = SEEN_TTL_S) -> bool:
        """True the first time `key` is seen (across instances with Redis)."""

    async def language_of(self, call_id: str) -> str | None:
        """The agent's language on this call, for the gateway's own prompts."""
        return None

    # ---- rules -------------------------------------------------------------------------------

    async def handle(self, event: CallEvent, limits: SpeechLimits) -> FlowReply:
        """The reply to `event`. Raises `ApiError` 409 for a replayed event (nothing done)."""
        if event.replay_key is not None and not await self.first_time(event.replay_key):
            raise ApiError(409, "replayed_event", "this event was already received")
        for key in event.dedupe:
            if not await self.first_time(key):
                return FlowReply(actions=[], duplicate=True, next_turn=event.turn)
        reply = await self._decide(event)
        reply.actions = fit(reply.actions, limits)
        return reply

    async def _decide(self, event: CallEvent) -> FlowReply:
        if isinstance(event, Started):
            reply = await self.start(event.call)
            if is_machine(event.answered_by):
                log.info("machine answered; leaving a message")
                reply.actions = voicemail(reply.actions)
            reply.next_turn = 1
            return reply
        if isinstance(event, Heard):
            if event.silence_policy and event.heard.empty:
                language = await self.language_of(event.call_id)
                actions, silent = on_silence(event.silent, language)
                return FlowReply(actions=actions, next_turn=max(1, event.turn), silent=silent)
            reply = await self.turn(event.call, event.heard)
            reply.next_turn = max(1, event.turn) + 1
            return reply
        if isinstance(event, StatusChanged):
            await self.status(event.call, event.status, event.extra)
            return FlowReply(actions=[])
        if isinstance(event, Ended):
            # As a final status, so a call first seen at its end is started before it ends.
            extra = {"end_reason": event.reason, "duration_s": event.duration_s}
            await self.status(event.call, "completed", extra)
            return FlowReply(actions=[])
        if isinstance(event, MachineAnswered):
            greeting = await self.start(event.call)  # idempotent: the greeting already chosen
            return FlowReply(actions=voicemail(greeting.actions), text=greeting.text)
        if isinstance(event, TransferEnded):
            if event.connected:
                return FlowReply(actions=[Action.hangup("transferred")])
            language = await self.language_of(event.call_id)
            text = prompts.say("transfer_failed", language)
            actions = [Action.say(text, language), Action.gather(language=language)]
            return FlowReply(actions=actions, text=text, next_turn=max(1, event.turn))
        if isinstance(event, SessionEnded):
            return self._session_ended(event)
        if isinstance(event, Acknowledged):
            return FlowReply(actions=[])
        raise TypeError(f"no rule for {type(event).__name__}")

    @staticmethod
    def _session_ended(event: SessionEnded) -> FlowReply:
        """What the caller's line does after a streaming session: the transfer or hang-up our
        side asked for; a session that failed or that we ended to move the caller (a deploy)
        reconnects, to the same conversation; one that just ended hangs up."""
        action = str(event.handoff.get("action") or "")
        to = event.handoff.get("to")
        if action == "transfer" and isinstance(to, str) and to:
            return FlowReply(actions=[Action.transfer(to)])
        if action == "hangup":
            return FlowReply(
                actions=[Action.hangup(str(event.handoff.get("reason") or "completed"))]
            )
        if action == "resume" or event.failed:
            log.info("streaming session resumed", extra={"failed": event.failed})
            return FlowReply(actions=[], resume=True)
        return FlowReply(actions=[Action.hangup("session ended")])

    def fallback(self, event: CallEvent | None, limits: SpeechLimits) -> FlowReply:
        """What the caller hears when handling `event` failed (e.g. the call store is down):
        a short apology and a new listen, on the same turn — the caller stays on the line and
        their next words start the call late if it could not start — and an event that is not
        for the caller is acknowledged. On every provider alike."""
        if event is None or isinstance(event, Heard | Started | TransferEnded | MachineAnswered):
            text = prompts.say("apology")
            turn = max(1, event.turn) if event is not None else 1
            return FlowReply(
                actions=fit([Action.say(text), Action.gather()], limits),
                text=text,
                fallback=True,
                next_turn=turn,
            )
        return FlowReply(actions=[], fallback=True)
