"""Shared test fixtures: real Postgres and Redis.

Postgres: a fresh database per test session on TEST_DATABASE_URL's server (default the CI
machine's 127.0.0.1:5432, trust auth, database `test`), dropped afterwards.
Redis: database 15 on 127.0.0.1:6379, flushed before each test that uses it.
With CI=true a missing server fails the tests that need it; elsewhere they are skipped.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(what: str, exc: BaseException) -> None:
    message = f"{what} is not reachable ({exc!r})"
    if IN_CI:
        pytest.fail(f"{message}; CI=true requires it", pytrace=False)
    pytest.skip(message)


def _with_database(dsn: str, database: str) -> str:
    base, _, _ = dsn.rpartition("/")
    return f"{base}/{database}"


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """DSN of a fresh, empty database for this test session."""
    name = f"vao_test_{uuid.uuid4().hex[:10]}"

    async def create() -> None:
        conn = await asyncpg.connect(TEST_DATABASE_URL, timeout=5)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(TEST_DATABASE_URL, timeout=5)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    try:
        asyncio.run(create())
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        unavailable(f"Postgres at {TEST_DATABASE_URL}", exc)
    yield _with_database(TEST_DATABASE_URL, name)
    asyncio.run(drop())


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    client = aioredis.from_url(TEST_REDIS_URL)
    try:
        await client.ping()
        await client.flushdb()
    except (OSError, aioredis.RedisError) as exc:
        await client.aclose()
        unavailable(f"Redis at {TEST_REDIS_URL}", exc)
    yield TEST_REDIS_URL
    await client.flushdb()
    await client.aclose()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path
