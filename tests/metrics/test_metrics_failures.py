"""Failures in the metrics: the gateway counts its failed calls to the orchestrator by reason
(failures injected with respx as the orchestrator's transport) and the turns answered with the
apology; the orchestrator counts a model that keeps failing (OpenAI faked with respx) and the
stage latencies of the turn it still answered."""

from __future__ import annotations

from pathlib import Path

import httpx
import respx

from shared.auth import ServiceTokenSource, mint_token
from tests.gateway.conftest import gateway, new_call_id, said, settings_for, started
from tests.gateway.test_orchestrator_failures import orchestrator_router, transport
from tests.metrics.conftest import delta, scrape
from tests.orchestrator.conftest import SECRET, make_settings, new_id, run_app
from tests.orchestrator.llm_fakes import OPENAI_BASE, FakeOpenAI, app_with_model

GH = "generic-http"


async def test_gateway_counts_orchestrator_errors_by_reason(tmp_path: Path) -> None:
    call_id = new_call_id()
    router = orchestrator_router(call_id)
    router.post(f"/conversations/{call_id}/messages").mock(
        side_effect=[
            httpx.Response(500, json={"error": {}}),  # 500, and 500 again on the retry
            httpx.Response(500, json={"error": {}}),
            httpx.ReadTimeout("orchestrator too slow"),
            httpx.Response(200, json={"not": "a turn reply"}),
            httpx.Response(409, json={"error": {"code": "conversation_ended", "message": "x"}}),
        ]
    )
    settings = settings_for(tmp_path, orchestrator_breaker_failures=100)
    async with gateway(settings, transport(router)) as gw:
        before = await scrape(gw.client)
        assert (await gw.send(started(call_id))).status_code == 200
        for turn in ("1", "2", "3", "4"):
            r = await gw.send(said(call_id, turn, "hello"))
            assert r.status_code == 200 and r.json()["actions"][0]["type"] == "say"
        after = await scrape(gw.client)

    errors = {
        reason: delta(after, before, "voice_orchestrator_errors_total", reason=reason)
        for reason in ("timeout", "unavailable", "bad_response")
    }
    assert errors == {"unavailable": 1, "timeout": 1, "bad_response": 2}
    assert delta(after, before, "voice_turns_total", provider=GH, outcome="fallback") == 4
    assert delta(after, before, "voice_turns_total", provider=GH, outcome="ok") == 0
    # the provider still got a valid answer every time
    assert delta(after, before, "voice_webhook_requests_total", provider=GH, outcome="ok") == 5
    assert delta(after, before, "voice_webhook_requests_total", provider=GH, outcome="error") == 0


async def test_orchestrator_counts_llm_errors_and_stage_latencies(
    pg_dsn: str, tmp_path: Path
) -> None:
    auth = {"Authorization": f"Bearer {ServiceTokenSource(SECRET).token()}"}
    cid = new_id()
    async with app_with_model(tmp_path, pg_dsn) as (app, fake):
        before = await scrape(app.client)
        start = {"call_id": cid, "provider": GH, "caller": "+15550003333"}
        r = await app.client.post(f"/conversations/{cid}/start", json=start, headers=auth)
        assert r.status_code == 200
        fake.reply("We open at nine.")
        turn = {"message": "When do you open?", "turn_id": "1"}
        r = await app.client.post(f"/conversations/{cid}/messages", json=turn, headers=auth)
        assert r.status_code == 200 and r.json()["reply"] == "We open at nine."
        for _ in range(5):
            fake.error(503)  # every attempt fails: the caller hears the fallback
        turn = {"message": "And on Sunday?", "turn_id": "2"}
        r = await app.client.post(f"/conversations/{cid}/messages", json=turn, headers=auth)
        assert r.status_code == 200 and r.json()["reply"]
        after = await scrape(app.client)

    assert delta(after, before, "voice_orchestrator_errors_total", reason="llm") == 1
    stage = "voice_turn_stage_duration_seconds"
    for name in ("input", "memory", "llm", "store", "total"):
        assert delta(after, before, f"{stage}_count", stage=name) == 2, name
    assert delta(after, before, f"{stage}_count", stage="tool") == 0
    llm = delta(after, before, f"{stage}_sum", stage="llm")
    total = delta(after, before, f"{stage}_sum", stage="total")
    assert 0 < llm <= total


async def test_orchestrator_counts_a_failing_tool(pg_dsn: str, tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, pg_dsn, openai_api_key="sk-test", openai_base_url=OPENAI_BASE
    )
    service = {"Authorization": f"Bearer {ServiceTokenSource(SECRET).token()}"}
    admin = {"Authorization": f"Bearer {mint_token(SECRET, sub='metrics-admin', role='admin')}"}
    tool = {
        "name": "opening_hours",
        "description": "Opening hours of a branch",
        "url": "http://tools.test/hours",
        "timeout_s": 1,
    }
    configuration = {"tools": [tool], "allowed_hosts": ["tools.test"],
                     "allow_private_networks": True}  # fmt: skip
    cid = new_id()
    with respx.mock(assert_all_called=False) as router:
        fake = FakeOpenAI(router)
        router.post("http://tools.test/hours").mock(side_effect=httpx.ConnectError("refused"))
        async with run_app(settings) as app:
            r = await app.client.post(
                "/agents/create",
                json={"name": "Hours", "configuration": configuration},
                headers=admin,
            )
            assert r.status_code == 201, r.text
            agent_id = r.json()["id"]
            start = {"call_id": cid, "provider": GH, "agent_id": agent_id}
            r = await app.client.post(f"/conversations/{cid}/start", json=start, headers=service)
            assert r.status_code == 200, r.text
            before = await scrape(app.client)
            fake.tool_call("opening_hours", {"branch": "north"})
            fake.reply("Sorry, I cannot check the hours right now.")
            turn = {"message": "When does the north branch open?", "turn_id": "1"}
            r = await app.client.post(f"/conversations/{cid}/messages", json=turn, headers=service)
            assert r.status_code == 200 and r.json()["reply"]
            after = await scrape(app.client)

    assert delta(after, before, "voice_orchestrator_errors_total", reason="tool") == 1
    assert delta(after, before, "voice_turn_stage_duration_seconds_count", stage="tool") == 1


async def test_a_turn_that_raises_counts_as_error_and_the_provider_gets_the_fallback(
    redis_url: str, tmp_path: Path
) -> None:
    """The live call's Redis key holds the wrong type (a real Redis error after the signature
    check passed): the turn raises, the driver answers its fallback, both are counted."""
    call_id = new_call_id()
    router = orchestrator_router(call_id)
    async with gateway(settings_for(tmp_path, redis_url=redis_url), transport(router)) as gw:
        assert gw.rt.redis is not None
        await gw.rt.redis.rpush(f"vao:gw:call:{call_id}", "not a call")
        before = await scrape(gw.client)
        r = await gw.send(said(call_id, "1", "hello"))
        assert r.status_code == 200 and r.json()["actions"][0]["type"] == "say"  # the apology
        after = await scrape(gw.client)
    assert delta(after, before, "voice_turns_total", provider=GH, outcome="error") == 1
    assert delta(after, before, "voice_webhook_requests_total", provider=GH, outcome="error") == 1
    assert delta(after, before, "voice_webhook_requests_total", provider=GH, outcome="ok") == 0
