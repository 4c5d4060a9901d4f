"""The orchestrator's FastAPI app: `create_app()` builds it; the lifespan owns its resources.

Run with `uvicorn --factory orchestrator.main:create_app` (or `python -m orchestrator`).
Settings are read when the app is created, never at import, so tests pass their own.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import State
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from orchestrator.api.routes import agents, callers, conversations, demo, health, knowledge
from orchestrator.config import OrchestratorSettings, get_settings
from orchestrator.demo import (
    DEMO_AGENT_ID,
    demo_enabled,
    seed_demo_agent,
    seed_demo_knowledge,
)
from orchestrator.health import HealthChecks
from orchestrator.memory.chroma import chroma_path
from orchestrator.metrics import LOOP_LAG, count_errors, install_metrics
from orchestrator.openapi import document_errors
from orchestrator.security import is_public, on_data_error
from orchestrator.services.conversations import ConversationService
from orchestrator.services.responder import build_responder, warm_imports
from orchestrator.state import OrchestratorState
from orchestrator.store.database import (
    DATABASE_UNAVAILABLE_ERRORS,
    Database,
    describe_dsn,
    on_database_unavailable,
)
from orchestrator.store.embedded import EmbeddedPostgres
from orchestrator.store.records import Agent
from orchestrator.version import __version__
from shared.auth import SecretConfigError
from shared.config import ConfigError
from shared.errors import (
    ApiError,
    describe_validation_errors,
    error_response,
    on_api_error,
    on_http_exception,
    on_unexpected_error,
)
from shared.logging import log_format, setup_logging
from shared.loop_lag import LoopLagMonitor
from shared.middleware_stack import middleware_stack
from shared.sentry import init_sentry

log = logging.getLogger("orchestrator")

EMBEDDED_PG_DIR = "postgres"
SHUTDOWN_DRAIN_S = 10.0


def embedded_pgdata(settings: OrchestratorSettings) -> Path:
    return settings.data_dir / EMBEDDED_PG_DIR


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[OrchestratorState]:
    settings: OrchestratorSettings = app.state.settings
    started = time.perf_counter()
    jwt_secret = settings.resolved_jwt_secret()
    # The agent graph's heavy imports (chromadb, langchain-core) load in a thread meanwhile.
    warm = asyncio.create_task(asyncio.to_thread(warm_imports, settings))
    async with AsyncExitStack() as stack:
        # 1. The database: DATABASE_URL, else a PostgreSQL we start and own under DATA_DIR.
        if settings.database_url:
            dsn, mode = settings.database_url, "external"
        else:
            embedded = EmbeddedPostgres(embedded_pgdata(settings))
            dsn = await asyncio.to_thread(embedded.start)
            stack.push_async_callback(asyncio.to_thread, embedded.stop)
            mode = "embedded"
            app.state.embedded_postgres = embedded
            log.info(
                "embedded Postgres ready",
                extra={
                    "pgdata": str(embedded.pgdata),
                    "start_ms": round((embedded.start_seconds or 0) * 1000, 1),
                    "adopted_orphan": embedded.adopted,
                    "recovered_stale_pid": embedded.recovered_stale_pid,
                },
            )
        database = await Database.open(
            dsn,
            min_size=settings.db_pool_min,
            max_size=settings.db_pool_max,
            command_timeout=settings.db_command_timeout_s,
            connect_wait_s=settings.db_connect_wait_s if mode == "external" else 5.0,
        )
        stack.push_async_callback(database.close)
        # The demo agent: on a store that is empty now (a fresh DATA_DIR), never in production.
        seed_demo = demo_enabled(settings, embedded_database=mode == "embedded")
        seed_demo = seed_demo and await database.agents.count() == 0
        default_agent = await database.agents.ensure_default(
            name=settings.default_agent_name,
            greeting=settings.default_agent_greeting,
            system_prompt=settings.default_agent_system_prompt,
            transfer_number=settings.default_transfer_number,
        )

        # 2. Health checks: postgres here; whatever adds a dependency registers its own.
        checks = HealthChecks()
        checks.add("postgres", database.check)

        # 3. The responder: the agent graph (Chroma memory; LLM or offline mode).
        await warm
        responder = await build_responder(settings, database, checks)
        stack.push_async_callback(responder.aclose)
        demo_agent = await _seed_demo(settings, database, responder) if seed_demo else None

        service = ConversationService(
            database.conversations,
            database.agents,
            responder,
            history_turns=settings.history_turns,
            fallback_agent=_fallback_agent(settings),
        )
        stack.push_async_callback(service.drain, SHUTDOWN_DRAIN_S)

        if settings.production:
            freeze_startup_objects()
        lag = LoopLagMonitor(LOOP_LAG)  # from here on: start-up work is not a stall
        lag.start()
        stack.push_async_callback(lag.aclose)
        log.info(
            "orchestrator ready",
            extra={
                "version": __version__,
                "database": mode,
                "database_target": describe_dsn(dsn),
                "llm": responder.mode,
                "default_agent": default_agent.id,
                "demo_agent": demo_agent,
                "startup_ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
        if demo_agent is not None:
            demo_task = asyncio.create_task(_load_demo_knowledge(responder, demo_agent))
            stack.push_async_callback(_finish, demo_task)
        yield {
            "settings": settings,
            "jwt_secret": jwt_secret,
            "database": database,
            "database_mode": mode,
            "responder": responder,
            "conversations": service,
            "health": checks,
        }
        log.info("orchestrator stopping")


async def _seed_demo(
    settings: OrchestratorSettings, database: Database, responder: object
) -> str | None:
    """The demo agent's row (`orchestrator.demo`); a start racing another on the same empty
    store finds the agent already made and leaves it."""
    try:
        agent = await seed_demo_agent(database.agents, settings.port)
    except asyncpg.UniqueViolationError:
        return None
    return agent.id


async def _load_demo_knowledge(responder: object, agent_id: str) -> None:
    """After ready (~70 ms of Chroma writes a cold start need not wait for); logged if lost."""
    knowledge = getattr(responder, "knowledge", None)
    if knowledge is None:
        log.warning("demo knowledge not loaded: no knowledge base (Chroma unavailable)")
        return
    try:
        await seed_demo_knowledge(knowledge, agent_id)
    except Exception:
        log.warning("demo knowledge not loaded", exc_info=True)


async def _finish(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def describe_modes(state: State) -> dict[str, object]:
    """What each part runs on, in words (`make run` prints it once both services are ready)."""
    settings: OrchestratorSettings = state.settings
    database: Database = state.database
    responder = state.responder
    chroma = getattr(responder, "chroma", None)
    if chroma is None:
        vector_store = "unavailable"
    elif chroma.mode == "http":
        vector_store = f"Chroma server ({settings.chroma_host}:{settings.chroma_port})"
    else:
        where = "child process" if settings.chroma_embedded_process else "in process"
        vector_store = f"embedded Chroma ({where}, {chroma_path(settings)})"
    if state.database_mode == "embedded":
        store = f"embedded Postgres ({embedded_pgdata(settings)})"
    else:
        store = f"Postgres ({describe_dsn(settings.database_url or '')})"
    llm = (
        f"model {settings.openai_model} (OPENAI_API_KEY)"
        if responder.mode == "llm"
        else "offline responder (no OPENAI_API_KEY: knowledge retrieval and intent rules)"
    )
    demo = await database.agents.get(DEMO_AGENT_ID)
    return {
        "database": store,
        "vector_store": vector_store,
        "llm": llm,
        "demo_agent": None if demo is None else {"id": demo.id, "name": demo.name},
    }


def freeze_startup_objects() -> None:
    """Move what start-up made (modules, Chroma, langchain, pools: ~320,000 objects) out of the
    cyclic GC's reach. A full collection walked them all: 360-380 ms with the event loop stopped
    (measured on the 2-core bench machine), every turn in flight waiting. No `gc.collect()`
    first — that would itself be such a pause in start-up; the little start-up garbage it would
    free stays. `GraphResponder` freezes again once its background LLM warm-up has imported
    langchain-openai. Production only: a test process starts the app hundreds of times, and
    each freeze would keep the garbage of the tests before it for good."""
    gc.freeze()


def _fallback_agent(settings: OrchestratorSettings) -> Agent:
    """Answers only if the default agent row was deleted while running; never stored."""
    now = datetime.now(UTC)
    configuration = {
        "greeting": settings.default_agent_greeting,
        "system_prompt": settings.default_agent_system_prompt,
    }
    if settings.default_transfer_number:
        configuration["transfer_number"] = settings.default_transfer_number
    return Agent(
        id="builtin-default",
        name=settings.default_agent_name,
        agent_type="voice",
        configuration=configuration,
        is_default=True,
        created_at=now,
        updated_at=now,
    )


async def on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(err.get("type") == "json_invalid" for err in errors):
        detail = errors[0].get("ctx", {}).get("error", "invalid JSON")
        return error_response(400, "invalid_json", f"body: not valid JSON ({detail})")
    return error_response(422, "validation_error", describe_validation_errors(errors))


def create_app(settings: OrchestratorSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    setup_logging(
        "orchestrator",
        settings.debug,
        settings.log_level,
        log_format(settings.log_format, settings.production),
    )
    init_sentry(settings, "orchestrator", __version__)  # only when SENTRY_DSN is set
    try:  # a weak or missing production JWT_SECRET stops start-up here, in one line
        jwt_secret = settings.resolved_jwt_secret()
    except SecretConfigError as exc:
        raise ConfigError(f"configuration error: {exc}") from None
    app = FastAPI(
        title="Voice Agent Orchestrator",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs" if not settings.production else None,
        redoc_url=None,
        # like /docs, not served unauthenticated in production (every endpoint but health
        # needs a JWT there)
        openapi_url="/openapi.json" if not settings.production else None,
        # auth and roles are FastAPI dependencies (deps.py), not a middleware
        middleware=middleware_stack(
            settings, jwt_secret, service="orchestrator", is_public=is_public
        ),
    )
    app.state.settings = settings
    document_errors(app)
    metrics_token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    install_metrics(app, metrics_token)  # the last added is outermost: it times everything
    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(StarletteHTTPException, on_http_exception)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(asyncpg.DataError, on_data_error)
    for unavailable in DATABASE_UNAVAILABLE_ERRORS:
        app.add_exception_handler(unavailable, count_errors(on_database_unavailable, "store"))
    app.add_exception_handler(Exception, count_errors(on_unexpected_error, "internal"))
    app.include_router(health.router)
    app.include_router(conversations.router)
    app.include_router(agents.router)
    app.include_router(knowledge.router)
    app.include_router(callers.router)
    if not settings.production and settings.demo is not False:
        app.include_router(demo.router)

    @app.get("/", include_in_schema=False)
    async def root(request: Request) -> JSONResponse:
        body: dict[str, object] = {"service": "orchestrator", "version": __version__}
        if not settings.production:  # for `make run`'s summary; not told to the world
            body["modes"] = await describe_modes(request.state)
        return JSONResponse(body)

    return app
