"""Whole Twilio calls through the real gateway app (served by uvicorn) and the real
orchestrator on Postgres: webhooks signed with Twilio's own `RequestValidator`, TwiML parsed and
checked against Twilio's documented verbs, `/ws` events, orchestrator rows; Twilio's REST API is
faked at the HTTP layer with a `TwilioHttpClient` subclass."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import websockets
from twilio.request_validator import RequestValidator

from realtime_gateway.drivers.twilio import TwilioDriver
from realtime_gateway.vocabulary import CallOptions
from tests.gateway.conftest import PUBLIC, Gateway, admin_token, auth, served, settings_for
from tests.gateway.provider_fakes import (
    FakeTwilioApi,
    SentRequest,
    insert_routed_agent,
    parse_twiml,
    twilio_call_resource,
)
from tests.gateway.ws_client import collect

TOKEN = "twilio-call-test-auth-token"
ACCOUNT = "AC" + "7" * 32
OUR_NUMBER = "+15550009999"
CALLER = "+15550001111"


def tw_settings(data_dir: Path, **overrides: Any) -> Any:
    return settings_for(
        data_dir,
        twilio_account_sid=ACCOUNT,
        twilio_auth_token=TOKEN,
        twilio_phone_number=OUR_NUMBER,
        **overrides,
    )


def new_sid() -> str:
    return "CA" + uuid.uuid4().hex


def call_form(sid: str, **extra: str) -> dict[str, str]:
    return {
        "CallSid": sid,
        "AccountSid": ACCOUNT,
        "From": CALLER,
        "To": OUR_NUMBER,
        "CallStatus": "in-progress",
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
        **extra,
    }


async def twilio_post(
    gw: Gateway,
    path: str,
    form: dict[str, str],
    token: str = TOKEN,
    headers: dict[str, str] | None = None,
    signature: str | None = None,
) -> httpx.Response:
    """POST as Twilio does: form body, signature over the public URL + sorted params."""
    sig = RequestValidator(token).compute_signature(f"{PUBLIC}{path}", form)
    hdrs = {"X-Twilio-Signature": signature if signature is not None else sig, **(headers or {})}
    if signature == "":
        del hdrs["X-Twilio-Signature"]
    return await gw.client.post(path, data=form, headers=hdrs)


def twiml_of(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/xml")
    return parse_twiml(response.text)


def action_path(gather: Any) -> str:
    parts = urlsplit(gather.get("action"))
    assert f"{parts.scheme}://{parts.netloc}" == PUBLIC
    return f"{parts.path}?{parts.query}"


def subscribe(gw: Gateway, call_id: str) -> Any:
    return websockets.connect(f"{gw.ws_url}?call_id={call_id}&token={admin_token()}")


def ended(events: list[dict[str, Any]]) -> bool:
    return any(e["type"] == "call.ended" for e in events)


async def test_inbound_call_greets_answers_turns_and_ends_once(
    data_dir: Path, orchestrator: httpx.ASGITransport, pg_dsn: str
) -> None:
    sid = new_sid()
    async with served(tw_settings(data_dir), orchestrator) as gw, subscribe(gw, sid) as ws:
        root = twiml_of(await twilio_post(gw, "/voice/webhook/twilio", call_form(sid)))
        (gather,) = list(root)
        assert gather.tag == "Gather" and gather.get("input") == "speech dtmf"
        assert gather.get("actionOnEmptyResult") == "true" and gather.get("speechTimeout") == "auto"
        assert [el.tag for el in gather] == ["Say"] and gather[0].text
        first_turn = action_path(gather)
        assert first_turn == "/voice/webhook/twilio/gather?turn=1"

        form = call_form(sid, SpeechResult="What are your opening hours?", Confidence="0.92")
        answer = await twilio_post(gw, first_turn, form)
        root = twiml_of(answer)
        gather = root.find("Gather")
        assert gather is not None and gather[0].tag == "Say" and gather[0].text
        assert action_path(gather) == "/voice/webhook/twilio/gather?turn=2"
        # Twilio retries the same action (e.g. our answer was slow): the same turn, same TwiML
        retry = await twilio_post(gw, first_turn, form)
        assert retry.text == answer.text

        # silence: re-prompted locally on the same turn
        root = twiml_of(await twilio_post(gw, action_path(gather), call_form(sid)))
        gather = root.find("Gather")
        assert gather is not None
        assert action_path(gather) == "/voice/webhook/twilio/gather?turn=2&silent=1"

        bye = call_form(sid, SpeechResult="Thanks, goodbye", Confidence="0.88")
        root = twiml_of(await twilio_post(gw, action_path(gather), bye))
        assert root[-1].tag == "Hangup" and root.find("Gather") is None

        done = call_form(sid, CallStatus="completed", CallDuration="33", SequenceNumber="4")
        token = {"I-Twilio-Idempotency-Token": uuid.uuid4().hex}
        for _ in range(2):  # delivered twice by Twilio
            r = await twilio_post(gw, "/voice/webhook/twilio/status", done, headers=token)
            assert r.status_code == 200 and len(parse_twiml(r.text)) == 0
        events = await collect(ws, ended)

        assert [e["type"] for e in events] == [
            "call.started",
            "message.received",
            "message.sent",
            "message.received",
            "message.sent",
            "call.ended",
        ]
        assert events[0]["data"]["provider"] == "twilio"
        assert events[1]["data"]["text"] == "What are your opening hours?"
        assert events[4]["data"]["actions"][-1]["type"] == "hangup"
        assert events[5]["data"]["duration_s"] == 33.0
        status = (await gw.client.get(f"/voice/calls/{sid}/status", headers=auth())).json()
        assert (status["status"], status["turns"], status["from"]) == ("completed", 2, CALLER)

    conn = await asyncpg.connect(pg_dsn)
    try:
        conv = await conn.fetchrow("SELECT status FROM conversations WHERE id = $1", sid)
        assert conv is not None and conv["status"] == "ended"
        n = await conn.fetchval(
            "SELECT count(*) FROM messages WHERE conversation_id = $1 AND turn_id = '1'", sid
        )
        assert n == 2  # the retried turn was stored once: one user + one assistant message
    finally:
        await conn.close()


async def test_forged_and_unsigned_webhooks_get_403_and_change_nothing(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    sid = new_sid()
    async with served(tw_settings(data_dir), orchestrator) as gw, subscribe(gw, sid) as ws:
        forged = await twilio_post(gw, "/voice/webhook/twilio", call_form(sid), token="wrong")
        unsigned = await twilio_post(gw, "/voice/webhook/twilio", call_form(sid), signature="")
        assert forged.status_code == unsigned.status_code == 403
        assert forged.json()["error"]["code"] == "forbidden"
        missing = await gw.client.get(f"/voice/calls/{sid}/status", headers=auth())
        assert missing.status_code == 404

        # a real call, then a forged "completed" and a tampered gather: ignored
        twiml_of(await twilio_post(gw, "/voice/webhook/twilio", call_form(sid)))
        fake_end = call_form(sid, CallStatus="completed", SequenceNumber="9")
        r = await twilio_post(gw, "/voice/webhook/twilio/status", fake_end, token="wrong")
        assert r.status_code == 403
        sig = RequestValidator(TOKEN).compute_signature(
            f"{PUBLIC}/voice/webhook/twilio/gather?turn=1", call_form(sid, SpeechResult="hi")
        )
        tampered = await gw.client.post(
            "/voice/webhook/twilio/gather?turn=1",
            data=call_form(sid, SpeechResult="transfer me to the CEO"),
            headers={"X-Twilio-Signature": sig},
        )
        assert tampered.status_code == 403
        events = await collect(ws, lambda evs: False, timeout_s=1.0)
        assert [e["type"] for e in events] == ["call.started"]
        status = (await gw.client.get(f"/voice/calls/{sid}/status", headers=auth())).json()
        assert status["status"] != "completed" and status["turns"] == 0


async def test_replayed_voice_webhook_starts_the_call_once(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    sid = new_sid()
    async with served(tw_settings(data_dir), orchestrator) as gw, subscribe(gw, sid) as ws:
        first = await twilio_post(gw, "/voice/webhook/twilio", call_form(sid))
        replay = await twilio_post(gw, "/voice/webhook/twilio", call_form(sid))
        assert first.status_code == replay.status_code == 200
        assert parse_twiml(first.text)[0][0].text == parse_twiml(replay.text)[0][0].text
        # an old status callback delivered after a newer one moves nothing backwards
        newer = call_form(sid, CallStatus="in-progress", SequenceNumber="2")
        older = call_form(sid, CallStatus="ringing", SequenceNumber="1")
        for form in (newer, older):
            assert (await twilio_post(gw, "/voice/webhook/twilio/status", form)).status_code == 200
        events = await collect(ws, lambda evs: False, timeout_s=1.0)
        assert [e["type"] for e in events] == ["call.started"]
        status = (await gw.client.get(f"/voice/calls/{sid}/status", headers=auth())).json()
        assert status["status"] == "in-progress"


def twilio_rest(sid: str) -> FakeTwilioApi:
    def handle(sent: SentRequest) -> tuple[int, Any]:
        if sent.path.endswith("/Calls.json"):
            return 201, twilio_call_resource(sid, to=sent.data["To"], **{"from": sent.data["From"]})
        if sent.path.endswith(f"/Calls/{sid}.json"):
            return 200, twilio_call_resource(sid, status="completed")
        return 404, {"code": 20404, "message": "not found", "status": 404}

    return FakeTwilioApi(handle)


async def test_outbound_call_places_talks_and_hangs_up(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    sid = new_sid()
    async with served(tw_settings(data_dir), orchestrator) as gw, subscribe(gw, sid) as ws:
        driver = await gw.rt.drivers.get("twilio")
        assert isinstance(driver, TwilioDriver)
        api = twilio_rest(sid)
        driver.use_http_client(api)
        placed = await driver.make_call("+15550002222", CallOptions(recording=True))
        assert placed.call_id == sid
        create = api.sent[0].data
        assert create["Url"] == f"{PUBLIC}/voice/webhook/twilio"
        assert create["RecordingStatusCallback"] == f"{PUBLIC}/voice/webhook/twilio/recording"
        assert create["StatusCallback"] == f"{PUBLIC}/voice/webhook/twilio/status"

        out = {"Direction": "outbound-api", "From": OUR_NUMBER, "To": "+15550002222"}
        for seq, state in enumerate(("initiated", "ringing")):
            form = call_form(sid, CallStatus=state, SequenceNumber=str(seq), **out)
            assert (await twilio_post(gw, "/voice/webhook/twilio/status", form)).status_code == 200
        answered = call_form(sid, AnsweredBy="human", **out)
        root = twiml_of(await twilio_post(gw, "/voice/webhook/twilio", answered))
        gather = root.find("Gather")
        assert gather is not None
        assert parse_qs(urlsplit(gather.get("action")).query) == {"turn": ["1"]}
        said = call_form(sid, SpeechResult="Yes, this is a good time", **out)
        twiml_of(await twilio_post(gw, action_path(gather), said))

        await driver.end_call(sid)  # the operator ends it: Twilio's REST API is told
        assert api.sent[-1].data == {"Status": "completed"}
        done = call_form(sid, CallStatus="completed", CallDuration="12", SequenceNumber="3", **out)
        assert (await twilio_post(gw, "/voice/webhook/twilio/status", done)).status_code == 200
        events = await collect(ws, ended)
        assert [e["type"] for e in events] == [
            "call.started",
            "message.received",
            "message.sent",
            "call.ended",
        ]
        assert events[0]["data"]["direction"] == "outbound"
        status = (await gw.client.get(f"/voice/calls/{sid}/status", headers=auth())).json()
        assert (status["direction"], status["status"]) == ("outbound", "completed")


async def test_answering_machine_gets_the_message_and_a_hangup(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    sid = new_sid()
    async with served(tw_settings(data_dir), orchestrator) as gw:
        form = call_form(
            sid, Direction="outbound-api", From=OUR_NUMBER, AnsweredBy="machine_end_beep"
        )
        root = twiml_of(await twilio_post(gw, "/voice/webhook/twilio", form))
        assert [el.tag for el in root] == ["Say", "Hangup"] and root[0].text


async def test_switching_provider_mid_call_keeps_the_twilio_call_on_twilio(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    sid = new_sid()
    settings = tw_settings(data_dir, voice_provider="twilio")
    async with served(settings, orchestrator) as gw, subscribe(gw, sid) as ws:
        # the current-provider webhook is Twilio's: the call starts there
        r = await twilio_post(gw, "/voice/webhook", call_form(sid))
        gather = twiml_of(r).find("Gather")
        assert gather is not None
        assert action_path(gather) == "/voice/webhook/twilio/gather?turn=1"

        await gw.rt.drivers.switch("generic-http")
        assert gw.rt.drivers.current_name == "generic-http"

        # the live Twilio call keeps going on its own routes
        said = call_form(sid, SpeechResult="Are you open on Sundays?")
        root = twiml_of(await twilio_post(gw, action_path(gather), said))
        assert root.find("Gather") is not None
        done = call_form(sid, CallStatus="completed", SequenceNumber="5")
        assert (await twilio_post(gw, "/voice/webhook/twilio/status", done)).status_code == 200
        events = await collect(ws, ended)
        assert [e["type"] for e in events][-1] == "call.ended"

        # a new call on the current-provider route is generic-http's now
        from tests.gateway.conftest import sign, started

        new_call = f"gh-{uuid.uuid4().hex[:10]}"
        import json

        body = json.dumps(started(new_call)).encode()
        r = await gw.client.post("/voice/webhook", content=body, headers=sign(body))
        assert r.status_code == 200 and r.json()["actions"]
        status = (await gw.client.get(f"/voice/calls/{new_call}/status", headers=auth())).json()
        assert status["provider"] == "generic-http"
        old = (await gw.client.get(f"/voice/calls/{sid}/status", headers=auth())).json()
        assert (old["provider"], old["status"]) == ("twilio", "completed")


async def test_unanswered_outbound_call_still_ends_once(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    sid = new_sid()
    out = {"Direction": "outbound-api", "From": OUR_NUMBER, "To": "+15550002222"}
    async with served(tw_settings(data_dir), orchestrator) as gw, subscribe(gw, sid) as ws:
        for seq, state in enumerate(("initiated", "ringing", "no-answer")):
            form = call_form(sid, CallStatus=state, SequenceNumber=str(seq), **out)
            assert (await twilio_post(gw, "/voice/webhook/twilio/status", form)).status_code == 200
        events = await collect(ws, ended)
        assert [e["type"] for e in events] == ["call.started", "call.ended"]
        assert events[1]["data"]["reason"] == "no-answer"
        status = (await gw.client.get(f"/voice/calls/{sid}/status", headers=auth())).json()
        assert (status["status"], status["direction"]) == ("no-answer", "outbound")


async def test_transfer_dials_the_agents_number_and_a_missed_transfer_returns_to_the_agent(
    data_dir: Path, orchestrator: httpx.ASGITransport, pg_dsn: str
) -> None:
    """An agent routed by the dialled number, with a transfer number: "a human, please" ->
    `<Dial>`; nobody answers -> the agent takes the caller back."""
    dialled = await insert_routed_agent(pg_dsn, "+15557770000", "Front desk, how can I help?")
    sid = new_sid()
    async with served(tw_settings(data_dir), orchestrator) as gw:
        root = twiml_of(await twilio_post(gw, "/voice/webhook/twilio", call_form(sid, To=dialled)))
        gather = root.find("Gather")
        assert gather is not None and gather[0].text == "Front desk, how can I help?"
        ask = call_form(sid, To=dialled, SpeechResult="I want to speak to a human please")
        root = twiml_of(await twilio_post(gw, action_path(gather), ask))
        dial = root.find("Dial")
        assert dial is not None and dial.get("answerOnBridge") == "true"
        assert [(n.tag, n.text) for n in dial] == [("Number", "+15557770000")]
        assert root[-1].tag == "Hangup"

        missed = call_form(sid, To=dialled, DialCallStatus="no-answer")
        root = twiml_of(await twilio_post(gw, action_path(dial), missed))
        assert root.find("Gather") is not None
