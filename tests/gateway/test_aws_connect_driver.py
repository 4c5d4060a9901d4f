"""Amazon Connect driver: the Connect API faked with botocore's Stubber, the contact-flow turn
protocol against a recording flow, and the forwarder Lambda's signing against the gateway's
own verifier."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from botocore.stub import Stubber

from realtime_gateway.config import GatewaySettings
from realtime_gateway.drivers.aws_connect import AwsConnectDriver
from realtime_gateway.drivers.base import DriverDeps
from realtime_gateway.silence import MAX_SILENT_TURNS
from realtime_gateway.vocabulary import CallOptions, ProviderError, SignatureError, WebhookRequest
from shared.contract import Action
from tests.gateway.provider_fakes import RecordingFlow, load_forwarder

SECRET = "aws-connect-forwarder-secret"
INSTANCE = "11111111-2222-3333-4444-555555555555"
FLOW = "66666666-7777-8888-9999-000000000000"
CONTACT = "c0ffee00-1111-2222-3333-444444444444"
OUR_NUMBER = "+12025550123"
CALLER = "+14155550100"
URL = "https://gw.example.com/voice/webhook/aws-connect"


def settings(**overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "public_base_url": "https://gw.example.com",
        "aws_region": "us-east-1",
        "aws_access_key_id": "AKIDEXAMPLE",
        "aws_secret_access_key": "secret-example",
        "aws_connect_instance_id": INSTANCE,
        "aws_connect_contact_flow_id": FLOW,
        "aws_connect_phone_number": OUR_NUMBER,
        "generic_http_secret": SECRET,
        "app_env": "test",
        **overrides,
    }
    return GatewaySettings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def flow() -> RecordingFlow:
    return RecordingFlow()


@pytest.fixture
async def driver(flow: RecordingFlow) -> AsyncIterator[AwsConnectDriver]:
    async with httpx.AsyncClient() as http:
        d = AwsConnectDriver(DriverDeps(settings(), http, flow))
        await d.initialize()
        yield d
        await d.aclose()


def contact_event(
    parameters: dict[str, str] | None = None, attributes: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "Name": "ContactFlowEvent",
        "Details": {
            "ContactData": {
                "ContactId": CONTACT,
                "InitialContactId": CONTACT,
                "Channel": "VOICE",
                "InitiationMethod": "INBOUND",
                "CustomerEndpoint": {"Address": CALLER, "Type": "TELEPHONE_NUMBER"},
                "SystemEndpoint": {"Address": OUR_NUMBER, "Type": "TELEPHONE_NUMBER"},
                "Attributes": attributes or {},
                "Queue": None,
                "InstanceARN": f"arn:aws:connect:us-east-1:123456789012:instance/{INSTANCE}",
            },
            "Parameters": parameters or {},
        },
    }


def forwarded(
    event: dict[str, Any], secret: str = SECRET, now: float | None = None
) -> WebhookRequest:
    """The request exactly as the forwarder Lambda builds it."""
    req = load_forwarder().signed_request(event, URL, secret, now=now)
    headers = {k.lower(): v for k, v in req.header_items()}
    assert isinstance(req.data, bytes)
    return WebhookRequest("POST", URL, headers, {}, req.data)


async def invoke(driver: AwsConnectDriver, event: dict[str, Any]) -> dict[str, Any]:
    req = forwarded(event)
    await driver.verify_request(req)
    resp = await driver.handle_webhook(req, "")
    assert resp.status_code == 200
    answer = json.loads(bytes(resp.body))
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in answer.items()), answer
    return dict(answer)


# ---- numbers ----------------------------------------------------------------------------------


# ---- Connect API through the Stubber -------------------------------------------------------


async def test_client_is_built_once_with_timeouts_and_retries(driver: AwsConnectDriver) -> None:
    client = await driver.connect_client()
    assert client is await driver.connect_client()
    config = client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (2.0, 5.0)
    assert config.retries["total_max_attempts"] == 3
    assert client.meta.region_name == "us-east-1"


async def test_make_call_starts_an_outbound_contact_with_a_client_token(
    driver: AwsConnectDriver,
) -> None:
    client = await driver.connect_client()
    with Stubber(client) as stub:
        stub.add_response(
            "start_outbound_voice_contact",
            {"ContactId": CONTACT},
            {
                "DestinationPhoneNumber": "+14155550100",
                "ContactFlowId": FLOW,
                "InstanceId": INSTANCE,
                "SourcePhoneNumber": OUR_NUMBER,
                "Attributes": {
                    "gateway_provider": "aws-connect",
                    "recording": "true",
                    "transcription": "false",
                    "agent_id": "sales",
                },
                "ClientToken": "idem-42",
            },
        )
        out = await driver.make_call(
            "+1 415 555 0100",
            CallOptions(recording=True, agent_id="sales", idempotency_key="idem-42"),
        )
        stub.assert_no_pending_responses()
    assert (out.call_id, out.provider, out.status) == (CONTACT, "aws-connect", "initiated")


async def test_make_call_with_a_bad_number_never_reaches_connect(driver: AwsConnectDriver) -> None:
    client = await driver.connect_client()
    with Stubber(client), pytest.raises(ValueError, match=r"E\.164"):
        await driver.make_call("0044 7700", CallOptions())


async def test_connect_refusal_becomes_a_provider_error(driver: AwsConnectDriver) -> None:
    client = await driver.connect_client()
    with Stubber(client) as stub:
        stub.add_client_error(
            "start_outbound_voice_contact",
            service_error_code="DestinationNotAllowedException",
            service_message="Outbound calls to this destination are not allowed",
            http_status_code=403,
        )
        with pytest.raises(ProviderError) as exc:
            await driver.make_call("+14155550100", CallOptions())
    assert exc.value.status == 400 and "DestinationNotAllowed" in str(exc.value)


async def test_end_call_stops_the_contact_and_a_gone_contact_is_fine(
    driver: AwsConnectDriver,
) -> None:
    client = await driver.connect_client()
    with Stubber(client) as stub:
        stub.add_response("stop_contact", {}, {"ContactId": CONTACT, "InstanceId": INSTANCE})
        stub.add_client_error(
            "stop_contact", service_error_code="ContactNotFoundException", http_status_code=410
        )
        stub.add_client_error(
            "stop_contact", service_error_code="InternalServiceException", http_status_code=500
        )
        await driver.end_call(CONTACT)
        await driver.end_call(CONTACT)  # already over: not an error
        with pytest.raises(ProviderError) as exc:
            await driver.end_call(CONTACT)
        stub.assert_no_pending_responses()
    assert exc.value.status == 502


async def test_validate_configuration_names_what_is_missing(flow: RecordingFlow) -> None:
    async with httpx.AsyncClient() as http:
        bare = AwsConnectDriver(
            DriverDeps(
                settings(
                    aws_region=None,
                    aws_connect_instance_id=None,
                    aws_connect_contact_flow_id=None,
                    aws_connect_phone_number=None,
                    aws_connect_queue_id=None,
                    generic_http_secret=None,
                    app_env="production",
                    jwt_secret="j" * 40,
                ),
                http,
                flow,
            )
        )
        report = await bare.validate_configuration()
    assert not report.ok
    assert report.missing[:3] == [
        "AWS_REGION",
        "AWS_CONNECT_INSTANCE_ID",
        "AWS_CONNECT_CONTACT_FLOW_ID",
    ]
    assert any("AWS_CONNECT_PHONE_NUMBER" in m for m in report.missing)
    assert any("GENERIC_HTTP_SECRET" in m for m in report.missing)


async def test_reachability_describes_the_instance(driver: AwsConnectDriver) -> None:
    client = await driver.connect_client()
    with Stubber(client) as stub:
        stub.add_response(
            "describe_instance",
            {"Instance": {"Id": INSTANCE, "InstanceStatus": "ACTIVE"}},
            {"InstanceId": INSTANCE},
        )
        stub.add_client_error("describe_instance", service_error_code="AccessDeniedException")
        ok = await driver.validate_configuration(check_reachability=True)
        bad = await driver.validate_configuration(check_reachability=True)
    assert ok.ok and ok.reachable is True
    assert not bad.ok and bad.reachable is False and "AccessDenied" in bad.problems[0]


# ---- inbound turns ------------------------------------------------------------------------------


async def test_first_invocation_starts_the_call_and_speaks_the_greeting(
    driver: AwsConnectDriver, flow: RecordingFlow
) -> None:
    answer = await invoke(driver, contact_event())
    assert answer["action"] == "speak" and answer["text"] == flow.greeting
    assert answer["next_turn"] == "1" and answer["fallback"] == "false"
    (call,) = flow.starts
    assert (call.call_id, call.caller, call.callee, call.direction) == (
        CONTACT,
        CALLER,
        OUR_NUMBER,
        "inbound",
    )


async def test_caller_words_are_a_turn_and_a_retried_invoke_is_the_same_turn(
    driver: AwsConnectDriver, flow: RecordingFlow
) -> None:
    event = contact_event({"input": "Where is my order", "confidence": "0.8"}, {"turn": "1"})
    first = await invoke(driver, event)
    retry = await invoke(driver, event)  # Connect retries a timed-out invoke
    assert first == retry
    assert len(flow.turns) == 1
    (call_id, heard) = flow.turns[0]
    assert (call_id, heard.turn_id, heard.text, heard.confidence) == (
        CONTACT,
        "1",
        "Where is my order",
        0.8,
    )
    assert first == {
        "action": "speak",
        "text": "You said Where is my order.",
        "transfer_number": "",
        "next_turn": "2",
        "silent": "0",
        "language": "en-US",
        "fallback": "false",
    }


async def test_turn_parameter_overrides_the_attribute_and_digits_are_dtmf(
    driver: AwsConnectDriver, flow: RecordingFlow
) -> None:
    await invoke(driver, contact_event({"digits": "42", "turn": "5"}, {"turn": "3"}))
    (_, heard) = flow.turns[0]
    assert (heard.turn_id, heard.type, heard.digits) == ("5", "dtmf", "42")


async def test_silence_reprompts_then_says_goodbye(
    driver: AwsConnectDriver, flow: RecordingFlow
) -> None:
    answer = await invoke(driver, contact_event({"input": ""}, {"turn": "2"}))
    assert (answer["action"], answer["next_turn"], answer["silent"]) == ("speak", "2", "1")
    for _ in range(MAX_SILENT_TURNS - 1):
        answer = await invoke(
            driver, contact_event({"input": ""}, {"turn": "2", "silent": answer["silent"]})
        )
    assert answer["action"] == "hangup" and "goodbye" in answer["text"].lower()
    assert flow.turns == []


async def test_transfer_and_hangup_maps(driver: AwsConnectDriver, flow: RecordingFlow) -> None:
    flow.replies["human please"] = [
        Action.say("Transferring you."),
        Action.transfer("+14155550199"),
    ]
    flow.replies["bye"] = [Action.say("Goodbye!"), Action.hangup()]
    transfer = await invoke(driver, contact_event({"input": "human please"}, {"turn": "1"}))
    assert (transfer["action"], transfer["transfer_number"], transfer["text"]) == (
        "transfer",
        "+14155550199",
        "Transferring you.",
    )
    hangup = await invoke(driver, contact_event({"input": "bye"}, {"turn": "2"}))
    assert (hangup["action"], hangup["text"]) == ("hangup", "Goodbye!")


async def test_forged_and_stale_invocations_are_rejected(driver: AwsConnectDriver) -> None:
    with pytest.raises(SignatureError):
        await driver.verify_request(forwarded(contact_event(), secret="not-the-secret"))
    with pytest.raises(SignatureError, match="stale"):
        await driver.verify_request(forwarded(contact_event(), now=time.time() - 3600))
    unsigned = forwarded(contact_event())
    unsigned.headers = {"content-type": "application/json"}
    with pytest.raises(SignatureError):
        await driver.verify_request(unsigned)


async def test_an_event_without_a_contact_id_is_a_400(driver: AwsConnectDriver) -> None:
    req = forwarded({"Name": "ContactFlowEvent", "Details": {"ContactData": {}}})
    resp = await driver.handle_webhook(req, "")
    assert resp.status_code == 400 and b"ContactId" in bytes(resp.body)


# ---- the shipped contact flows agree with the driver ------------------------------------------


def _flow(name: str) -> dict[str, Any]:
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "deploy" / "aws-connect" / name
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.mark.parametrize("name", ["contact-flow.json", "disconnect-flow.json"])
def test_example_flows_are_wired_to_existing_blocks(name: str) -> None:
    flow = _flow(name)
    ids = {a["Identifier"] for a in flow["Actions"]}
    assert flow["StartAction"] in ids
    for action in flow["Actions"]:
        transitions = action["Transitions"]
        targets = [transitions.get("NextAction")]
        targets += [c["NextAction"] for c in transitions.get("Conditions", [])]
        targets += [e["NextAction"] for e in transitions.get("Errors", [])]
        assert {t for t in targets if t} <= ids, action["Identifier"]


def test_example_flow_speaks_the_drivers_protocol() -> None:
    from realtime_gateway.drivers.aws_connect import END_EVENTS, connect_map

    flow = _flow("contact-flow.json")
    text = json.dumps(flow)
    answer_keys = set(connect_map("speak", next_turn=1))
    for key in ("action", "text", "transfer_number", "next_turn", "silent"):
        assert f"$.External.{key}" in text and key in answer_keys
    route = next(a for a in flow["Actions"] if a["Type"] == "Compare")
    operands = {c["Condition"]["Operands"][0] for c in route["Transitions"]["Conditions"]}
    assert operands == {"speak", "transfer", "hangup"}
    params = [
        a["Parameters"]["LambdaInvocationAttributes"]
        for a in flow["Actions"]
        if a["Type"] == "InvokeLambdaFunction"
    ]
    assert params[0] == {}  # the first invocation starts the call
    assert all({"input", "turn"} <= set(p) for p in params[1:])
    ended = _flow("disconnect-flow.json")["Actions"][0]["Parameters"]
    assert ended["LambdaInvocationAttributes"]["event"] in END_EVENTS


async def test_a_failing_flow_still_answers_an_apology_on_the_same_turn(
    driver: AwsConnectDriver, flow: RecordingFlow
) -> None:
    flow.broken = True
    answer = await invoke(driver, contact_event({"input": "hello"}, {"turn": "6"}))
    assert (answer["action"], answer["next_turn"], answer["fallback"]) == ("speak", "6", "true")
