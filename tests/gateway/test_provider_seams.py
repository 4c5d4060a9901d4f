"""The provider defects that lived in the seams between drivers and call flow (issue 17), each
played with the provider's documented payload and its own signing (twilio's `RequestValidator`,
Vonage's HS256 JWT over the payload hash), each failing before its fix.

1. Vonage answering-machine events carry `call_uuid` (the voicemail branch must run); error
   events carry no call id (acknowledged, not 400).
2. A status callback for a call this instance has not seen: no ghost active call, `/ws` shows
   `call.started` before `call.ended`, and a late start does not bring the call back.
3. An agent language without a region (`fr`) reaches Twilio and Vonage as `fr-FR`.
4. Long replies are split at sentence boundaries within each provider's limits.
6. Agent text starting with `<speak>` reaches Vonage as plain words, not broken SSML.
7. The Twilio and Vonage REST clients follow region, edge and a call's `region_url`.
(Defect 5, the public URL behind nginx, is `test_public_url.py` and `tests/ops`.)
"""

from __future__ import annotations

import json
import uuid as uuidlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import responses

from realtime_gateway.drivers.aws_connect import AwsConnectDriver
from realtime_gateway.drivers.base import DriverDeps
from realtime_gateway.drivers.twilio import TwilioDriver
from realtime_gateway.drivers.vonage import VonageDriver
from realtime_gateway.speech import SpeechLimits, fit, split_text
from shared.contract import Action
from tests.gateway import test_twilio_call as tw_call
from tests.gateway import test_twilio_driver as tw
from tests.gateway import test_vonage_driver as vo
from tests.gateway.conftest import auth, served
from tests.gateway.provider_fakes import (
    FakeTwilioApi,
    RecordingFlow,
    load_forwarder,
    parse_twiml,
    twilio_call_resource,
)
from tests.gateway.ws_client import collect

SENTENCE = "This sentence is about forty-four characters. "


@pytest.fixture
def flow() -> RecordingFlow:
    return RecordingFlow()


@pytest.fixture
async def vonage(flow: RecordingFlow) -> AsyncIterator[VonageDriver]:
    async with httpx.AsyncClient() as http:
        d = VonageDriver(DriverDeps(vo.settings(), http, flow))
        d.tts_chars_per_s, d.hangup_grace_s = 1e9, 0.0
        await d.initialize()
        yield d
        await d.aclose()


@pytest.fixture
async def twilio(flow: RecordingFlow) -> AsyncIterator[TwilioDriver]:
    async with httpx.AsyncClient() as http:
        d = TwilioDriver(DriverDeps(tw.settings(), http, flow))
        await d.initialize()
        yield d
        await d.aclose()


@pytest.fixture
def vonage_api() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


# ---- 1. Vonage machine and error events ---------------------------------------------------------


async def test_a_vonage_machine_event_with_call_uuid_leaves_the_voicemail(
    vonage: VonageDriver, flow: RecordingFlow, vonage_api: responses.RequestsMock
) -> None:
    """Answering-machine detection reports `call_uuid` (not `uuid`): the agent's greeting
    replaces the running NCCO (no listening), then the call is hung up."""
    url = f"{vo.API}/{vo.CALL_UUID}"
    vonage_api.add(responses.PUT, url, status=204)
    amd = {
        "call_uuid": vo.CALL_UUID,
        "conversation_uuid": "CON-" + vo.CALL_UUID,
        "status": "machine",
        "sub_state": "beep_start",
        "timestamp": "2026-11-25T08:00:03.000Z",
    }
    req = vo.post("/voice/webhook/vonage/event?direction=outbound", amd)
    await vonage.verify_request(req)
    resp = await vonage.handle_webhook(req, "event")
    assert resp.status_code == 204
    await vonage.pending_hangups()
    bodies = [json.loads(c.request.body or b"{}") for c in vonage_api.calls]
    transfer = next(b for b in bodies if b.get("action") == "transfer")
    ncco = transfer["destination"]["ncco"]
    assert [a["action"] for a in ncco] == ["talk"] and ncco[0]["text"] == flow.greeting
    assert {"action": "hangup"} in bodies
    assert [c.call_id for c in flow.starts] == [vo.CALL_UUID]


async def test_a_vonage_human_event_is_acknowledged(
    vonage: VonageDriver, flow: RecordingFlow
) -> None:
    human = {"call_uuid": vo.CALL_UUID, "status": "human", "timestamp": "2026-11-25T08:00:03Z"}
    assert await vo.handle(vonage, vo.post("/voice/webhook/vonage/event", human), "event") is None
    assert flow.starts == [] and flow.statuses == []


async def test_a_vonage_error_event_without_a_call_id_gets_2xx(
    vonage: VonageDriver, flow: RecordingFlow
) -> None:
    error = {
        "reason": "Syntax error in NCCO. Invalid value type or action.",
        "conversation_uuid": "CON-" + vo.CALL_UUID,
        "timestamp": "2026-11-25T08:00:03.000Z",
    }
    assert await vo.handle(vonage, vo.post("/voice/webhook/vonage/event", error), "event") is None
    assert flow.statuses == [] and flow.ends == []


# ---- 2. status callbacks for a call not seen yet ------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
def store_url(request: pytest.FixtureRequest, redis_url: str) -> str | None:
    """The gateway's call store: in process, or Redis (the same rules on both)."""
    return redis_url if request.param == "redis" else None


async def test_a_twilio_completed_first_leaves_no_ghost_and_ws_starts_before_it_ends(
    store_url: str | None, data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    redis_url = store_url
    sid = tw_call.new_sid()
    settings = tw_call.tw_settings(data_dir, redis_url=redis_url)
    async with served(settings, orchestrator) as gw, tw_call.subscribe(gw, sid) as ws:
        done = tw_call.call_form(sid, CallStatus="completed", CallDuration="7", SequenceNumber="3")
        r = await tw_call.twilio_post(gw, "/voice/webhook/twilio/status", done)
        assert r.status_code == 200
        events = await collect(ws, tw_call.ended)
        assert [e["type"] for e in events] == ["call.started", "call.ended"]
        active = await gw.client.get("/voice/calls?status=active", headers=auth())
        assert sid not in [c["call_id"] for c in active.json()["calls"]]
        # The voice webhook arriving late (or a retry) does not bring the call back to life.
        root = tw_call.twiml_of(await tw_call.twilio_post(gw, "/voice/webhook/twilio", done))
        assert [el.tag for el in root] == ["Hangup"]
        status = await gw.client.get(f"/voice/calls/{sid}/status", headers=auth())
        assert status.json()["ended_at"] is not None
        active = await gw.client.get("/voice/calls?status=active", headers=auth())
        assert sid not in [c["call_id"] for c in active.json()["calls"]]


async def test_a_vonage_completed_first_leaves_no_ghost(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    from tests.gateway import test_vonage_call as vc

    async with served(vc.vg_settings(data_dir), orchestrator) as gw:
        uuid = str(uuidlib.uuid4())
        async with tw_call.subscribe(gw, uuid) as ws:
            done = vc.status_event(uuid, "completed", duration="7")
            r = await vc.vonage_post(gw, "/voice/webhook/vonage/event", done)
            assert r.status_code in (200, 204)
            events = await collect(ws, tw_call.ended)
        assert [e["type"] for e in events] == ["call.started", "call.ended"]
        active = await gw.client.get("/voice/calls?status=active", headers=auth())
        assert uuid not in [c["call_id"] for c in active.json()["calls"]]


# ---- 3. languages without a region --------------------------------------------------------------


async def test_an_agent_language_without_region_reaches_twilio_as_a_full_tag(
    twilio: TwilioDriver, flow: RecordingFlow
) -> None:
    flow.replies["bonjour"] = [
        Action.say("Bonjour, comment puis-je vous aider ?", "fr"),
        Action.gather(language="fr"),
    ]
    form = tw.call_form(SpeechResult="bonjour")
    root = parse_twiml(
        await tw.answer(twilio, "/voice/webhook/twilio/gather?turn=1", form, "gather")
    )
    (gather,) = list(root)
    assert gather.get("language") == "fr-FR"
    assert gather[0].tag == "Say" and gather[0].get("language") == "fr-FR"


async def test_an_agent_language_without_region_reaches_vonage_as_a_full_tag(
    vonage: VonageDriver, flow: RecordingFlow
) -> None:
    flow.replies["bonjour"] = [Action.say("Bonjour !", "fr"), Action.gather(language="fr")]
    ncco = await vo.handle(
        vonage, vo.post("/voice/webhook/vonage/input?turn=1", vo.speech_result("bonjour")), "input"
    )
    assert vo.check_ncco(ncco) == ["talk", "input"]
    assert ncco[0]["language"] == "fr-FR"
    assert ncco[1]["speech"]["language"] == "fr-FR"


# ---- 4. long replies ----------------------------------------------------------------------------


def _sentences_whole(pieces: list[str]) -> bool:
    return all(p.endswith(".") for p in pieces)


async def test_a_long_reply_is_split_into_says_within_twilios_limit(
    twilio: TwilioDriver, flow: RecordingFlow
) -> None:
    long = SENTENCE * 120  # ~5,500 characters
    flow.replies["tell me everything"] = [Action.say(long), Action.gather()]
    polly = SENTENCE * 80  # ~3,700 characters, over Polly's 3,000
    flow.replies["in polly"] = [Action.say(polly, voice="Polly.Joanna"), Action.gather()]
    form = tw.call_form(SpeechResult="tell me everything")
    root = parse_twiml(
        await tw.answer(twilio, "/voice/webhook/twilio/gather?turn=1", form, "gather")
    )
    says = [el.text or "" for el in root.iter("Say")]
    assert len(says) == 2 and all(len(s) <= 4096 for s in says) and _sentences_whole(says)
    assert " ".join(says) == long.strip()
    form = tw.call_form(SpeechResult="in polly")
    root = parse_twiml(
        await tw.answer(twilio, "/voice/webhook/twilio/gather?turn=2", form, "gather")
    )
    says = [el.text or "" for el in root.iter("Say")]
    assert len(says) == 2 and all(len(s) <= 3000 for s in says) and _sentences_whole(says)


async def test_a_long_reply_fits_one_connect_answer_at_a_sentence_boundary(
    flow: RecordingFlow,
) -> None:
    from tests.gateway import test_aws_connect_driver as ac

    long = SENTENCE * 100  # ~4,600 characters: more than one Connect value can carry
    flow.replies["tell me everything"] = [Action.say(long), Action.gather()]
    async with httpx.AsyncClient() as http:
        d = AwsConnectDriver(DriverDeps(ac.settings(), http, flow))
        await d.initialize()
        event = ac.contact_event(parameters={"input": "tell me everything", "turn": "1"})
        answer = await ac.invoke(d, event)
    assert answer["action"] == "speak"
    assert 0 < len(answer["text"]) <= 3000 and answer["text"].endswith(".")
    assert long.startswith(answer["text"])
    assert len(json.dumps(answer).encode()) < 32_000


def test_the_connect_forwarder_never_cuts_a_value_mid_word() -> None:
    forwarder = load_forwarder()
    text = "word " * 700 + "end."
    flat = forwarder.flat_map({"action": "speak", "text": text})
    assert len(flat["text"]) <= forwarder.MAX_VALUE_CHARS
    assert text.startswith(flat["text"]) and flat["text"].endswith("word")


def test_splitting_keeps_sentences_whole_and_words_uncut() -> None:
    text = "One. " + "x" * 30 + " two three. Four five six seven."
    pieces = split_text(text, 20)
    assert all(len(p) <= 20 for p in pieces)
    assert " ".join(pieces).replace("  ", " ").split() == text.split()[:1] + [
        w for p in pieces[1:] for w in p.split()
    ]
    assert split_text("Short.", 20) == ["Short."]
    fitted = fit([Action.say(SENTENCE * 3, "de")], SpeechLimits(say_chars=50))
    assert [a.language for a in fitted] == ["de-DE"] * 3
    assert all(a.text == SENTENCE.strip() for a in fitted)


# ---- 6. SSML-looking agent text on Vonage -------------------------------------------------------


async def test_agent_text_starting_with_speak_reaches_vonage_as_plain_words(
    vonage: VonageDriver, flow: RecordingFlow
) -> None:
    flow.replies["ssml"] = [
        Action.say("<speak>Your total is <b>5 & 6</b> dollars"),
        Action.gather(),
    ]
    ncco = await vo.handle(
        vonage, vo.post("/voice/webhook/vonage/input?turn=1", vo.speech_result("ssml")), "input"
    )
    assert ncco[0]["text"] == "Your total is 5 & 6 dollars"
    assert "<" not in ncco[0]["text"]


# ---- 7. REST clients in a region ----------------------------------------------------------------


async def test_twilio_rest_calls_go_to_the_configured_region_and_edge(flow: RecordingFlow) -> None:
    sid = "CA" + "1" * 32
    fake = FakeTwilioApi(lambda sent: (201, twilio_call_resource(sid)))
    async with httpx.AsyncClient() as http:
        d = TwilioDriver(
            DriverDeps(tw.settings(twilio_region="ie1", twilio_edge="dublin"), http, flow),
            http_client=fake,
        )
        from realtime_gateway.vocabulary import CallOptions

        await d.make_call("+14155550100", CallOptions())
    assert [httpx.URL(s.url).host for s in fake.sent] == ["api.dublin.ie1.twilio.com"]


async def test_a_vonage_call_is_hung_up_in_its_own_region(
    vonage: VonageDriver, vonage_api: responses.RequestsMock
) -> None:
    regional = f"https://api-us-3.vonage.com/v1/calls/{vo.CALL_UUID}"
    vonage_api.add(responses.PUT, regional, status=204)
    await vonage.end_call(vo.CALL_UUID, {"region_url": "https://api-us-3.vonage.com"})
    assert [c.request.url for c in vonage_api.calls] == [regional]
    # a region_url that is not Vonage's never receives our credentials
    vonage_api.add(responses.PUT, f"{vo.API}/{vo.CALL_UUID}", status=204)
    await vonage.end_call(vo.CALL_UUID, {"region_url": "https://evil.example.com"})
    assert vonage_api.calls[-1].request.url == f"{vo.API}/{vo.CALL_UUID}"


def test_the_vonage_api_host_setting_is_used(vonage_api: responses.RequestsMock) -> None:
    from realtime_gateway.drivers.vonage_rest import VonageRest

    rest = VonageRest(vo.settings(vonage_api_host="api-eu.vonage.com"))
    assert rest.voice_client()._http_client.api_host == "api-eu.vonage.com"


async def test_a_call_first_seen_at_its_end_starts_before_it_ends_and_stays_ended(
    store_url: str | None, data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    """generic-http: `call.ended` for a call this instance never saw (e.g. after a restart
    without Redis), then a late `call.input`: `/ws` shows a start then an end, the late turn is
    answered with a hang-up, and the call is not listed as active."""
    from tests.gateway.conftest import event, new_call_id, said, settings_for

    call_id = new_call_id()
    async with (
        served(settings_for(data_dir, redis_url=store_url), orchestrator) as gw,
        tw_call.subscribe(gw, call_id) as ws,
    ):
        r = await gw.send(event("call.ended", call_id, reason="hangup", duration_s=4))
        assert r.status_code == 200
        events = await collect(ws, tw_call.ended)
        assert [e["type"] for e in events] == ["call.started", "call.ended"]
        assert events[1]["data"]["reason"] == "hangup"
        r = await gw.send(said(call_id, "1", "hello?"))
        assert [a["type"] for a in r.json()["actions"]] == ["hangup"]
        active = await gw.client.get("/voice/calls?status=active", headers=auth())
        assert call_id not in [c["call_id"] for c in active.json()["calls"]]


async def test_ws_viewers_never_see_a_card_the_caller_said_or_keyed_in(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    """The caller's words go on `/ws` as `message.received`: redacted there too (issue 19)."""
    from tests.gateway.conftest import event, new_call_id, said, settings_for, started

    call_id = new_call_id()
    async with (
        served(settings_for(data_dir), orchestrator) as gw,
        tw_call.subscribe(gw, call_id) as ws,
    ):
        await gw.send(started(call_id))
        await gw.send(said(call_id, "1", "my card is 4111 1111 1111 1111 and the cvv 123"))
        keyed = {"type": "dtmf", "digits": "4111111111111111"}
        await gw.send(event("call.input", call_id, turn_id="2", input=keyed))
        events = await collect(ws, lambda evs: len(evs) >= 5)
    received = [e["data"] for e in events if e["type"] == "message.received"]
    assert len(received) == 2
    text = json.dumps(events)
    assert "4111" not in text and "1111 1111" not in text and " 123" not in text
