"""Whole Amazon Connect calls: the shipped forwarder Lambda (`deploy/aws-connect/forwarder.py`,
run as Lambda would run it, in a thread) signs each ContactFlowEvent and POSTs it to the real
gateway under uvicorn, which verifies it with its own generic-http verifier and drives the real
orchestrator on Postgres. The Connect API (outbound contacts) is faked with botocore's Stubber."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from botocore.stub import Stubber

from realtime_gateway.drivers.aws_connect import AwsConnectDriver
from realtime_gateway.vocabulary import CallOptions
from tests.gateway.conftest import GH_SECRET, Gateway, admin_token, auth, served, settings_for
from tests.gateway.provider_fakes import insert_routed_agent, load_forwarder
from tests.gateway.ws_client import collect

INSTANCE = "11111111-2222-3333-4444-555555555555"
FLOW = "66666666-7777-8888-9999-000000000000"
OUR_NUMBER = "+12025550123"
CALLER = "+14155550100"


class Lambda:
    """The forwarder as Lambda runs it: env vars, a context with the remaining time."""

    def __init__(self, url: str, secret: str = GH_SECRET, timeout_s: float | None = None) -> None:
        self.env = {"GATEWAY_URL": url, "GATEWAY_SECRET": secret}
        if timeout_s is not None:
            self.env["GATEWAY_TIMEOUT_S"] = str(timeout_s)

    def get_remaining_time_in_millis(self) -> int:
        return 8000

    async def invoke(
        self, event: dict[str, Any], monkeypatch: pytest.MonkeyPatch
    ) -> dict[str, str]:
        forwarder = load_forwarder()
        for key, value in self.env.items():
            monkeypatch.setenv(key, value)
        result = await asyncio.to_thread(forwarder.lambda_handler, event, self)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in result.items())
        return dict(result)


def contact_event(
    contact: str,
    parameters: dict[str, str] | None = None,
    attributes: dict[str, str] | None = None,
    method: str = "INBOUND",
) -> dict[str, Any]:
    return {
        "Name": "ContactFlowEvent",
        "Details": {
            "ContactData": {
                "ContactId": contact,
                "InitialContactId": contact,
                "Channel": "VOICE",
                "InitiationMethod": method,
                "CustomerEndpoint": {"Address": CALLER, "Type": "TELEPHONE_NUMBER"},
                "SystemEndpoint": {"Address": OUR_NUMBER, "Type": "TELEPHONE_NUMBER"},
                "Attributes": attributes or {},
            },
            "Parameters": parameters or {},
        },
    }


def ended(events: list[dict[str, Any]]) -> bool:
    return any(e["type"] == "call.ended" for e in events)


@pytest.fixture
async def gw(data_dir: Path, orchestrator: httpx.ASGITransport) -> AsyncIterator[Gateway]:
    settings = settings_for(
        data_dir,
        aws_region="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="example-secret",
        aws_connect_instance_id=INSTANCE,
        aws_connect_contact_flow_id=FLOW,
        aws_connect_phone_number=OUR_NUMBER,
    )
    async with served(settings, orchestrator) as g:
        yield g


async def test_inbound_contact_through_the_forwarder(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    contact = str(uuid.uuid4())
    lam = Lambda(f"{gw.url}/voice/webhook/aws-connect")
    async with websockets.connect(f"{gw.ws_url}?call_id={contact}&token={admin_token()}") as ws:
        greeting = await lam.invoke(contact_event(contact), monkeypatch)
        assert greeting["action"] == "speak" and greeting["text"]
        assert (greeting["next_turn"], greeting["fallback"]) == ("1", "false")

        attrs = {"turn": greeting["next_turn"]}
        event = contact_event(contact, {"input": "What are your opening hours?"}, attrs)
        first = await lam.invoke(event, monkeypatch)
        retried = await lam.invoke(event, monkeypatch)  # Connect retries a slow invoke
        assert first == retried
        assert first["action"] == "speak" and first["next_turn"] == "2"

        bye = contact_event(contact, {"input": "Thanks, goodbye"}, {"turn": first["next_turn"]})
        last = await lam.invoke(bye, monkeypatch)
        assert last["action"] == "hangup"

        # the flow's disconnect flow reports the end (and Connect may retry it)
        for _ in range(2):
            end = await lam.invoke(contact_event(contact, {"event": "ended"}), monkeypatch)
            assert end["action"] == "hangup"
        events = await collect(ws, ended)
    assert [e["type"] for e in events] == [
        "call.started",
        "message.received",
        "message.sent",
        "message.received",
        "message.sent",
        "call.ended",
    ]
    assert events[0]["data"]["from"] == CALLER
    status = (await gw.client.get(f"/voice/calls/{contact}/status", headers=auth())).json()
    assert (status["provider"], status["status"], status["turns"]) == (
        "aws-connect",
        "completed",
        2,
    )


async def test_forwarder_with_the_wrong_secret_is_refused_and_apologises(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    contact = str(uuid.uuid4())
    lam = Lambda(f"{gw.url}/voice/webhook/aws-connect", secret="not-the-gateway-secret")
    async with websockets.connect(f"{gw.ws_url}?call_id={contact}&token={admin_token()}") as ws:
        answer = await lam.invoke(contact_event(contact, {}, {"turn": "3"}), monkeypatch)
        events = await collect(ws, lambda evs: False, timeout_s=0.8)
    assert answer["action"] == "speak" and answer["fallback"] == "true"
    assert answer["next_turn"] == "3"  # the same turn is asked again
    assert events == []
    missing = await gw.client.get(f"/voice/calls/{contact}/status", headers=auth())
    assert missing.status_code == 404


async def test_forwarder_never_raises_when_the_gateway_is_down_or_slow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    contact = str(uuid.uuid4())
    event = contact_event(contact, {"input": "hello"}, {"turn": "2"})
    # nothing listens on this port
    sock = __import__("socket").socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    down = await Lambda(f"http://127.0.0.1:{port}/voice/webhook/aws-connect").invoke(
        event, monkeypatch
    )
    assert (down["action"], down["fallback"], down["next_turn"]) == ("speak", "true", "2")

    # a gateway that accepts and never answers: the forwarder gives up in time
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        loop = asyncio.get_running_loop()
        started = loop.time()
        slow = await Lambda(
            f"http://127.0.0.1:{port}/voice/webhook/aws-connect", timeout_s=0.5
        ).invoke(event, monkeypatch)
        assert loop.time() - started < 3
    assert slow["fallback"] == "true"

    monkeypatch.delenv("GATEWAY_URL", raising=False)
    forwarder = load_forwarder()
    assert forwarder.lambda_handler(event, None)["fallback"] == "true"
    assert forwarder.lambda_handler({"unexpected": True}, None)["action"] == "speak"


async def test_outbound_contact_is_started_then_driven_by_the_flow(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    contact = str(uuid.uuid4())
    driver = await gw.rt.drivers.get("aws-connect")
    assert isinstance(driver, AwsConnectDriver)
    client = await driver.connect_client()
    with Stubber(client) as stub:
        stub.add_response(
            "start_outbound_voice_contact",
            {"ContactId": contact},
            {
                "DestinationPhoneNumber": CALLER,
                "ContactFlowId": FLOW,
                "InstanceId": INSTANCE,
                "SourcePhoneNumber": OUR_NUMBER,
                "Attributes": {
                    "gateway_provider": "aws-connect",
                    "recording": "false",
                    "transcription": "false",
                },
                "ClientToken": "op-1",
            },
        )
        stub.add_response("stop_contact", {}, {"ContactId": contact, "InstanceId": INSTANCE})
        placed = await driver.make_call(CALLER, CallOptions(idempotency_key="op-1"))
        assert placed.call_id == contact

        lam = Lambda(f"{gw.url}/voice/webhook/aws-connect")
        ws_url = f"{gw.ws_url}?call_id={contact}&token={admin_token()}"
        async with websockets.connect(ws_url) as ws:
            greeting = await lam.invoke(contact_event(contact, method="API"), monkeypatch)
            assert greeting["action"] == "speak"
            await driver.end_call(contact)  # the operator hangs up: stop_contact
            stub.assert_no_pending_responses()
            await lam.invoke(contact_event(contact, {"event": "ended"}, method="API"), monkeypatch)
            events = await collect(ws, ended)
    assert [e["type"] for e in events] == ["call.started", "call.ended"]
    assert events[0]["data"]["direction"] == "outbound"


async def test_transfer_answers_the_number_for_the_flow(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch, pg_dsn: str
) -> None:
    dialled = await insert_routed_agent(pg_dsn, "+15557770000", "Front desk, how can I help?")
    contact = str(uuid.uuid4())
    lam = Lambda(f"{gw.url}/voice/webhook/aws-connect")
    event = contact_event(contact)
    event["Details"]["ContactData"]["SystemEndpoint"]["Address"] = dialled
    greeting = await lam.invoke(event, monkeypatch)
    assert greeting["text"] == "Front desk, how can I help?"
    ask = contact_event(contact, {"input": "Transfer me to an agent"}, {"turn": "1"})
    answer = await lam.invoke(ask, monkeypatch)
    assert (answer["action"], answer["transfer_number"]) == ("transfer", "+15557770000")


async def test_unsigned_stale_and_replayed_deliveries(gw: Gateway) -> None:
    forwarder = load_forwarder()
    contact = str(uuid.uuid4())
    url = f"{gw.url}/voice/webhook/aws-connect"

    async def deliver(event: dict[str, Any], now: float | None = None) -> httpx.Response:
        req = forwarder.signed_request(event, url, GH_SECRET, now=now)
        return await gw.client.post(url, content=req.data, headers=dict(req.header_items()))

    async with websockets.connect(f"{gw.ws_url}?call_id={contact}&token={admin_token()}") as ws:
        unsigned = await gw.client.post(url, json=contact_event(contact))
        assert unsigned.status_code == 401
        stale = await deliver(contact_event(contact), now=time.time() - 3600)
        assert stale.status_code == 401 and stale.json()["error"]["code"] == "stale_request"
        assert (
            await gw.client.get(f"/voice/calls/{contact}/status", headers=auth())
        ).status_code == 404

        assert (await deliver(contact_event(contact))).status_code == 200
        turn = contact_event(contact, {"input": "Do you deliver on Sundays?"}, {"turn": "1"})
        req = forwarder.signed_request(turn, url, GH_SECRET)
        headers = dict(req.header_items())
        first = await gw.client.post(url, content=req.data, headers=headers)
        replay = await gw.client.post(url, content=req.data, headers=headers)  # byte for byte
        assert first.status_code == 200  # a replay is refused (issue 19), nothing done:
        assert replay.status_code == 409 and replay.json()["error"]["code"] == "replayed_event"
        events = await collect(ws, lambda evs: len(evs) >= 3, timeout_s=2.0)
    assert [e["type"] for e in events] == ["call.started", "message.received", "message.sent"]
    status = (await gw.client.get(f"/voice/calls/{contact}/status", headers=auth())).json()
    assert status["turns"] == 1
