"""Chaos tests run both real services in process: the gateway harness of tests/gateway and
the orchestrator harness of tests/orchestrator (real Postgres, real JWTs, real Redis)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.gateway.conftest import real_orchestrator


@pytest.fixture
async def orchestrator(pg_dsn: str, tmp_path: Path) -> AsyncIterator[httpx.ASGITransport]:
    async with real_orchestrator(pg_dsn, tmp_path / "orch") as transport:
        yield transport
