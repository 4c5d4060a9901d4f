"""`/metrics` on both services after a simulated call: a whole generic-http call through the real
gateway (under uvicorn, with a real `/ws` client) and the real orchestrator on the real Postgres,
then both scrapes checked against the contract (`deploy/monitoring/metrics.yml`)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import websockets

from tests.gateway.conftest import (
    GH_SECRET,
    ORCH_URL,
    WEBHOOK,
    admin_token,
    auth,
    event,
    new_call_id,
    real_orchestrator,
    said,
    served,
    settings_for,
    sign,
    started,
)
from tests.metrics.conftest import SPEC_BUCKETS, Scrape, check_contract, delta, scrape

GH = "generic-http"
CALLER = "+15550001111"  # what started() sends as "from"


async def wait_for_ws_clients(client: httpx.AsyncClient, expected: float) -> Scrape:
    for _ in range(100):
        current = await scrape(client)
        if current.value("voice_ws_clients") == expected:
            return current
        await asyncio.sleep(0.02)
    raise AssertionError(f"voice_ws_clients never reached {expected}")


async def test_a_call_shows_in_the_metrics_of_both_services(pg_dsn: str, tmp_path: Path) -> None:
    call_id = new_call_id()
    async with (
        real_orchestrator(pg_dsn, tmp_path / "orch") as orchestrator,
        httpx.AsyncClient(transport=orchestrator, base_url=ORCH_URL) as orch,
        served(settings_for(tmp_path / "gw"), orchestrator) as gw,
    ):
        g0, o0 = await scrape(gw.client), await scrape(orch)
        assert g0.content_type.startswith("text/plain; version=0.0.4")

        async with websockets.connect(f"{gw.ws_url}?token={admin_token()}"):
            await wait_for_ws_clients(gw.client, 1)

            assert (await gw.send(started(call_id))).status_code == 200
            mid = await scrape(gw.client)
            assert delta(mid, g0, "voice_active_calls", provider=GH) == 1
            assert delta(mid, g0, "voice_calls_total", provider=GH, direction="inbound") == 1

            for turn, words in (("1", "What are your opening hours?"), ("2", "Thanks")):
                r = await gw.send(said(call_id, turn, words))
                assert r.status_code == 200 and r.json()["actions"], r.text
            # a forged event (wrong secret) and a signed but malformed one
            forged = await gw.send(said(call_id, "3", "hi"), secret="not-" + GH_SECRET)
            assert forged.status_code == 401
            body = b'{"type": "call.input"'
            bad = await gw.client.post(WEBHOOK, content=body, headers=sign(body))
            assert bad.status_code == 400
            status = await gw.client.get(f"/voice/calls/{call_id}/status", headers=auth())
            assert status.status_code == 200
            denied = await gw.client.get(f"/voice/calls/{call_id}/status")
            assert denied.status_code == 401
            nowhere = await gw.client.get("/no/such/route", headers=auth())
            assert nowhere.status_code == 404

            r = await gw.send(event("call.ended", call_id, reason="hangup", duration_s=3.0))
            assert r.status_code == 200
            g1, o1 = await scrape(gw.client), await scrape(orch)
            assert g1.value("voice_ws_clients") == 1
        g2 = await wait_for_ws_clients(gw.client, 0)

    # -- gateway ----------------------------------------------------------------------------
    check_contract(g1, "realtime-gateway")
    assert delta(g1, g0, "voice_active_calls", provider=GH) == 0  # back where it was
    assert delta(g1, g0, "voice_calls_total", provider=GH, direction="inbound") == 1
    assert delta(g1, g0, "voice_turns_total", provider=GH, outcome="ok") == 2
    assert delta(g1, g0, "voice_turns_total", provider=GH, outcome="fallback") == 0
    assert delta(g1, g0, "voice_turn_duration_seconds_count", provider=GH) == 2
    assert delta(g1, g0, "voice_turn_duration_seconds_sum", provider=GH) > 0
    webhooks = {
        outcome: delta(g1, g0, "voice_webhook_requests_total", provider=GH, outcome=outcome)
        for outcome in ("ok", "invalid_signature", "bad_request", "error")
    }
    assert webhooks == {"ok": 4, "invalid_signature": 1, "bad_request": 1, "error": 0}
    assert g2.value("voice_ws_clients") == 0

    http = "http_request_duration_seconds"
    webhook_route = {"method": "POST", "route": "/voice/webhook/{provider}"}
    assert delta(g1, g0, f"{http}_count", **webhook_route, code="200") == 4
    assert delta(g1, g0, f"{http}_count", **webhook_route, code="401") == 1
    assert delta(g1, g0, f"{http}_count", **webhook_route, code="400") == 1
    status_route = {"method": "GET", "route": "/voice/calls/{call_id}/status"}
    assert delta(g1, g0, f"{http}_count", **status_route, code="200") == 1
    # answered by the auth middleware before routing: still labelled with its route
    assert delta(g1, g0, f"{http}_count", **status_route, code="401") == 1
    assert delta(g1, g0, f"{http}_count", method="GET", route="unmatched", code="404") == 1
    # cumulative buckets: the spec's bounds, +Inf equal to the count
    assert set(map(float, SPEC_BUCKETS)) <= set(g1.buckets(http, **webhook_route, code="200"))
    inf = g1.value(f"{http}_bucket", **webhook_route, code="200", le="+Inf")
    assert inf == g1.value(f"{http}_count", **webhook_route, code="200")
    # bounded labels: templates only, never a call id, a phone number or a raw path
    routes = g1.series_with(http, "route")
    assert all(r == "unmatched" or r.startswith("/") for r in routes)
    assert not any(call_id in r or "/no/such" in r for r in routes)
    for secret in (call_id, CALLER, CALLER[1:], "no/such/route", admin_token()):
        assert secret not in g1.text

    # -- orchestrator -----------------------------------------------------------------------
    check_contract(o1, "orchestrator")
    stage = "voice_turn_stage_duration_seconds"
    for name in ("input", "memory", "store", "total"):
        assert delta(o1, o0, f"{stage}_count", stage=name) == 2, name
    assert delta(o1, o0, f"{stage}_sum", stage="total") > 0
    assert delta(o1, o0, f"{stage}_sum", stage="total") >= delta(
        o1, o0, f"{stage}_sum", stage="input"
    )
    turn_route = {"method": "POST", "route": "/conversations/{conversation_id}/messages"}
    assert delta(o1, o0, f"{http}_count", **turn_route, code="200") == 2
    start_route = {"method": "POST", "route": "/conversations/{conversation_id}/start"}
    assert delta(o1, o0, f"{http}_count", **start_route, code="200") == 1
    assert sum(delta(o1, o0, "voice_orchestrator_errors_total", reason=r)
               for r in ("llm", "tool", "store", "internal")) == 0  # fmt: skip
    for secret in (call_id, CALLER, CALLER[1:]):
        assert secret not in o1.text


async def test_metrics_need_no_token_and_nothing_else_is_opened(
    pg_dsn: str, tmp_path: Path
) -> None:
    async with (
        real_orchestrator(pg_dsn, tmp_path / "orch") as orchestrator,
        httpx.AsyncClient(transport=orchestrator, base_url=ORCH_URL) as orch,
        served(settings_for(tmp_path / "gw"), orchestrator) as gw,
    ):
        for client in (gw.client, orch):
            r = await client.get("/metrics")
            assert r.status_code == 200 and "http_request_duration_seconds_bucket" in r.text
            assert "process_cpu_seconds_total" in r.text  # the process collectors too
            om = await client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
            assert om.headers["content-type"].startswith("application/openmetrics-text")
            assert om.text.rstrip().endswith("# EOF")
        # the gateway's default-deny still covers everything else
        for path in ("/metrics/extra", "/metricsx", "/voice/calls/x/status", "/ws/status"):
            r = await gw.client.get(path)
            assert r.status_code == 401, path
        # the orchestrator's management routes still need a token
        r = await orch.get("/agents")
        assert r.status_code == 401
        # the gateway's metrics are not the orchestrator's
        g, o = await scrape(gw.client), await scrape(orch)
        assert "voice_webhook_requests" in g.types and "voice_webhook_requests" not in o.types
        assert "voice_turn_stage_duration_seconds" in o.types
        assert "voice_turn_stage_duration_seconds" not in g.types
        assert json.loads(json.dumps(sorted(g.types)))  # parsed without error
