"""Vonage driver against a recording flow: JWT-signed webhooks made with PyJWT as Vonage makes
them, NCCO validated by parsing it back into the SDK's models, statuses mapped, REST faked with
`responses` (the SDK uses requests)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid as uuidlib
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

import httpx
import jwt
import pytest
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from vonage_voice.models.ncco import Connect, Input, Talk

from realtime_gateway.config import GatewaySettings
from realtime_gateway.drivers.base import DriverDeps
from realtime_gateway.drivers.vonage import VonageDriver
from realtime_gateway.signatures import VONAGE_MAX_TOKEN_AGE_S as MAX_TOKEN_AGE_S
from realtime_gateway.silence import MAX_SILENT_TURNS
from realtime_gateway.vocabulary import CallOptions, ProviderError, SignatureError, WebhookRequest
from shared.contract import Action
from tests.gateway.provider_fakes import RecordingFlow

SIGNATURE_SECRET = "vonage-signature-secret-0123456789"
API_KEY = "abcd1234"
APP_ID = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"
PUBLIC = "https://gw.example.com"
OUR_NUMBER = "+447700900000"
CALLER = "14155550100"
CALL_UUID = "63f61863-4a51-4f6b-86e1-46edebcf9356"
API = "https://api.nexmo.com/v1/calls"

_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PRIVATE_PEM = _KEY.private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8,
    serialization.NoEncryption(),
).decode()


def settings(**overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "public_base_url": PUBLIC,
        "vonage_api_key": API_KEY,
        "vonage_application_id": APP_ID,
        "vonage_private_key": PRIVATE_PEM,
        "vonage_phone_number": OUR_NUMBER,
        "vonage_signature_secret": SIGNATURE_SECRET,
        **overrides,
    }
    return GatewaySettings(**values)


def vonage_jwt(payload_hash: str, secret: str = SIGNATURE_SECRET, iat: float | None = None) -> str:
    """A webhook signature as Vonage makes it: HS256 over these claims."""
    claims = {
        "iat": int(iat if iat is not None else time.time()),
        "jti": str(uuidlib.uuid4()),
        "iss": "Vonage",
        "payload_hash": payload_hash,
        "api_key": API_KEY,
        "application_id": APP_ID,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def query_sig(step: str, params: dict[str, str], secret: str = SIGNATURE_SECRET) -> str:
    """The gateway's `sig` over a callback URL's step and query, computed independently:
    HMAC-SHA256 keyed with HMAC-SHA256(secret, label), over `step?sorted urlencoded params`."""
    key = hmac.new(secret.encode(), b"vao:vonage-callback-query:v1", hashlib.sha256).digest()
    canonical = f"{step}?{urlencode(sorted(params.items()))}"
    return hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()


def with_sig(path: str, secret: str = SIGNATURE_SECRET) -> str:
    """`path` with the gateway's `sig` on its query, as a callback URL the gateway made."""
    parts = urlsplit(path)
    params = dict(parse_qsl(parts.query))
    if not params or "sig" in params:
        return path
    step = parts.path.partition("/voice/webhook/vonage")[2].strip("/")
    return f"{parts.path}?{urlencode({**params, 'sig': query_sig(step, params, secret)})}"


def unsigned(url: str, secret: str = SIGNATURE_SECRET) -> str:
    """A callback URL the gateway made, its `sig` checked and removed."""
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query))
    step = parts.path.partition("/voice/webhook/vonage")[2].strip("/")
    sig = params.pop("sig")
    assert sig == query_sig(step, params, secret), url
    base = f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.netloc else parts.path
    return f"{base}?{urlencode(params)}" if params else base


def post(path: str, body: dict[str, Any], **sign: Any) -> WebhookRequest:
    """POST as Vonage does to a callback URL the gateway gave it (query signed by the gateway)."""
    raw = json.dumps(body).encode()
    token = vonage_jwt(hashlib.sha256(raw).hexdigest(), **sign)
    url = f"{PUBLIC}{with_sig(path)}"
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    return WebhookRequest("POST", url, headers, query, raw)


def get(path: str, params: dict[str, str], **sign: Any) -> WebhookRequest:
    """GET webhooks: Vonage hashes the query parameters as compact JSON, in order."""
    compact = json.dumps(params, separators=(",", ":"))
    token = vonage_jwt(hashlib.sha256(compact.encode()).hexdigest(), **sign)
    url = f"{PUBLIC}{path}?{urlencode(params)}"
    return WebhookRequest("GET", url, {"authorization": f"Bearer {token}"}, params, b"")


def answer_params() -> dict[str, str]:
    return {
        "to": OUR_NUMBER[1:],
        "from": CALLER,
        "uuid": CALL_UUID,
        "conversation_uuid": "CON-" + CALL_UUID,
        "region_url": "https://api-us-3.vonage.com",
    }


def speech_result(text: str | None, confidence: Any = "0.94") -> dict[str, Any]:
    results = [{"text": text, "confidence": confidence}] if text else []
    reason = "end_on_silence_timeout" if text else "start_timeout"
    return {
        "speech": {"results": results, "timeout_reason": reason},
        "dtmf": {"digits": None, "timed_out": not text},
        "from": CALLER,
        "to": OUR_NUMBER[1:],
        "uuid": CALL_UUID,
        "conversation_uuid": "CON-" + CALL_UUID,
        "timestamp": "2026-11-25T08:00:00.000Z",
    }


@pytest.fixture
def flow() -> RecordingFlow:
    return RecordingFlow()


@pytest.fixture
async def driver(flow: RecordingFlow) -> AsyncIterator[VonageDriver]:
    async with httpx.AsyncClient() as http:
        d = VonageDriver(DriverDeps(settings(), http, flow))
        d.tts_chars_per_s = 1e9  # hang up right after the goodbye in tests
        d.hangup_grace_s = 0.0
        await d.initialize()
        yield d
        await d.aclose()


@pytest.fixture
def api() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


async def handle(driver: VonageDriver, req: WebhookRequest, step: str) -> Any:
    await driver.verify_request(req)
    resp = await driver.handle_webhook(req, step)
    assert resp.status_code in (200, 204), bytes(resp.body)
    return json.loads(bytes(resp.body)) if resp.status_code == 200 else None


def check_ncco(ncco: list[dict[str, Any]]) -> list[str]:
    """Each action must parse back into the SDK's model (Vonage's own rules)."""
    models = {"talk": Talk, "input": Input, "connect": Connect}
    for action in ncco:
        model = models[action["action"]]
        data = {("from_" if k == "from" else k): v for k, v in action.items() if k != "action"}
        model(**data)
    return [a["action"] for a in ncco]


def header_text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def event_turn(action: dict[str, Any]) -> dict[str, str]:
    url = unsigned(action["eventUrl"][0])
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


# ---- signatures ------------------------------------------------------------------------------


async def test_signed_get_and_post_answers_verify(driver: VonageDriver) -> None:
    await driver.verify_request(get("/voice/webhook/vonage/answer", answer_params()))
    await driver.verify_request(post("/voice/webhook/vonage/answer", answer_params()))


async def test_forged_unsigned_and_tampered_webhooks_are_rejected(driver: VonageDriver) -> None:
    forged = post("/voice/webhook/vonage/status", {"uuid": CALL_UUID}, secret="x" * 32)
    with pytest.raises(SignatureError):
        await driver.verify_request(forged)
    unsigned = post("/voice/webhook/vonage/status", {"uuid": CALL_UUID})
    unsigned.headers = {}
    with pytest.raises(SignatureError) as exc:
        await driver.verify_request(unsigned)
    assert exc.value.status == 401
    tampered = post("/voice/webhook/vonage/status", {"uuid": CALL_UUID, "status": "answered"})
    tampered.body = json.dumps({"uuid": CALL_UUID, "status": "completed"}).encode()
    with pytest.raises(SignatureError, match="payload"):
        await driver.verify_request(tampered)
    tampered_get = get("/voice/webhook/vonage/answer", answer_params())
    tampered_get.url = tampered_get.url.replace(CALLER, "14155550199")
    with pytest.raises(SignatureError, match="payload"):
        await driver.verify_request(tampered_get)


async def test_a_replay_after_the_token_window_is_rejected(driver: VonageDriver) -> None:
    old = post(
        "/voice/webhook/vonage/status",
        {"uuid": CALL_UUID, "status": "completed"},
        iat=time.time() - MAX_TOKEN_AGE_S - 5,
    )
    with pytest.raises(SignatureError, match="stale"):
        await driver.verify_request(old)


# ---- call flow -------------------------------------------------------------------------------


async def test_answer_webhook_starts_the_call_with_talk_and_input(
    driver: VonageDriver, flow: RecordingFlow
) -> None:
    ncco = await handle(driver, get("/voice/webhook/vonage/answer", answer_params()), "answer")
    assert check_ncco(ncco) == ["talk", "input"]
    talk, listen = ncco
    assert talk["text"] == flow.greeting and talk["bargeIn"] is True
    assert listen["type"] == ["speech", "dtmf"]
    assert listen["eventMethod"] == "POST"
    assert listen["eventUrl"][0].startswith(f"{PUBLIC}/voice/webhook/vonage/input?")
    assert event_turn(listen) == {"turn": "1"}
    assert listen["speech"]["language"] == "en-US"
    (call,) = flow.starts
    assert (call.call_id, call.caller, call.callee, call.direction) == (
        CALL_UUID,
        "+" + CALLER,
        OUR_NUMBER,
        "inbound",
    )


async def test_input_result_is_a_turn_and_a_redelivery_is_the_same_turn(
    driver: VonageDriver, flow: RecordingFlow
) -> None:
    path = "/voice/webhook/vonage/input?turn=1"
    first = await handle(driver, post(path, speech_result("Opening hours?", 0.87)), "input")
    again = await handle(driver, post(path, speech_result("Opening hours?", 0.87)), "input")
    assert first == again
    assert len(flow.turns) == 1
    call_id, heard = flow.turns[0]
    assert (call_id, heard.turn_id, heard.text, heard.type) == (
        CALL_UUID,
        "1",
        "Opening hours?",
        "speech",
    )
    assert heard.confidence == pytest.approx(0.87)
    assert check_ncco(first) == ["talk", "input"]
    assert event_turn(first[1]) == {"turn": "2"}


async def test_dtmf_input_is_passed_as_digits(driver: VonageDriver, flow: RecordingFlow) -> None:
    body = speech_result(None)
    body["dtmf"] = {"digits": "123", "timed_out": False}
    await handle(driver, post("/voice/webhook/vonage/input?turn=2", body), "input")
    (_, heard) = flow.turns[0]
    assert (heard.type, heard.digits, heard.turn_id) == ("dtmf", "123", "2")


async def test_silence_reprompts_then_hangs_up_through_the_api(
    driver: VonageDriver, flow: RecordingFlow, api: responses.RequestsMock
) -> None:
    hangup = api.put(f"{API}/{CALL_UUID}", status=204)
    path = "/voice/webhook/vonage/input?turn=3"
    ncco = await handle(driver, post(path, speech_result(None)), "input")
    assert check_ncco(ncco) == ["talk", "input"]
    assert event_turn(ncco[1]) == {"turn": "3", "silent": "1"}
    for _ in range(MAX_SILENT_TURNS - 1):
        nxt = urlsplit(ncco[1]["eventUrl"][0])
        ncco = await handle(driver, post(f"{nxt.path}?{nxt.query}", speech_result(None)), "input")
    assert check_ncco(ncco) == ["talk"]
    assert "goodbye" in ncco[0]["text"].lower()
    await driver.pending_hangups()
    assert hangup.call_count == 1
    assert json.loads(api.calls[0].request.body) == {"action": "hangup"}
    assert header_text(api.calls[0].request.headers["Authorization"]).startswith("Bearer ")
    assert flow.turns == []


async def test_transfer_connects_from_our_number(driver: VonageDriver, flow: RecordingFlow) -> None:
    flow.replies["a human"] = [Action.say("Connecting you now."), Action.transfer("+14155550199")]
    ncco = await handle(
        driver, post("/voice/webhook/vonage/input?turn=1", speech_result("a human")), "input"
    )
    assert check_ncco(ncco) == ["talk", "connect"]
    connect = ncco[1]
    assert connect["from"] == OUR_NUMBER[1:]
    assert connect["endpoint"] == [{"type": "phone", "number": "14155550199"}]
    assert connect["eventType"] == "synchronous" and connect["eventMethod"] == "POST"
    assert [unsigned(u) for u in connect["eventUrl"]] == [
        f"{PUBLIC}/voice/webhook/vonage/transfer?turn=2"
    ]


async def test_a_transfer_nobody_answers_comes_back_to_the_agent(
    driver: VonageDriver, flow: RecordingFlow
) -> None:
    leg = {"uuid": "other-leg", "conversation_uuid": "CON-x", "status": "ringing"}
    path = "/voice/webhook/vonage/transfer?turn=2"
    assert await handle(driver, post(path, leg), "transfer") is None
    ncco = await handle(driver, post(path, {**leg, "status": "timeout"}), "transfer")
    assert check_ncco(ncco) == ["talk", "input"]
    assert "couldn't connect" in ncco[0]["text"] and event_turn(ncco[1]) == {"turn": "2"}
    assert flow.statuses == []  # the other leg's events are not this call's status


async def test_hangup_action_ends_with_talk_and_an_api_hangup(
    driver: VonageDriver, flow: RecordingFlow, api: responses.RequestsMock
) -> None:
    hangup = api.put(f"{API}/{CALL_UUID}", status=204)
    flow.replies["bye"] = [Action.say("Goodbye!"), Action.hangup()]
    ncco = await handle(
        driver, post("/voice/webhook/vonage/input?turn=5", speech_result("bye")), "input"
    )
    assert ncco == [{"action": "talk", "text": "Goodbye!", "bargeIn": False}]
    await driver.pending_hangups()
    assert hangup.call_count == 1


@pytest.mark.parametrize(
    ("vonage_status", "ours"),
    [
        ("started", "initiated"),
        ("ringing", "ringing"),
        ("answered", "in-progress"),
        ("completed", "completed"),
        ("busy", "busy"),
        ("cancelled", "canceled"),
        ("failed", "failed"),
        ("rejected", "failed"),
        ("timeout", "no-answer"),
        ("unanswered", "no-answer"),
    ],
)
async def test_event_statuses_map_to_ours(
    driver: VonageDriver, flow: RecordingFlow, vonage_status: str, ours: str
) -> None:
    body = {"uuid": CALL_UUID, "status": vonage_status, "timestamp": "2026-11-25T08:00:01Z"}
    await handle(driver, post("/voice/webhook/vonage/status", body), "status")
    assert [(c, s) for c, s, _ in flow.statuses] == [(CALL_UUID, ours)]


async def test_duplicate_event_is_recorded_once(driver: VonageDriver, flow: RecordingFlow) -> None:
    body = {
        "uuid": CALL_UUID,
        "status": "completed",
        "duration": "42",
        "timestamp": "2026-11-25T08:01:00Z",
    }
    await handle(driver, post("/voice/webhook/vonage/event", body), "event")
    await handle(driver, post("/voice/webhook/vonage/event", body), "event")
    assert flow.statuses == [
        (CALL_UUID, "completed", {"provider_status": "completed", "duration_s": 42.0})
    ]


async def test_machine_answer_leaves_the_message_and_hangs_up(
    driver: VonageDriver, flow: RecordingFlow, api: responses.RequestsMock
) -> None:
    transfer = api.put(f"{API}/{CALL_UUID}", status=204)
    body = {"uuid": CALL_UUID, "status": "machine", "timestamp": "2026-11-25T08:00:02Z"}
    await handle(driver, post("/voice/webhook/vonage/status", body), "status")
    await driver.pending_hangups()
    assert transfer.call_count == 2  # the message NCCO, then the hang-up
    sent = json.loads(api.calls[0].request.body)
    assert sent["action"] == "transfer"
    assert sent["destination"]["ncco"] == [
        {"action": "talk", "text": flow.greeting, "bargeIn": False}
    ]
    assert json.loads(api.calls[1].request.body) == {"action": "hangup"}


# ---- REST --------------------------------------------------------------------------------------


async def test_make_call_creates_the_call_with_signed_callbacks(
    driver: VonageDriver, api: responses.RequestsMock
) -> None:
    created = api.post(
        API,
        status=201,
        json={
            "uuid": CALL_UUID,
            "status": "started",
            "direction": "outbound",
            "conversation_uuid": "CON-1",
        },
    )
    out = await driver.make_call(
        "+14155550100", CallOptions(agent_id="sales", machine_detection=True, recording=True)
    )
    assert (out.call_id, out.status) == (CALL_UUID, "initiated")
    assert created.call_count == 1
    request = api.calls[0].request
    sent = json.loads(request.body)
    assert sent["to"] == [{"type": "phone", "number": "14155550100"}]
    assert sent["from"] == {"type": "phone", "number": OUR_NUMBER[1:]}
    assert [unsigned(u) for u in sent["answer_url"]] == [
        f"{PUBLIC}/voice/webhook/vonage/answer?direction=outbound&agent_id=sales&record=1"
    ]
    assert [unsigned(u) for u in sent["event_url"]] == [
        f"{PUBLIC}/voice/webhook/vonage/status?direction=outbound&agent_id=sales"
    ]
    assert sent["machine_detection"] == "continue"
    app_jwt = header_text(request.headers["Authorization"]).removeprefix("Bearer ")
    claims = jwt.decode(app_jwt, _KEY.public_key(), algorithms=["RS256"])
    assert claims["application_id"] == APP_ID


async def test_outbound_answer_with_recording_starts_a_record_action(
    driver: VonageDriver, flow: RecordingFlow
) -> None:
    path = "/voice/webhook/vonage/answer?direction=outbound&agent_id=sales&record=1"
    ncco = await handle(driver, post(path, answer_params()), "answer")
    assert [a["action"] for a in ncco] == ["record", "talk", "input"]
    assert [unsigned(u) for u in ncco[0]["eventUrl"]] == [
        f"{PUBLIC}/voice/webhook/vonage/recording?uuid={CALL_UUID}"
    ]
    assert flow.starts[0].direction == "outbound" and flow.starts[0].agent_id == "sales"
    rec = {"recording_url": "https://api.nexmo.com/v1/files/x", "recording_uuid": "r1"}
    await handle(
        driver, post(f"/voice/webhook/vonage/recording?uuid={CALL_UUID}", rec), "recording"
    )
    await handle(
        driver, post(f"/voice/webhook/vonage/recording?uuid={CALL_UUID}", rec), "recording"
    )
    assert len(flow.statuses) == 1
    assert flow.statuses[0][2]["recording"]["recording_url"] == rec["recording_url"]


async def test_make_call_refused_is_a_provider_error(
    driver: VonageDriver, api: responses.RequestsMock
) -> None:
    api.post(API, status=400, json={"title": "Bad Request", "detail": "bad number"})
    with pytest.raises(ProviderError) as exc:
        await driver.make_call("+14155550100", CallOptions())
    assert exc.value.status == 400


async def test_end_call_hangs_up_and_an_ended_call_is_not_an_error(
    driver: VonageDriver, api: responses.RequestsMock
) -> None:
    hangup = api.put(f"{API}/{CALL_UUID}", status=204)
    await driver.end_call(CALL_UUID)
    assert hangup.call_count == 1  # the hang-up was sent, to this call's URL
    assert json.loads(api.calls[0].request.body) == {"action": "hangup"}
    sent_auth = api.calls[0].request.headers["Authorization"]  # the SDK sends bytes
    assert (sent_auth.decode() if isinstance(sent_auth, bytes) else sent_auth).startswith("Bearer ")
    gone = api.put(f"{API}/gone", status=404, json={"title": "Not Found"})
    await driver.end_call("gone")  # no error: the call had ended already
    assert gone.call_count == 1
    assert json.loads(api.calls[1].request.body) == {"action": "hangup"}


async def test_validate_configuration_names_missing_variables(flow: RecordingFlow) -> None:
    async with httpx.AsyncClient() as http:
        bare = VonageDriver(
            DriverDeps(
                GatewaySettings(
                    vonage_application_id=None,
                    vonage_private_key=None,
                    vonage_phone_number=None,
                    vonage_signature_secret=None,
                    public_base_url=None,
                    vonage_webhook_url=None,
                ),
                http,
                flow,
            )
        )
        report = await bare.validate_configuration()
    assert not report.ok
    assert {
        "VONAGE_APPLICATION_ID",
        "VONAGE_PRIVATE_KEY",
        "VONAGE_PHONE_NUMBER",
        "VONAGE_SIGNATURE_SECRET",
    } <= set(report.missing)


async def test_reachability_lists_one_call(
    driver: VonageDriver, api: responses.RequestsMock
) -> None:
    listed = api.get(
        API,
        json={
            "count": 0,
            "page_size": 1,
            "record_index": 0,
            "_links": {"self": {"href": "/v1/calls?page_size=1"}},
            "_embedded": {"calls": []},
        },
    )
    report = await driver.validate_configuration(check_reachability=True)
    assert report.ok and report.reachable is True and listed.call_count == 1


async def test_a_failing_flow_still_gets_a_valid_ncco(
    driver: VonageDriver, flow: RecordingFlow
) -> None:
    flow.broken = True
    ncco = await handle(
        driver, post("/voice/webhook/vonage/input?turn=4", speech_result("hello")), "input"
    )
    assert check_ncco(ncco) == ["talk", "input"]
    assert event_turn(ncco[1]) == {"turn": "4"} and "sorry" in ncco[0]["text"].lower()
    # A call that cannot start keeps the caller: the apology and a listen, as on every provider.
    ncco = await handle(driver, get("/voice/webhook/vonage/answer", answer_params()), "answer")
    assert check_ncco(ncco) == ["talk", "input"]


async def test_get_answer_signed_over_an_empty_body_is_refused(driver: VonageDriver) -> None:
    """A GET's query is what drives it: a payload_hash of the empty body covers none of it
    (issue 19: such a token was accepted with any query)."""
    params = answer_params()
    tok = vonage_jwt(hashlib.sha256(b"").hexdigest())
    url = f"{PUBLIC}/voice/webhook/vonage/answer?{urlencode(params)}"
    with pytest.raises(SignatureError, match="payload"):
        await driver.verify_request(
            WebhookRequest("GET", url, {"authorization": f"Bearer {tok}"}, params, b"")
        )
    post_req = post("/voice/webhook/vonage/answer", params)
    post_req.headers = {"authorization": f"Bearer {tok}"}
    with pytest.raises(SignatureError):  # a POST's hash must match its body
        await driver.verify_request(post_req)
