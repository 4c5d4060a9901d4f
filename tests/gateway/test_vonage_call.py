"""Whole Vonage calls through the real gateway app (uvicorn) and the real orchestrator on
Postgres: webhooks signed as Vonage signs them (HS256 JWT made with PyJWT, `payload_hash` of the
body or of the GET query), NCCO checked against the SDK's models, `/ws` events; Vonage's REST API
(create, hang up) faked with `responses`, since the SDK uses requests."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import jwt
import pytest
import responses
import websockets

from realtime_gateway.drivers.vonage import VonageDriver
from realtime_gateway.vocabulary import CallOptions
from tests.gateway.conftest import PUBLIC, Gateway, admin_token, auth, served, settings_for
from tests.gateway.provider_fakes import insert_routed_agent
from tests.gateway.test_vonage_driver import PRIVATE_PEM, check_ncco, unsigned
from tests.gateway.ws_client import collect

SECRET = "vonage-call-test-signature-secret"
APP_ID = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"
OUR_NUMBER = "+447700900000"
CALLER = "14155550100"
API = "https://api.nexmo.com/v1/calls"


def vg_settings(data_dir: Path, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "vonage_application_id": APP_ID,
        "vonage_private_key": PRIVATE_PEM,
        "vonage_phone_number": OUR_NUMBER,
        "vonage_signature_secret": SECRET,
        **overrides,
    }
    return settings_for(data_dir, **values)


def token(payload: bytes, secret: str = SECRET, iat: float | None = None) -> str:
    claims = {
        "iat": int(time.time() if iat is None else iat),
        "jti": str(uuid.uuid4()),
        "iss": "Vonage",
        "payload_hash": hashlib.sha256(payload).hexdigest(),
        "application_id": APP_ID,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


async def vonage_post(
    gw: Gateway, path: str, body: dict[str, Any], bearer: str | None = None, **sign: Any
) -> httpx.Response:
    raw = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    headers["Authorization"] = f"Bearer {bearer or token(raw, **sign)}"
    return await gw.client.post(path, content=raw, headers=headers)


async def vonage_answer(gw: Gateway, params: dict[str, str]) -> httpx.Response:
    compact = json.dumps(params, separators=(",", ":")).encode()
    return await gw.client.get(
        f"/voice/webhook/vonage/answer?{urlencode(params)}",
        headers={"Authorization": f"Bearer {token(compact)}"},
    )


def answer_params(call: str) -> dict[str, str]:
    return {"to": OUR_NUMBER[1:], "from": CALLER, "uuid": call, "conversation_uuid": "CON-" + call}


def heard(call: str, text: str | None) -> dict[str, Any]:
    return {
        "speech": {
            "results": [{"text": text, "confidence": "0.9"}] if text else [],
            "timeout_reason": "end_on_silence_timeout" if text else "start_timeout",
        },
        "dtmf": {"digits": None, "timed_out": False},
        "uuid": call,
        "conversation_uuid": "CON-" + call,
        "timestamp": "2026-11-25T08:00:00.000Z",
    }


def status_event(call: str, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "uuid": call,
        "conversation_uuid": "CON-" + call,
        "status": status,
        "direction": extra.pop("direction", "inbound"),
        "timestamp": f"2026-11-25T08:00:{len(status):02d}.000Z",
        **extra,
    }


def next_path(ncco: list[dict[str, Any]]) -> str:
    url = urlsplit(ncco[-1]["eventUrl"][0])
    assert f"{url.scheme}://{url.netloc}" == PUBLIC
    return f"{url.path}?{url.query}"


def ended(events: list[dict[str, Any]]) -> bool:
    return any(e["type"] == "call.ended" for e in events)


@pytest.fixture
def vonage_api() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


async def test_inbound_call_talks_turns_hangs_up_and_ends_once(
    data_dir: Path, orchestrator: httpx.ASGITransport, vonage_api: responses.RequestsMock
) -> None:
    call = str(uuid.uuid4())
    hangup = vonage_api.put(f"{API}/{call}", status=204)
    async with served(vg_settings(data_dir), orchestrator) as gw:
        driver = await gw.rt.drivers.get("vonage")
        assert isinstance(driver, VonageDriver)
        driver.tts_chars_per_s, driver.hangup_grace_s = 1e9, 0.0
        ws_url = f"{gw.ws_url}?call_id={call}&token={admin_token()}"
        async with websockets.connect(ws_url) as ws:
            r = await vonage_answer(gw, answer_params(call))
            assert r.status_code == 200, r.text
            ncco = r.json()
            assert check_ncco(ncco) == ["talk", "input"] and ncco[0]["text"]
            assert unsigned(next_path(ncco), SECRET) == "/voice/webhook/vonage/input?turn=1"

            r1 = await vonage_post(gw, next_path(ncco), heard(call, "What are your hours?"))
            again = await vonage_post(gw, next_path(ncco), heard(call, "What are your hours?"))
            assert r1.status_code == again.status_code == 200 and r1.json() == again.json()
            ncco = r1.json()
            assert check_ncco(ncco) == ["talk", "input"]
            assert unsigned(next_path(ncco), SECRET) == "/voice/webhook/vonage/input?turn=2"

            r2 = await vonage_post(gw, next_path(ncco), heard(call, "Thanks, goodbye"))
            assert r2.status_code == 200
            assert "input" not in [a["action"] for a in r2.json()]
            await driver.pending_hangups()
            assert hangup.call_count == 1  # the end we can prove: an API hang-up

            done = status_event(call, "completed", duration="21")
            for _ in range(2):  # delivered twice
                assert (await vonage_post(gw, "/voice/webhook/vonage/event", done)).status_code in (
                    200,
                    204,
                )
            events = await collect(ws, ended)
        assert [e["type"] for e in events] == [
            "call.started",
            "message.received",
            "message.sent",
            "message.received",
            "message.sent",
            "call.ended",
        ]
        assert events[0]["data"]["from"] == "+" + CALLER
        assert events[5]["data"]["duration_s"] == 21.0
        status = (await gw.client.get(f"/voice/calls/{call}/status", headers=auth())).json()
        assert (status["status"], status["turns"], status["provider"]) == ("completed", 2, "vonage")


async def test_forged_tampered_unsigned_and_stale_webhooks_change_nothing(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    call = str(uuid.uuid4())
    async with served(vg_settings(data_dir), orchestrator) as gw:
        ws_url = f"{gw.ws_url}?call_id={call}&token={admin_token()}"
        async with websockets.connect(ws_url) as ws:
            forged = await vonage_post(
                gw, "/voice/webhook/vonage/answer", answer_params(call), secret="x" * 40
            )
            unsigned = await gw.client.post(
                "/voice/webhook/vonage/answer", json=answer_params(call)
            )
            assert forged.status_code == 403 and unsigned.status_code == 401
            assert (
                await gw.client.get(f"/voice/calls/{call}/status", headers=auth())
            ).status_code == 404

            assert (await vonage_answer(gw, answer_params(call))).status_code == 200
            # a signature lifted from one body and put on another
            genuine = json.dumps(status_event(call, "answered")).encode()
            swapped = await vonage_post(
                gw,
                "/voice/webhook/vonage/event",
                status_event(call, "completed"),
                bearer=token(genuine),
            )
            assert swapped.status_code == 403
            # a captured "completed" replayed long after it was signed
            stale = await vonage_post(
                gw,
                "/voice/webhook/vonage/event",
                status_event(call, "completed"),
                iat=time.time() - 3600,
            )
            assert stale.status_code == 403
            events = await collect(ws, lambda evs: False, timeout_s=1.0)
        assert [e["type"] for e in events] == ["call.started"]
        status = (await gw.client.get(f"/voice/calls/{call}/status", headers=auth())).json()
        assert status["status"] != "completed"


async def test_outbound_call_is_created_through_the_api_and_answered(
    data_dir: Path, orchestrator: httpx.ASGITransport, vonage_api: responses.RequestsMock
) -> None:
    call = str(uuid.uuid4())
    vonage_api.post(
        API,
        status=201,
        json={"uuid": call, "status": "started", "direction": "outbound", "conversation_uuid": "C"},
    )
    async with served(vg_settings(data_dir), orchestrator) as gw:
        driver = await gw.rt.drivers.get("vonage")
        placed = await driver.make_call("+14155550100", CallOptions())
        assert placed.call_id == call
        sent = json.loads(vonage_api.calls[0].request.body)
        answer_url = sent["answer_url"][0]
        assert (
            unsigned(answer_url, SECRET)
            == f"{PUBLIC}/voice/webhook/vonage/answer?direction=outbound"
        )
        event_url = urlsplit(sent["event_url"][0])
        assert urlsplit(unsigned(sent["event_url"][0], SECRET)).query == "direction=outbound"
        events_path = f"{event_url.path}?{event_url.query}"
        ws_url = f"{gw.ws_url}?call_id={call}&token={admin_token()}"
        async with websockets.connect(ws_url) as ws:
            for state in ("started", "ringing", "answered"):
                r = await vonage_post(gw, events_path, status_event(call, state))
                assert r.status_code in (200, 204)
            body = {"to": CALLER, "from": OUR_NUMBER[1:], "uuid": call, "conversation_uuid": "C"}
            answer = urlsplit(answer_url)
            r = await vonage_post(gw, f"{answer.path}?{answer.query}", body)
            assert check_ncco(r.json()) == ["talk", "input"]
            assert "direction=outbound" in r.json()[1]["eventUrl"][0]
            for state in ("completed", "completed"):
                r = await vonage_post(gw, events_path, status_event(call, state, duration="5"))
            events = await collect(ws, ended)
        assert [e["type"] for e in events] == ["call.started", "call.ended"]
        assert events[0]["data"]["direction"] == "outbound"


async def test_unanswered_outbound_call_still_ends_once(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    call = str(uuid.uuid4())
    async with served(vg_settings(data_dir), orchestrator) as gw:
        ws_url = f"{gw.ws_url}?call_id={call}&token={admin_token()}"
        async with websockets.connect(ws_url) as ws:
            for state in ("started", "ringing", "timeout"):
                body = status_event(call, state, direction="outbound")
                r = await vonage_post(gw, "/voice/webhook/vonage/status", body)
                assert r.status_code in (200, 204)
            events = await collect(ws, ended)
        assert [e["type"] for e in events] == ["call.started", "call.ended"]
        status = (await gw.client.get(f"/voice/calls/{call}/status", headers=auth())).json()
        assert (status["status"], status["direction"]) == ("no-answer", "outbound")


async def test_without_a_configured_number_a_transfer_calls_out_from_the_dialled_one(
    data_dir: Path, orchestrator: httpx.ASGITransport, pg_dsn: str
) -> None:
    """Inbound-only setups often leave VONAGE_PHONE_NUMBER unset: the transfer still happens,
    from the number the caller dialled (carried in our signed callback URLs from the answer)."""
    dialled = await insert_routed_agent(pg_dsn, "+15557770001", "Front desk, how can I help?")
    call = str(uuid.uuid4())
    async with served(vg_settings(data_dir, vonage_phone_number=None), orchestrator) as gw:
        params = {**answer_params(call), "to": dialled[1:]}
        ncco = (await vonage_answer(gw, params)).json()
        r = await vonage_post(gw, next_path(ncco), heard(call, "Can I talk to a real person?"))
        ncco = r.json()
        assert check_ncco(ncco)[-1] == "connect"
        assert ncco[-1]["from"] == dialled[1:]


async def test_transfer_connects_the_caller_from_our_number(
    data_dir: Path, orchestrator: httpx.ASGITransport, pg_dsn: str
) -> None:
    dialled = await insert_routed_agent(pg_dsn, "+15557770000", "Front desk, how can I help?")
    call = str(uuid.uuid4())
    async with served(vg_settings(data_dir), orchestrator) as gw:
        params = {**answer_params(call), "to": dialled[1:]}
        ncco = (await vonage_answer(gw, params)).json()
        assert ncco[0]["text"] == "Front desk, how can I help?"
        r = await vonage_post(gw, next_path(ncco), heard(call, "Can I talk to a real person?"))
        ncco = r.json()
        assert check_ncco(ncco)[-1] == "connect"
        assert ncco[-1]["from"] == OUR_NUMBER[1:]
        assert ncco[-1]["endpoint"] == [{"type": "phone", "number": "15557770000"}]
