"""generic-http webhooks that fail a check change nothing: no call, no event, a JSON error."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path

import pytest

from tests.gateway.conftest import (
    GH_SECRET,
    WEBHOOK,
    Gateway,
    auth,
    gateway,
    new_call_id,
    said,
    settings_for,
    sign,
    started,
)


async def assert_nothing_happened(gw: Gateway, call_id: str) -> None:
    assert await gw.rt.calls.get(call_id) is None
    assert gw.rt.bus.events_published == 0
    r = await gw.client.get(f"/voice/calls/{call_id}/status", headers=auth())
    assert r.status_code == 404 and r.json()["error"]["code"] == "call_not_found"


async def test_unsigned_event_is_rejected_401(gw: Gateway) -> None:
    call_id = new_call_id()
    r = await gw.client.post(WEBHOOK, json=started(call_id))
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_signature"
    assert "X-Gateway-Signature" in r.json()["error"]["message"]
    await assert_nothing_happened(gw, call_id)


@pytest.mark.parametrize(
    "secret", ["wrong-secret", GH_SECRET + "x"], ids=["other-secret", "near-miss"]
)
async def test_badly_signed_event_is_rejected_401(gw: Gateway, secret: str) -> None:
    call_id = new_call_id()
    r = await gw.send(started(call_id), secret=secret)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_signature"
    await assert_nothing_happened(gw, call_id)


async def test_tampered_body_is_rejected_401(gw: Gateway) -> None:
    call_id = new_call_id()
    body = json.dumps(started(call_id)).encode()
    headers = sign(body)
    r = await gw.client.post(WEBHOOK, content=body.replace(b"+1555", b"+1666"), headers=headers)
    assert r.status_code == 401
    await assert_nothing_happened(gw, call_id)


@pytest.mark.parametrize("skew_s", [-301, 301, -3600])
async def test_stale_or_future_timestamp_is_rejected_401(gw: Gateway, skew_s: int) -> None:
    call_id = new_call_id()
    r = await gw.send(started(call_id), ts=int(time.time()) + skew_s)
    assert r.status_code == 401 and r.json()["error"]["code"] == "stale_request"
    await assert_nothing_happened(gw, call_id)


async def test_timestamp_within_tolerance_is_accepted(gw: Gateway) -> None:
    r = await gw.send(started(new_call_id()), ts=int(time.time()) - 290)
    assert r.status_code == 200, r.text


async def test_non_numeric_timestamp_is_rejected_401(gw: Gateway) -> None:
    call_id = new_call_id()
    body = json.dumps(started(call_id)).encode()
    headers = sign(body)
    headers["X-Gateway-Timestamp"] = "yesterday"
    r = await gw.client.post(WEBHOOK, content=body, headers=headers)
    assert r.status_code == 401
    await assert_nothing_happened(gw, call_id)


async def test_replayed_event_id_is_rejected_409_and_emits_nothing_more(gw: Gateway) -> None:
    call_id = new_call_id()
    ev = said(call_id, "1", "hello")
    assert (await gw.send(started(call_id))).status_code == 200
    assert (await gw.send(ev)).status_code == 200
    published = gw.rt.bus.events_published
    turns = (await gw.rt.calls.get(call_id)).turns  # type: ignore[union-attr]
    replay = await gw.send(ev)  # same event, freshly signed
    assert replay.status_code == 409
    assert replay.json()["error"]["code"] == "replayed_event"
    assert gw.rt.bus.events_published == published
    assert (await gw.rt.calls.get(call_id)).turns == turns  # type: ignore[union-attr]


async def test_rotated_secret_any_v1_signature_matches(data_dir: Path) -> None:
    async with gateway(settings_for(data_dir, generic_http_secret="new-secret")) as gw:
        body = json.dumps(said(new_call_id(), "1", "hi")).encode()
        ts = str(int(time.time()))

        def mac(secret: str) -> str:
            return hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()

        headers = {
            "Content-Type": "application/json",
            "X-Gateway-Timestamp": ts,
            "X-Gateway-Signature": f"v1={mac('old-secret')}, v1={mac('new-secret')}",
        }
        r = await gw.client.post(WEBHOOK, content=body, headers=headers)
        assert r.status_code == 200, r.text  # orchestrator unreachable here: fallback actions
        headers["X-Gateway-Signature"] = f"v1={mac('old-secret')}"
        r = await gw.client.post(WEBHOOK, content=body, headers=headers)
        assert r.status_code == 401


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"type": "call.exploded", "event_id": "e1", "call_id": "c1"}', "call.exploded"),
        (b'{"type": "call.input", "event_id": "e1", "call_id": "c1"}', "turn_id"),
        (
            b'{"type": "call.input", "event_id": "e2", "call_id": "c1", "turn_id": "1",'
            b' "input": {"type": "speech", "confidence": 7}}',
            "input.confidence",
        ),
        (b'{"type": "call.status", "event_id": "e3", "call_id": "c1", "status": "x"}', "status"),
        (b'{"type": "call.started", "event_id": "e4", "call_id": "bad id/../x"}', "call_id"),
    ],
    ids=[
        "not-json",
        "not-object",
        "unknown-type",
        "missing-turn",
        "bad-confidence",
        "bad-status",
        "bad-call-id",
    ],
)
async def test_malformed_signed_body_is_400_json_naming_the_problem(
    gw: Gateway, body: bytes, needle: str
) -> None:
    r = await gw.client.post(WEBHOOK, content=body, headers=sign(body))
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] in ("bad_request", "validation_error")
    assert needle in err["message"]
    assert gw.rt.bus.events_published == 0


async def test_unknown_provider_is_404_json(gw: Gateway) -> None:
    r = await gw.client.post("/voice/webhook/skype", content=b"{}")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "unknown_provider"


async def test_get_on_the_generic_http_webhook_is_refused(gw: Gateway) -> None:
    r = await gw.client.get(WEBHOOK)
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


async def test_oversized_body_is_413_json(data_dir: Path) -> None:
    async with gateway(settings_for(data_dir, max_body_bytes=2048)) as gw:
        body = b'{"pad": "' + b"x" * 4096 + b'"}'
        r = await gw.client.post(WEBHOOK, content=body, headers=sign(body))
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


async def test_current_provider_webhook_is_generic_http(gw: Gateway) -> None:
    call_id = new_call_id()
    body = json.dumps(started(call_id)).encode()
    r = await gw.client.post("/voice/webhook", content=body, headers=sign(body))
    assert r.status_code == 200 and r.json()["actions"]
    assert await gw.rt.calls.get(call_id) is not None


async def test_dev_secret_is_generated_once_and_used(data_dir: Path) -> None:
    settings = settings_for(data_dir, generic_http_secret=None, app_env="development")
    async with gateway(settings) as gw:
        path = data_dir / "generic_http_secret"
        secret = path.read_text().strip()
        assert len(secret) >= 32
        body = json.dumps(said(new_call_id(), "1", "hi")).encode()
        r = await gw.client.post(WEBHOOK, content=body, headers=sign(body, secret=secret))
        assert r.status_code == 200
    async with gateway(settings):
        assert path.read_text().strip() == secret


def test_production_without_generic_http_secret_stops_start_up(data_dir: Path) -> None:
    from realtime_gateway.app import create_app
    from shared.config import ConfigError

    settings = settings_for(data_dir, generic_http_secret=None, app_env="production")
    with pytest.raises(ConfigError, match="GENERIC_HTTP_SECRET"):
        create_app(settings)


async def test_orchestrator_client_errors_never_reach_the_bridge_as_5xx(data_dir: Path) -> None:
    """No orchestrator at all (connection refused): the bridge still gets valid actions."""
    settings = settings_for(data_dir, orchestrator_url="http://127.0.0.1:9")
    async with gateway(settings) as gw:
        call_id = new_call_id()
        r = await gw.send(started(call_id))
        assert r.status_code == 200 and [a["type"] for a in r.json()["actions"]] == [
            "say",
            "gather",
        ]
        r = await gw.send(said(call_id, "1", "hello"))
        assert r.status_code == 200
        assert r.json()["actions"][0]["text"].startswith("Sorry")
