"""The spec's troubleshooting commands answer, each on the port the spec names (gateway 3000,
orchestrator 8000): the gateway under a real uvicorn server, the real orchestrator on the real
Postgres. Management endpoints, the webhook check among them, answer with a token (401 JSON
without); the health checks need none."""

from __future__ import annotations

from pathlib import Path

import httpx

from orchestrator.config import OrchestratorSettings
from realtime_gateway.config import GatewaySettings
from tests.gateway.conftest import ORCH_URL, auth, real_orchestrator, served, settings_for


def test_default_ports_are_the_specs() -> None:
    assert GatewaySettings.model_fields["port"].default == 3000
    assert OrchestratorSettings.model_fields["port"].default == 8000


async def test_troubleshooting_commands_answer(pg_dsn: str, tmp_path: Path) -> None:
    async with (
        real_orchestrator(pg_dsn, tmp_path / "orch") as orchestrator,
        httpx.AsyncClient(transport=orchestrator, base_url=ORCH_URL) as orch,
        served(settings_for(tmp_path / "gw"), orchestrator) as gw,
    ):
        # curl http://localhost:3000/voice/providers/current
        r = await gw.client.get("/voice/providers/current", headers=auth())
        assert r.status_code == 200 and r.json()["provider"] == "generic-http"
        # curl http://localhost:3000/voice/providers/test
        r = await gw.client.get("/voice/providers/test", headers=auth())
        assert r.status_code == 200
        assert r.json()["provider"] == "generic-http" and r.json()["call_placed"] is False
        assert "status" in r.json() and "ok" in r.json()
        for path in ("/voice/providers/current", "/voice/providers/test"):
            denied = await gw.client.get(path)
            assert denied.status_code == 401 and denied.json()["error"]["code"] == "unauthorized"
        # curl -X POST -H "Authorization: Bearer $TOKEN" http://localhost:3000/voice/webhook/test
        r = await gw.client.post("/voice/webhook/test", headers=auth())
        assert r.status_code == 200 and r.json()["status"] == "ok"
        assert r.json()["public_url"].endswith("/voice/webhook/test")
        # curl http://localhost:3000/health/database
        r = await gw.client.get("/health/database")
        assert r.status_code == 200 and r.json()["status"] in ("in-memory", "connected")
        # curl http://localhost:8000/health/database
        r = await orch.get("/health/database")
        assert r.status_code == 200 and r.json()["checks"]["postgres"]["status"] == "connected"
        # curl http://localhost:3000/ws/status
        r = await gw.client.get("/ws/status", headers=auth())
        assert r.status_code == 200 and r.json()["connected_clients"] == 0
        # and the scrape targets of deploy/monitoring/prometheus.yml
        assert (await gw.client.get("/metrics")).status_code == 200
        assert (await orch.get("/metrics")).status_code == 200
