"""`POST /voice/webhook/test`: a synthetic signed round trip through the current provider.

A second instance of the current provider's driver is built on a `DryRunFlow` (no live call,
no `/ws` event, no orchestrator turn, no replay key consumed), asked for the request its
provider would send for an inbound call starting (`BaseDriver.synthetic_request`, signed the
provider's way with the configured secret), then made to verify it and answer it exactly as a
real webhook is answered. The report says what was sent (header names only, never a signature
or a secret), whether it verified, what the driver rendered (TwiML, NCCO, JSON, Connect map)
and whether that parses as the provider expects.

Statuses: `ok` (every step and check passed), `not_configured` (the driver cannot sign a
request: the variables are named), `failed` (the step and the reason).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring

from realtime_gateway.callflow import CallFlow
from realtime_gateway.drivers.base import BaseDriver, DriverDeps
from realtime_gateway.drivers.registry import DriverUnavailable, UnknownProvider, load_driver_class
from realtime_gateway.vocabulary import (
    SYNTHETIC_CALLER,
    CallerInput,
    CallInfo,
    FlowReply,
    ProviderConfigError,
    SignatureError,
    WebhookRequest,
)
from shared.contract import Action
from shared.logging import mask_phone

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element  # the type only: parsing uses defusedxml

    import httpx

    from realtime_gateway.config import GatewaySettings

log = logging.getLogger(__name__)

SELFTEST_TEXT = "This is a webhook self-test."
BODY_LIMIT_BYTES = 4096
SELFTEST_TIMEOUT_S = 5.0
# Headers of a synthetic request that carry no signature (the others are reported by name).
_UNSIGNED_HEADERS = frozenset({"content-type", "content-length", "user-agent"})

Status = Literal["ok", "failed", "not_configured"]


class DryRunFlow(CallFlow):
    """The `CallFlow` rules with no side effects: every call starts with the self-test words
    and a listen, nothing is stored or emitted, every key is new. It remembers (in itself only)
    the calls the driver parsed, for the report."""

    def __init__(self) -> None:
        self.started: list[CallInfo] = []

    @staticmethod
    def _reply() -> FlowReply:
        return FlowReply(actions=[Action.say(SELFTEST_TEXT), Action.gather()], text=SELFTEST_TEXT)

    async def start(self, call: CallInfo) -> FlowReply:
        self.started.append(call)
        return self._reply()

    async def turn(self, call: CallInfo, heard: CallerInput) -> FlowReply:
        return self._reply()

    async def status(self, call: CallInfo, status: str, extra: Mapping[str, Any]) -> None:
        return None

    async def end(
        self, call_id: str, reason: str = "completed", duration_s: float | None = None
    ) -> bool:
        return False

    async def first_time(self, key: str, ttl_s: float = 86400) -> bool:
        return True


@dataclass(slots=True)
class Check:
    name: str
    ok: bool
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass(slots=True)
class SelfTestReport:
    status: Status
    message: str
    step: str | None = None  # the step that failed (None when ok / not configured)
    missing: list[str] = field(default_factory=list)
    round_trip: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "message": self.message}
        if self.step is not None:
            out["step"] = self.step
        if self.status == "not_configured":
            out["missing"] = self.missing
        out["round_trip"] = self.round_trip
        return out


def synthetic_call_id(provider: str) -> str:
    """A call id shaped as the provider's own (Twilio CallSid, Vonage uuid, Connect ContactId)."""
    if provider == "twilio":
        return "CA" + uuid.uuid4().hex
    if provider == "generic-http":
        return f"selftest-{uuid.uuid4().hex[:16]}"
    return str(uuid.uuid4())


async def run_selftest(
    provider: str, settings: GatewaySettings, http: httpx.AsyncClient
) -> SelfTestReport:
    """The round trip, in its own task (so context variables a driver sets, e.g. the log's
    call id, stay there) and within `SELFTEST_TIMEOUT_S`."""
    task = asyncio.create_task(_round_trip(provider, settings, http), name="webhook-selftest")
    try:
        async with asyncio.timeout(SELFTEST_TIMEOUT_S):
            return await task  # cancelled with the wait on a timeout
    except TimeoutError:
        return SelfTestReport(
            "failed", f"the round trip took longer than {SELFTEST_TIMEOUT_S:g}s", step="timeout"
        )


async def _round_trip(
    provider: str, settings: GatewaySettings, http: httpx.AsyncClient
) -> SelfTestReport:
    try:
        cls = load_driver_class(provider)
    except (UnknownProvider, DriverUnavailable) as exc:
        return SelfTestReport("failed", str(exc), step="load")
    flow = DryRunFlow()
    driver = cls(DriverDeps(settings=settings, http=http, flow=flow))
    try:
        await driver.initialize()  # no network I/O by contract (secrets, SDK objects)
    except Exception as exc:
        return SelfTestReport("failed", f"driver did not initialise: {_describe(exc)}", "load")
    try:
        return await _run(driver, flow, synthetic_call_id(provider))
    finally:
        try:
            await driver.aclose()
        except Exception:
            log.warning("self-test driver did not close cleanly", exc_info=True)


async def _run(driver: BaseDriver, flow: DryRunFlow, call_id: str) -> SelfTestReport:
    trip: dict[str, Any] = {"verified": False}
    try:
        request = driver.synthetic_request(call_id)
    except ProviderConfigError as exc:
        return SelfTestReport("not_configured", str(exc), missing=exc.missing, round_trip=trip)
    except NotImplementedError as exc:
        return SelfTestReport("failed", str(exc), step="sign", round_trip=trip)
    except Exception as exc:
        return SelfTestReport(
            "failed", f"could not sign: {_describe(exc)}", step="sign", round_trip=trip
        )
    trip["request"] = _describe_request(request)

    try:
        await driver.verify_request(request)
    except SignatureError as exc:
        return SelfTestReport(
            "failed", f"the signed request was refused: {exc}", step="verify", round_trip=trip
        )
    except ProviderConfigError as exc:
        return SelfTestReport("not_configured", str(exc), missing=exc.missing, round_trip=trip)
    except Exception as exc:
        return SelfTestReport(
            "failed", f"verification failed: {_describe(exc)}", step="verify", round_trip=trip
        )
    trip["verified"] = True

    try:
        response = await driver.handle_webhook(request, "")
    except Exception as exc:
        return SelfTestReport(
            "failed", f"the driver failed: {_describe(exc)}", step="handle", round_trip=trip
        )
    body = bytes(getattr(response, "body", b"") or b"")
    content_type = response.headers.get("content-type", "")
    truncated = len(body) > BODY_LIMIT_BYTES
    trip["response"] = {
        "status_code": response.status_code,
        "content_type": content_type,
        "body": body[:BODY_LIMIT_BYTES].decode("utf-8", errors="ignore"),
        "truncated": truncated,
    }
    trip["parsed"] = _describe_parsed(flow)
    checks = [_parsed_check(driver.name, flow, call_id)]
    if not 200 <= response.status_code < 300:
        checks.append(Check("status_code", False, f"HTTP {response.status_code}"))
    else:
        checks.extend(check_rendered(driver.name, content_type, body))
    trip["checks"] = [c.as_dict() for c in checks]
    failed = [c for c in checks if not c.ok]
    if failed:
        reasons = "; ".join(f"{c.name}: {c.detail}" if c.detail else c.name for c in failed)
        step = "parse" if failed[0].name == "parsed_call" else "render"
        return SelfTestReport("failed", reasons, step=step, round_trip=trip)
    return SelfTestReport(
        "ok",
        f"a signed {driver.name} call start verified and was answered as {driver.name} expects",
        round_trip=trip,
    )


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _describe_request(request: WebhookRequest) -> dict[str, Any]:
    return {
        "method": request.method,
        "url": request.url,
        "content_type": request.headers.get("content-type", ""),
        "signed_headers": sorted(
            _header_name(name) for name in request.headers if name not in _UNSIGNED_HEADERS
        ),
    }


def _header_name(name: str) -> str:
    return "-".join(part.capitalize() for part in name.split("-"))


def _describe_parsed(flow: DryRunFlow) -> dict[str, Any] | None:
    if not flow.started:
        return None
    call = flow.started[0]
    return {
        "call_id": call.call_id,
        "provider": call.provider,
        "direction": call.direction,
        "caller": mask_phone(call.caller) if call.caller else None,
        "callee": mask_phone(call.callee) if call.callee else None,
    }


def _parsed_check(provider: str, flow: DryRunFlow, call_id: str) -> Check:
    if len(flow.started) != 1:
        return Check("parsed_call", False, f"the call was started {len(flow.started)} times")
    call = flow.started[0]
    wrong = [
        name
        for name, ok in (
            ("call_id", call.call_id == call_id),
            ("provider", call.provider == provider),
            ("direction", call.direction == "inbound"),
            ("caller", call.caller == SYNTHETIC_CALLER),
        )
        if not ok
    ]
    if wrong:
        return Check("parsed_call", False, f"parsed wrongly: {', '.join(wrong)}")
    return Check("parsed_call", True, "call id, direction and caller parsed as sent")


# -- what the driver rendered, per provider -----------------------------------------------------


def check_rendered(provider: str, content_type: str, body: bytes) -> list[Check]:
    if provider == "twilio":
        return _check_twiml(content_type, body)
    if provider == "vonage":
        return _check_ncco(content_type, body)
    if provider == "generic-http":
        return _check_generic(content_type, body)
    if provider == "aws-connect":
        return _check_connect_map(content_type, body)
    return [Check("render", False, f"no checks known for provider {provider!r}")]


def _check_twiml(content_type: str, body: bytes) -> list[Check]:
    checks = [_content_type_check(content_type, ("text/xml", "application/xml"))]
    try:
        root = fromstring(body)
    except (ParseError, DefusedXmlException, ValueError) as exc:
        return [*checks, Check("twiml_parses", False, _describe(exc))]
    if root.tag != "Response":
        return [*checks, Check("twiml_parses", False, f"root element is <{root.tag}>")]
    checks.append(Check("twiml_parses", True, "<Response> document"))
    gather: Element | None = root.find("Gather")
    if gather is None:
        checks.append(Check("gather_with_say", False, "no <Gather> in the TwiML"))
        return checks
    said = [(say.text or "").strip() for say in gather.findall("Say")]
    checks.append(
        Check(
            "gather_with_say",
            SELFTEST_TEXT in said,
            "<Gather> holds <Say> with the self-test words"
            if SELFTEST_TEXT in said
            else f"<Gather> says {said!r}",
        )
    )
    checks.append(_absolute_url_check("gather_action", gather.get("action")))
    return checks


def _check_ncco(content_type: str, body: bytes) -> list[Check]:
    checks = [_content_type_check(content_type, ("application/json",))]
    data = _json(body)
    if not isinstance(data, list) or not all(isinstance(a, dict) for a in data):
        return [*checks, Check("ncco_parses", False, "not a JSON list of actions")]
    checks.append(Check("ncco_parses", True, f"{len(data)} actions"))
    kinds = [a.get("action") for a in data]
    talk = next((a for a in data if a.get("action") == "talk"), None)
    talk_ok = talk is not None and talk.get("text") == SELFTEST_TEXT
    inp = next((a for a in data if a.get("action") == "input"), None)
    ordered = talk_ok and inp is not None and kinds.index("talk") < kinds.index("input")
    checks.append(
        Check(
            "talk_then_input",
            bool(ordered),
            "talk with the self-test words, then input" if ordered else f"actions {kinds!r}",
        )
    )
    event_urls = inp.get("eventUrl") if inp is not None else None
    first = event_urls[0] if isinstance(event_urls, list) and event_urls else None
    checks.append(_absolute_url_check("input_event_url", first if isinstance(first, str) else None))
    return checks


def _check_generic(content_type: str, body: bytes) -> list[Check]:
    checks = [_content_type_check(content_type, ("application/json",))]
    data = _json(body)
    actions = data.get("actions") if isinstance(data, dict) else None
    if not isinstance(actions, list) or not all(isinstance(a, dict) for a in actions):
        return [*checks, Check("actions_parse", False, 'not {"actions": [...]}')]
    checks.append(Check("actions_parse", True, f"{len(actions)} actions"))
    kinds = [a.get("type") for a in actions]
    said = [a.get("text") for a in actions if a.get("type") == "say"]
    ok = SELFTEST_TEXT in said and bool(kinds) and kinds[-1] == "gather"
    checks.append(
        Check(
            "say_then_gather",
            ok,
            "say with the self-test words, then gather" if ok else f"actions {kinds!r}",
        )
    )
    return checks


def _check_connect_map(content_type: str, body: bytes) -> list[Check]:
    checks = [_content_type_check(content_type, ("application/json",))]
    data = _json(body)
    flat = isinstance(data, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    )
    if not isinstance(data, dict) or not flat:
        return [*checks, Check("flat_string_map", False, "not a flat {str: str} map")]
    checks.append(Check("flat_string_map", True, f"{len(data)} keys"))
    ok = data.get("action") == "speak" and data.get("text") == SELFTEST_TEXT
    checks.append(
        Check(
            "speak_action",
            ok,
            "action=speak with the self-test words"
            if ok
            else f"action={data.get('action')!r}, text={data.get('text')!r}",
        )
    )
    return checks


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def _content_type_check(content_type: str, expected: tuple[str, ...]) -> Check:
    media = content_type.split(";")[0].strip().lower()
    return Check("content_type", media in expected, media or "none")


def _absolute_url_check(name: str, url: str | None) -> Check:
    if not url:
        return Check(name, False, "missing")
    parts = urlsplit(url)
    ok = parts.scheme in ("http", "https") and bool(parts.netloc)
    return Check(name, ok, url if ok else f"not an absolute http(s) URL: {url}")
