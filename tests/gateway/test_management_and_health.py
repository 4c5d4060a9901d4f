"""Management auth on every non-webhook, non-health route; `/health` with real checks;
the minimal provider and call-status endpoints; the lazy driver registry."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from realtime_gateway.drivers import registry
from shared.auth import mint_token
from tests.gateway.conftest import (
    JWT_SECRET,
    Gateway,
    auth,
    gateway,
    new_call_id,
    settings_for,
    started,
)

MANAGEMENT = [
    ("GET", "/ws/status"),
    ("GET", "/voice/providers/current"),
    ("GET", "/voice/calls/anything/status"),
    ("GET", "/voice/calls"),
    ("POST", "/voice/calls/initiate"),
    ("GET", "/no/such/route"),
]


@pytest.mark.parametrize(("method", "path"), MANAGEMENT)
async def test_management_endpoints_need_a_bearer_token(
    gw: Gateway, method: str, path: str
) -> None:
    r = await gw.client.request(method, path)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        mint_token("another-secret-" + "z" * 32, sub="x", role="admin"),
        mint_token(JWT_SECRET, sub="x", role="admin", ttl_s=-60),
        mint_token(JWT_SECRET, sub="x", role="service"),
    ],
    ids=["garbage", "wrong-secret", "expired", "service-token"],
)
async def test_bad_tokens_are_401(gw: Gateway, token: str) -> None:
    r = await gw.client.get("/ws/status", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


async def test_a_valid_token_passes_and_unknown_call_is_404(gw: Gateway) -> None:
    r = await gw.client.get("/voice/calls/nope/status", headers=auth())
    assert r.status_code == 404 and r.json()["error"]["code"] == "call_not_found"
    r = await gw.client.get("/no/such/route", headers=auth())
    assert r.status_code == 404 and "error" in r.json()


async def test_health_is_public_and_healthy_with_the_real_orchestrator(gw: Gateway) -> None:
    r = await gw.client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "healthy", body
    assert body["services"] == {
        "database": "in-memory",
        "orchestrator": "connected",
        "voice_provider": "connected",
    }
    assert body["version"] and body["timestamp"].endswith("Z")
    assert r.headers["x-request-id"]
    db = await gw.client.get("/health/database")
    assert db.status_code == 200 and db.json()["status"] == "in-memory"


async def test_health_is_degraded_naming_a_misconfigured_provider(data_dir: Path) -> None:
    settings = settings_for(
        data_dir, voice_provider="vonage", orchestrator_url="http://127.0.0.1:9"
    )
    async with gateway(settings) as gw:
        body = (await gw.client.get("/health")).json()
        assert body["status"] == "degraded"
        assert set(body["degraded"]) == {"orchestrator", "voice_provider"}
        assert body["services"]["voice_provider"] != "connected"


async def test_health_database_is_503_when_redis_is_down(data_dir: Path) -> None:
    settings = settings_for(data_dir, redis_url="redis://127.0.0.1:1/0")
    app_gw = gateway(settings)
    async with app_gw as gw:
        r = await gw.client.get("/health/database")
        assert r.status_code == 503 and r.json()["status"] == "unavailable"
        body = (await gw.client.get("/health")).json()
        assert "database" in body["degraded"]


async def test_current_provider_endpoint(gw: Gateway) -> None:
    r = await gw.client.get("/voice/providers/current", headers=auth())
    assert r.status_code == 200
    body = r.json()
    assert body["provider"] == "generic-http" and body["status"] == "active"
    assert "voice" in body["capabilities"]
    assert body["available_providers"] == ["twilio", "vonage", "aws-connect", "generic-http"]


async def test_a_driver_that_cannot_be_imported_breaks_only_its_provider(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(registry.DRIVERS, "twilio", "realtime_gateway.drivers.no_such:Nope")
    monkeypatch.setattr(gw.rt.drivers, "_drivers", {})
    r = await gw.client.post("/voice/webhook/twilio", data={"CallSid": "CA1"})
    assert r.status_code == 503
    err = r.json()["error"]
    assert err["code"] == "provider_unavailable" and "no_such" in err["message"]
    call_id = new_call_id()
    assert (await gw.send(started(call_id))).status_code == 200


async def test_public_url_follows_forwarded_headers_only_when_trusted(data_dir: Path) -> None:
    from starlette.requests import Request

    from realtime_gateway.routes.webhooks import public_url

    scope = {
        "type": "http",
        "method": "POST",
        "scheme": "http",
        "server": ("10.0.0.5", 3000),
        "path": "/voice/webhook/twilio",
        "query_string": b"turn=2",
        "headers": [
            (b"host", b"10.0.0.5:3000"),
            (b"x-forwarded-proto", b"https"),
            (b"x-forwarded-host", b"gw.example.com"),
        ],
    }
    req = Request(scope)
    trusted = settings_for(data_dir, public_base_url=None, trust_proxy=True)
    untrusted = settings_for(data_dir, public_base_url=None, trust_proxy=False)
    public = settings_for(data_dir, public_base_url="https://voice.example.org")
    assert public_url(req, trusted) == "https://gw.example.com/voice/webhook/twilio?turn=2"
    assert public_url(req, untrusted) == "http://10.0.0.5:3000/voice/webhook/twilio?turn=2"
    assert public_url(req, public) == "https://voice.example.org/voice/webhook/twilio?turn=2"


def test_start_up_imports_no_provider_sdk() -> None:
    """Lean start-up: building the app (generic-http) imports no twilio/vonage/boto3/supabase."""
    code = (
        "import sys; from realtime_gateway.app import create_app; "
        "heavy = [m for m in ('twilio', 'vonage', 'boto3', 'botocore', 'supabase', 'chromadb')"
        " if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""


async def test_request_id_is_propagated_to_the_orchestrator(data_dir: Path) -> None:
    seen: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("x-request-id", ""))
        return httpx.Response(500)

    async with gateway(settings_for(data_dir), httpx.MockTransport(handler)) as gw:
        body_call = new_call_id()
        import json

        from tests.gateway.conftest import sign

        body = json.dumps(started(body_call)).encode()
        headers = {**sign(body), "X-Request-ID": "req-abc-123"}
        t0 = time.perf_counter()
        r = await gw.client.post("/voice/webhook/generic-http", content=body, headers=headers)
        assert r.status_code == 200 and time.perf_counter() - t0 < 2
        assert r.headers["x-request-id"] == "req-abc-123"
    assert seen and set(seen) == {"req-abc-123"}


async def test_webhook_test_endpoint_shows_the_public_url(gw: Gateway) -> None:
    r = await gw.client.post("/voice/webhook/test?x=1", headers=auth())
    assert r.status_code == 200
    body = r.json()
    assert body["public_url"] == "http://gateway.test/voice/webhook/test?x=1"
    assert body["current_provider"] == "generic-http"


async def test_access_log_has_request_id_and_no_query_or_secrets(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    async with gateway(settings_for(data_dir)) as gw:
        capsys.readouterr()
        r = await gw.client.get(
            "/ws/status?token=secret-token-value&from=+15550001111",
            headers={"X-Request-ID": "req-log-1"},
        )
        assert r.status_code == 401
        r = await gw.send(started(new_call_id()))
        assert r.status_code == 200
        out = capsys.readouterr().out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    access = [rec for rec in lines if rec.get("logger") == "realtime_gateway.access"]
    first = next(rec for rec in access if rec["request_id"] == "req-log-1")
    assert first["path"] == "/ws/status" and first["status"] == 401 and first["method"] == "GET"
    assert any(rec["path"] == "/voice/webhook/generic-http" for rec in access)
    assert "secret-token-value" not in out and "+15550001111" not in out
    assert "duration_ms" in first
