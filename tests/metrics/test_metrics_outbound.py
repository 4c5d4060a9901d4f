"""An outbound call placed through the call API counts as a call started (direction outbound)
and active until it is ended through the API: the gauge returns to where it was. The
generic-http bridge's REST API is faked with respx; the gateway and the orchestrator are real."""

from __future__ import annotations

from pathlib import Path

import httpx
import respx

from tests.gateway.conftest import auth, gateway, real_orchestrator, settings_for
from tests.metrics.conftest import delta, scrape

BRIDGE = "https://bridge.example.com"
GH = "generic-http"


async def test_an_outbound_call_is_counted_and_active_until_ended(
    pg_dsn: str, tmp_path: Path
) -> None:
    bridge = respx.Router(base_url=BRIDGE, assert_all_called=False)
    bridge.post("/calls").respond(201, json={"call_id": "gh-out-1", "status": "queued"})
    bridge.post("/calls/gh-out-1/hangup").respond(200, json={})
    settings = settings_for(tmp_path / "gw", generic_http_base_url=BRIDGE)
    async with (
        real_orchestrator(pg_dsn, tmp_path / "orch") as orchestrator,
        gateway(
            settings, orchestrator, provider_transport=httpx.MockTransport(bridge.async_handler)
        ) as gw,
    ):
        before = await scrape(gw.client)
        r = await gw.client.post(
            "/voice/calls/initiate", json={"phone_number": "+14155550100"}, headers=auth()
        )
        assert r.status_code == 201, r.text
        placed = await scrape(gw.client)
        r = await gw.client.post("/voice/calls/gh-out-1/end", headers=auth())
        assert r.status_code == 200, r.text
        ended = await scrape(gw.client)

    assert delta(placed, before, "voice_calls_total", provider=GH, direction="outbound") == 1
    assert delta(placed, before, "voice_calls_total", provider=GH, direction="inbound") == 0
    assert delta(placed, before, "voice_active_calls", provider=GH) == 1
    assert delta(ended, before, "voice_active_calls", provider=GH) == 0
    initiate = {"method": "POST", "route": "/voice/calls/initiate", "code": "201"}
    assert delta(placed, before, "http_request_duration_seconds_count", **initiate) == 1
    assert "+14155550100" not in ended.text and "14155550100" not in ended.text
