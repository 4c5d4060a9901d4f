"""`POST /voice/webhook/test` through the real gateway app under uvicorn, once per provider:
a synthetic call start signed the provider's way verifies and is answered with TwiML / NCCO /
JSON / a Connect map that parses as the provider expects, and nothing live changes (no call,
no `/ws` event, no orchestrator request, no replay key). Unconfigured providers are reported
`not_configured`, naming the variables."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from realtime_gateway.calls import MemoryCallStore
from realtime_gateway.config import GatewaySettings
from realtime_gateway.drivers.base import DriverDeps
from realtime_gateway.drivers.registry import load_driver_class
from realtime_gateway.vocabulary import SYNTHETIC_CALLER, CallInfo
from realtime_gateway.webhook_selftest import SELFTEST_TEXT, DryRunFlow, check_rendered
from shared.logging import mask_phone
from tests.gateway.conftest import GH_SECRET, PUBLIC, admin_token, auth, served, settings_for
from tests.gateway.provider_fakes import parse_twiml
from tests.gateway.test_vonage_driver import PRIVATE_PEM, check_ncco, unsigned
from tests.gateway.ws_client import collect, next_control

TW_TOKEN = "selftest-twilio-auth-token"
VG_SECRET = "selftest-vonage-signature-secret"


def provider_settings(provider: str, data_dir: Path) -> GatewaySettings:
    extra: dict[str, Any] = {
        "twilio": {
            "twilio_account_sid": "AC" + "5" * 32,
            "twilio_auth_token": TW_TOKEN,
            "twilio_phone_number": "+15550009999",
        },
        "vonage": {
            "vonage_application_id": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
            "vonage_private_key": PRIVATE_PEM,
            "vonage_phone_number": "+447700900000",
            "vonage_signature_secret": VG_SECRET,
            "vonage_api_key": "abcd1234",
        },
        "aws-connect": {
            "aws_region": "us-east-1",
            "aws_access_key_id": "AKIDEXAMPLE",
            "aws_secret_access_key": "example-secret",
            "aws_connect_instance_id": "11111111-2222-3333-4444-555555555555",
            "aws_connect_contact_flow_id": "66666666-7777-8888-9999-000000000000",
            "aws_connect_phone_number": "+12025550123",
        },
        "generic-http": {},
    }[provider]
    return settings_for(data_dir, voice_provider=provider, **extra)


def check_twiml(text: str) -> None:
    root = parse_twiml(text)  # only verbs and attributes Twilio documents
    gather = root.find("Gather")
    assert gather is not None
    assert [say.text for say in gather.findall("Say")] == [SELFTEST_TEXT]
    assert gather.get("action") == f"{PUBLIC}/voice/webhook/twilio/gather?turn=1"


def check_vonage(text: str) -> None:
    ncco = json.loads(text)
    assert check_ncco(ncco) == ["talk", "input"]  # each action parses into the SDK's model
    assert ncco[0]["text"] == SELFTEST_TEXT
    assert [unsigned(u, VG_SECRET) for u in ncco[1]["eventUrl"]] == [
        f"{PUBLIC}/voice/webhook/vonage/input?turn=1"
    ]


def check_generic(text: str) -> None:
    actions = json.loads(text)["actions"]
    assert [a["type"] for a in actions] == ["say", "gather"]
    assert actions[0]["text"] == SELFTEST_TEXT


def check_connect(text: str) -> None:
    answer = json.loads(text)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in answer.items())
    assert answer["action"] == "speak" and answer["text"] == SELFTEST_TEXT
    assert answer["next_turn"] == "1"


# provider -> (request method, content type, signed header names, response type, body check)
EXPECTED: dict[str, tuple[str, str, list[str], str, Callable[[str], None]]] = {
    "twilio": (
        "POST",
        "application/x-www-form-urlencoded",
        ["X-Twilio-Signature"],
        "text/xml",
        check_twiml,
    ),
    "vonage": ("GET", "", ["Authorization"], "application/json", check_vonage),
    "generic-http": (
        "POST",
        "application/json",
        ["X-Gateway-Signature", "X-Gateway-Timestamp"],
        "application/json",
        check_generic,
    ),
    "aws-connect": (
        "POST",
        "application/json",
        ["X-Gateway-Signature", "X-Gateway-Timestamp"],
        "application/json",
        check_connect,
    ),
}


@pytest.mark.parametrize("provider", list(EXPECTED))
async def test_selftest_round_trip_reports_and_changes_nothing(
    provider: str, data_dir: Path
) -> None:
    orchestrator_requests: list[httpx.Request] = []

    def orchestrator(request: httpx.Request) -> httpx.Response:
        orchestrator_requests.append(request)
        return httpx.Response(500)

    method, request_type, signed, response_type, check_body = EXPECTED[provider]
    settings = provider_settings(provider, data_dir)
    async with served(settings, httpx.MockTransport(orchestrator)) as gw:
        store = gw.rt.calls
        assert isinstance(store, MemoryCallStore)
        seen_before = len(store._seen)
        async with websockets.connect(f"{gw.ws_url}?token={admin_token()}") as ws:
            await ws.send(json.dumps({"subscribe": "*"}))
            assert (await next_control(ws))["call_ids"] == "*"  # every call's events

            r = await gw.client.post("/voice/webhook/test", headers=auth())
            again = await gw.client.post("/voice/webhook/test", headers=auth())

            events = await collect(ws, until=lambda _: False, timeout_s=0.5)
        assert events == []

        assert r.status_code == 200, r.text
        report = r.json()
        assert report["status"] == "ok", report
        assert report["current_provider"] == provider
        assert report["public_url"] == f"{PUBLIC}/voice/webhook/test"
        trip = report["round_trip"]
        assert trip["verified"] is True
        assert trip["request"]["method"] == method
        assert trip["request"]["url"].startswith(f"{PUBLIC}/voice/webhook/{provider}")
        assert trip["request"]["content_type"] == request_type
        assert trip["request"]["signed_headers"] == signed
        response = trip["response"]
        assert response["status_code"] == 200 and response["truncated"] is False
        assert response["content_type"].startswith(response_type)
        check_body(response["body"])
        assert trip["checks"] and all(c["ok"] for c in trip["checks"]), trip["checks"]
        assert trip["parsed"]["direction"] == "inbound"
        assert trip["parsed"]["provider"] == provider
        # the caller as the driver parsed it, masked as phone numbers are everywhere
        assert trip["parsed"]["caller"] == mask_phone(SYNTHETIC_CALLER) != SYNTHETIC_CALLER
        for secret in (TW_TOKEN, VG_SECRET, GH_SECRET, "Bearer ", "v1="):
            assert secret not in r.text

        # a second run is not refused as a replay, and is a new synthetic call
        assert again.status_code == 200 and again.json()["status"] == "ok"
        assert again.json()["round_trip"]["parsed"]["call_id"] != trip["parsed"]["call_id"]

        calls = await gw.client.get("/voice/calls", headers=auth())
        assert calls.status_code == 200 and calls.json()["count"] == 0
        assert len(store._seen) == seen_before  # no replay key consumed
        assert orchestrator_requests == []


@pytest.mark.parametrize(
    ("provider", "missing"),
    [
        ("twilio", "TWILIO_AUTH_TOKEN"),
        ("vonage", "VONAGE_SIGNATURE_SECRET"),
    ],
)
async def test_unconfigured_provider_is_reported_not_configured(
    provider: str, missing: str, data_dir: Path
) -> None:
    async with served(settings_for(data_dir, voice_provider=provider)) as gw:
        r = await gw.client.post("/voice/webhook/test", headers=auth())
    assert r.status_code == 200
    report = r.json()
    assert report["status"] == "not_configured" and report["current_provider"] == provider
    assert missing in report["missing"] and missing in report["message"]
    assert report["round_trip"] == {"verified": False}
    assert report["public_url"] == f"{PUBLIC}/voice/webhook/test"


async def test_selftest_needs_a_management_token(data_dir: Path) -> None:
    """It signs with the provider's secret and runs the driver: a management route (issue 19;
    roles and the rate limit in test_webhook_signing_state.py)."""
    async with served(settings_for(data_dir)) as gw:
        r = await gw.client.post("/voice/webhook/test", headers={"Authorization": "Bearer x"})
        plain = await gw.client.post("/voice/webhook/test")
        signed = await gw.client.post("/voice/webhook/test", headers=auth())
    assert r.status_code == plain.status_code == 401
    assert signed.status_code == 200 and signed.json()["status"] == "ok"


@pytest.mark.parametrize("provider", list(EXPECTED))
async def test_checks_fail_on_what_a_driver_answers_when_a_call_cannot_start(
    provider: str, data_dir: Path
) -> None:
    """A driver's apology (its fallback reply) is valid for the provider but is not the
    self-test's greeting-and-listen: the checks name what is wrong."""
    settings = provider_settings(provider, data_dir)
    async with httpx.AsyncClient() as http:
        driver = load_driver_class(provider)(DriverDeps(settings, http, DryRunFlow()))
        await driver.initialize()
        request = driver.synthetic_request("CA" + "1" * 32)
        fallback = driver.fallback_response(request, "")
        assert fallback is not None
        checks = check_rendered(
            provider, fallback.headers.get("content-type", ""), bytes(fallback.body)
        )
    assert any(not c.ok for c in checks), checks


async def test_dry_run_flow_has_no_memory_of_keys() -> None:
    flow = DryRunFlow()
    assert await flow.first_time("k") and await flow.first_time("k")
    assert not await flow.end("c")
    reply = await flow.start(CallInfo(call_id="c", provider="twilio"))
    assert [a.type for a in reply.actions] == ["say", "gather"]


async def test_twilio_behind_a_tunnel_signs_for_the_configured_webhook_url(data_dir: Path) -> None:
    """No PUBLIC_BASE_URL, only TWILIO_WEBHOOK_URL (e.g. a tunnel): the request is signed for
    the URL Twilio would request, and the TwiML points Twilio back there."""
    tunnel = "https://abc123.tunnel.example"
    settings = settings_for(
        data_dir,
        voice_provider="twilio",
        public_base_url=None,
        twilio_webhook_url=f"{tunnel}/voice/webhook/twilio",
        twilio_account_sid="AC" + "5" * 32,
        twilio_auth_token=TW_TOKEN,
    )
    async with served(settings) as gw:
        r = await gw.client.post("/voice/webhook/test", headers=auth())
    report = r.json()
    assert report["status"] == "ok", report
    assert report["round_trip"]["request"]["url"] == f"{tunnel}/voice/webhook/twilio"
    gather = parse_twiml(report["round_trip"]["response"]["body"]).find("Gather")
    assert gather is not None
    assert gather.get("action") == f"{tunnel}/voice/webhook/twilio/gather?turn=1"
