"""The agent graph: input -> memory -> orchestrator <-> tool, one run per turn, on LangChain
(the model is langchain-openai's `ChatOpenAI`, the transcript langchain-core messages, the tools
OpenAI tool specs bound with `bind_tools`).

State lives for one turn: the conversation itself stays in Postgres, and the turn service hands
the recent messages in. Per-turn dependencies (agent configuration, caller, token sink, stage
clock) travel in `TurnRun`, not in the state. Each node returns its update to the state. The
orchestrator <-> tool loop is bounded by the agent's `max_tool_rounds`; the last round is asked
without tools so it must answer. Terminal tools (transfer, end_call) finish the turn.

The graph is run by `AgentGraph.run`, a loop over the four nodes, not by LangGraph's Pregel
engine (which ran it until 2026-12-04): this graph is a fixed chain with one loop, no
checkpointer, no parallel branches, no interrupts, and Pregel's supersteps cost 1.1 ms of CPU a
turn (a third of the agent's own CPU with an instant model), 1.2 ms of a phone turn's 5 ms at one
call (BENCHMARKS.md, fifth session).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypedDict

from langchain_core.messages import BaseMessage

from orchestrator.agents import offline
from orchestrator.agents.configuration import AgentConfiguration
from orchestrator.agents.input_agent import NormalisedInput, normalise
from orchestrator.agents.memory_agent import HistoryMessage, MemoryAgent, MemoryView
from orchestrator.agents.orchestrator_agent import (
    FALLBACK_REPLY,
    OrchestratorAgent,
    build_messages,
    tool_messages,
)
from orchestrator.agents.tool_agent import ToolAgent, ToolCall, ToolContext, ToolOutcome
from orchestrator.llm.calls import LLMUnavailable
from orchestrator.turns import TokenSink
from shared.contract import Action

log = logging.getLogger(__name__)


class TurnGraphState(TypedDict, total=False):
    raw: str
    input_type: str
    inp: NormalisedInput
    view: MemoryView
    messages: list[BaseMessage]
    pending: list[ToolCall]
    outcomes: list[ToolOutcome]
    spoken: list[str]
    actions: list[Action]
    rounds: int
    finished: bool
    fallback: bool


@dataclass(slots=True)
class TurnRun:
    """Runtime context of one turn."""

    agent_id: str
    config: AgentConfiguration
    conversation_id: str
    caller: str | None
    history: Sequence[HistoryMessage]
    tools: ToolContext
    sink: TokenSink | None = None
    clock: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, started: float) -> float:
        elapsed = (time.perf_counter() - started) * 1000
        self.clock[stage] = self.clock.get(stage, 0.0) + elapsed
        return elapsed

    def spaced_sink(self) -> TokenSink | None:
        """The sink for a later model round: its first token is set apart from what was
        already said, as the final text joins the rounds with a space."""
        sink = self.sink
        if sink is None:
            return None
        first = True

        async def spaced(token: str) -> None:
            nonlocal first
            if first and token.strip():
                first = False
                token = " " + token.lstrip()
            await sink(token)

        return spaced

    async def say(self, text: str) -> None:
        """Text not produced by the model (offline answers, fallbacks), streamed word by word
        like the model's tokens so a streaming caller hears it the same way."""
        if self.sink is None or not text:
            return
        words = text.split(" ")
        for i, word in enumerate(words):
            await self.sink(word if i == len(words) - 1 else word + " ")


class AgentGraph:
    def __init__(
        self, memory: MemoryAgent, orchestrator: OrchestratorAgent, tools: ToolAgent
    ) -> None:
        self.memory = memory
        self.orchestrator = orchestrator
        self.tools = tools

    async def run(self, raw: str, input_type: str, run: TurnRun) -> TurnGraphState:
        """input -> memory -> orchestrator, then tool -> orchestrator while the model asks for
        tools and no tool finished the turn."""
        state: TurnGraphState = {
            "raw": raw,
            "input_type": input_type,
            "spoken": [],
            "actions": [],
            "rounds": 0,
        }
        state.update(await self._input(state, run))
        state.update(await self._memory(state, run))
        while True:
            state.update(await self._orchestrator(state, run))
            if not state.get("pending"):
                return state
            if state.get("rounds", 0) > run.config.max_tool_rounds:
                # The last round is asked without tools; a model that asks for some anyway
                # is not obeyed (the turn ends with what it said).
                log.warning(
                    "tool calls after the last tool round ignored",
                    extra={"conversation_id": run.conversation_id, "agent_id": run.agent_id},
                )
                state["pending"] = []
                return state
            state.update(await self._tool(state, run))
            if state.get("finished"):
                return state

    # -- nodes ----------------------------------------------------------------------------------

    async def _input(self, state: TurnGraphState, run: TurnRun) -> TurnGraphState:
        started = time.perf_counter()
        inp = normalise(state.get("raw", ""), state.get("input_type", "speech"))
        run.add("input", started)
        return {"inp": inp}

    async def _memory(self, state: TurnGraphState, run: TurnRun) -> TurnGraphState:
        started = time.perf_counter()
        inp = state["inp"]
        view = await self.memory.gather(
            conversation_id=run.conversation_id,
            caller=run.caller,
            agent_id=run.agent_id,
            query=inp.text,
            intent=inp.intent,
            history=run.history,
            history_turns=run.config.history_turns,
        )
        run.add("memory", started)
        run.clock["memory_store"] = run.clock.get("memory_store", 0.0) + view.store_ms
        return {"view": view}

    async def _orchestrator(self, state: TurnGraphState, run: TurnRun) -> TurnGraphState:
        started = time.perf_counter()
        inp, view = state["inp"], state["view"]
        spoken = list(state.get("spoken", []))
        if self.orchestrator.mode == "offline":
            decision = offline.decide(
                inp,
                memories=view.memories,
                knowledge=view.knowledge,
                can_transfer="transfer_call" in run.config.builtin_tools
                and bool(run.config.transfer_number or run.tools.default_transfer_number),
            )
            if decision.text:
                spoken.append(decision.text)
                if not decision.tool_calls:  # else spoken once the tools have answered
                    await run.say(decision.text)
            run.add("orchestrator", started)
            return {"spoken": spoken, "pending": decision.tool_calls, "rounds": 1}
        if inp.intent == "empty":  # nothing to send to a model
            text = "Sorry, I didn't catch that. Could you say it again?"
            await run.say(text)
            run.add("orchestrator", started)
            return {"spoken": [*spoken, text], "pending": []}
        messages = list(state.get("messages") or [])
        if not messages:
            messages = build_messages(run.config, self.orchestrator.default_prompt, view, inp)
        rounds = state.get("rounds", 0) + 1
        llm_ms = 0.0
        try:
            llm_started = time.perf_counter()
            turn_round, ai_message = await self.orchestrator.llm_round(
                run.config,
                messages,
                with_tools=rounds <= run.config.max_tool_rounds,
                on_token=run.spaced_sink() if spoken else run.sink,
            )
            llm_ms = (time.perf_counter() - llm_started) * 1000
        except LLMUnavailable:
            llm_ms = (time.perf_counter() - llm_started) * 1000
            text = FALLBACK_REPLY
            await run.say((" " if spoken else "") + text)
            run.clock["llm"] = run.clock.get("llm", 0.0) + llm_ms
            run.clock["orchestrator"] = run.clock.get("orchestrator", 0.0) + (
                (time.perf_counter() - started) * 1000 - llm_ms
            )
            return {"spoken": [*spoken, text], "pending": [], "fallback": True, "rounds": rounds}
        if turn_round.text.strip():
            spoken.append(turn_round.text.strip())
        run.clock["llm"] = run.clock.get("llm", 0.0) + llm_ms
        run.clock["orchestrator"] = run.clock.get("orchestrator", 0.0) + (
            (time.perf_counter() - started) * 1000 - llm_ms
        )
        return {
            "messages": [*messages, ai_message],
            "spoken": spoken,
            "pending": turn_round.tool_calls,
            "rounds": rounds,
        }

    async def _tool(self, state: TurnGraphState, run: TurnRun) -> TurnGraphState:
        started = time.perf_counter()
        pending = state.get("pending") or []
        outcomes = await asyncio.gather(*(self._run_tool(call, run) for call in pending))
        spoken = list(state.get("spoken", []))
        actions = list(state.get("actions", []))
        offline_mode = self.orchestrator.mode == "offline"
        finished = offline_mode  # the offline responder's tools end its turn
        default_line: str | None = None
        for outcome in outcomes:
            if outcome.memory is not None:
                self.memory.note(run.conversation_id, outcome.memory)
            if outcome.terminal and outcome.action is not None and not actions:
                actions.append(outcome.action)
                finished = True
                if not spoken and outcome.spoken:  # the model said nothing before it
                    spoken.append(outcome.spoken)
                    default_line = outcome.spoken
        if offline_mode:
            if any(not o.ok and o.call.name == "remember" for o in outcomes):
                spoken = ["I'm sorry, I can't keep notes on this call."]
            await run.say(" ".join(spoken))  # held back until the tools had answered
        elif default_line is not None:
            await run.say(default_line)
        run.add("tools", started)
        update: TurnGraphState = {
            "outcomes": [*(state.get("outcomes") or []), *outcomes],
            "pending": [],
            "spoken": spoken,
            "actions": actions,
            "finished": finished,
        }
        if self.orchestrator.mode == "llm":
            update["messages"] = [*(state.get("messages") or []), *tool_messages(outcomes)]
        return update

    async def _run_tool(self, call: ToolCall, run: TurnRun) -> ToolOutcome:
        if "__invalid__" in call.args:
            return ToolOutcome(
                call, f"The arguments for {call.name} were not valid JSON; try again.", ok=False
            )
        return await self.tools.run(call, run.tools)
