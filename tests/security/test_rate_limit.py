"""Rate limiting (issue 8, item 2): 100 management requests per 15 minutes per client, the
101st is 429 JSON with Retry-After, shared through Redis by two app instances; the service token
and valid signed webhooks are never throttled, forged webhook floods are."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from twilio.request_validator import RequestValidator

from shared.auth import ServiceTokenSource, mint_token
from tests.gateway.conftest import (
    JWT_SECRET,
    PUBLIC,
    WEBHOOK,
    gateway,
    new_call_id,
    settings_for,
    sign,
    started,
)
from tests.orchestrator.conftest import SECRET as ORCH_SECRET
from tests.orchestrator.conftest import make_settings as orch_settings
from tests.orchestrator.conftest import run_app

READ = "/voice/providers/current"


def bearer(secret: str, sub: str, role: str = "viewer") -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(secret, sub=sub, role=role)}"}


def assert_429(r: httpx.Response) -> None:
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "rate_limited"
    retry = int(r.headers["retry-after"])
    assert 1 <= retry <= 15 * 60


async def test_gateway_101st_management_request_is_429(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    async with gateway(settings_for(data_dir), orchestrator) as g:
        alice = bearer(JWT_SECRET, "alice")
        for i in range(100):
            r = await g.client.get(READ, headers=alice)
            assert r.status_code == 200, (i, r.text)
        assert_429(await g.client.get(READ, headers=alice))
        # another client (another `sub`) has its own budget; health and webhooks are exempt
        assert (await g.client.get(READ, headers=bearer(JWT_SECRET, "bob"))).status_code == 200
        assert (await g.client.get("/health")).status_code == 200
        body = json.dumps(started(new_call_id())).encode()
        assert (await g.client.post(WEBHOOK, content=body, headers=sign(body))).status_code == 200


async def test_gateway_limit_is_shared_by_two_instances_through_redis(
    data_dir: Path, orchestrator: httpx.ASGITransport, redis_url: str
) -> None:
    settings = settings_for(data_dir, redis_url=redis_url)  # the default: 100 per 15 minutes
    async with gateway(settings, orchestrator) as a, gateway(settings, orchestrator) as b:
        carol = bearer(JWT_SECRET, "carol")
        for i in range(100):
            r = await (a if i % 2 else b).client.get(READ, headers=carol)
            assert r.status_code == 200, (i, r.text)
        assert_429(await a.client.get(READ, headers=carol))
        assert_429(await b.client.get(READ, headers=carol))


async def test_unauthenticated_clients_are_limited_by_address_and_spoofed_xff_is_ignored(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    settings = settings_for(data_dir, rate_limit_management="3/minute")
    async with gateway(settings, orchestrator) as g:
        for i in range(3):
            r = await g.client.get(READ, headers={"X-Forwarded-For": f"10.0.0.{i}"})
            assert r.status_code == 401
        # without TRUST_PROXY a forged X-Forwarded-For does not buy a new budget
        assert_429(await g.client.get(READ, headers={"X-Forwarded-For": "10.9.9.9"}))
    trusted = settings_for(data_dir, rate_limit_management="3/minute", trust_proxy=True)
    async with gateway(trusted, orchestrator) as g:
        for _ in range(3):
            r = await g.client.get(READ, headers={"X-Forwarded-For": "1.2.3.4, 10.0.0.1"})
            assert r.status_code == 401
        assert_429(await g.client.get(READ, headers={"X-Forwarded-For": "9.9.9.9, 10.0.0.1"}))
        # the proxy's last hop is the client: another address, another budget
        r = await g.client.get(READ, headers={"X-Forwarded-For": "1.2.3.4, 10.0.0.2"})
        assert r.status_code == 401


async def test_valid_signed_webhooks_are_never_throttled_forged_ones_are(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    settings = settings_for(data_dir, rate_limit_webhook_failures="5/minute")
    async with gateway(settings, orchestrator) as g:
        forged: list[int] = []
        for _ in range(12):
            body = json.dumps(started(new_call_id())).encode()
            headers = sign(body, secret="not-the-secret")
            forged.append((await g.client.post(WEBHOOK, content=body, headers=headers)).status_code)
        assert forged[:5] == [401] * 5
        assert set(forged[5:]) == {429}
        # the same address keeps getting its valid signed traffic answered: a busy hour
        for _ in range(150):
            body = json.dumps(started(new_call_id())).encode()
            r = await g.client.post(WEBHOOK, content=body, headers=sign(body))
            assert r.status_code == 200, r.text
        unsigned = await g.client.post(WEBHOOK, json=started(new_call_id()))
        assert_429(unsigned)


async def test_twilio_forged_flood_is_throttled_signed_twilio_traffic_is_not(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    token = "rate-limit-twilio-token"
    settings = settings_for(
        data_dir,
        voice_provider="twilio",
        twilio_account_sid="AC" + "3" * 32,
        twilio_auth_token=token,
        twilio_phone_number="+15550009999",
        rate_limit_webhook_failures="3/minute",
    )
    path = "/voice/webhook/twilio"
    async with gateway(settings, orchestrator) as g:
        statuses = []
        for i in range(6):
            form = {"CallSid": f"CA{i:032d}", "AccountSid": "AC" + "3" * 32, "From": "+15550001111"}
            headers = {"X-Twilio-Signature": "Zm9yZ2Vk"}
            statuses.append((await g.client.post(path, data=form, headers=headers)).status_code)
        assert statuses[:3] == [403] * 3 and set(statuses[3:]) == {429}, statuses
        for i in range(40):
            form = {
                "CallSid": f"CA{i + 100:032d}",
                "AccountSid": "AC" + "3" * 32,
                "From": "+15550001111",
                "To": "+15550009999",
                "CallStatus": "ringing",
            }
            sig = RequestValidator(token).compute_signature(f"{PUBLIC}{path}", form)
            r = await g.client.post(path, data=form, headers={"X-Twilio-Signature": sig})
            assert r.status_code == 200 and r.text.startswith("<?xml"), r.text


async def test_orchestrator_101st_management_request_is_429_service_token_never(
    pg_dsn: str, data_dir: Path
) -> None:
    async with run_app(orch_settings(data_dir, pg_dsn)) as orch:
        dave = bearer(ORCH_SECRET, "dave")
        for i in range(100):
            r = await orch.client.get("/agents", headers=dave)
            assert r.status_code == 200, (i, r.text)
        assert_429(await orch.client.get("/agents", headers=dave))
        assert (await orch.client.get("/health")).status_code == 200
        service = {"Authorization": f"Bearer {ServiceTokenSource(ORCH_SECRET).token()}"}
        start: dict[str, Any] = {"call_id": "rl-1", "provider": "twilio", "direction": "inbound"}
        assert (
            await orch.client.post("/conversations/rl-1/start", json=start, headers=service)
        ).status_code == 200
        for i in range(120):
            body = {"message": f"hello {i}", "turn_id": f"t{i}", "context": {"call_id": "rl-1"}}
            r = await orch.client.post("/conversations/rl-1/messages", json=body, headers=service)
            assert r.status_code == 200, (i, r.text)


async def test_orchestrator_limit_is_shared_through_redis(
    pg_dsn: str, data_dir: Path, redis_url: str
) -> None:
    settings = orch_settings(
        data_dir, pg_dsn, redis_url=redis_url, rate_limit_management="6/15minutes"
    )
    async with run_app(settings) as a, run_app(settings) as b:
        erin = bearer(ORCH_SECRET, "erin")
        for i in range(6):
            assert (
                await (a if i % 2 else b).client.get("/agents", headers=erin)
            ).status_code == 200
        assert_429(await b.client.get("/agents", headers=erin))


@pytest.mark.parametrize("value", ["lots", "100 per fortnight", ""])
def test_a_malformed_rate_names_the_variable(data_dir: Path, value: str) -> None:
    from realtime_gateway.config import get_settings
    from shared.config import ConfigError

    with pytest.raises(ConfigError, match="RATE_LIMIT_MANAGEMENT"):
        get_settings(_env_file=None, data_dir=data_dir, rate_limit_management=value)


async def test_an_unreachable_counter_store_fails_open(caplog: pytest.LogCaptureFixture) -> None:
    """Redis down must not become a management outage (nor dead air): allowed, and logged."""
    import logging

    from shared.ratelimit import RateLimiter

    caplog.set_level(logging.WARNING, logger="shared.ratelimit")
    limiter = RateLimiter("1/minute", "redis://127.0.0.1:9/0", "fail-open")
    for _ in range(3):
        decision = await limiter.hit("ip:192.0.2.1")
        assert decision.allowed
    await limiter.aclose()
    logged = [
        r
        for r in caplog.records
        if r.name == "shared.ratelimit"
        and r.getMessage().startswith("rate limit store unavailable")
    ]
    assert len(logged) == 3, [r.getMessage() for r in caplog.records]
    assert all(r.levelno == logging.WARNING for r in logged)
    assert all(getattr(r, "namespace", None) == "fail-open" for r in logged)
    assert all(getattr(r, "error", "") for r in logged)  # the kind of failure is named
