"""Issue 19: a signature covers what drives state, a signed request is used once, and the webhook
self-test is a management route. Every request goes through the real gateway app (in process) on
the real orchestrator and Postgres; Twilio requests are signed with Twilio's `RequestValidator`,
Vonage tokens made with PyJWT as Vonage makes them, Connect requests by the shipped forwarder.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import jwt
import yaml
from twilio.request_validator import RequestValidator

from realtime_gateway.calls import MemoryCallStore
from shared.auth import mint_token
from tests.gateway.conftest import (
    GH_SECRET,
    JWT_SECRET,
    PUBLIC,
    ROOT,
    Gateway,
    auth,
    gateway,
    settings_for,
)
from tests.gateway.provider_fakes import load_forwarder
from tests.gateway.test_vonage_driver import PRIVATE_PEM, with_sig

TW_TOKEN = "signing-state-twilio-auth-token"
TW_ACCOUNT = "AC" + "3" * 32
VG_SECRET = "signing-state-vonage-signature-secret"
OUR_NUMBER = "+15550009999"
CALLER = "+15550001111"


def provider_settings(data_dir: Path, **overrides: Any) -> Any:
    return settings_for(
        data_dir,
        twilio_account_sid=TW_ACCOUNT,
        twilio_auth_token=TW_TOKEN,
        twilio_phone_number=OUR_NUMBER,
        vonage_application_id="aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
        vonage_private_key=PRIVATE_PEM,
        vonage_phone_number="+447700900000",
        vonage_signature_secret=VG_SECRET,
        aws_region="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="example-secret",
        aws_connect_instance_id="11111111-2222-3333-4444-555555555555",
        aws_connect_contact_flow_id="66666666-7777-8888-9999-000000000000",
        aws_connect_phone_number="+12025550123",
        **overrides,
    )


async def call_status(gw: Gateway, call_id: str) -> dict[str, Any] | None:
    r = await gw.client.get(f"/voice/calls/{call_id}/status", headers=auth())
    return r.json() if r.status_code == 200 else None


# ---- Twilio: a GET is read from its signed URL only ----------------------------------------------


async def test_a_twilio_get_uses_its_signed_url_not_a_form_body(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    """Twilio signs a GET over its URL alone: a form body riding on a captured GET must not
    replace the URL's CallSid and From."""
    sid, other = "CA" + uuid.uuid4().hex, "CA" + uuid.uuid4().hex
    query = {"CallSid": sid, "AccountSid": TW_ACCOUNT, "From": CALLER, "To": OUR_NUMBER}
    query |= {"CallStatus": "ringing", "Direction": "inbound"}
    path = f"/voice/webhook/twilio?{urlencode(query)}"
    signature = RequestValidator(TW_TOKEN).compute_signature(f"{PUBLIC}{path}", {})
    smuggled = urlencode({"CallSid": other, "From": "+15557654321"})
    headers = {
        "X-Twilio-Signature": signature,
        "Content-Type": "application/x-www-form-urlencoded",
    }
    async with gateway(provider_settings(data_dir), orchestrator) as gw:
        r = await gw.client.request("GET", path, content=smuggled, headers=headers)
        assert r.status_code == 200, r.text
        assert "<Gather" in r.text
        created = await call_status(gw, sid)
        assert await call_status(gw, other) is None
    assert created is not None and created["from"] == CALLER


# ---- Vonage ------------------------------------------------------------------------------------


def vonage_token(payload_hash: str, jti: str | None = None) -> str:
    claims = {
        "iat": int(time.time()),
        "jti": jti or str(uuid.uuid4()),
        "iss": "Vonage",
        "payload_hash": payload_hash,
        "application_id": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
    }
    return jwt.encode(claims, VG_SECRET, algorithm="HS256")


async def vonage_post(
    gw: Gateway, path: str, body: dict[str, Any], token: str | None = None
) -> httpx.Response:
    raw = json.dumps(body).encode()
    bearer = token or vonage_token(hashlib.sha256(raw).hexdigest())
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {bearer}"}
    return await gw.client.post(path, content=raw, headers=headers)


def answer_query(call: str) -> dict[str, str]:
    return {"to": "447700900000", "from": CALLER[1:], "uuid": call, "conversation_uuid": "C"}


async def vonage_answer(gw: Gateway, call: str) -> list[dict[str, Any]]:
    params = answer_query(call)
    compact = json.dumps(params, separators=(",", ":")).encode()
    r = await gw.client.get(
        f"/voice/webhook/vonage/answer?{urlencode(params)}",
        headers={"Authorization": f"Bearer {vonage_token(hashlib.sha256(compact).hexdigest())}"},
    )
    assert r.status_code == 200, r.text
    ncco: list[dict[str, Any]] = r.json()
    return ncco


def input_path(ncco: list[dict[str, Any]]) -> str:
    url = urlsplit(ncco[-1]["eventUrl"][0])
    return f"{url.path}?{url.query}"


def heard(call: str, text: str) -> dict[str, Any]:
    return {
        "speech": {"results": [{"text": text, "confidence": "0.9"}]},
        "dtmf": {"digits": None, "timed_out": False},
        "uuid": call,
        "conversation_uuid": "C",
    }


async def test_a_vonage_get_signed_over_an_empty_body_starts_nothing(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    call = str(uuid.uuid4())
    token = vonage_token(hashlib.sha256(b"").hexdigest())
    async with gateway(provider_settings(data_dir), orchestrator) as gw:
        r = await gw.client.get(
            f"/voice/webhook/vonage/answer?{urlencode(answer_query(call))}",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 403 and "payload" in r.json()["error"]["message"]
        assert await call_status(gw, call) is None


async def test_a_replayed_vonage_token_is_refused_and_stored_once(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    """The same token twice is a replay (409); Vonage's own retry, with a new token, is the
    same turn answered again."""
    call = str(uuid.uuid4())
    async with gateway(provider_settings(data_dir), orchestrator) as gw:
        path = input_path(await vonage_answer(gw, call))
        body = heard(call, "What are your opening hours?")
        token = vonage_token(hashlib.sha256(json.dumps(body).encode()).hexdigest())
        first = await vonage_post(gw, path, body, token)
        replay = await vonage_post(gw, path, body, token)
        retry = await vonage_post(gw, path, body)  # a new token: Vonage retrying
        assert first.status_code == 200, first.text
        assert replay.status_code == 409 and replay.json()["error"]["code"] == "replayed_event"
        assert retry.status_code == 200 and retry.json() == first.json()
        status = await call_status(gw, call)
    assert status is not None and status["turns"] == 1


async def test_a_vonage_turn_number_cannot_be_changed_or_left_unsigned(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    """Our own state in a callback URL is covered by our `sig`: a captured input posted (with
    a fresh token) under other turn numbers, or without the sig, is refused and stores nothing."""
    call = str(uuid.uuid4())
    async with gateway(provider_settings(data_dir), orchestrator) as gw:
        path = input_path(await vonage_answer(gw, call))
        assert "turn=1" in path and "sig=" in path
        body = heard(call, "Cancel my order")
        assert (await vonage_post(gw, path, body)).status_code == 200
        for turn in ("2", "3", "4"):
            moved = await vonage_post(gw, path.replace("turn=1", f"turn={turn}"), body)
            assert moved.status_code == 403, moved.text
            assert "sig" in moved.json()["error"]["message"]
        bare = await vonage_post(gw, "/voice/webhook/vonage/input?turn=7", body)
        assert bare.status_code == 403
        added = await vonage_post(gw, f"{path}&agent_id=other", body)
        assert added.status_code == 403
        status = await call_status(gw, call)
    assert status is not None and status["turns"] == 1


async def test_a_vonage_status_body_or_url_on_the_answer_step_starts_no_call(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    """A body signed for the event URL does nothing on the answer URL, and the signed query of
    one step does not work on another."""
    call = str(uuid.uuid4())
    event = {"uuid": call, "conversation_uuid": "C", "status": "answered", "from": CALLER[1:]}
    async with gateway(provider_settings(data_dir), orchestrator) as gw:
        r = await vonage_post(gw, "/voice/webhook/vonage/answer", event)
        assert r.status_code == 400 and r.json()["error"]["code"] == "wrong_webhook"
        status_query = urlsplit(
            with_sig("/voice/webhook/vonage/status?direction=outbound", VG_SECRET)
        )
        answer = {"to": CALLER[1:], "from": "447700900000", "uuid": call, "conversation_uuid": "C"}
        moved = await vonage_post(gw, f"/voice/webhook/vonage/answer?{status_query.query}", answer)
        assert moved.status_code == 403
        assert await call_status(gw, call) is None
        # the same body on its own step is fine: a status for an outbound call
        good = await vonage_post(gw, f"{status_query.path}?{status_query.query}", event)
        assert good.status_code == 204
        created = await call_status(gw, call)
    assert created is not None and created["direction"] == "outbound"


async def test_a_vonage_input_with_a_signed_query_still_needs_an_input_body(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    call = str(uuid.uuid4())
    async with gateway(provider_settings(data_dir), orchestrator) as gw:
        path = input_path(await vonage_answer(gw, call))
        r = await vonage_post(gw, path, {"uuid": call, "status": "completed"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "wrong_webhook"
        status = await call_status(gw, call)
    assert status is not None and status["status"] != "completed" and status["turns"] == 0


# ---- Amazon Connect: a signed forwarder request is used once -------------------------------------


async def test_a_replayed_connect_request_is_refused_with_409(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    forwarder = load_forwarder()
    contact = str(uuid.uuid4())
    url = f"{PUBLIC}/voice/webhook/aws-connect"
    contact_data = {
        "ContactId": contact,
        "Channel": "VOICE",
        "InitiationMethod": "INBOUND",
        "CustomerEndpoint": {"Address": CALLER, "Type": "TELEPHONE_NUMBER"},
        "SystemEndpoint": {"Address": "+12025550123", "Type": "TELEPHONE_NUMBER"},
        "Attributes": {},
    }
    start = {"Details": {"ContactData": contact_data, "Parameters": {}}}
    turn = {"Details": {"ContactData": contact_data, "Parameters": {"input": "Hi", "turn": "1"}}}
    async with gateway(provider_settings(data_dir), orchestrator) as gw:
        for event in (start, turn):
            req = forwarder.signed_request(event, url, GH_SECRET)
            headers = dict(req.header_items())
            first = await gw.client.post(url, content=req.data, headers=headers)
            assert first.status_code == 200, first.text
            # byte for byte, and with the header re-spelled (upper case, a junk second value)
            signature = headers["X-gateway-signature"]
            respelled = {
                **headers,
                "X-gateway-signature": f"v1={'0' * 64}, v1={signature[3:].upper()}",
            }
            for again in (headers, respelled):
                replay = await gw.client.post(url, content=req.data, headers=again)
                assert replay.status_code == 409, replay.text
                assert replay.json()["error"]["code"] == "replayed_event"
        # Connect retrying the turn: a new forward (new signature), answered from storage
        retried = forwarder.signed_request(turn, url, GH_SECRET)
        r = await gw.client.post(url, content=retried.data, headers=dict(retried.header_items()))
        assert r.status_code == 200 and r.json()["action"] == "speak"
        status = await call_status(gw, contact)
    assert status is not None and status["turns"] == 1


# ---- generic-http: the replay ledger is kept where the shipped stack keeps it --------------------


def test_the_shipped_redis_keeps_the_replay_ledgers_across_restarts() -> None:
    """Decision (README, security): the replay ledgers live in Redis with REDIS_URL, and need
    Redis persistence; the shipped compose runs Redis with an append-only file on a volume."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
    gateway_env = compose["services"]["node-backend"]["environment"]
    assert gateway_env["REDIS_URL"].startswith("redis://redis:")


# ---- POST /voice/webhook/test: operator token and the management rate limit ----------------------


def token(role: str, sub: str = "selftest-user") -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(JWT_SECRET, sub=sub, role=role)}"}


async def test_the_webhook_self_test_needs_an_operator_and_is_rate_limited(
    data_dir: Path,
) -> None:
    settings = settings_for(data_dir, rate_limit_management="2/minute")
    async with gateway(settings) as gw:
        store = gw.rt.calls
        assert isinstance(store, MemoryCallStore)
        anonymous = await gw.client.post("/voice/webhook/test")
        assert anonymous.status_code == 401
        viewer = await gw.client.post("/voice/webhook/test", headers=token("viewer"))
        assert viewer.status_code == 403 and "operator" in viewer.json()["error"]["message"]
        operator = await gw.client.post("/voice/webhook/test", headers=token("operator"))
        assert operator.status_code == 200 and operator.json()["status"] == "ok"
        limited = await gw.client.post("/voice/webhook/test", headers=token("operator"))
        assert limited.status_code == 429 and "retry-after" in limited.headers
        flood = [await gw.client.post("/voice/webhook/test") for _ in range(4)]
        assert flood[-1].status_code == 429  # unauthenticated floods are counted too
        # provider webhooks stay outside the management limit
        r = await gw.client.post("/voice/webhook/generic-http", content=b"{}")
        assert r.status_code == 401
