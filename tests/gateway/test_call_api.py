"""The call API through the real gateway app and the real orchestrator on Postgres: placing
calls through each provider (their REST faked at the HTTP layer: respx for the generic-http
bridge, a `TwilioHttpClient` subclass, `responses` for Vonage's requests, botocore's Stubber for
Amazon Connect), E.164 validation, roles, `Idempotency-Key` (in memory and on the real Redis),
ending (idempotent) and listing."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import responses
import respx
import websockets
from botocore.stub import Stubber
from twilio.request_validator import RequestValidator

from realtime_gateway.drivers.aws_connect import AwsConnectDriver
from realtime_gateway.drivers.twilio import TwilioDriver
from shared.auth import mint_token
from tests.gateway.conftest import (
    JWT_SECRET,
    PUBLIC,
    Gateway,
    admin_token,
    auth,
    gateway,
    served,
    settings_for,
    sign,
    started,
)
from tests.gateway.provider_fakes import FakeTwilioApi, SentRequest
from tests.gateway.test_vonage_driver import PRIVATE_PEM, unsigned
from tests.gateway.ws_client import collect

BRIDGE = "https://bridge.example.com"
CALLEE = "+14155550100"
INITIATE = "/voice/calls/initiate"
TW_TOKEN = "call-api-twilio-token"
TW_ACCOUNT = "AC" + "3" * 32
TW_NUMBER = "+14155550199"


def as_role(role: str, sub: str | None = None) -> dict[str, str]:
    token = mint_token(JWT_SECRET, sub=sub or f"{role}-1", role=role)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def bridge() -> respx.Router:
    router = respx.Router(base_url=BRIDGE, assert_all_called=False)
    counter = iter(range(1, 1000))
    router.post("/calls").mock(
        side_effect=lambda request: httpx.Response(
            201, json={"call_id": f"gh-{next(counter)}", "status": "queued"}
        )
    )
    router.post(path__regex=r"^/calls/[^/]+/hangup$", name="hangup").respond(200, json={})
    return router


@pytest.fixture
async def gh(
    data_dir: Path, orchestrator: httpx.ASGITransport, bridge: respx.Router
) -> AsyncIterator[Gateway]:
    settings = settings_for(data_dir, generic_http_base_url=BRIDGE)
    transport = httpx.MockTransport(bridge.async_handler)
    async with gateway(settings, orchestrator, provider_transport=transport) as g:
        yield g


def dials(bridge: respx.Router) -> list[dict[str, Any]]:
    return [json.loads(c.request.content) for c in bridge.calls if c.request.url.path == "/calls"]


# ---- placing a call (generic-http) -----------------------------------------------------------


async def test_initiate_dials_records_the_call_and_emits_call_started(
    data_dir: Path, orchestrator: httpx.ASGITransport, bridge: respx.Router
) -> None:
    settings = settings_for(data_dir, generic_http_base_url=BRIDGE)
    transport = httpx.MockTransport(bridge.async_handler)
    async with served(settings, orchestrator, provider_transport=transport) as gw:
        async with websockets.connect(f"{gw.ws_url}?token={admin_token()}") as ws:
            r = await gw.client.post(
                INITIATE,
                json={
                    "phone_number": CALLEE,
                    "options": {"recording": True, "transcription": True},
                    "agent_id": "sales",
                },
                headers=as_role("operator"),
            )
            assert r.status_code == 201, r.text
            body = r.json()
            assert body == {
                "call_id": "gh-1",
                "provider": "generic-http",
                "status": "queued",
                "direction": "outbound",
                "to": CALLEE,
                "agent_id": "sales",
            }
            events = await collect(ws, lambda evs: bool(evs))
        assert [e["type"] for e in events] == ["call.started"]
        assert events[0]["call_id"] == "gh-1"
        assert events[0]["data"] | {"from": None} == {
            "provider": "generic-http",
            "direction": "outbound",
            "from": None,
            "to": CALLEE,
            "agent_id": "sales",
            "status": "queued",
        }
        (sent,) = dials(bridge)
        assert sent["to"] == CALLEE
        assert sent["callback_url"] == f"{PUBLIC}/voice/webhook/generic-http"
        # an operator reads the call whole (a viewer reads it masked: test_read_model.py)
        status = (
            await gw.client.get("/voice/calls/gh-1/status", headers=as_role("operator"))
        ).json()
        assert (status["direction"], status["provider"], status["status"]) == (
            "outbound",
            "generic-http",
            "queued",
        )
        assert status["metadata"]["initiated_by"] == "operator-1"
        assert status["metadata"]["options"]["recording"] is True


@pytest.mark.parametrize(
    ("number", "says"),
    [
        ("call me maybe", "not a phone number"),
        ("14155550100", "not a phone number"),
        ("+1 415-555-0100", "write it as +14155550100"),
        ("+1 (415) 555 0100", "not in E.164"),
        ("+15550001111", "not a valid phone number"),
        ("+1415555010", "not a valid phone number"),
    ],
)
async def test_a_bad_number_is_a_clear_400_and_nothing_is_dialled(
    gh: Gateway, bridge: respx.Router, number: str, says: str
) -> None:
    r = await gh.client.post(INITIATE, json={"phone_number": number}, headers=auth())
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_phone_number"
    assert error["message"].startswith("phone_number: ") and says in error["message"]
    assert dials(bridge) == []
    assert (await gh.client.get("/voice/calls", headers=auth())).json()["count"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "phone_number"),
        ({"phone_number": CALLEE, "options": {"recordng": True}}, "options.recordng"),
        ({"phone_number": CALLEE, "options": {"recording": "sometimes"}}, "options.recording"),
        ({"phone_number": 14155550100}, "phone_number"),
        ({"phone_number": CALLEE, "agent_id": ""}, "agent_id"),
    ],
)
async def test_a_malformed_body_is_a_422_naming_the_field(
    gh: Gateway, bridge: respx.Router, body: dict[str, Any], field: str
) -> None:
    r = await gh.client.post(INITIATE, json=body, headers=auth())
    assert r.status_code == 422, r.text
    assert r.json()["error"]["message"].startswith(f"{field}: ")
    assert dials(bridge) == []


async def test_not_json_and_unknown_provider_are_400(gh: Gateway, bridge: respx.Router) -> None:
    r = await gh.client.post(INITIATE, content=b"phone=+14155550100", headers=auth())
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    r = await gh.client.post(
        INITIATE, json={"phone_number": CALLEE, "provider": "skype"}, headers=auth()
    )
    assert r.status_code == 400
    assert "provider: unknown voice provider 'skype'" in r.json()["error"]["message"]
    r = await gh.client.post(
        INITIATE, json={"phone_number": CALLEE, "provider": "vonage"}, headers=auth()
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "provider_not_configured"
    assert "VONAGE" in r.json()["error"]["message"]
    assert dials(bridge) == []


async def test_the_current_provider_unable_to_dial_is_503_and_a_refusal_400(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    async with gateway(settings_for(data_dir), orchestrator) as gw:  # no GENERIC_HTTP_BASE_URL
        r = await gw.client.post(INITIATE, json={"phone_number": CALLEE}, headers=auth())
        assert r.status_code == 503 and "GENERIC_HTTP_BASE_URL" in r.json()["error"]["message"]
    router = respx.Router(base_url=BRIDGE)
    router.post("/calls").respond(422, json={"error": "cannot dial"})
    settings = settings_for(data_dir, generic_http_base_url=BRIDGE)
    transport = httpx.MockTransport(router.async_handler)
    async with gateway(settings, orchestrator, provider_transport=transport) as gw:
        r = await gw.client.post(INITIATE, json={"phone_number": CALLEE}, headers=auth())
        assert r.status_code == 400 and r.json()["error"]["code"] == "provider_error"
        assert (await gw.client.get("/voice/calls", headers=auth())).json()["count"] == 0


# ---- roles --------------------------------------------------------------------------------------


async def test_a_viewer_cannot_place_or_end_calls_but_can_read(
    gh: Gateway, bridge: respx.Router
) -> None:
    r = await gh.client.post(INITIATE, json={"phone_number": CALLEE}, headers=as_role("viewer"))
    assert r.status_code == 403
    error = r.json()["error"]
    assert error["code"] == "forbidden"
    assert "operator or admin" in error["message"] and "viewer" in error["message"]
    assert dials(bridge) == []

    placed = await gh.client.post(INITIATE, json={"phone_number": CALLEE}, headers=auth())
    call_id = placed.json()["call_id"]
    r = await gh.client.post(f"/voice/calls/{call_id}/end", headers=as_role("viewer"))
    assert r.status_code == 403
    viewer = as_role("viewer")
    assert (await gh.client.get(f"/voice/calls/{call_id}/status", headers=viewer)).json()[
        "status"
    ] == "queued"
    listed = (await gh.client.get("/voice/calls", headers=viewer)).json()
    assert [c["call_id"] for c in listed["calls"]] == [call_id]


# ---- Idempotency-Key ------------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
async def idem_gw(
    request: pytest.FixtureRequest,
    data_dir: Path,
    orchestrator: httpx.ASGITransport,
    bridge: respx.Router,
    redis_url: str,
) -> AsyncIterator[Gateway]:
    """The ledger in process, and on the real Redis (several instances share it)."""
    store = redis_url if request.param == "redis" else None
    settings = settings_for(data_dir, generic_http_base_url=BRIDGE, redis_url=store)
    transport = httpx.MockTransport(bridge.async_handler)
    async with gateway(settings, orchestrator, provider_transport=transport) as g:
        yield g


async def test_a_retry_with_the_same_idempotency_key_returns_the_same_call(
    idem_gw: Gateway, bridge: respx.Router
) -> None:
    key = {"Idempotency-Key": f"op-{uuid.uuid4().hex}"}
    body = {"phone_number": CALLEE, "options": {"recording": True}}
    first = await idem_gw.client.post(INITIATE, json=body, headers=auth() | key)
    second = await idem_gw.client.post(INITIATE, json=body, headers=auth() | key)
    assert first.status_code == 201 and second.status_code == 200
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert len(dials(bridge)) == 1
    # the key is passed on, so the bridge can dedupe too
    assert dials(bridge)[0]["idempotency_key"] == f"tests:{key['Idempotency-Key']}"

    other = await idem_gw.client.post(
        INITIATE, json={"phone_number": "+12025550123"}, headers=auth() | key
    )
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
    fresh = await idem_gw.client.post(INITIATE, json=body, headers=auth())
    assert fresh.status_code == 201 and fresh.json()["call_id"] != first.json()["call_id"]
    assert len(dials(bridge)) == 2


async def test_concurrent_duplicates_dial_once(idem_gw: Gateway, bridge: respx.Router) -> None:
    slow = asyncio.Event()

    async def answer(request: httpx.Request) -> httpx.Response:
        await slow.wait()
        return httpx.Response(201, json={"call_id": "gh-slow", "status": "queued"})

    bridge.post("/calls").mock(side_effect=answer)
    key = {"Idempotency-Key": f"op-{uuid.uuid4().hex}"}
    body = {"phone_number": CALLEE}
    tasks = [
        asyncio.create_task(idem_gw.client.post(INITIATE, json=body, headers=auth() | key))
        for _ in range(3)
    ]
    await asyncio.sleep(0.2)
    slow.set()
    results = await asyncio.gather(*tasks)
    assert sorted(r.status_code for r in results) == [200, 200, 201]
    assert {r.json()["call_id"] for r in results} == {"gh-slow"}
    assert len(dials(bridge)) == 1


async def test_a_failed_dial_frees_the_key_for_a_retry(
    idem_gw: Gateway, bridge: respx.Router
) -> None:
    bridge.post("/calls").mock(
        side_effect=[
            httpx.Response(503),
            httpx.Response(201, json={"call_id": "gh-retry", "status": "queued"}),
        ]
    )
    key = {"Idempotency-Key": f"op-{uuid.uuid4().hex}"}
    body = {"phone_number": CALLEE}
    failed = await idem_gw.client.post(INITIATE, json=body, headers=auth() | key)
    assert failed.status_code == 502
    retried = await idem_gw.client.post(INITIATE, json=body, headers=auth() | key)
    assert retried.status_code == 201 and retried.json()["call_id"] == "gh-retry"


async def test_keys_are_per_token_subject_and_validated(gh: Gateway, bridge: respx.Router) -> None:
    key = {"Idempotency-Key": "same-key"}
    body = {"phone_number": CALLEE}
    a = await gh.client.post(INITIATE, json=body, headers=as_role("operator", "alice") | key)
    b = await gh.client.post(INITIATE, json=body, headers=as_role("operator", "bob") | key)
    assert a.status_code == b.status_code == 201 and a.json() != b.json()
    bad = await gh.client.post(INITIATE, json=body, headers=auth() | {"Idempotency-Key": "a b"})
    assert bad.status_code == 400 and "Idempotency-Key" in bad.json()["error"]["message"]
    assert len(dials(bridge)) == 2


# ---- ending and listing -----------------------------------------------------------------------


async def test_end_hangs_up_at_the_provider_once_and_is_idempotent(
    gh: Gateway, bridge: respx.Router
) -> None:
    call_id = (
        await gh.client.post(INITIATE, json={"phone_number": CALLEE}, headers=auth())
    ).json()["call_id"]
    first = await gh.client.post(f"/voice/calls/{call_id}/end", headers=as_role("operator"))
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["status"], body["end_reason"], body["already_ended"]) == (
        "completed",
        "ended_by_api",
        False,
    )
    assert body["ended_at"] is not None
    again = await gh.client.post(f"/voice/calls/{call_id}/end", headers=auth())
    assert again.status_code == 200 and again.json()["already_ended"] is True
    hangups = [c for c in bridge.calls if c.request.url.path.endswith("/hangup")]
    assert [c.request.url.path for c in hangups] == [f"/calls/{call_id}/hangup"]
    assert gh.rt.bus.events_published == 2  # call.started, call.ended: once each

    missing = await gh.client.post("/voice/calls/nope/end", headers=auth())
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "call_not_found"


async def test_a_provider_failing_to_hang_up_leaves_the_call_live(
    gh: Gateway, bridge: respx.Router
) -> None:
    call_id = (
        await gh.client.post(INITIATE, json={"phone_number": CALLEE}, headers=auth())
    ).json()["call_id"]
    bridge["hangup"].respond(502)
    r = await gh.client.post(f"/voice/calls/{call_id}/end", headers=auth())
    assert r.status_code == 502 and "error" in r.json()
    status = (await gh.client.get(f"/voice/calls/{call_id}/status", headers=auth())).json()
    assert status["ended_at"] is None


async def test_list_filters_by_status_and_validates_the_query(gh: Gateway) -> None:
    ids = [
        (await gh.client.post(INITIATE, json={"phone_number": CALLEE}, headers=auth())).json()[
            "call_id"
        ]
        for _ in range(3)
    ]
    await gh.client.post(f"/voice/calls/{ids[0]}/end", headers=auth())
    listing = (await gh.client.get("/voice/calls", headers=auth())).json()
    assert [c["call_id"] for c in listing["calls"]] == ids[::-1]
    active = (await gh.client.get("/voice/calls?status=active", headers=auth())).json()
    assert [c["call_id"] for c in active["calls"]] == ids[:0:-1]
    ended = (await gh.client.get("/voice/calls?status=ended", headers=auth())).json()
    assert [c["call_id"] for c in ended["calls"]] == [ids[0]]
    completed = (await gh.client.get("/voice/calls?status=completed", headers=auth())).json()
    assert completed["count"] == 1
    one = (await gh.client.get("/voice/calls?limit=1", headers=auth())).json()
    assert one["count"] == 1 and one["calls"][0]["call_id"] == ids[2]
    for query, field in [
        ("status=sleeping", "status"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=ten", "limit"),
    ]:
        r = await gh.client.get(f"/voice/calls?{query}", headers=auth())
        assert r.status_code == 400, query
        assert r.json()["error"]["message"].startswith(f"{field}: ")


# ---- outbound through each provider -------------------------------------------------------------


def twilio_api(sent: SentRequest) -> tuple[int, Any]:
    if sent.method == "POST" and sent.path.endswith("/Calls.json"):
        sid = "CA" + "d" * 32
        return 201, {"sid": sid, "account_sid": TW_ACCOUNT, "status": "queued"}
    if sent.method == "POST" and "/Calls/CA" in sent.path:
        sid = sent.path.rsplit("/", 1)[-1].removesuffix(".json")
        return 200, {"sid": sid, "account_sid": TW_ACCOUNT, "status": "completed"}
    return 404, {"code": 20404, "message": "not found", "status": 404}


async def test_outbound_twilio_call_through_the_api(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    settings = settings_for(
        data_dir,
        voice_provider="twilio",
        twilio_account_sid=TW_ACCOUNT,
        twilio_auth_token=TW_TOKEN,
        twilio_phone_number=TW_NUMBER,
    )
    async with gateway(settings, orchestrator) as gw:
        driver = await gw.rt.drivers.get("twilio")
        assert isinstance(driver, TwilioDriver)
        api = FakeTwilioApi(twilio_api)
        driver.use_http_client(api)
        r = await gw.client.post(
            INITIATE,
            json={
                "phone_number": CALLEE,
                "options": {"recording": True, "machine_detection": True},
                "agent_id": "sales",
            },
            headers=auth(),
        )
        assert r.status_code == 201, r.text
        sid = r.json()["call_id"]
        assert (sid, r.json()["provider"], r.json()["status"]) == (
            "CA" + "d" * 32,
            "twilio",
            "queued",
        )
        (create,) = api.sent
        assert create.data["To"] == CALLEE and create.data["From"] == TW_NUMBER
        assert create.data["Record"] == "true" and create.data["MachineDetection"]
        assert create.data["Url"] == f"{PUBLIC}/voice/webhook/twilio?agent_id=sales"
        status = (await gw.client.get(f"/voice/calls/{sid}/status", headers=auth())).json()
        assert (status["from"], status["to"], status["agent_id"]) == (TW_NUMBER, CALLEE, "sales")

        # Twilio reports it answered, then completed: the call ends once
        for seq, state in enumerate(("ringing", "in-progress", "completed")):
            form = {
                "CallSid": sid,
                "AccountSid": TW_ACCOUNT,
                "From": TW_NUMBER,
                "To": CALLEE,
                "Direction": "outbound-api",
                "CallStatus": state,
                "SequenceNumber": str(seq),
                "CallDuration": "7",
            }
            path = "/voice/webhook/twilio/status?agent_id=sales"
            sig = RequestValidator(TW_TOKEN).compute_signature(f"{PUBLIC}{path}", form)
            resp = await gw.client.post(path, data=form, headers={"X-Twilio-Signature": sig})
            assert resp.status_code == 200
        status = (await gw.client.get(f"/voice/calls/{sid}/status", headers=auth())).json()
        assert (status["status"], status["end_reason"]) == ("completed", "completed")
        ended = await gw.client.post(f"/voice/calls/{sid}/end", headers=auth())
        assert ended.json()["already_ended"] is True
        assert len(api.sent) == 1  # no hang-up for a call already over
        assert gw.rt.bus.events_published == 2


@pytest.fixture
def vonage_api() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


async def test_outbound_vonage_call_through_the_api(
    data_dir: Path, orchestrator: httpx.ASGITransport, vonage_api: responses.RequestsMock
) -> None:
    call = str(uuid.uuid4())
    api = "https://api.nexmo.com/v1/calls"
    created = vonage_api.post(
        api,
        status=201,
        json={"uuid": call, "status": "started", "direction": "outbound", "conversation_uuid": "C"},
    )
    hangup = vonage_api.put(f"{api}/{call}", status=204)
    settings = settings_for(
        data_dir,
        vonage_application_id="aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
        vonage_private_key=PRIVATE_PEM,
        vonage_phone_number="+447700900000",
        vonage_signature_secret="call-api-vonage-secret",
    )
    async with gateway(settings, orchestrator) as gw:
        r = await gw.client.post(
            INITIATE,
            json={"phone_number": CALLEE, "provider": "vonage", "options": {"recording": True}},
            headers=auth(),
        )
        assert r.status_code == 201, r.text
        assert (r.json()["call_id"], r.json()["provider"]) == (call, "vonage")
        sent = json.loads(vonage_api.calls[0].request.body)
        assert sent["to"] == [{"type": "phone", "number": CALLEE[1:]}]
        assert [unsigned(u, "call-api-vonage-secret") for u in sent["answer_url"]] == [
            f"{PUBLIC}/voice/webhook/vonage/answer?direction=outbound&record=1"
        ]
        assert created.call_count == 1
        ended = await gw.client.post(f"/voice/calls/{call}/end", headers=auth())
        assert ended.status_code == 200 and ended.json()["provider"] == "vonage"
        assert hangup.call_count == 1
        assert json.loads(vonage_api.calls[1].request.body) == {"action": "hangup"}


async def test_outbound_amazon_connect_call_through_the_api(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    instance = "11111111-2222-3333-4444-555555555555"
    flow = "66666666-7777-8888-9999-000000000000"
    contact = str(uuid.uuid4())
    settings = settings_for(
        data_dir,
        aws_region="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="example-secret",
        aws_connect_instance_id=instance,
        aws_connect_contact_flow_id=flow,
        aws_connect_phone_number="+12025550123",
    )
    async with gateway(settings, orchestrator) as gw:
        driver = await gw.rt.drivers.get("aws-connect")
        assert isinstance(driver, AwsConnectDriver)
        client = await driver.connect_client()
        with Stubber(client) as stub:
            stub.add_response(
                "start_outbound_voice_contact",
                {"ContactId": contact},
                {
                    "DestinationPhoneNumber": CALLEE,
                    "ContactFlowId": flow,
                    "InstanceId": instance,
                    "SourcePhoneNumber": "+12025550123",
                    "Attributes": {
                        "gateway_provider": "aws-connect",
                        "recording": "false",
                        "transcription": "true",
                        "agent_id": "support",
                    },
                    "ClientToken": "tests:dial-7",
                },
            )
            stub.add_response("stop_contact", {}, {"ContactId": contact, "InstanceId": instance})
            r = await gw.client.post(
                INITIATE,
                json={
                    "phone_number": CALLEE,
                    "provider": "aws-connect",
                    "agent_id": "support",
                    "options": {"transcription": True},
                },
                headers=auth() | {"Idempotency-Key": "dial-7"},
            )
            assert r.status_code == 201, r.text
            assert r.json() | {"status": ""} == {
                "call_id": contact,
                "provider": "aws-connect",
                "status": "",
                "direction": "outbound",
                "to": CALLEE,
                "agent_id": "support",
            }
            ended = await gw.client.post(f"/voice/calls/{contact}/end", headers=auth())
            assert ended.status_code == 200 and ended.json()["status"] == "completed"
            stub.assert_no_pending_responses()


async def test_two_instances_on_one_redis_dial_a_keyed_call_once(
    data_dir: Path, orchestrator: httpx.ASGITransport, bridge: respx.Router, redis_url: str
) -> None:
    settings = settings_for(data_dir, generic_http_base_url=BRIDGE, redis_url=redis_url)
    transport = httpx.MockTransport(bridge.async_handler)
    key = {"Idempotency-Key": f"op-{uuid.uuid4().hex}"}
    body = {"phone_number": CALLEE}
    async with (
        gateway(settings, orchestrator, provider_transport=transport) as one,
        gateway(settings, orchestrator, provider_transport=transport) as two,
    ):
        first = await one.client.post(INITIATE, json=body, headers=auth() | key)
        retried = await two.client.post(INITIATE, json=body, headers=auth() | key)
        assert (first.status_code, retried.status_code) == (201, 200)
        assert retried.json()["call_id"] == first.json()["call_id"]
        # the other instance knows the call too, and ends it once
        ended = await two.client.post(f"/voice/calls/{first.json()['call_id']}/end", headers=auth())
        assert ended.json()["already_ended"] is False
    assert len(dials(bridge)) == 1


async def test_a_dial_outlives_a_cancelled_request_and_is_recorded(
    gh: Gateway, bridge: respx.Router
) -> None:
    """The client goes away while the provider is dialling: the call the provider placed is
    still tracked (and its idempotency key completed), so it can be found and ended."""
    dialling = asyncio.Event()
    answer = asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        dialling.set()
        await answer.wait()
        return httpx.Response(201, json={"call_id": "gh-late", "status": "queued"})

    bridge.post("/calls").mock(side_effect=slow)
    key = {"Idempotency-Key": "late-1"}
    request = asyncio.create_task(
        gh.client.post(INITIATE, json={"phone_number": CALLEE}, headers=auth() | key)
    )
    await asyncio.wait_for(dialling.wait(), 5)
    request.cancel()
    answer.set()
    with pytest.raises(asyncio.CancelledError):
        await request
    for _ in range(200):
        if await gh.rt.calls.get("gh-late") is not None:
            break
        await asyncio.sleep(0.01)
    status = await gh.client.get("/voice/calls/gh-late/status", headers=auth())
    assert status.status_code == 200 and status.json()["direction"] == "outbound"
    retry = await gh.client.post(INITIATE, json={"phone_number": CALLEE}, headers=auth() | key)
    assert retry.status_code == 200 and retry.json()["call_id"] == "gh-late"
    assert len(dials(bridge)) == 1


async def test_an_outbound_call_reads_in_progress_once_the_bridge_reports_it_answered(
    gh: Gateway,
) -> None:
    r = await gh.client.post(INITIATE, json={"phone_number": CALLEE}, headers=as_role("operator"))
    assert r.status_code == 201, r.text
    call_id = r.json()["call_id"]
    status = (await gh.client.get(f"/voice/calls/{call_id}/status", headers=auth())).json()
    assert status["status"] == "queued"
    body = json.dumps(started(call_id)).encode()
    answer = await gh.client.post("/voice/webhook/generic-http", content=body, headers=sign(body))
    assert answer.status_code == 200, answer.text
    assert [a["type"] for a in answer.json()["actions"]] == ["say", "gather"]
    status = (await gh.client.get(f"/voice/calls/{call_id}/status", headers=auth())).json()
    assert status["status"] == "in-progress"
    assert status["direction"] == "outbound"


async def test_a_draining_gateway_refuses_new_outbound_calls_with_503(
    gh: Gateway, bridge: respx.Router
) -> None:
    """After SIGTERM (the drain) a call placed on this instance would lose its gateway while
    ringing: refused with 503 + Retry-After, nothing dialled, nothing recorded."""
    gh.app.state.drain.begin()
    r = await gh.client.post(
        INITIATE, json={"phone_number": CALLEE}, headers={**auth(), "Idempotency-Key": "drain-1"}
    )
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "shutting_down"
    assert r.headers["retry-after"] == "5"
    assert dials(bridge) == []
    assert (await gh.client.get("/voice/calls", headers=auth())).json()["count"] == 0
