"""The agent graph on real parts for tests: real Postgres (the session's `pg_dsn`), real Chroma
(embedded under the test's data dir, or a `chroma run` server), the real turn service
(`ConversationService`) and `GraphResponder`. Only OpenAI is faked, at the HTTP layer."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator.agents.graph_responder import GraphResponder
from orchestrator.config import OrchestratorSettings
from orchestrator.llm.calls import RetryPolicy
from orchestrator.services.conversations import ConversationService
from orchestrator.store.database import Database
from orchestrator.store.records import Agent
from shared.contract import CallEnd, CallStart, TurnContext, TurnReply
from tests.orchestrator.llm_fakes import OPENAI_BASE


def graph_settings(data_dir: Path, pg_dsn: str, **overrides: Any) -> OrchestratorSettings:
    values: dict[str, Any] = {
        "database_url": pg_dsn,
        "data_dir": data_dir,
        "jwt_secret": "graph-test-secret-" + "y" * 24,
        "app_env": "test",
        "db_pool_min": 1,
        "db_pool_max": 5,
        "openai_base_url": OPENAI_BASE,
        "llm_timeout_s": 5.0,
        "llm_http_transport": "httpx",  # respx replaces httpx's own transport
    }
    values.update(overrides)
    return OrchestratorSettings(_env_file=None, **values)  # type: ignore[call-arg]


def new_phone() -> str:
    return "+1555" + "".join(random.choices("0123456789", k=7))


@dataclass
class GraphStack:
    settings: OrchestratorSettings
    database: Database
    responder: GraphResponder
    service: ConversationService

    async def agent(self, **configuration: Any) -> Agent:
        return await self.database.agents.create(
            name="Test agent", agent_type="orchestrator", configuration=configuration
        )

    async def start(
        self, agent: Agent, caller: str, conversation_id: str | None = None
    ) -> TurnReply:
        cid = conversation_id or f"conv-{uuid.uuid4().hex[:12]}"
        return await self.service.start(
            cid,
            CallStart(
                call_id=cid, provider="generic-http", caller=caller, callee=None, agent_id=agent.id
            ),
        )

    async def say(self, conversation_id: str, turn: int, text: str, **context: Any) -> TurnReply:
        return await self.service.message(
            conversation_id, f"t{turn}", text, TurnContext(call_id=conversation_id, **context)
        )

    async def end(self, conversation_id: str) -> None:
        await self.service.end(conversation_id, CallEnd())
        await self.service.drain()


@asynccontextmanager
async def graph_stack(data_dir: Path, pg_dsn: str, **overrides: Any) -> AsyncIterator[GraphStack]:
    settings = graph_settings(data_dir, pg_dsn, **overrides)
    database = await Database.open(pg_dsn, min_size=1, max_size=5)
    responder = await GraphResponder.open(
        settings, database, retry=RetryPolicy(max_retries=2, backoff_s=0.01, max_backoff_s=0.02)
    )
    now = datetime.now(UTC)
    fallback = Agent("builtin-default", "Default", "orchestrator", {}, True, now, now)
    service = ConversationService(
        database.conversations,
        database.agents,
        responder,
        history_turns=10,
        fallback_agent=fallback,
    )
    try:
        yield GraphStack(settings, database, responder, service)
    finally:
        await service.drain()
        await responder.aclose()
        await database.close()
