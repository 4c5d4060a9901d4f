"""Twilio driver against a recording flow: signatures (Twilio's own validator), TwiML checked
against Twilio's documented verbs/attributes, status dedupe, and REST faked at the HTTP layer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from twilio.request_validator import RequestValidator

from realtime_gateway.config import GatewaySettings
from realtime_gateway.drivers.base import DriverDeps
from realtime_gateway.drivers.twilio import TwilioDriver
from realtime_gateway.silence import MAX_SILENT_TURNS
from realtime_gateway.vocabulary import CallOptions, ProviderError, SignatureError, WebhookRequest
from shared.contract import Action
from tests.gateway.provider_fakes import (
    FakeTwilioApi,
    RecordingFlow,
    SentRequest,
    parse_twiml,
    twilio_call_resource,
)

TOKEN = "twilio-test-auth-token"
ACCOUNT = "AC" + "1" * 32
PUBLIC = "https://gw.example.com"
CALL_SID = "CA" + "a" * 32
CALLER = "+15550001111"
OUR_NUMBER = "+15550009999"


def settings(**overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "public_base_url": PUBLIC,
        "twilio_account_sid": ACCOUNT,
        "twilio_auth_token": TOKEN,
        "twilio_phone_number": OUR_NUMBER,
        **overrides,
    }
    return GatewaySettings(**values)


@pytest.fixture
def flow() -> RecordingFlow:
    return RecordingFlow()


@pytest.fixture
async def driver(flow: RecordingFlow) -> AsyncIterator[TwilioDriver]:
    async with httpx.AsyncClient() as http:
        d = TwilioDriver(DriverDeps(settings(), http, flow))
        await d.initialize()
        yield d
        await d.aclose()


def signed(
    path: str, form: dict[str, str], token: str = TOKEN, headers: dict[str, str] | None = None
) -> WebhookRequest:
    url = f"{PUBLIC}{path}"
    signature = RequestValidator(token).compute_signature(url, form)
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    hdrs = {"x-twilio-signature": signature, **{k.lower(): v for k, v in (headers or {}).items()}}
    body = "&".join(f"{k}={v}" for k, v in form.items()).encode()
    return WebhookRequest("POST", url, hdrs, query, body, form=form)


def call_form(**extra: str) -> dict[str, str]:
    return {
        "CallSid": CALL_SID,
        "AccountSid": ACCOUNT,
        "From": CALLER,
        "To": OUR_NUMBER,
        "CallStatus": "ringing",
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
        **extra,
    }


async def answer(driver: TwilioDriver, path: str, form: dict[str, str], step: str) -> str:
    req = signed(path, form)
    await driver.verify_request(req)
    resp = await driver.handle_webhook(req, step)
    assert resp.status_code == 200
    assert resp.media_type == "text/xml"
    return bytes(resp.body).decode()


def gather_turn(action_url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(action_url).query).items()}


# ---- signatures ------------------------------------------------------------------------------


async def test_twilios_published_example_signature_is_accepted(flow: RecordingFlow) -> None:
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+12349013030",
        "Digits": "1234",
        "From": "+12349013030",
        "To": "+18005551212",
    }
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    expected = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    assert RequestValidator("12345").compute_signature(url, params) == expected
    async with httpx.AsyncClient() as http:
        d = TwilioDriver(DriverDeps(settings(twilio_auth_token="12345"), http, flow))
        req = WebhookRequest(
            "POST", url, {"x-twilio-signature": expected}, {"foo": "1", "bar": "2"}, b"", params
        )
        await d.verify_request(req)  # does not raise
        req.form = {**params, "Digits": "9999"}
        with pytest.raises(SignatureError):
            await d.verify_request(req)


async def test_forged_and_missing_signatures_are_rejected_with_403(driver: TwilioDriver) -> None:
    forged = signed("/voice/webhook/twilio", call_form(), token="not-the-token")
    with pytest.raises(SignatureError) as exc:
        await driver.verify_request(forged)
    assert exc.value.status == 403
    unsigned = signed("/voice/webhook/twilio", call_form())
    unsigned.headers = {}
    with pytest.raises(SignatureError) as exc:
        await driver.verify_request(unsigned)
    assert exc.value.status == 403


async def test_signature_is_bound_to_the_public_url(driver: TwilioDriver) -> None:
    req = signed("/voice/webhook/twilio", call_form())
    req.url = "http://10.0.0.5:3000/voice/webhook/twilio"  # what the app saw behind a proxy
    with pytest.raises(SignatureError):
        await driver.verify_request(req)


async def test_json_body_requests_are_checked_against_body_sha256(driver: TwilioDriver) -> None:
    import hashlib

    body = b'{"CallSid":"CA1"}'
    url = f"{PUBLIC}/voice/webhook/twilio/status?bodySHA256={hashlib.sha256(body).hexdigest()}"
    sig = RequestValidator(TOKEN).compute_signature(url, {})
    query = {"bodySHA256": hashlib.sha256(body).hexdigest()}
    ok = WebhookRequest("POST", url, {"x-twilio-signature": sig}, query, body)
    await driver.verify_request(ok)
    tampered = WebhookRequest("POST", url, {"x-twilio-signature": sig}, query, b'{"CallSid":"X"}')
    with pytest.raises(SignatureError):
        await driver.verify_request(tampered)


# ---- voice webhook and turns -----------------------------------------------------------------


async def test_voice_webhook_starts_the_call_and_gathers_around_the_greeting(
    driver: TwilioDriver, flow: RecordingFlow
) -> None:
    root = parse_twiml(await answer(driver, "/voice/webhook/twilio", call_form(), ""))
    assert [el.tag for el in root] == ["Gather"]
    gather = root[0]
    assert gather.get("input") == "speech dtmf"
    assert gather.get("speechTimeout") == "auto"
    assert gather.get("actionOnEmptyResult") == "true"
    assert gather.get("method") == "POST"
    assert gather.get("language") == "en-US"
    assert gather.get("action", "").startswith(f"{PUBLIC}/voice/webhook/twilio/gather?")
    assert gather_turn(gather.get("action", "")) == {"turn": "1"}
    assert [(el.tag, el.text) for el in gather] == [("Say", flow.greeting)]
    (call,) = flow.starts
    assert (call.call_id, call.caller, call.callee, call.direction) == (
        CALL_SID,
        CALLER,
        OUR_NUMBER,
        "inbound",
    )


async def test_gather_result_is_a_turn_and_a_retry_is_the_same_turn(
    driver: TwilioDriver, flow: RecordingFlow
) -> None:
    await answer(driver, "/voice/webhook/twilio", call_form(), "")
    form = call_form(CallStatus="in-progress", SpeechResult="What time is it", Confidence="0.91")
    first = await answer(driver, "/voice/webhook/twilio/gather?turn=1", form, "gather")
    retry = await answer(driver, "/voice/webhook/twilio/gather?turn=1", form, "gather")
    assert first == retry
    assert len(flow.turns) == 1
    call_id, heard = flow.turns[0]
    assert (call_id, heard.turn_id, heard.type, heard.text) == (
        CALL_SID,
        "1",
        "speech",
        "What time is it",
    )
    assert heard.confidence == pytest.approx(0.91)
    root = parse_twiml(first)
    gather = root.find("Gather")
    assert gather is not None and gather_turn(gather.get("action", "")) == {"turn": "2"}
    assert [el.text for el in gather] == ["You said What time is it."]


async def test_dtmf_digits_are_passed_as_input(driver: TwilioDriver, flow: RecordingFlow) -> None:
    await answer(driver, "/voice/webhook/twilio/gather?turn=3", call_form(Digits="42#"), "gather")
    (_, heard) = flow.turns[0]
    assert (heard.type, heard.digits, heard.turn_id) == ("dtmf", "42#", "3")


async def test_silence_reprompts_then_says_goodbye_and_hangs_up(
    driver: TwilioDriver, flow: RecordingFlow
) -> None:
    path = "/voice/webhook/twilio/gather?turn=2"
    root = parse_twiml(await answer(driver, path, call_form(), "gather"))
    gather = root.find("Gather")
    assert gather is not None
    assert gather_turn(gather.get("action", "")) == {"turn": "2", "silent": "1"}
    assert root.find("Hangup") is None
    for _ in range(MAX_SILENT_TURNS - 1):
        root = parse_twiml(
            await answer(
                driver,
                urlsplit(gather.get("action", "")).path
                + "?"
                + urlsplit(gather.get("action", "")).query,
                call_form(),
                "gather",
            )
        )
    assert [el.tag for el in root] == ["Say", "Hangup"]
    assert "goodbye" in (root[0].text or "").lower()
    assert flow.turns == []  # silence never reached the orchestrator


async def test_transfer_renders_dial_with_answer_on_bridge_then_hangup(
    driver: TwilioDriver, flow: RecordingFlow
) -> None:
    flow.replies["agent please"] = [Action.say("Connecting you."), Action.transfer("+15557770000")]
    form = call_form(SpeechResult="agent please", Confidence="0.8")
    root = parse_twiml(await answer(driver, "/voice/webhook/twilio/gather?turn=1", form, "gather"))
    assert [el.tag for el in root] == ["Say", "Dial", "Hangup"]
    dial = root[1]
    assert dial.get("answerOnBridge") == "true"
    assert dial.get("action") == f"{PUBLIC}/voice/webhook/twilio/dial?turn=2"
    assert [(n.tag, n.text) for n in dial] == [("Number", "+15557770000")]


async def test_a_transfer_nobody_answers_comes_back_to_the_agent(driver: TwilioDriver) -> None:
    path = "/voice/webhook/twilio/dial?turn=2"
    missed = call_form(DialCallStatus="no-answer")
    root = parse_twiml(await answer(driver, path, missed, "dial"))
    gather = root.find("Gather")
    assert gather is not None and gather_turn(gather.get("action", "")) == {"turn": "2"}
    assert "couldn't connect" in (gather[0].text or "")
    connected = call_form(DialCallStatus="completed", DialCallDuration="95")
    root = parse_twiml(await answer(driver, path, connected, "dial"))
    assert [el.tag for el in root] == ["Hangup"]


async def test_hangup_action_says_goodbye_and_hangs_up(
    driver: TwilioDriver, flow: RecordingFlow
) -> None:
    flow.replies["bye"] = [Action.say("Goodbye!"), Action.hangup()]
    form = call_form(SpeechResult="bye")
    root = parse_twiml(await answer(driver, "/voice/webhook/twilio/gather?turn=4", form, "gather"))
    assert [(el.tag, el.text) for el in root] == [("Say", "Goodbye!"), ("Hangup", None)]


async def test_machine_answer_leaves_the_agents_message_and_hangs_up(
    driver: TwilioDriver, flow: RecordingFlow
) -> None:
    form = call_form(Direction="outbound-api", AnsweredBy="machine_end_beep")
    root = parse_twiml(await answer(driver, "/voice/webhook/twilio", form, ""))
    assert [(el.tag, el.text) for el in root] == [("Say", flow.greeting), ("Hangup", None)]
    assert flow.starts[0].metadata["answered_by"] == "machine_end_beep"
    assert flow.starts[0].direction == "outbound"


# ---- status callbacks ------------------------------------------------------------------------


async def test_status_callbacks_are_recorded_once_and_answered_with_empty_twiml(
    driver: TwilioDriver, flow: RecordingFlow
) -> None:
    path = "/voice/webhook/twilio/status"
    done = call_form(CallStatus="completed", CallDuration="37", SequenceNumber="3")
    body = await answer(driver, path, done, "status")
    assert parse_twiml(body).tag == "Response" and len(parse_twiml(body)) == 0
    await answer(driver, path, done, "status")  # redelivered
    assert flow.statuses == [
        (
            CALL_SID,
            "completed",
            {"provider_status": "completed", "duration_s": 37.0, "sequence": "3"},
        )
    ]


async def test_idempotency_token_dedupes_a_redelivery(
    driver: TwilioDriver, flow: RecordingFlow
) -> None:
    headers = {"I-Twilio-Idempotency-Token": "tok-1"}
    form = call_form(CallStatus="ringing", SequenceNumber="0")
    req = signed("/voice/webhook/twilio/status", form, headers=headers)
    await driver.verify_request(req)
    await driver.handle_webhook(req, "status")
    other = signed(
        "/voice/webhook/twilio/status",
        call_form(CallStatus="in-progress", SequenceNumber="1"),
        headers=headers,
    )
    await driver.handle_webhook(other, "status")
    assert [s for _, s, _ in flow.statuses] == ["ringing"]


async def test_recording_callback_is_stored_with_the_call(
    driver: TwilioDriver, flow: RecordingFlow
) -> None:
    form = call_form(
        RecordingSid="RE" + "2" * 32,
        RecordingStatus="completed",
        RecordingUrl="https://api.twilio.com/rec/RE2",
        RecordingDuration="12",
    )
    await answer(driver, "/voice/webhook/twilio/recording", form, "recording")
    await answer(driver, "/voice/webhook/twilio/recording", form, "recording")
    assert len(flow.statuses) == 1
    (_, _, extra) = flow.statuses[0]
    assert extra["recording"]["url"] == "https://api.twilio.com/rec/RE2"
    assert extra["recording"]["duration_s"] == 12.0


async def test_request_without_call_sid_gets_a_400_naming_it(driver: TwilioDriver) -> None:
    req = signed("/voice/webhook/twilio", {"From": CALLER})
    resp = await driver.handle_webhook(req, "")
    assert resp.status_code == 400 and b"CallSid" in bytes(resp.body)


# ---- REST --------------------------------------------------------------------------------------


def calls_api(sent: SentRequest) -> tuple[int, Any]:
    if sent.method == "POST" and sent.path.endswith("/Calls.json"):
        return 201, twilio_call_resource("CA" + "b" * 32, to=sent.data.get("To"))
    if sent.method == "POST" and "/Calls/CA" in sent.path:
        return 200, twilio_call_resource(sent.path.rsplit("/", 1)[-1][:-5], status="completed")
    return 404, {"code": 20404, "message": "not found", "status": 404}


async def test_make_call_posts_callbacks_recording_and_machine_detection(
    driver: TwilioDriver,
) -> None:
    api = FakeTwilioApi(calls_api)
    driver.use_http_client(api)
    out = await driver.make_call(
        "+15550002222",
        CallOptions(recording=True, machine_detection=True, agent_id="sales"),
    )
    assert out.call_id == "CA" + "b" * 32 and out.status == "queued"
    (sent,) = api.sent
    assert sent.path == f"/2010-04-01/Accounts/{ACCOUNT}/Calls.json"
    assert sent.auth == (ACCOUNT, TOKEN)
    data = sent.data
    assert data["To"] == "+15550002222" and data["From"] == OUR_NUMBER
    assert data["Url"] == f"{PUBLIC}/voice/webhook/twilio?agent_id=sales"
    assert data["StatusCallback"] == f"{PUBLIC}/voice/webhook/twilio/status?agent_id=sales"
    assert data["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]
    assert data["Record"] == "true"
    assert data["RecordingStatusCallback"] == f"{PUBLIC}/voice/webhook/twilio/recording"
    assert data["MachineDetection"] == "DetectMessageEnd"


async def test_make_call_refused_by_twilio_is_a_400_provider_error(driver: TwilioDriver) -> None:
    driver.use_http_client(
        FakeTwilioApi(
            lambda s: (400, {"code": 21211, "message": "Invalid 'To' Phone Number", "status": 400})
        )
    )
    with pytest.raises(ProviderError) as exc:
        await driver.make_call("+15550002222", CallOptions())
    assert exc.value.status == 400 and "21211" in str(exc.value)


async def test_end_call_completes_the_call_and_an_ended_call_is_not_an_error(
    driver: TwilioDriver,
) -> None:
    api = FakeTwilioApi(calls_api)
    driver.use_http_client(api)
    await driver.end_call(CALL_SID)
    assert api.sent[0].data == {"Status": "completed"}
    assert api.sent[0].path.endswith(f"/Calls/{CALL_SID}.json")
    driver.use_http_client(
        FakeTwilioApi(
            lambda s: (400, {"code": 21220, "message": "Call is not in-progress", "status": 400})
        )
    )
    await driver.end_call(CALL_SID)  # already over: no error


async def test_validate_configuration_names_missing_variables(flow: RecordingFlow) -> None:
    async with httpx.AsyncClient() as http:
        empty = TwilioDriver(
            DriverDeps(
                GatewaySettings(
                    twilio_account_sid=None,
                    twilio_auth_token=None,
                    twilio_phone_number=None,
                    public_base_url=None,
                    twilio_webhook_url=None,
                ),
                http,
                flow,
            )
        )
        report = await empty.validate_configuration()
    assert not report.ok
    assert {"TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_PHONE_NUMBER"} <= set(report.missing)


async def test_reachability_check_reads_the_account(driver: TwilioDriver) -> None:
    api = FakeTwilioApi(lambda s: (200, {"sid": ACCOUNT, "status": "active", "friendly_name": "x"}))
    driver.use_http_client(api)
    report = await driver.validate_configuration(check_reachability=True)
    assert report.ok and report.reachable is True
    assert api.sent[0].method == "GET" and api.sent[0].path.endswith(f"/Accounts/{ACCOUNT}.json")
    driver.use_http_client(
        FakeTwilioApi(lambda s: (401, {"code": 20003, "message": "Authenticate", "status": 401}))
    )
    bad = await driver.validate_configuration(check_reachability=True)
    assert not bad.ok and bad.reachable is False and "20003" in bad.problems[0]


async def test_twiml_webhook_url_origin_is_used_without_public_base_url(
    flow: RecordingFlow,
) -> None:
    async with httpx.AsyncClient() as http:
        d = TwilioDriver(
            DriverDeps(
                settings(
                    public_base_url=None, twilio_webhook_url="https://tw.example.org/voice/webhook"
                ),
                http,
                flow,
            )
        )
        assert d.public_base() == "https://tw.example.org"
        assert (await d.validate_configuration()).ok


async def test_a_failing_flow_still_gets_valid_twiml(
    driver: TwilioDriver, flow: RecordingFlow
) -> None:
    flow.broken = True
    form = call_form(SpeechResult="hello")
    root = parse_twiml(await answer(driver, "/voice/webhook/twilio/gather?turn=3", form, "gather"))
    gather = root.find("Gather")
    assert gather is not None and gather_turn(gather.get("action", "")) == {"turn": "3"}
    assert "sorry" in (gather[0].text or "").lower()
    # A call that cannot start keeps the caller: the apology and a listen, as on every provider.
    root = parse_twiml(await answer(driver, "/voice/webhook/twilio", call_form(), ""))
    assert [el.tag for el in root] == ["Gather"]
    assert "sorry" in (root[0][0].text or "").lower()


async def test_twilio_webhook_url_origin_is_accepted_when_there_is_no_public_base_url(
    flow: RecordingFlow,
) -> None:
    """A local gateway behind a tunnel: Twilio signed the tunnel's URL, and the route gives the
    driver that URL (`public_urls.py`, on the `TWILIO_WEBHOOK_URL` origin), not its own."""
    tunnel = "https://abc123.ngrok.example/voice/webhook"
    form = call_form()
    signature = RequestValidator(TOKEN).compute_signature(
        "https://abc123.ngrok.example/voice/webhook/twilio", form
    )
    async with httpx.AsyncClient() as http:
        d = TwilioDriver(
            DriverDeps(settings(public_base_url=None, twilio_webhook_url=tunnel), http, flow)
        )
        seen = WebhookRequest(
            "POST",
            "https://abc123.ngrok.example/voice/webhook/twilio",
            {"x-twilio-signature": signature},
            {},
            b"",
            form,
        )
        await d.verify_request(seen)
        seen.form = {**form, "From": "+15550000000"}
        with pytest.raises(SignatureError):
            await d.verify_request(seen)


async def test_a_number_set_to_get_is_signed_over_the_url_and_answered(
    driver: TwilioDriver, flow: RecordingFlow
) -> None:
    from urllib.parse import urlencode

    params = call_form()
    url = f"{PUBLIC}/voice/webhook/twilio?{urlencode(params)}"
    signature = RequestValidator(TOKEN).compute_signature(url, {})
    req = WebhookRequest("GET", url, {"x-twilio-signature": signature}, params, b"")
    await driver.verify_request(req)
    root = parse_twiml(bytes((await driver.handle_webhook(req, "")).body).decode())
    assert root[0].tag == "Gather" and flow.starts[0].caller == CALLER
    req.url = url.replace("CallStatus=ringing", "CallStatus=completed")
    with pytest.raises(SignatureError):
        await driver.verify_request(req)
