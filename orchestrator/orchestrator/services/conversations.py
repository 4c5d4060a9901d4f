"""Conversation turns: start (greeting), message turns, end. Idempotent, timed, stored.

A turn is answered at most once: a retry (same turn id) is answered from the stored reply
(`replayed=true`) and a concurrent duplicate that loses the insert race returns the winner's
reply, so the caller hears one answer per turn and the store holds one message pair.

Secrets (card numbers, security codes, PINs, SSNs, IBANs: `shared.redaction`) are redacted at
two choke points, so nothing past them holds one: the caller's words as they enter a turn
(`_begin_turn`, before the agent graph, the model, the store and memory), and the agent's reply
before it is stored or returned (`_finish_turn`, and the greeting in `start`: a model repeating
a card back), with the arguments of the tools the turn ran (stored in the reply's
`metadata.tools`); a streamed reply goes through `StreamRedactor`. The call summary is made from the
stored, redacted turns (and redacted again where it is written).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Literal, TypeVar

from orchestrator.services.responder import Responder, StreamingResponder
from orchestrator.store.agents import AgentStore
from orchestrator.store.conversations import GREETING_TURN_ID, ConversationStore
from orchestrator.store.records import Agent, Conversation, Message
from orchestrator.turns import ReplyDraft, TokenSink, ToolRun, TurnInputs
from shared.contract import Action, CallEnd, CallStart, TurnContext, TurnReply
from shared.errors import ApiError
from shared.redaction import StreamRedactor, redact_secrets, redact_value

log = logging.getLogger(__name__)

# A streamed duplicate of a turn with other words waits this long for the first version's reply.
DUPLICATE_REPLY_WAIT_S = 2.0

# A streamed turn, checked and ready: `await turn(on_text)` runs it (`open_stream`).
StreamedTurn = Callable[[TokenSink], Awaitable[TurnReply]]

_T = TypeVar("_T")


class ConversationService:
    def __init__(
        self,
        conversations: ConversationStore,
        agents: AgentStore,
        responder: Responder,
        *,
        history_turns: int = 10,
        fallback_agent: Agent,
    ) -> None:
        self.conversations = conversations
        self.agents = agents
        self.responder = responder
        self.history_turns = history_turns
        self.fallback_agent = fallback_agent  # used only if the agents table has no default
        self._background: set[asyncio.Task[Any]] = set()  # end-of-call work, questions

    # -- start --------------------------------------------------------------------------------

    async def start(self, conversation_id: str, body: CallStart) -> TurnReply:
        timer = StageTimer()
        agent = await self._agent_for_start(body)
        conversation, created = await self.conversations.start(
            conversation_id,
            call_id=body.call_id,
            provider=body.provider,
            direction=body.direction,
            caller=body.caller,
            callee=body.callee,
            agent_id=agent.id if agent is not self.fallback_agent else None,
            metadata=body.metadata,
        )
        stored = (
            None
            if created
            else await self.conversations.get_reply(conversation_id, GREETING_TURN_ID)
        )
        timer.lap("store_read")
        if not created and conversation.agent_id != agent.id:
            agent = await self._agent_of(conversation)
        if stored is not None:
            return _reply(
                conversation, stored, timer.done(), replayed=True, voice_mode=agent.voice_mode
            )
        draft = _redacted(await self.responder.greet(conversation, agent))
        timer.lap("respond")
        saved = await self.conversations.record_greeting(
            conversation_id, draft.text, _dump(draft.actions), {**draft.timings_ms, **timer.laps}
        )
        timer.lap("store_write")
        if created:
            log.info(
                "conversation started",
                extra={"conversation_id": conversation_id, "agent_id": agent.id},
            )
        if not saved.inserted:
            return _reply(
                conversation,
                saved.message,
                timer.done(),
                replayed=True,
                voice_mode=agent.voice_mode,
            )
        return TurnReply(
            conversation_id=conversation_id,
            turn_id=GREETING_TURN_ID,
            reply=draft.text,
            actions=draft.actions,
            timings_ms={**draft.timings_ms, **timer.done()},
            agent_id=conversation.agent_id,
            voice_mode=agent.voice_mode,
        )

    async def _start_late(self, conversation_id: str, context: TurnContext) -> None:
        """Create the conversation a turn arrived for (idempotent: two turns racing create it
        once); its greeting was never needed, the caller is already talking."""
        body = CallStart(
            call_id=context.call_id or conversation_id,
            provider=context.provider or "unknown",
            caller=context.caller,
            callee=context.callee,
            agent_id=context.agent_id,
        )
        try:
            agent = await self._agent_for_start(body)
        except ApiError:  # an agent deleted since: the call goes on with the default one
            agent = await self.agents.get_default() or self.fallback_agent
        _, created = await self.conversations.start(
            conversation_id,
            call_id=body.call_id,
            provider=body.provider,
            caller=body.caller,
            callee=body.callee,
            agent_id=agent.id if agent is not self.fallback_agent else None,
        )
        if created:
            log.info(
                "conversation started late, at its first turn",
                extra={"conversation_id": conversation_id, "agent_id": agent.id},
            )

    async def _agent_for_start(self, body: CallStart) -> Agent:
        if body.agent_id:
            agent = await self.agents.get(body.agent_id)
            if agent is None:
                raise ApiError(404, "agent_not_found", f"agent_id: no agent {body.agent_id!r}")
            return agent
        if body.callee and body.direction == "inbound":
            routed = await self.agents.find_by_phone(body.callee)
            if routed is not None:
                return routed
        return await self.agents.get_default() or self.fallback_agent

    async def _agent_of(self, conversation: Conversation) -> Agent:
        if conversation.agent_id:
            agent = await self.agents.get(conversation.agent_id)
            if agent is not None:
                return agent
        return await self.agents.get_default() or self.fallback_agent

    # -- turns --------------------------------------------------------------------------------

    async def message(
        self, conversation_id: str, turn_id: str, message: str, context: TurnContext
    ) -> TurnReply:
        timer = StageTimer()
        begun = await self._begin_turn(conversation_id, turn_id, message, context, timer)
        if isinstance(begun, TurnReply):
            return begun
        draft = await self.responder.respond(begun)
        timer.lap("respond")
        return await self._finish_turn(begun, draft, timer)

    async def open_stream(
        self, conversation_id: str, turn_id: str, message: str, context: TurnContext
    ) -> StreamedTurn:
        """Like `message`, streamed: checks the turn now (raises `ApiError`: unknown or ended
        conversation, ...) and returns the turn to run, `await turn(on_text)`: it hands the
        reply's text to `on_text` piece by piece as the responder produces it, and returns the
        stored `TurnReply`. A replayed turn hands over its stored text once; a responder that
        cannot stream, its whole reply as one piece. Cancelling the run cancels the turn (the
        caller barged in).

        Two steps so the route can open its response before the model has written a word (the
        event stream's head goes out while the model thinks, not on the first token's path);
        pieces pushed, not pulled, so each one is written out in the task that read it from the
        model: no hand-off to another task, which on a busy instance is a turn of the event
        loop behind every other call's work."""
        timer = StageTimer()
        begun = await self._begin_turn(conversation_id, turn_id, message, context, timer)
        return functools.partial(self._stream, begun, timer)

    async def _stream(
        self, begun: TurnReply | TurnInputs, timer: StageTimer, on_text: TokenSink
    ) -> TurnReply:
        """The caller's message is stored as the turn begins, beside the model call (it costs the
        caller no wait) and before any of the reply goes out, in a task the turn's cancellation
        does not reach: when the caller barges in, the turn is cancelled and no reply is stored
        (what they heard of it comes with `interrupted`), but what they said is on record, and
        the gateway's `interrupted` finds the turn."""
        if isinstance(begun, TurnReply):
            await on_text(begun.reply)
            return begun
        conversation_id, turn_id, context = begun.conversation.id, begun.turn_id, begun.context
        asked = self._keep(
            self.conversations.record_question(
                conversation_id, turn_id, begun.message, _user_metadata(context)
            )
        )

        async def say(text: str) -> None:
            await asyncio.shield(asked)  # stored (or raised) before a word goes out
            await on_text(text)

        if isinstance(self.responder, StreamingResponder):
            redactor = StreamRedactor()  # a number is held back until it is whole, then redacted

            async def redacted(piece: str) -> None:
                if passed := redactor.feed(piece):
                    await say(passed)

            draft = await self.responder.stream(begun, redacted)
            if rest := redactor.finish():
                await say(rest)
        else:
            draft = await self.responder.respond(begun)
            await say(redact_secrets(draft.text))
        won = await asyncio.shield(asked)
        timer.lap("respond")
        if not won and (stored := await self._first_versions_reply(begun)) is not None:
            return _reply(begun.conversation, stored, timer.done(), replayed=True)
        return await self._finish_turn(begun, draft, timer, question_stored=True)

    async def _first_versions_reply(self, turn: TurnInputs) -> Message | None:
        """For a duplicate whose question was not stored: when the stored question has other
        words (a revised transcript raced the first), the reply to those words, once the first
        version stores it — so a question and its reply always belong together. None (store
        ours) when the words are the same, or when no reply comes within
        `DUPLICATE_REPLY_WAIT_S` (the first version was cut short: a barge-in)."""
        conversation_id, turn_id = turn.conversation.id, turn.turn_id
        if await self.conversations.get_question(conversation_id, turn_id) == turn.message:
            return None
        deadline = time.monotonic() + DUPLICATE_REPLY_WAIT_S
        while time.monotonic() < deadline:
            stored = await self.conversations.get_reply(conversation_id, turn_id)
            if stored is not None:
                return stored
            await asyncio.sleep(0.02)
        return None

    async def _begin_turn(
        self,
        conversation_id: str,
        turn_id: str,
        message: str,
        context: TurnContext,
        timer: StageTimer,
    ) -> TurnReply | TurnInputs:
        """The stored reply of a replayed turn, or what the responder needs to answer it."""
        state = await self.conversations.turn_state(conversation_id, turn_id, self.history_turns)
        if state.conversation is None:
            # A call that started while we were down (or whose start was refused, or whose row
            # was lost): it starts late, at its first turn, from what the turn says of the call.
            await self._start_late(conversation_id, context)
            state = await self.conversations.turn_state(
                conversation_id, turn_id, self.history_turns
            )
        conversation = state.conversation
        if conversation is None:
            raise _not_found(conversation_id)
        if state.stored_reply is not None:
            timer.lap("store_read")
            log.info("turn replayed", extra={"conversation_id": conversation_id, "turn": turn_id})
            return _reply(conversation, state.stored_reply, timer.done(), replayed=True)
        if not conversation.active:
            raise ApiError(
                409, "conversation_ended", f"conversation {conversation_id!r} has already ended"
            )
        # The conversation's agent came with it (same statement); a deleted one: the default.
        agent = state.agent or await self._agent_of(conversation)
        timer.lap("store_read")
        return TurnInputs(
            conversation=conversation,
            agent=agent,
            turn_id=turn_id,
            message=redact_secrets(message),  # the one way in: nothing below sees a secret
            context=context,
            history=state.history,
        )

    async def _finish_turn(
        self,
        turn: TurnInputs,
        draft: ReplyDraft,
        timer: StageTimer,
        *,
        question_stored: bool = False,
    ) -> TurnReply:
        conversation, turn_id, context = turn.conversation, turn.turn_id, turn.context
        conversation_id = conversation.id
        draft = _redacted(draft)  # the one way out: an LLM echoing a card is not stored
        if question_stored:  # a streamed turn: its question went in as it began
            saved = await self.conversations.record_reply(
                conversation_id,
                turn_id,
                text=draft.text,
                actions=_dump(draft.actions),
                timings={**draft.timings_ms, **timer.laps},
                metadata=_reply_metadata(draft),
            )
        else:
            saved = await self.conversations.record_turn(
                conversation_id,
                turn_id,
                user_text=turn.message,  # redacted in _begin_turn
                reply_text=draft.text,
                actions=_dump(draft.actions),
                timings={**draft.timings_ms, **timer.laps},
                user_metadata=_user_metadata(context),
                reply_metadata=_reply_metadata(draft),
            )
        timer.lap("store_write")
        if not saved.inserted:
            log.info(
                "duplicate turn: answering with the reply stored first",
                extra={"conversation_id": conversation_id, "turn": turn_id},
            )
            return _reply(conversation, saved.message, timer.done(), replayed=True)
        timings = {**draft.timings_ms, **timer.done()}
        log.info(
            "turn answered",
            extra={"conversation_id": conversation_id, "turn": turn_id, "timings_ms": timings},
        )
        return TurnReply(
            conversation_id=conversation_id,
            turn_id=turn_id,
            reply=draft.text,
            actions=draft.actions,
            timings_ms=timings,
            agent_id=conversation.agent_id,
        )

    async def interrupted(self, conversation_id: str, turn_id: str, heard: str) -> TurnReply:
        """The caller talked over the reply to `turn_id`: it is stored as `heard` (redacted like
        every reply), marked interrupted, so the next turn's history is what was really said.
        A reply never stored (the stream was cancelled first) is stored now; a stored one is
        replaced; a repeat answers the first record. Nothing is run again: a tool that ran in
        that turn stays run, and the reply's actions stay on record as they were. Allowed after
        the call's end too (an interruption and a hang-up cross). 404 for an unknown
        conversation, or a turn with nothing stored (no question, or a greeting never made)."""
        conversation = await self.conversations.get(conversation_id)
        if conversation is None:
            raise _not_found(conversation_id)
        stored = await self.conversations.record_interruption(
            conversation_id, turn_id, redact_secrets(heard)
        )
        if stored is None:
            raise ApiError(
                404,
                "turn_not_found",
                f"conversation {conversation_id!r} has no turn {turn_id!r}",
            )
        log.info(
            "reply interrupted",
            extra={"conversation_id": conversation_id, "turn": turn_id, "heard_chars": len(heard)},
        )
        return _reply(conversation, stored, stored.timings, replayed=False)

    def _keep(self, work: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
        """Run `work` in a task held here: a request that goes away does not cancel it, and
        `drain()` waits for it at shutdown."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_failure)
        return task

    # -- end ----------------------------------------------------------------------------------

    async def end(self, conversation_id: str, body: CallEnd) -> tuple[Conversation, bool]:
        """Close once; `(conversation, ended_now)`. The responder's end-of-call work (memory)
        runs in the background so the gateway is not held by it; `drain()` waits for it."""
        conversation, ended_now = await self.conversations.end(
            conversation_id, reason=body.reason, status=body.status, duration_s=body.duration_s
        )
        if conversation is None:
            raise _not_found(conversation_id)
        if ended_now:
            log.info(
                "conversation ended",
                extra={"conversation_id": conversation_id, "reason": body.reason},
            )
            task = asyncio.create_task(self._on_call_end(conversation))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return conversation, ended_now

    async def _on_call_end(self, conversation: Conversation) -> None:
        try:
            await self.responder.on_call_end(conversation)
        except Exception:
            log.exception("end-of-call work failed", extra={"conversation_id": conversation.id})

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait for end-of-call work still running (at shutdown, and in tests)."""
        if not self._background:
            return
        _, pending = await asyncio.wait(set(self._background), timeout=timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("end-of-call work cancelled at shutdown", extra={"tasks": len(pending)})


class StageTimer:
    """Milliseconds per stage (`lap`) and in total (`done`)."""

    def __init__(self) -> None:
        self._start = self._last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(self.laps.get(name, 0.0) + (now - self._last) * 1000, 3)
        self._last = now

    def done(self) -> dict[str, float]:
        return {**self.laps, "total": round((time.perf_counter() - self._start) * 1000, 3)}


def _redacted(draft: ReplyDraft) -> ReplyDraft:
    """The reply with secrets redacted from its text, from what its actions say and from the
    arguments of the tools it ran (the model fills those in from what the caller said)."""
    text = redact_secrets(draft.text)
    actions = [
        a.model_copy(update={"text": redact_secrets(a.text)}) if a.text else a
        for a in draft.actions
    ]
    tools = [ToolRun(t.name, redact_value(t.args), t.ok) for t in draft.tools]
    return ReplyDraft(text, actions, draft.timings_ms, tools)


def _reply_metadata(draft: ReplyDraft) -> dict[str, Any]:
    """What the stored reply records besides its words: the tools its turn ran (nothing for a
    turn that ran none)."""
    return {"tools": [t.stored() for t in draft.tools]} if draft.tools else {}


def _dump(actions: list[Action]) -> list[dict[str, Any]]:
    return [a.model_dump(exclude_none=True) for a in actions]


def _reply(
    conversation: Conversation,
    stored: Message,
    timings: dict[str, float],
    *,
    replayed: bool,
    voice_mode: Literal["relay", "gather"] | None = None,
) -> TurnReply:
    return TurnReply(
        conversation_id=conversation.id,
        turn_id=stored.turn_id,
        reply=stored.content,
        actions=[Action.model_validate(a) for a in stored.actions],
        timings_ms=timings,
        replayed=replayed,
        agent_id=conversation.agent_id,
        voice_mode=voice_mode,
        interrupted=stored.interrupted,
    )


def _user_metadata(context: TurnContext) -> dict[str, Any]:
    meta: dict[str, Any] = {"input_type": context.input_type}
    if context.confidence is not None:
        meta["confidence"] = context.confidence
    return meta


def _log_failure(task: asyncio.Task[Any]) -> None:
    """A kept task's failure is logged: awaited, it is raised too; abandoned (the request went
    away), it would otherwise be lost."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("background work failed", exc_info=exc)


def _not_found(conversation_id: str) -> ApiError:
    return ApiError(404, "conversation_not_found", f"no conversation {conversation_id!r}")
