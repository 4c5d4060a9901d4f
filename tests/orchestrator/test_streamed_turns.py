"""The orchestrator's side of streamed calls (issue 18), on the real app and Postgres: an agent's
`voice_mode` (validated, stored, sent with the greeting), the barge-in record
(`POST /conversations/{id}/messages/{turn_id}/interrupted`), the caller's words of a streamed turn
kept when the stream is cut short, and a streamed turn whose every word is streamed (offline, and
the fallback line when the model says nothing)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from orchestrator.agents.orchestrator_agent import FALLBACK_REPLY
from shared.contract import TurnContext, TurnReply
from tests.orchestrator.conftest import (
    RunningApp,
    management_headers,
    new_id,
)
from tests.orchestrator.graph_harness import graph_stack, new_phone
from tests.orchestrator.llm_fakes import app_with_model

STREAM = {"Accept": "text/event-stream"}


async def start(
    orch: RunningApp, headers: dict[str, str], **extra: Any
) -> tuple[str, dict[str, Any]]:
    cid = new_id()
    body = {"call_id": cid, "provider": "generic-http", "caller": new_phone(), **extra}
    r = await orch.client.post(f"/conversations/{cid}/start", json=body, headers=headers)
    assert r.status_code == 200, r.text
    return cid, r.json()


def sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(event, data) of a server-sent event stream."""
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


async def streamed_turn(
    app: RunningApp, headers: dict[str, str], cid: str, message: str
) -> tuple[list[tuple[str, dict[str, Any]]], str]:
    """Turn "1" of `cid` streamed: its events, and the text of its `token` events joined."""
    r = await app.client.post(
        f"/conversations/{cid}/messages",
        json={"message": message, "turn_id": "1"},
        headers={**headers, **STREAM},
    )
    assert r.status_code == 200, r.text
    events = sse(r.text)
    return events, "".join(data["text"] for event, data in events if event == "token")


async def interrupt(
    orch: RunningApp, headers: dict[str, str], cid: str, turn_id: str, heard: str
) -> Any:
    return await orch.client.post(
        f"/conversations/{cid}/messages/{turn_id}/interrupted",
        json={"heard": heard},
        headers=headers,
    )


# -- voice mode ---------------------------------------------------------------------------------


async def test_an_agents_voice_mode_is_validated_stored_and_sent_with_the_greeting(
    orch: RunningApp, admin_headers: dict[str, str], service_headers: dict[str, str]
) -> None:
    bad = await orch.client.post(
        "/agents/create", json={"configuration": {"voice_mode": "stream"}}, headers=admin_headers
    )
    assert bad.status_code == 422, bad.text
    error = bad.json()["error"]
    assert error["code"] == "validation_error"
    assert error["message"].startswith("configuration.voice_mode"), error
    assert "relay" in error["message"] and "gather" in error["message"]

    r = await orch.client.post(
        "/agents/create", json={"configuration": {"voice_mode": "relay"}}, headers=admin_headers
    )
    assert r.status_code == 201, r.text
    agent = r.json()
    read = await orch.client.get(f"/agents/{agent['id']}", headers=admin_headers)
    assert read.json()["configuration"]["voice_mode"] == "relay"

    cid, greeting = await start(orch, service_headers, agent_id=agent["id"])
    assert greeting["voice_mode"] == "relay"
    again = await orch.client.post(
        f"/conversations/{cid}/start",
        json={"call_id": cid, "provider": "generic-http", "agent_id": agent["id"]},
        headers=service_headers,
    )
    assert again.json()["replayed"] is True and again.json()["voice_mode"] == "relay"

    patched = await orch.client.patch(
        f"/agents/{agent['id']}",
        json={"configuration": {"voice_mode": "gather"}},
        headers=admin_headers,
    )
    assert patched.status_code == 200 and patched.json()["configuration"]["voice_mode"] == "gather"
    _, greeting = await start(orch, service_headers, agent_id=agent["id"])
    assert greeting["voice_mode"] == "gather"
    bad = await orch.client.patch(
        f"/agents/{agent['id']}", json={"configuration": {"voice_mode": 1}}, headers=admin_headers
    )
    assert bad.status_code == 422 and "configuration.voice_mode" in bad.json()["error"]["message"]

    _, default_greeting = await start(orch, service_headers)  # the default agent sets none
    assert "voice_mode" not in default_greeting  # the gateway's TWILIO_VOICE_MODE decides


# -- the barge-in record ------------------------------------------------------------------------


async def test_a_stored_reply_talked_over_becomes_what_was_heard_once(
    orch: RunningApp,
    service_headers: dict[str, str],
    admin_headers: dict[str, str],
    db: asyncpg.Connection,
) -> None:
    cid, _ = await start(orch, service_headers)
    r = await orch.client.post(
        f"/conversations/{cid}/messages",
        json={"message": "Do you sell helicopters?", "turn_id": "1"},
        headers=service_headers,
    )
    assert r.status_code == 200, r.text
    full = r.json()
    heard = "I'm sorry, I don't have card 4111 1111 1111 1111"
    r = await interrupt(orch, service_headers, cid, "1", heard)
    assert r.status_code == 200, r.text
    marked = r.json()
    assert marked["interrupted"] is True and marked["turn_id"] == "1"
    assert marked["reply"].startswith("I'm sorry, I don't have card ")
    assert "4111" not in marked["reply"]  # redacted like every reply
    assert marked["actions"] == full["actions"]  # what the agent did stays done

    again = await interrupt(orch, service_headers, cid, "1", "something else")
    assert again.status_code == 200 and again.json() == marked  # the first record stands
    rows = await db.fetch(
        "SELECT content, metadata FROM messages WHERE conversation_id = $1 AND turn_id = '1' "
        "AND role = 'assistant'",
        cid,
    )
    assert len(rows) == 1 and rows[0]["content"] == marked["reply"]
    assert json.loads(rows[0]["metadata"])["interrupted"] is True

    view = await orch.client.get(f"/conversations/{cid}", headers=admin_headers)
    said = [m for m in view.json()["messages"] if m["turn_id"] == "1"]
    assert [(m["role"], m["interrupted"]) for m in said] == [("user", False), ("assistant", True)]
    retried = await orch.client.post(
        f"/conversations/{cid}/messages",
        json={"message": "Do you sell helicopters?", "turn_id": "1"},
        headers=service_headers,
    )
    assert retried.json()["replayed"] is True and retried.json()["interrupted"] is True
    assert retried.json()["reply"] == marked["reply"]


async def test_interrupting_an_unknown_conversation_or_turn_is_a_404_and_stores_nothing(
    orch: RunningApp, service_headers: dict[str, str], db: asyncpg.Connection
) -> None:
    r = await interrupt(orch, service_headers, new_id(), "1", "Hello")
    assert r.status_code == 404 and r.json()["error"]["code"] == "conversation_not_found"
    cid, _ = await start(orch, service_headers)
    r = await interrupt(orch, service_headers, cid, "7", "Hello")
    assert r.status_code == 404, r.text
    assert r.json()["error"] == {
        "code": "turn_not_found",
        "message": f"conversation {cid!r} has no turn '7'",
    }
    count = "SELECT count(*) FROM messages WHERE conversation_id = $1"
    assert await db.fetchval(count, cid) == 1  # the greeting only

    r = await orch.client.post(
        f"/conversations/{cid}/messages/greeting/interrupted", json={"heard": "Hel"}
    )
    assert r.status_code == 401 and "error" in r.json()
    r = await interrupt(orch, management_headers("viewer"), cid, "greeting", "Hel")
    assert r.status_code == 403 and "error" in r.json()
    r = await interrupt(orch, service_headers, cid, "bad turn", "Hel")
    assert r.status_code == 422 and "error" in r.json()
    r = await interrupt(orch, service_headers, cid, "greeting", "x" * 4001)
    assert r.status_code == 422 and "heard" in r.json()["error"]["message"]
    # The greeting has no question, but it was said: the caller may talk over it.
    r = await interrupt(orch, service_headers, cid, "greeting", "Hel")
    assert r.status_code == 200 and r.json()["reply"] == "Hel" and r.json()["interrupted"]


async def test_a_streamed_turn_cut_short_keeps_the_callers_words_and_can_be_answered_later(
    pg_dsn: str, data_dir: Path
) -> None:
    """The service's turn cancelled after its first piece (the gateway went away): the caller's
    message is stored though no reply is; the same turn asked again (JSON) is answered and
    stored once."""
    async with graph_stack(data_dir, pg_dsn) as stack:
        agent = await stack.agent()
        greeting = await stack.start(agent, new_phone())
        cid = greeting.conversation_id
        context = TurnContext(call_id=cid)
        turn = await stack.service.open_stream(cid, "1", "Do you sell helicopters?", context)
        heard = asyncio.Event()

        async def on_text(piece: str) -> None:
            assert piece
            heard.set()
            await asyncio.Event().wait()  # a write that never completes: the gateway is gone

        running = asyncio.create_task(turn(on_text))
        await asyncio.wait_for(heard.wait(), 10)
        running.cancel()  # the gateway went away (barge-in)
        with pytest.raises(asyncio.CancelledError):
            await running
        await stack.service.drain()
        stored = await stack.database.conversations.messages(cid)
        assert [(m.turn_id, m.role, m.content) for m in stored[1:]] == [
            ("1", "user", "Do you sell helicopters?")
        ]
        assert stored[1].metadata == {"input_type": "speech"}
        reply = await stack.service.message(cid, "1", "Do you sell helicopters?", context)
        assert isinstance(reply, TurnReply) and reply.reply and not reply.replayed
        stored = await stack.database.conversations.messages(cid)
        assert [(m.turn_id, m.role) for m in stored[1:]] == [("1", "user"), ("1", "assistant")]


# -- every word streamed --------------------------------------------------------------------------


async def test_an_offline_streamed_turn_streams_its_reply_word_by_word(
    orch: RunningApp, service_headers: dict[str, str]
) -> None:
    cid, _ = await start(orch, service_headers)
    events, _ = await streamed_turn(orch, service_headers, cid, "Do you sell helicopters?")
    pieces = [data["text"] for event, data in events if event == "token"]
    assert events[-1][0] == "reply"
    reply = events[-1][1]["reply"]
    assert len(pieces) == len(reply.split(" ")) > 3  # one piece a word
    assert all(p.count(" ") <= 1 and not p.startswith(" ") for p in pieces)
    assert "".join(pieces) == reply


async def test_a_model_that_says_nothing_streams_the_fallback_it_stores(
    pg_dsn: str, data_dir: Path, service_headers: dict[str, str]
) -> None:
    async with app_with_model(data_dir, pg_dsn) as (app, fake):
        cid, _ = await start(app, service_headers)
        fake.reply("")
        events, streamed = await streamed_turn(app, service_headers, cid, "Hmm, tell me something")
    assert events[-1][1]["reply"] == FALLBACK_REPLY == streamed


async def test_a_card_number_the_model_repeats_is_redacted_in_what_streams_out(
    pg_dsn: str, data_dir: Path, service_headers: dict[str, str]
) -> None:
    """A model echoing a card number, token by token: the number is held back until it is
    whole, then streamed redacted — the caller's socket, like the store, never gets it."""
    async with app_with_model(data_dir, pg_dsn) as (app, fake):
        cid, _ = await start(app, service_headers)
        fake.reply(
            "Your card 4111 1111 1111 1111 is noted.",
            tokens=["Your card ", "4111 ", "1111 ", "1111", " 1111", " is noted."],
        )
        events, streamed = await streamed_turn(
            app, service_headers, cid, "Can you read my card back?"
        )
    assert "4111" not in streamed and "1111" not in streamed, streamed
    assert streamed == events[-1][1]["reply"] == "Your card [card number redacted] is noted."
