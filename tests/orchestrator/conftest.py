"""Orchestrator fixtures: the real app (lifespan run) over httpx's ASGI transport, on the session's
real Postgres database (`pg_dsn`) or on the embedded default, with real JWTs."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from orchestrator.config import OrchestratorSettings
from orchestrator.main import create_app
from orchestrator.store.database import Database
from orchestrator.store.embedded import EmbeddedPostgres
from shared.auth import ServiceTokenSource, mint_token

SECRET = "orchestrator-test-secret-" + "x" * 24


def new_id(prefix: str = "conv") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def make_settings(
    data_dir: Path, database_url: str | None, **overrides: Any
) -> OrchestratorSettings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "data_dir": data_dir,
        "jwt_secret": SECRET,
        "app_env": "test",
        "db_pool_min": 1,
        "db_pool_max": 5,
        "db_connect_wait_s": 0,
        # respx fakes OpenAI by replacing httpx's own transport (the aiohttp one is covered by
        # test_llm_transport.py and by the bench smoke test against a real HTTP server).
        "llm_http_transport": "httpx",
    }
    values.update(overrides)
    # _env_file=None: a developer's .env must not change what the tests run against.
    return OrchestratorSettings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass
class RunningApp:
    app: FastAPI
    client: httpx.AsyncClient
    state: dict[str, Any]


@asynccontextmanager
async def run_app(settings: OrchestratorSettings) -> AsyncIterator[RunningApp]:
    """Start the app's lifespan and serve it to an httpx client, as uvicorn would (the lifespan's
    state is copied into each request's scope)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app) as state:
        lifespan_state = dict(state or {})

        async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
            scope["state"] = dict(lifespan_state)
            await app(scope, receive, send)

        transport = httpx.ASGITransport(app=asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://orchestrator") as client:
            yield RunningApp(app, client, lifespan_state)


@pytest.fixture
def settings(pg_dsn: str, data_dir: Path) -> OrchestratorSettings:
    return make_settings(data_dir, pg_dsn)


@pytest.fixture
async def orch(settings: OrchestratorSettings) -> AsyncIterator[RunningApp]:
    async with run_app(settings) as running:
        yield running


@pytest.fixture
async def db(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection to the session database, to check rows independently of the app."""
    conn = await asyncpg.connect(pg_dsn)
    yield conn
    await conn.close()


@pytest.fixture
def service_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ServiceTokenSource(SECRET).token()}"}


def management_headers(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SECRET, sub=f'test-{role}', role=role)}"}


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return management_headers("admin")


@pytest.fixture
def viewer_headers() -> dict[str, str]:
    return management_headers("viewer")


# -- stores on both backends ------------------------------------------------------------------


def make_embedded_data_dir() -> Path:
    """A DATA_DIR for the embedded Postgres outside pytest's tmp root: as root, the server runs as
    another account, and every pytest session start (ours or a concurrent one) resets
    /tmp/pytest-of-<user> to 0700, which would lock a running server out of its own files."""
    return Path(tempfile.mkdtemp(prefix="vao orch-test-"))  # a space, on purpose


@pytest.fixture
def embedded_data_dir() -> Iterator[Path]:
    path = make_embedded_data_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def embedded_dsn() -> Iterator[str]:
    """One embedded server per test module (starting it is ~0.5 s the first time)."""
    path = make_embedded_data_dir()
    server = EmbeddedPostgres(path / "postgres")
    dsn = server.start()
    yield dsn
    server.stop()
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=["postgres", "embedded"])
def store_dsn(request: pytest.FixtureRequest) -> str:
    name = "pg_dsn" if request.param == "postgres" else "embedded_dsn"
    return str(request.getfixturevalue(name))


@pytest.fixture
async def database(store_dsn: str) -> AsyncIterator[Database]:
    database = await Database.open(store_dsn, min_size=1, max_size=5)
    yield database
    await database.close()


# -- agent graph: Chroma server, LLM fakes (owned by the agent-graph work) ------------------------

CHROMA_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "chroma"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ChromaServer:
    host: str
    port: int


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    """A real Chroma server (`chroma run`) for the session, on a free port, stopped afterwards."""
    import os
    import shutil
    import subprocess
    import time

    binary = str(CHROMA_BIN) if CHROMA_BIN.exists() else shutil.which("chroma")
    if binary is None:
        pytest.fail("the `chroma` CLI (chromadb package) is not installed", pytrace=False)
    port = _free_port()
    path = tmp_path_factory.mktemp("chroma-server")
    log_file = (path / "server.log").open("wb")
    env = {**os.environ, "ANONYMIZED_TELEMETRY": "False"}
    proc = subprocess.Popen(
        [binary, "run", "--host", "127.0.0.1", "--port", str(port), "--path", str(path / "db")],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=env,
    )
    deadline = time.monotonic() + 30
    url = f"http://127.0.0.1:{port}/api/v2/heartbeat"
    while True:
        try:
            if httpx.get(url, timeout=0.5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log_file.close()
            pytest.fail(
                f"chroma server did not start: {(path / 'server.log').read_text()[-2000:]}",
                pytrace=False,
            )
        time.sleep(0.1)
    yield ChromaServer("127.0.0.1", port)
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log_file.close()


def empty_collections(handle: Any) -> None:
    """Start a test from empty Chroma collections (a `chroma run` server or a data dir may hold
    another test's documents and memories)."""
    for collection in (handle.knowledge, handle.memories):
        ids = collection.get(include=[])["ids"]
        if ids:
            collection.delete(ids=ids)
