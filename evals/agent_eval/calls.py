"""One call of a scenario: placed on its provider path, its turns played (fixed lines, or a
simulated caller's), then every expectation checked against what the caller got back and
against the conversation record read afterwards (interruptions, the tools each turn ran).

A failure to drive the call (the gateway refusing a request, a socket closing) is that turn's
error: the call stops there and is reported failed, never skipped. `memory_written` waits (up to
`MEMORY_WAIT_S`) for the orchestrator's end-of-call memory write, polling the caller's memory.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass

import httpx
from websockets.exceptions import WebSocketException

from agent_eval.api import ApiFailure, ServiceApi
from agent_eval.events import EventWatch
from agent_eval.expectations import check_call, check_turn, memory_holds
from agent_eval.judge import NO_KEY, Model, ModelError, transcript_text
from agent_eval.providers import PATHS
from agent_eval.providers.base import CallerTurn, CallSetup, PathError, ProviderCall
from agent_eval.schema import Call, Simulated, Turn, TurnExpect
from agent_eval.target import Target
from agent_eval.transcript import CallRecord, Check, Reply, TurnRecord

MEMORY_WAIT_S = 15.0
MEMORY_POLL_S = 0.25
DRIVE_ERRORS = (PathError, ApiFailure, httpx.HTTPError, OSError, WebSocketException)

Lines = list[tuple[str, str]]  # ("agent" | "caller", words): the transcript a model reads


@dataclass(frozen=True)
class CallContext:
    target: Target
    http: httpx.AsyncClient
    api: ServiceApi
    provider: str
    setup: CallSetup
    model: Model | None
    latency_ms: float | None = None
    events: EventWatch | None = None


async def play_call(call: Call, index: int, ctx: CallContext) -> CallRecord:
    if call.simulated is not None and ctx.model is None:
        record = CallRecord(index, "(not placed)")
        record.checks.append(Check("simulated caller", "skip", call.simulated.goal, "", NO_KEY))
        return record
    path = PATHS[ctx.provider](ctx.target, ctx.http, ctx.api, ctx.setup, ctx.events)
    record = CallRecord(index, path.call_id)
    before = await ctx.api.memories(ctx.setup.caller) if _recalls(call) else None
    lines: Lines = []
    try:
        await _drive(call, path, ctx.model, record, lines)
    finally:
        await path.close()
    if _reads_record(call):
        record.conversation = await ctx.api.conversation(path.call_id)
    await _check(call, record, ctx, before, lines)
    return record


async def _drive(
    call: Call, path: ProviderCall, model: Model | None, record: CallRecord, lines: Lines
) -> None:
    greeting = TurnRecord("greeting", "(the call starts)", call.greeting.line)
    record.turns.append(greeting)
    if not await _step(greeting, path.start(), lines, None):
        return
    if call.simulated is not None and model is not None:
        await _simulate(call.simulated, path, model, record, lines)
    else:
        await _play(call.turns, path, record, lines)
    try:  # the provider reports the call's end, whoever ended it
        await path.hang_up()
    except DRIVE_ERRORS as exc:
        record.error = record.error or f"ending the call: {exc}"


async def _step(turn: TurnRecord, reply: Awaitable[Reply], lines: Lines, said: str | None) -> bool:
    """Await one reply into `turn`; False (and the turn's error) if the path failed."""
    try:
        turn.reply = await reply
    except DRIVE_ERRORS as exc:
        turn.error = str(exc) or type(exc).__name__
        return False
    assert turn.reply is not None
    turn.turn_id = turn.reply.turn_id
    if said is not None:
        lines.append(("caller", said))
    lines.append(("agent", turn.reply.text))
    turn.said_by = len(lines)
    return True


async def _play(
    turns: Sequence[Turn], path: ProviderCall, record: CallRecord, lines: Lines
) -> bool:
    """The fixed turns; True if the agent ended the call (transfer, hang-up)."""
    for i, turn in enumerate(turns):
        last = record.turns[-1].reply
        if last is not None and last.ended:
            record.error = (
                f"the agent ended the call ({last.final_action}) before turn {i + 1}; "
                "the turns after it were not played"
            )
            return True
        after = turns[i + 1] if i + 1 < len(turns) else None
        caller = CallerTurn(
            turn.action,
            turn.text,
            cut_after_ms=after.interrupt_after_ms if after is not None else None,
            interrupts=turn.interrupt_after_ms is not None,
        )
        record.turns.append(TurnRecord(f"turn {i + 1}", turn.describe(), turn.line))
        if not await _step(record.turns[-1], path.turn(caller), lines, turn.describe()):
            return True  # nothing more can be played on a broken call
    last = record.turns[-1].reply
    return last is not None and last.ended


async def _simulate(
    sim: Simulated, path: ProviderCall, model: Model, record: CallRecord, lines: Lines
) -> bool:
    for i in range(sim.max_turns):
        try:
            words = await model.caller_line(sim.persona, sim.goal, lines)
        except ModelError as exc:
            record.error = f"the simulated caller: {exc}"
            return False
        if words is None:
            return False
        turn = TurnRecord(f"turn {i + 1}", f'says "{words}"', sim.line)
        record.turns.append(turn)
        if not await _step(turn, path.turn(CallerTurn("say", words)), lines, words):
            return True
        if turn.reply is not None and turn.reply.ended:
            return True
    return False


def _reads_record(call: Call) -> bool:
    """Only `interrupted` and `tool` need the conversation record, read once per call (the
    management API is rate limited)."""
    expects = [call.greeting, *(t.expect for t in call.turns)]
    return bool(call.expect.tools) or any(e.interrupted is not None or e.tools for e in expects)


def _recalls(call: Call) -> bool:
    return bool(call.greeting.recalled) or any(t.expect.recalled for t in call.turns)


def _expectations(call: Call, record: CallRecord) -> list[tuple[TurnRecord, TurnExpect]]:
    expects = [call.greeting] + [t.expect for t in call.turns]
    return list(zip(record.turns, expects, strict=False)) if call.simulated is None else []


async def _check(
    call: Call, record: CallRecord, ctx: CallContext, before: list[str] | None, lines: Lines
) -> None:
    stored = {
        str(m.get("turn_id")): m
        for m in (record.conversation or {}).get("messages") or []
        if m.get("role") == "assistant"
    }
    for turn, expect in _expectations(call, record):
        if turn.reply is None:
            continue
        message = stored.get(turn.turn_id or "")
        interrupted = bool(message.get("interrupted")) if message is not None else None
        turn.checks = check_turn(
            expect,
            turn.reply,
            latency_budget_ms=ctx.latency_ms,
            interrupted=interrupted,
            memories=before,
            tools=message.get("tools") or [] if message is not None else None,
        )
        if expect.rubric:
            upto = lines[: turn.said_by]
            turn.checks.append(await _judge(ctx.model, expect.rubric, upto, last_reply=True))
    last = next((t.reply for t in reversed(record.turns) if t.reply is not None), None)
    memories: list[str] = []
    if call.expect.memory_written:
        memories = await _memories_holding(ctx.api, ctx.setup.caller, call.expect.memory_written)
    ran = [tool for message in stored.values() for tool in message.get("tools") or []]
    record.checks += check_call(call.expect, last, memories, ran)
    rubric = call.expect.rubric
    if rubric is None and call.simulated is not None:
        rubric = f"The caller's goal was met: {call.simulated.goal}"
    if rubric:
        record.checks.append(await _judge(ctx.model, rubric, lines, last_reply=False))


async def _judge(model: Model | None, rubric: str, lines: Lines, *, last_reply: bool) -> Check:
    if model is None:
        return Check("rubric", "skip", rubric, "", NO_KEY)
    text = transcript_text(lines)
    if last_reply:
        text += "\n(The rubric is about the agent's last reply.)"
    try:
        verdict = await model.judge(rubric, text)
    except ModelError as exc:
        return Check("rubric", "fail", rubric, "", f"not judged: {exc}")
    reason = verdict.reason or "(the model gave no reason)"
    return Check("rubric", "pass" if verdict.passed else "fail", rubric, reason, reason)


async def _memories_holding(api: ServiceApi, caller: str, texts: Sequence[str]) -> list[str]:
    """The caller's memories once they hold every text, or as they are after the wait."""
    deadline = time.monotonic() + MEMORY_WAIT_S
    while True:
        memories = await api.memories(caller)
        if memory_holds(texts, memories) or time.monotonic() > deadline:
            return memories
        await asyncio.sleep(MEMORY_POLL_S)
