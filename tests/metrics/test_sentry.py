"""Sentry: started by `create_app` only when `SENTRY_DSN` is set, with the environment from
APP_ENV/NODE_ENV; an error forced in each real service (Redis gone on the gateway, the database
pool closed under the orchestrator) reaches a capturing transport (a `sentry_sdk.Transport`
subclass: nothing leaves the process) with phone numbers masked and tokens, signatures and query
strings removed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from realtime_gateway import __version__ as gateway_version
from realtime_gateway.app import create_app
from realtime_gateway.config import GatewaySettings
from shared.auth import ServiceTokenSource
from shared.sentry import init_sentry, scrub_event
from tests.gateway.conftest import (
    JWT_SECRET,
    ORCH_URL,
    WEBHOOK,
    admin_token,
    gateway,
    new_call_id,
    real_orchestrator,
    settings_for,
    sign,
    started,
)
from tests.metrics.conftest import delta, scrape

DSN = "http://public@127.0.0.1:9/1"  # never contacted: the transport is ours
DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1
PHONE = "+15550001111"
MASKED = "+1555***1111"


class CapturingTransport(Transport):
    def __init__(self) -> None:
        super().__init__()
        self.envelopes: list[Envelope] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)

    def events(self) -> list[dict[str, Any]]:
        return [
            event
            for envelope in self.envelopes
            for item in envelope.items
            if (event := item.get_event()) is not None
        ]


@pytest.fixture
def sentry_off() -> Iterator[None]:
    """Leaves no Sentry client behind for the rest of the suite."""
    yield
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)


@pytest.fixture
def captured(sentry_off: None, tmp_path: Path) -> CapturingTransport:
    transport = CapturingTransport()
    settings = settings_for(tmp_path, sentry_dsn=DSN)
    assert init_sentry(settings, "realtime-gateway", gateway_version, transport=transport)
    return transport


def no_secrets(event: dict[str, Any], *secrets: str) -> str:
    text = json.dumps(event)
    for secret in (PHONE, PHONE[1:], *secrets):
        assert secret not in text, f"{secret[:12]}... reached Sentry"
    return text


def test_sentry_starts_only_with_a_dsn_and_takes_node_env(
    sentry_off: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_app(settings_for(tmp_path))
    assert not sentry_sdk.get_client().is_active()

    monkeypatch.delenv("APP_ENV", raising=False)
    monkeypatch.setenv("NODE_ENV", "development")
    settings = GatewaySettings(  # type: ignore[call-arg]
        _env_file=None, data_dir=tmp_path, jwt_secret=JWT_SECRET, sentry_dsn=DSN
    )
    create_app(settings)
    client = sentry_sdk.get_client()
    assert client.is_active()
    assert client.options["environment"] == "development"
    assert client.options["release"] == f"realtime-gateway@{gateway_version}"
    assert client.options["send_default_pii"] is False
    assert client.options["before_send"] is scrub_event
    # only what we use: no start-up import of every library Sentry supports
    assert {"starlette", "logging"} <= set(client.integrations)
    assert not {"langchain", "boto3", "huggingface_hub", "redis"} & set(client.integrations)


async def test_gateway_error_reaches_sentry_scrubbed(
    captured: CapturingTransport, tmp_path: Path
) -> None:
    token = admin_token()
    call_id = new_call_id()
    body = json.dumps(started(call_id)).encode()
    async with gateway(settings_for(tmp_path / "gw", redis_url=DEAD_REDIS)) as gw:
        before = await scrape(gw.client)
        r = await gw.client.post(
            f"{WEBHOOK}?token={token}&to=%2B15550001111",
            content=body,
            headers={**sign(body), "Authorization": f"Bearer {token}", "Cookie": f"s={token}"},
        )
        # Redis is down: the bridge still gets its answer (the apology), never a 5xx
        assert r.status_code == 200 and r.json()["actions"][0]["type"] == "say"
        after = await scrape(gw.client)
    gh = "generic-http"
    assert delta(after, before, "voice_webhook_requests_total", provider=gh, outcome="error") == 1
    sentry_sdk.flush()

    (event,) = [e for e in captured.events() if e.get("logger") == "realtime_gateway.drivers.base"]
    assert event["level"] == "error" and event["environment"] == "test"
    assert event["release"] == f"realtime-gateway@{gateway_version}"
    assert event["tags"]["service"] == "realtime-gateway"
    text = no_secrets(event, token, token.split(".")[2], r.request.headers["x-gateway-signature"])
    assert MASKED in text  # masked, not dropped: calls can still be told apart
    request = event["request"]
    assert request["headers"]["authorization"] == "[redacted]"
    assert request["headers"]["x-gateway-signature"] == "[redacted]"
    assert request["query_string"] == "[redacted]" and "?" not in request["url"]
    assert "cookies" not in request and request["data"]["from"] == MASKED
    assert event["exception"]["values"][0]["stacktrace"]["frames"]  # the traceback is kept


async def test_orchestrator_error_reaches_sentry_scrubbed(
    captured: CapturingTransport, pg_dsn: str, tmp_path: Path
) -> None:
    token = ServiceTokenSource(JWT_SECRET).token()
    call_id = new_call_id()
    async with (
        real_orchestrator(pg_dsn, tmp_path / "orch") as transport,
        httpx.AsyncClient(transport=transport, base_url=ORCH_URL) as orch,
    ):
        before = await scrape(orch)
        database = transport.app.state["database"]  # type: ignore[attr-defined]
        await database.pool.close()  # the database goes away under a running orchestrator
        r = await orch.post(
            f"/conversations/{call_id}/start?to=%2B15550001111",
            json={"call_id": call_id, "provider": "generic-http", "caller": PHONE},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 503 and r.json()["error"]["code"] == "database_unavailable"
        after = await scrape(orch)
    assert delta(after, before, "voice_orchestrator_errors_total", reason="store") == 1
    sentry_sdk.flush()

    (event,) = [e for e in captured.events() if e.get("logger") == "orchestrator.store.database"]
    assert event["level"] == "error"
    text = no_secrets(event, token, token.split(".")[2])
    assert MASKED in text
    assert event["request"]["headers"]["authorization"] == "[redacted]"
    assert event["request"]["data"]["caller"] == MASKED


def test_scrub_event_reaches_every_corner() -> None:
    jwt = admin_token()
    event: dict[str, Any] = {
        "event_id": "0123456789abcdef0123456789abcdef",
        "timestamp": "2026-11-25T09:00:00Z",
        "message": f"call from {PHONE} failed; Authorization: Bearer {jwt}",
        "request": {
            "url": f"https://gw.example/voice/webhook/twilio?From=%2B15550001111&token={jwt}",
            "query_string": f"From=%2B15550001111&token={jwt}",
            "cookies": {"session": jwt},
            "headers": [["Authorization", f"Bearer {jwt}"], ["X-Twilio-Signature", "abc="]],
            "data": {"From": "15550001111", "To": "+44 20 7946 0958", "SpeechResult": "hi"},
        },
        "exception": {"values": [{
            "value": f"no agent for 15550001111 ({jwt})",
            "stacktrace": {"frames": [{"vars": {
                "jwt_secret": "s3cr3t-value", "api_key": "sk-live-123", "caller": PHONE,
                "scope": {"query_string": "b'token=abc'", "path": "/voice/calls/x/status"},
                "webhook": "WebhookRequest(url='https://gw.example/x?token=abc&to=%2B15550001111')",
            }}]},
        }]},
        "breadcrumbs": {"values": [{"message": f"sent to {PHONE}", "data": {"to": PHONE}}]},
        "extra": {"numbers": [PHONE, "not a number"], "password": "hunter2"},
    }  # fmt: skip
    out = scrub_event(event, {})  # type: ignore[arg-type]
    assert out is not None
    text = json.dumps(out)
    for secret in (PHONE, "15550001111", "7946 0958", jwt, "s3cr3t", "sk-live", "hunter2",
                   "abc=", "token=abc"):  # fmt: skip
        assert secret not in text, secret
    assert out["event_id"] == event["event_id"] and out["timestamp"] == event["timestamp"]
    assert out["request"]["url"] == "https://gw.example/voice/webhook/twilio"
    assert out["request"]["data"]["SpeechResult"] == "hi"
    assert "cookies" not in out["request"]
    assert out["extra"]["numbers"] == [MASKED, "not a number"]
    frame = out["exception"]["values"][0]["stacktrace"]["frames"][0]["vars"]
    assert frame["caller"] == MASKED and frame["scope"]["path"] == "/voice/calls/x/status"
