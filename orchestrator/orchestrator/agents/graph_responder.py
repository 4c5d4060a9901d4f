"""`GraphResponder`: the agent graph behind the turn service's `Responder` seam.

Modes: "llm" when OPENAI_API_KEY is set (langchain-openai, OPENAI_BASE_URL honoured), else
"offline" (retrieval + intent rules, no network). Both run the same graph and tools and emit the
same actions. `open()` starts everything the graph needs: Chroma (embedded or server), the
embedding function, a pooled httpx client for the LLM and HTTP tools, and the retention purge.

- `greet` prefetches the caller's memories (kept for the call) and greets, with context for a
  returning caller;
- `respond` runs one turn; `stream` runs it while yielding the reply's text as it is produced,
  then the final `ReplyDraft` (closing the iterator cancels the turn: barge-in);
- `on_call_end` writes the call's summary as a memory of the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from typing import TYPE_CHECKING

import httpx

from orchestrator.agents import offline
from orchestrator.agents.configuration import AgentConfiguration, load_configuration
from orchestrator.agents.graph import AgentGraph, TurnRun
from orchestrator.agents.memory_agent import MemoryAgent, Turn
from orchestrator.agents.orchestrator_agent import FALLBACK_REPLY, OrchestratorAgent
from orchestrator.agents.stats import AgentStats
from orchestrator.agents.tool_agent import ToolAgent, ToolContext
from orchestrator.config import OrchestratorSettings
from orchestrator.llm.calls import LLMUnavailable, RetryPolicy
from orchestrator.memory.caller_memory import FACT, CallerMemory, MemoryUnavailable
from orchestrator.memory.embeddings import HASHING_NAME
from orchestrator.memory.knowledge import KnowledgeBase
from orchestrator.memory.retention import RetentionTask
from orchestrator.store.conversations import GREETING_TURN_ID
from orchestrator.store.records import Agent, Conversation
from orchestrator.turns import ReplyDraft, TokenSink, ToolRun, TurnInputs
from shared.contract import Action, TurnContext
from shared.phone import to_e164
from shared.redaction import redact_secrets

if TYPE_CHECKING:
    from orchestrator.health import HealthChecks
    from orchestrator.llm.factory import LLMFactory
    from orchestrator.memory.chroma import ChromaHandle
    from orchestrator.store.database import Database

log = logging.getLogger(__name__)

# A returning caller's greeting is written by the model only if it comes this fast.
GREETING_LLM_BUDGET_S = 3.0


class GraphResponder:
    def __init__(
        self,
        settings: OrchestratorSettings,
        *,
        chroma: ChromaHandle | None,
        http: httpx.AsyncClient,
        llm: LLMFactory | None,
        database: Database | None = None,
        retry: RetryPolicy | None = None,
        owns_http: bool = False,
    ) -> None:
        self.settings = settings
        self.chroma = chroma
        self.http = http
        self.database = database
        self._owns_http = owns_http
        self.knowledge = KnowledgeBase(chroma.knowledge) if chroma else None
        tombstones = database.conversations if database is not None else None
        self.caller_memory = (
            CallerMemory(chroma.memories, tombstones=tombstones) if chroma else None
        )
        self.memory_agent = MemoryAgent(
            self.knowledge, self.caller_memory, history_turns=settings.history_turns
        )
        self.orchestrator = OrchestratorAgent(
            llm,
            default_prompt=settings.default_agent_system_prompt,
            retry=retry or RetryPolicy(retry_window_s=settings.llm_timeout_s),
        )
        self.tools = ToolAgent(http, self.knowledge, self.caller_memory)
        self.graph = AgentGraph(self.memory_agent, self.orchestrator, self.tools)
        self.stats = AgentStats()
        self.mode: str = self.orchestrator.mode  # "llm" | "offline"
        self.retention: RetentionTask | None = None
        self._configs: dict[tuple[str, object], AgentConfiguration] = {}
        self._llm_warm_up: asyncio.Task[object] | None = None

    @classmethod
    async def open(
        cls,
        settings: OrchestratorSettings,
        database: Database | None = None,
        health: HealthChecks | None = None,
        *,
        retention_interval_s: float = 3600.0,
        retry: RetryPolicy | None = None,
    ) -> GraphResponder:
        from orchestrator.memory.chroma import open_chroma

        http = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.llm_timeout_s, connect=3.0),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            follow_redirects=False,
        )
        try:
            chroma = await open_chroma(settings)
        except BaseException:
            await http.aclose()
            raise
        llm = None
        if settings.openai_api_key is not None:
            from orchestrator.llm.factory import LLMFactory

            llm = LLMFactory(settings, http)
        responder = cls(
            settings,
            chroma=chroma,
            http=http,
            llm=llm,
            database=database,
            retry=retry,
            owns_http=True,
        )
        assert responder.caller_memory is not None
        responder.retention = RetentionTask(
            responder.caller_memory,
            settings.memory_retention_days,
            retention_interval_s,
            conversations=database.conversations if database is not None else None,
        )
        await responder.retention.purge_memories()  # Postgres: in the background, below
        responder.retention.start()
        await responder.warm_up()
        if llm is not None:
            # The default chat model, built in the background once ready: the first build
            # imports langchain_openai and the openai SDK's chat resources (~1-1.5 s of CPU),
            # which the first caller would otherwise wait for. No request is made.
            default_temperature = AgentConfiguration().temperature
            responder._llm_warm_up = asyncio.create_task(
                asyncio.to_thread(llm.chat, None, default_temperature)
            )
            # What the warm-up imported joins the start-up objects out of the GC's reach
            # (orchestrator.main.freeze_startup_objects).
            if settings.production:
                responder._llm_warm_up.add_done_callback(lambda _: gc.freeze())
        if health is not None:
            health.add("chroma", chroma.heartbeat)
        if llm is not None:
            log.info(
                "responder mode: llm",
                extra={
                    "llm_mode": "llm",
                    "model": settings.openai_model,
                    "base_url": str(settings.openai_base_url or "https://api.openai.com/v1"),
                },
            )
        else:
            log.info(
                "responder mode: offline (no OPENAI_API_KEY): knowledge retrieval and intent "
                "rules, no language model, no network calls",
                extra={"llm_mode": "offline"},
            )
        return responder

    async def warm_up(self) -> None:
        """One empty turn through the graph and one knowledge query, at start-up: the first
        real turn then costs what later ones do (the graph's modules and Chroma set up on first
        use).
        An empty turn calls no model and touches no caller's memory; the query is made only
        with the offline embedding (OpenAI embeddings would be an API call)."""
        from datetime import UTC, datetime

        now = datetime.now(UTC)
        agent = Agent("warm-up", "warm-up", "orchestrator", {}, False, now, now)
        conversation = Conversation("warm-up", "warm-up", None, None, None, None, "active", now)
        started = time.perf_counter()
        await self.respond(
            TurnInputs(conversation, agent, "warm-up", "", TurnContext(), history=[])
        )
        self.memory_agent.drop("warm-up")
        self.stats.forget("warm-up")
        offline_embedding = self.chroma is not None and self.chroma.embedding.name() == HASHING_NAME
        if self.knowledge is not None and offline_embedding:  # never an API call at start-up
            try:
                await self.knowledge.search("warm up", k=1)
            except Exception:
                log.warning("knowledge warm-up query failed", exc_info=True)
        log.debug("graph warmed up", extra={"ms": round((time.perf_counter() - started) * 1000)})

    async def aclose(self) -> None:
        if self._llm_warm_up is not None:
            with contextlib.suppress(Exception):
                await self._llm_warm_up  # a thread: it cannot be cancelled, only awaited
        if self.retention is not None:
            await self.retention.stop()
        if self.chroma is not None:
            await self.chroma.close()
        if self.orchestrator.llm is not None:
            await self.orchestrator.llm.aclose()
        if self._owns_http:
            await self.http.aclose()

    # -- configuration --------------------------------------------------------------------------

    def configuration(self, agent: Agent) -> AgentConfiguration:
        key = (agent.id, agent.updated_at)
        config = self._configs.get(key)
        if config is None:
            if len(self._configs) > 1000:
                self._configs.clear()
            config = load_configuration(agent.configuration)
            self._configs[key] = config
        return config

    # -- Responder ------------------------------------------------------------------------------

    async def greet(self, conversation: Conversation, agent: Agent) -> ReplyDraft:
        started = time.perf_counter()
        config = self.configuration(agent)
        caller = to_e164(conversation.caller)
        ctx = await self.memory_agent.prefetch(conversation.id, caller, agent.id)
        base = config.greeting or agent.greeting or self.settings.default_agent_greeting
        text = offline.greeting_for(base, ctx.memories)
        timings = {"memory_prefetch": ctx.fetched_ms}
        if ctx.memories and self.mode == "llm":
            try:
                async with asyncio.timeout(GREETING_LLM_BUDGET_S):
                    written, llm_ms = await self.orchestrator.greeting(config, base, ctx.memories)
                timings["llm"] = round(llm_ms, 3)
                text = written.strip() or text
            except (LLMUnavailable, TimeoutError):
                pass  # the offline welcome-back is a fine greeting; the call must not wait
        timings["agent_total"] = round((time.perf_counter() - started) * 1000, 3)
        return ReplyDraft(
            text,
            [
                Action.say(text, config.language, config.voice),
                Action.gather(language=config.language),
            ],
            timings,
        )

    async def respond(self, turn: TurnInputs) -> ReplyDraft:
        return await self._run(turn, None)

    async def stream(self, turn: TurnInputs, on_text: TokenSink) -> ReplyDraft:
        return await self._run(turn, on_text)

    async def _run(self, turn: TurnInputs, sink: TokenSink | None) -> ReplyDraft:
        started = time.perf_counter()
        agent = turn.agent
        config = self.configuration(agent)
        caller = to_e164(turn.conversation.caller or turn.context.caller)
        run = TurnRun(
            agent_id=agent.id,
            config=config,
            conversation_id=turn.conversation.id,
            caller=caller,
            history=turn.history,
            tools=ToolContext(
                agent_id=agent.id,
                config=config,
                conversation_id=turn.conversation.id,
                caller=caller,
                default_transfer_number=self.settings.default_transfer_number,
            ),
            sink=sink,
        )
        raw = "" if turn.context.input_type == "timeout" else turn.message
        try:
            state = await self.graph.run(raw, turn.context.input_type, run)
        except Exception:
            self.stats.record_error(agent.id)
            raise
        text = " ".join(part for part in state.get("spoken", []) if part).strip()
        fallback = bool(state.get("fallback"))
        if not text:  # nothing to say (an empty answer, a tool that failed): the fallback,
            text, fallback = FALLBACK_REPLY, True
            await run.say(text)  # streamed too: a streamed caller hears what is stored
        actions = [Action.say(text, config.language, config.voice)]
        actions.extend(state.get("actions") or [Action.gather(language=config.language)])
        total = (time.perf_counter() - started) * 1000
        timings = {k: round(v, 3) for k, v in run.clock.items()}
        timings["agent_total"] = round(total, 3)
        # The graph's own share: everything but the model and the stores/tools it waited on.
        waited = run.clock.get("llm", 0.0) + run.clock.get("memory_store", 0.0)
        waited += run.clock.get("tools", 0.0)
        timings["graph_overhead"] = round(max(0.0, total - waited), 3)
        self.stats.record(agent.id, total, fallback=fallback)
        inp = state.get("inp")
        if inp is not None and (inp.injection or inp.trimmed):
            log.info(
                "turn input flagged",
                extra={"conversation_id": turn.conversation.id, "flags": inp.flags},
            )
        ran = [ToolRun(o.call.name, o.call.args, o.ok) for o in state.get("outcomes") or []]
        return ReplyDraft(text, actions, timings, ran)

    async def on_call_end(self, conversation: Conversation) -> None:
        caller = to_e164(conversation.caller)
        cached = self.memory_agent.cached(conversation.id)
        agent_id = conversation.agent_id or (cached.agent_id if cached else None)
        if caller is None or self.database is None or agent_id is None:
            self.memory_agent.drop(conversation.id)
            return
        messages = await self.database.conversations.messages(conversation.id)
        turns = [
            Turn(m.role, m.content)
            for m in messages
            if m.turn_id != GREETING_TURN_ID and m.content.strip()
        ]
        user_lines = [t.content for t in turns if t.role == "user"]
        if not user_lines:
            self.memory_agent.drop(conversation.id)
            return
        facts = [
            m.text
            for m in (cached.memories if cached else [])
            if m.kind == FACT and m.conversation_id == conversation.id
        ]
        summary = ""
        if self.mode == "llm":
            agent = await self.database.agents.get(agent_id)
            config = self.configuration(agent) if agent else AgentConfiguration()
            try:
                summary = await self.orchestrator.summarise(config, turns)
            except LLMUnavailable:
                log.info("call summary by the model failed; using the extractive summary")
        if not summary:
            summary = offline.summarise(user_lines, facts)
        summary = redact_secrets(summary)
        await self.memory_agent.write_summary(conversation.id, caller, agent_id, summary)
        await self.database.conversations.set_summary(conversation.id, summary)
        log.info("call summary stored", extra={"conversation_id": conversation.id})

    async def forget_caller(self, phone: str) -> int:
        """The caller's long-term memories, gone (`DELETE /callers/{phone}/memory`, after the
        conversation store has erased their records): every Chroma memory of the number, in any
        stored form, and what live calls hold of it in their caches. Returns the memories
        deleted; raises `MemoryUnavailable` if Chroma failed (nothing is claimed forgotten)."""
        if self.caller_memory is None:
            raise MemoryUnavailable("caller memory (Chroma) is not available")
        try:
            deleted = await self.caller_memory.forget_caller(phone)
        except Exception as exc:
            log.warning("forgetting a caller's memories failed", exc_info=True)
            raise MemoryUnavailable(f"Chroma failed ({type(exc).__name__})") from exc
        self.memory_agent.drop_caller(phone)
        return deleted
