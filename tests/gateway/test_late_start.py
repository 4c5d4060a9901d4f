"""A call that starts while the orchestrator is down recovers (issue 19, item 2), on all four
providers: the caller hears the fallback greeting, and once the orchestrator is back the next
turn is answered by the agent (not an apology) and the call is stored from then on — its
conversation started late, at that turn. Also: a NUL byte in a generic-http `from` or metadata
value does not make the start fail.

The orchestrator is the real one on Postgres, behind a transport that can be switched off (a
refused connection, as when it is restarting)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from realtime_gateway.prompts import say
from tests.gateway import test_aws_connect_call as ac
from tests.gateway import test_twilio_call as tw
from tests.gateway import test_vonage_call as vc
from tests.gateway.conftest import Gateway, event, new_call_id, said, served, settings_for, started
from tests.gateway.provider_fakes import parse_twiml

APOLOGY = say("apology")
GREETING_FALLBACK = say("greeting")


class Switchable(httpx.AsyncBaseTransport):
    """The orchestrator, reachable or not."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.up = True

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self.up:
            raise httpx.ConnectError("connection refused", request=request)
        return await self.inner.handle_async_request(request)


@pytest.fixture
def switch(orchestrator: httpx.ASGITransport) -> Switchable:
    return Switchable(orchestrator)


async def stored_turns(pg_dsn: str, conversation_id: str) -> list[tuple[str, str]]:
    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = await conn.fetch(
            "SELECT role, content FROM messages WHERE conversation_id = $1 ORDER BY id",
            conversation_id,
        )
    finally:
        await conn.close()
    return [(r["role"], r["content"]) for r in rows]


# Each provider: (settings overrides, start the call -> words heard, say one turn -> words heard)
Starter = Callable[[Gateway, str], Awaitable[str]]
Turner = Callable[[Gateway, str, str], Awaitable[str]]


async def _generic_start(gw: Gateway, call_id: str) -> str:
    r = await gw.send(started(call_id))
    return " ".join(a.get("text") or "" for a in r.json()["actions"])


async def _generic_turn(gw: Gateway, call_id: str, text: str) -> str:
    r = await gw.send(said(call_id, "1", text))
    return " ".join(a.get("text") or "" for a in r.json()["actions"])


def _twiml_words(text: str) -> str:
    return " ".join(el.text or "" for el in parse_twiml(text).iter("Say"))


async def _twilio_start(gw: Gateway, sid: str) -> str:
    r = await tw.twilio_post(gw, "/voice/webhook/twilio", tw.call_form(sid))
    return _twiml_words(r.text)


async def _twilio_turn(gw: Gateway, sid: str, text: str) -> str:
    r = await tw.twilio_post(
        gw, "/voice/webhook/twilio/gather?turn=1", tw.call_form(sid, SpeechResult=text)
    )
    return _twiml_words(r.text)


def _ncco_words(r: httpx.Response) -> str:
    assert r.status_code == 200, r.text
    return " ".join(a.get("text", "") for a in r.json() if a["action"] == "talk")


_next_vonage_path: dict[str, str] = {}


async def _vonage_start(gw: Gateway, call: str) -> str:
    r = await vc.vonage_answer(gw, vc.answer_params(call))
    _next_vonage_path[call] = vc.next_path(r.json())  # the input's eventUrl, as Vonage calls it
    return _ncco_words(r)


async def _vonage_turn(gw: Gateway, call: str, text: str) -> str:
    path = _next_vonage_path.pop(call)
    return _ncco_words(await vc.vonage_post(gw, path, vc.heard(call, text)))


def _forwarded(gw: Gateway, event: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    from tests.gateway.conftest import sign

    body = json.dumps(event, separators=(",", ":")).encode()
    return body, {"Content-Type": "application/json", **sign(body)}


async def _connect_start(gw: Gateway, contact: str) -> str:
    body, headers = _forwarded(gw, ac.contact_event(contact))
    r = await gw.client.post("/voice/webhook/aws-connect", content=body, headers=headers)
    return str(r.json()["text"])


async def _connect_turn(gw: Gateway, contact: str, text: str) -> str:
    body, headers = _forwarded(gw, ac.contact_event(contact, {"input": text, "turn": "1"}))
    r = await gw.client.post("/voice/webhook/aws-connect", content=body, headers=headers)
    return str(r.json()["text"])


PROVIDERS: dict[str, tuple[dict[str, Any], Callable[[], str], Starter, Turner]] = {
    "generic-http": ({}, new_call_id, _generic_start, _generic_turn),
    "twilio": (
        {
            "twilio_account_sid": tw.ACCOUNT,
            "twilio_auth_token": tw.TOKEN,
            "twilio_phone_number": tw.OUR_NUMBER,
        },
        tw.new_sid,
        _twilio_start,
        _twilio_turn,
    ),
    "vonage": (
        {
            "vonage_application_id": vc.APP_ID,
            "vonage_private_key": vc.PRIVATE_PEM,
            "vonage_phone_number": vc.OUR_NUMBER,
            "vonage_signature_secret": vc.SECRET,
        },
        lambda: str(uuid.uuid4()),
        _vonage_start,
        _vonage_turn,
    ),
    "aws-connect": (
        {
            "aws_region": "us-east-1",
            "aws_connect_instance_id": ac.INSTANCE,
            "aws_connect_contact_flow_id": ac.FLOW,
            "aws_connect_phone_number": ac.OUR_NUMBER,
        },
        lambda: str(uuid.uuid4()),
        _connect_start,
        _connect_turn,
    ),
}


@pytest.fixture(params=list(PROVIDERS))
def provider(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def gateway_on(provider: str, data_dir: Path, switch: Switchable) -> AsyncIterator[Gateway]:
    overrides = PROVIDERS[provider][0]
    async with served(settings_for(data_dir, **overrides), switch) as gw:
        yield gw


async def test_a_call_started_during_an_outage_recovers_at_its_next_turn(
    provider: str, gateway_on: Gateway, switch: Switchable, pg_dsn: str
) -> None:
    _, new_id, start_call, one_turn = PROVIDERS[provider]
    call_id = new_id()
    switch.up = False
    assert GREETING_FALLBACK in await start_call(gateway_on, call_id)
    assert await stored_turns(pg_dsn, call_id) == []
    switch.up = True
    heard = await one_turn(gateway_on, call_id, "What are your opening hours?")
    assert heard and APOLOGY not in heard
    turns = await stored_turns(pg_dsn, call_id)
    assert [role for role, _ in turns] == ["user", "assistant"]
    assert turns[0][1] == "What are your opening hours?"
    # the end is stored too (told to the orchestrator when the call ends)
    await gateway_on.rt.flow.end(call_id, reason="hangup")
    conn = await asyncpg.connect(pg_dsn)
    try:
        status = await conn.fetchval("SELECT status FROM conversations WHERE id = $1", call_id)
    finally:
        await conn.close()
    assert status == "ended"


async def test_a_nul_byte_in_a_generic_start_does_not_stop_the_call(
    data_dir: Path, orchestrator: httpx.ASGITransport, pg_dsn: str
) -> None:
    call_id = new_call_id()
    async with served(settings_for(data_dir), orchestrator) as gw:
        body = event(
            "call.started",
            call_id,
            **{"from": "web\x00user", "to": "+15550002222", "metadata": {"note\x00": "a\x00b"}},
        )
        r = await gw.send(body)
        assert r.status_code == 200
        assert GREETING_FALLBACK not in json.dumps(r.json())
        r = await gw.send(said(call_id, "1", "hello"))
        assert APOLOGY not in json.dumps(r.json())
    conn = await asyncpg.connect(pg_dsn)
    try:
        row = await conn.fetchrow(
            "SELECT caller, metadata FROM conversations WHERE id = $1", call_id
        )
    finally:
        await conn.close()
    assert row is not None and row["caller"] == "webuser"
    assert json.loads(row["metadata"]) == {"note": "ab"}
