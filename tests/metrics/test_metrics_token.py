"""`METRICS_TOKEN`: when set, `/metrics` on both services answers only the scraper holding it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.config import OrchestratorSettings
from orchestrator.main import create_app as create_orchestrator
from realtime_gateway.app import create_app as create_gateway
from realtime_gateway.config import GatewaySettings

TOKEN = "scrape-" + "s" * 32


def gateway_app(data_dir: Path, token: str | None) -> Any:
    settings = GatewaySettings(  # type: ignore[call-arg]
        _env_file=None, data_dir=data_dir, jwt_secret="j" * 40, metrics_token=token
    )
    return create_gateway(settings)


def orchestrator_app(data_dir: Path, pg_dsn: str, token: str | None) -> Any:
    settings = OrchestratorSettings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=data_dir,
        jwt_secret="j" * 40,
        database_url=pg_dsn,
        metrics_token=token,
    )
    return create_orchestrator(settings)


@pytest.mark.parametrize("service", ["gateway", "orchestrator"])
async def test_metrics_token_is_required_when_set(
    service: str, data_dir: Path, pg_dsn: str
) -> None:
    # /metrics needs no lifespan: the route reads the process registry.
    if service == "gateway":
        app = gateway_app(data_dir, TOKEN)
    else:
        app = orchestrator_app(data_dir, pg_dsn, TOKEN)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc.test") as client:
        missing = await client.get("/metrics")
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
        right = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    for refused in (missing, wrong):
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthorized"
        assert TOKEN not in refused.text
    assert right.status_code == 200
    assert "http_request_duration_seconds" in right.text


async def test_metrics_stay_open_without_a_token(data_dir: Path) -> None:
    transport = httpx.ASGITransport(app=gateway_app(data_dir, None))
    async with httpx.AsyncClient(transport=transport, base_url="http://svc.test") as client:
        assert (await client.get("/metrics")).status_code == 200
