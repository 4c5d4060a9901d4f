"""The provider API through the real gateway app: listing, capabilities, the reachability test
(provider REST faked at the HTTP layer: respx for the generic-http bridge, a `TwilioHttpClient`
subclass for Twilio), switching (roles, validation), and a switch during a live Twilio call
(webhooks signed with Twilio's own `RequestValidator`, the real orchestrator on Postgres)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
import websockets
from twilio.request_validator import RequestValidator

from realtime_gateway.drivers import registry
from realtime_gateway.drivers.twilio import TwilioDriver
from shared.auth import mint_token
from tests.gateway.conftest import (
    JWT_SECRET,
    PUBLIC,
    Gateway,
    admin_token,
    auth,
    gateway,
    new_call_id,
    served,
    settings_for,
    sign,
    started,
)
from tests.gateway.provider_fakes import FakeTwilioApi, SentRequest, parse_twiml
from tests.gateway.ws_client import collect

TOKEN = "provider-api-test-twilio-token"
ACCOUNT = "AC" + "5" * 32
OUR_NUMBER = "+14155550199"
CALLER = "+12025550123"
BRIDGE = "https://bridge.example.com"
PROVIDERS = ["twilio", "vonage", "aws-connect", "generic-http"]


def as_role(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(JWT_SECRET, sub=f'{role}-1', role=role)}"}


def twilio_settings(data_dir: Path, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "twilio_account_sid": ACCOUNT,
        "twilio_auth_token": TOKEN,
        "twilio_phone_number": OUR_NUMBER,
        **overrides,
    }
    return settings_for(data_dir, **values)


def call_form(sid: str, **extra: str) -> dict[str, str]:
    return {
        "CallSid": sid,
        "AccountSid": ACCOUNT,
        "From": CALLER,
        "To": OUR_NUMBER,
        "CallStatus": "in-progress",
        "Direction": "inbound",
        **extra,
    }


async def twilio_post(gw: Gateway, path: str, form: dict[str, str]) -> httpx.Response:
    sig = RequestValidator(TOKEN).compute_signature(f"{PUBLIC}{path}", form)
    return await gw.client.post(path, data=form, headers={"X-Twilio-Signature": sig})


def account_api(sent: SentRequest) -> tuple[int, Any]:
    if sent.method == "GET" and sent.path.endswith(f"/Accounts/{ACCOUNT}.json"):
        return 200, {"sid": ACCOUNT, "status": "active", "friendly_name": "Tests"}
    if sent.method == "POST" and "/Calls/CA" in sent.path:
        sid = sent.path.rsplit("/", 1)[-1].removesuffix(".json")
        return 200, {"sid": sid, "account_sid": ACCOUNT, "status": "completed"}
    return 404, {"code": 20404, "message": "not found", "status": 404}


# ---- listing and capabilities ---------------------------------------------------------------


async def test_providers_lists_each_with_name_capabilities_and_status(data_dir: Path) -> None:
    async with gateway(twilio_settings(data_dir)) as gw:
        r = await gw.client.get("/voice/providers", headers=as_role("viewer"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["available_providers"] == PROVIDERS
    assert body["current_provider"] == "generic-http"
    providers = body["providers"]
    assert set(providers) == set(PROVIDERS)
    assert providers["generic-http"]["status"] == "active"
    assert providers["twilio"]["status"] == "configured"  # configured, not current
    assert providers["twilio"]["name"] == "Twilio"
    assert {"voice", "recording", "machine_detection"} <= set(providers["twilio"]["capabilities"])
    vonage = providers["vonage"]
    assert vonage["status"] == "not_configured" and vonage["name"] == "Vonage"
    assert "VONAGE_APPLICATION_ID" in vonage["missing"]
    assert providers["aws-connect"]["status"] == "not_configured"
    assert "AWS_CONNECT_INSTANCE_ID" in providers["aws-connect"]["missing"]


async def test_capabilities_per_provider_and_404_for_an_unknown_one(gw: Gateway) -> None:
    r = await gw.client.get("/voice/providers/twilio/capabilities", headers=auth())
    assert r.status_code == 200
    assert r.json()["provider"] == "twilio" and "transfer" in r.json()["capabilities"]
    r = await gw.client.get("/voice/providers/generic-http/capabilities", headers=auth())
    assert r.json()["current"] is True and "outbound" not in r.json()["capabilities"]
    r = await gw.client.get("/voice/providers/skype/capabilities", headers=auth())
    assert r.status_code == 404
    error = r.json()["error"]
    assert error["code"] == "unknown_provider" and "twilio" in error["message"]


async def test_current_provider_keeps_its_shape(gw: Gateway) -> None:
    body = (await gw.client.get("/voice/providers/current", headers=as_role("viewer"))).json()
    assert body["provider"] == "generic-http" and body["status"] == "active"
    assert body["name"] == "Generic HTTP" and body["configuration"]["ok"] is True


async def test_provider_api_needs_a_token(gw: Gateway) -> None:
    for method, path in [
        ("GET", "/voice/providers"),
        ("GET", "/voice/providers/test"),
        ("POST", "/voice/providers/switch"),
        ("GET", "/voice/providers/twilio/capabilities"),
    ]:
        r = await gw.client.request(method, path)
        assert r.status_code == 401, path


# ---- the reachability test --------------------------------------------------------------------


async def test_provider_test_asks_the_bridge_and_places_no_call(data_dir: Path) -> None:
    bridge = respx.Router(base_url=BRIDGE, assert_all_called=False)
    probe = bridge.get("/").respond(200, json={"ok": True})
    calls = bridge.post("/calls").respond(201, json={"call_id": "x"})
    settings = settings_for(data_dir, generic_http_base_url=BRIDGE)
    transport = httpx.MockTransport(bridge.async_handler)
    async with gateway(settings, provider_transport=transport) as gw:
        r = await gw.client.get("/voice/providers/test", headers=as_role("viewer"))
        assert r.status_code == 200
        body = r.json()
        assert (body["provider"], body["ok"], body["status"]) == ("generic-http", True, "ok")
        assert body["reachable"] is True and body["call_placed"] is False
        assert probe.call_count == 1 and calls.call_count == 0

        probe.respond(503)
        body = (await gw.client.get("/voice/providers/test", headers=auth())).json()
        assert (body["ok"], body["status"], body["reachable"]) == (False, "unreachable", False)


async def test_provider_test_reads_the_twilio_account(data_dir: Path) -> None:
    async with gateway(twilio_settings(data_dir, voice_provider="twilio")) as gw:
        driver = await gw.rt.drivers.get("twilio")
        assert isinstance(driver, TwilioDriver)
        api = FakeTwilioApi(account_api)
        driver.use_http_client(api)
        body = (await gw.client.get("/voice/providers/test", headers=auth())).json()
        assert body["ok"] is True and body["reachable"] is True
        assert [(s.method, s.path.rsplit("/", 1)[-1]) for s in api.sent] == [
            ("GET", f"{ACCOUNT}.json")
        ]

        driver.use_http_client(
            FakeTwilioApi(lambda s: (401, {"code": 20003, "message": "Authenticate"}))
        )
        body = (await gw.client.get("/voice/providers/test", headers=auth())).json()
        assert body["ok"] is False and body["status"] == "unreachable"
        assert "20003" in body["configuration"]["problems"][0]


async def test_provider_test_names_what_the_current_provider_misses(data_dir: Path) -> None:
    async with gateway(settings_for(data_dir, voice_provider="vonage")) as gw:
        body = (await gw.client.get("/voice/providers/test", headers=auth())).json()
    assert body["ok"] is False and body["status"] == "not_configured"
    assert "VONAGE_PRIVATE_KEY" in body["configuration"]["missing"]
    assert body["reachable"] is None


# ---- switching --------------------------------------------------------------------------------


async def test_switch_refuses_unknown_unconfigured_and_malformed_requests(gw: Gateway) -> None:
    switch = "/voice/providers/switch"
    r = await gw.client.post(switch, json={"provider": "skype"}, headers=auth())
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "unknown_provider"
    assert "twilio, vonage, aws-connect, generic-http" in r.json()["error"]["message"]

    r = await gw.client.post(switch, json={"provider": "vonage"}, headers=auth())
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "provider_not_configured"
    assert (
        "VONAGE_APPLICATION_ID" in error["message"] and "VONAGE_APPLICATION_ID" in error["missing"]
    )

    r = await gw.client.post(switch, content=b"{not json", headers=auth())
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    r = await gw.client.post(switch, json={"provder": "twilio"}, headers=auth())
    assert r.status_code == 422 and "provider" in r.json()["error"]["message"]
    assert gw.rt.drivers.current_name == "generic-http"


async def test_only_an_admin_may_switch(data_dir: Path) -> None:
    async with gateway(twilio_settings(data_dir)) as gw:
        for role in ("viewer", "operator"):
            r = await gw.client.post(
                "/voice/providers/switch", json={"provider": "twilio"}, headers=as_role(role)
            )
            assert r.status_code == 403
            assert r.json()["error"]["code"] == "forbidden" and role in r.json()["error"]["message"]
        assert gw.rt.drivers.current_name == "generic-http"
        r = await gw.client.post(
            "/voice/providers/switch", json={"provider": "twilio"}, headers=as_role("admin")
        )
        assert r.status_code == 200, r.text
        assert r.json() | {"capabilities": []} == {
            "provider": "twilio",
            "previous_provider": "generic-http",
            "name": "Twilio",
            "capabilities": [],
            "status": "active",
        }
        current = (await gw.client.get("/voice/providers/current", headers=auth())).json()
        assert current["provider"] == "twilio"
        listed = (await gw.client.get("/voice/providers", headers=auth())).json()
        assert listed["providers"]["twilio"]["status"] == "active"
        assert listed["providers"]["generic-http"]["status"] == "configured"


async def test_switch_with_a_reachability_check_refuses_an_unreachable_provider(
    data_dir: Path,
) -> None:
    async with gateway(twilio_settings(data_dir)) as gw:
        driver = await gw.rt.drivers.get("twilio")
        assert isinstance(driver, TwilioDriver)
        driver.use_http_client(FakeTwilioApi(lambda s: (500, {"message": "down"})))
        r = await gw.client.post(
            "/voice/providers/switch",
            json={"provider": "twilio", "check_reachability": True},
            headers=auth(),
        )
        assert r.status_code == 400 and "not reachable" in r.json()["error"]["message"]
        assert gw.rt.drivers.current_name == "generic-http"


async def test_a_switch_during_a_live_twilio_call_finishes_it_on_twilio(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    """The call finishes on Twilio (turns answered with TwiML, ended through Twilio's REST API,
    one `call.ended`); new calls use the new provider."""
    sid = "CA" + uuid.uuid4().hex
    bridge = respx.Router(base_url=BRIDGE, assert_all_called=False)
    dialled = bridge.post("/calls").respond(201, json={"call_id": "gh-out-1", "status": "queued"})
    settings = twilio_settings(data_dir, voice_provider="twilio", generic_http_base_url=BRIDGE)
    transport = httpx.MockTransport(bridge.async_handler)
    async with served(settings, orchestrator, provider_transport=transport) as gw:
        driver = await gw.rt.drivers.get("twilio")
        assert isinstance(driver, TwilioDriver)
        api = FakeTwilioApi(account_api)
        driver.use_http_client(api)
        ws_url = f"{gw.ws_url}?call_id={sid}&token={admin_token()}"
        async with websockets.connect(ws_url) as ws:
            # the call arrives on POST /voice/webhook while Twilio is current
            root = parse_twiml((await twilio_post(gw, "/voice/webhook", call_form(sid))).text)
            gather = root.find("Gather")
            assert gather is not None
            assert gather.get("action") == f"{PUBLIC}/voice/webhook/twilio/gather?turn=1"

            r = await gw.client.post(
                "/voice/providers/switch", json={"provider": "generic-http"}, headers=auth()
            )
            assert r.status_code == 200 and r.json()["previous_provider"] == "twilio"

            # the live call still talks TwiML through the Twilio driver
            said = call_form(sid, SpeechResult="What are your opening hours?", Confidence="0.9")
            turn = await twilio_post(gw, "/voice/webhook/twilio/gather?turn=1", said)
            assert turn.status_code == 200 and turn.headers["content-type"].startswith("text/xml")
            assert parse_twiml(turn.text).find("Gather") is not None

            # the operator ends it: through Twilio's API, the call's own provider
            ended = await gw.client.post(f"/voice/calls/{sid}/end", headers=auth())
            assert ended.status_code == 200, ended.text
            assert (ended.json()["provider"], ended.json()["status"]) == ("twilio", "completed")
            hangups = [s for s in api.sent if s.method == "POST"]
            assert len(hangups) == 1 and hangups[0].data == {"Status": "completed"}
            assert hangups[0].path.endswith(f"/Calls/{sid}.json")
            # Twilio's own completed callback afterwards changes nothing
            done = call_form(sid, CallStatus="completed", CallDuration="12", SequenceNumber="3")
            r = await twilio_post(gw, "/voice/webhook/twilio/status", done)
            assert r.status_code == 200
            events = await collect(ws, lambda evs: any(e["type"] == "call.ended" for e in evs))
        assert [e["type"] for e in events] == [
            "call.started",
            "message.received",
            "message.sent",
            "call.ended",
        ]
        assert events[0]["data"]["provider"] == "twilio"

        # new calls use generic-http: the API dials the bridge, /voice/webhook speaks its JSON
        placed = await gw.client.post(
            "/voice/calls/initiate", json={"phone_number": CALLER}, headers=auth()
        )
        assert placed.status_code == 201, placed.text
        assert placed.json()["provider"] == "generic-http" and dialled.call_count == 1
        assert json.loads(dialled.calls.last.request.content)["to"] == CALLER
        inbound = new_call_id()
        body = json.dumps(started(inbound)).encode()
        r = await gw.client.post("/voice/webhook", content=body, headers=sign(body))
        assert r.status_code == 200 and r.json()["actions"][0]["type"] == "say"
        status = (await gw.client.get(f"/voice/calls/{inbound}/status", headers=auth())).json()
        assert status["provider"] == "generic-http"
        old = (await gw.client.get(f"/voice/calls/{sid}/status", headers=auth())).json()
        assert (old["provider"], old["status"], old["turns"]) == ("twilio", "completed", 1)


async def test_a_driver_that_cannot_load_is_listed_as_unavailable(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(registry.DRIVERS, "vonage", "realtime_gateway.drivers.no_such:Nope")
    body = (await gw.client.get("/voice/providers", headers=auth())).json()
    vonage = body["providers"]["vonage"]
    assert vonage["status"] == "unavailable" and "no_such" in vonage["error"]
    assert body["providers"]["generic-http"]["status"] == "active"
    r = await gw.client.post("/voice/providers/switch", json={"provider": "vonage"}, headers=auth())
    assert r.status_code == 400 and r.json()["error"]["code"] == "provider_unavailable"
    r = await gw.client.get("/voice/providers/vonage/capabilities", headers=auth())
    assert r.status_code == 503
