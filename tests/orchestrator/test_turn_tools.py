"""Each turn's reply records the tools it ran (name, redacted arguments, ok), on the real app and
Postgres, on the plain and the streamed turn paths, with the model (a fake OpenAI server) and
offline; the conversation view shows them with their arguments to operators and admins and by
name only to viewers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import asyncpg

from tests.orchestrator.conftest import (
    RunningApp,
    management_headers,
    new_id,
)
from tests.orchestrator.llm_fakes import app_with_model

CARD = "4111 1111 1111 1111"
STREAM = {"Accept": "text/event-stream"}


async def start(app: RunningApp, headers: dict[str, str]) -> str:
    cid = new_id()
    body = {"call_id": cid, "provider": "generic-http", "caller": "+14155550142"}
    r = await app.client.post(f"/conversations/{cid}/start", json=body, headers=headers)
    assert r.status_code == 200, r.text
    return cid


async def say(
    app: RunningApp, headers: dict[str, str], cid: str, turn_id: str, words: str, *, stream: bool
) -> None:
    r = await app.client.post(
        f"/conversations/{cid}/messages",
        json={"message": words, "turn_id": turn_id, "context": {"call_id": cid}},
        headers={**headers, **STREAM} if stream else headers,
    )
    assert r.status_code == 200, r.text


async def tools_by_turn(app: RunningApp, cid: str, role: str) -> dict[str, list[dict[str, Any]]]:
    r = await app.client.get(f"/conversations/{cid}", headers=management_headers(role))
    assert r.status_code == 200, r.text
    return {m["turn_id"]: m["tools"] for m in r.json()["messages"] if m["role"] == "assistant"}


async def stored_metadata(db: asyncpg.Connection, cid: str) -> list[str]:
    rows = await db.fetch(
        "SELECT metadata::text AS m FROM messages WHERE conversation_id = $1 ORDER BY id", cid
    )
    return [r["m"] for r in rows]


async def test_the_models_tools_are_stored_redacted_on_both_turn_paths(
    pg_dsn: str, data_dir: Path, service_headers: dict[str, str], db: asyncpg.Connection
) -> None:
    async with app_with_model(data_dir, pg_dsn) as (app, fake):
        cid = await start(app, service_headers)
        # Plain turn: the model looks the card up, then answers.
        fake.tool_call("search_knowledge", {"query": f"card {CARD} fees", "limit": 2})
        fake.reply("There are no fees.")
        await say(app, service_headers, cid, "1", f"Fees for card {CARD}?", stream=False)
        # Streamed turn: the model notes a PIN, then transfers (no number to transfer to:
        # the tool fails, and the model says so).
        fake.tool_call("remember", {"fact": "my pin is 1234"}, call_id="call_2")
        fake.tool_call("transfer_call", {}, call_id="call_3")
        fake.reply("I cannot transfer you right now.")
        await say(app, service_headers, cid, "2", "Note my PIN, then a person", stream=True)
        # A turn that runs no tool records none.
        fake.reply("Anything else?")
        await say(app, service_headers, cid, "3", "Thanks", stream=False)
        assert not fake.script
        operator = await tools_by_turn(app, cid, "operator")
        admin = await tools_by_turn(app, cid, "admin")
        viewer = await tools_by_turn(app, cid, "viewer")
    assert operator == admin
    assert operator["greeting"] == [] and operator["3"] == []
    assert operator["1"] == [
        {
            "name": "search_knowledge",
            "args": {"query": "card [card number redacted] fees", "limit": 2},
            "ok": True,
        }
    ]
    assert [(t["name"], t["ok"]) for t in operator["2"]] == [
        ("remember", True),
        ("transfer_call", False),
    ]
    assert operator["2"][0]["args"] == {"fact": "my pin is [secret redacted]"}
    assert operator["2"][1]["args"] == {}
    # Viewers: which tools ran and how they went, not what they were asked.
    assert viewer["1"] == [{"name": "search_knowledge", "args": None, "ok": True}]
    assert [(t["name"], t["args"]) for t in viewer["2"]] == [
        ("remember", None),
        ("transfer_call", None),
    ]
    # Postgres holds no digit of the card or the PIN.
    stored = await stored_metadata(db, cid)
    assert any('"tools"' in m for m in stored)
    assert all("4111" not in m and "1234" not in m for m in stored), stored


async def test_offline_tools_are_stored_on_both_turn_paths(
    orch: RunningApp, service_headers: dict[str, str], db: asyncpg.Connection
) -> None:
    cid = await start(orch, service_headers)
    await say(orch, service_headers, cid, "1", "Remember that I like tea", stream=False)
    await say(orch, service_headers, cid, "2", "Goodbye", stream=True)
    tools = await tools_by_turn(orch, cid, "operator")
    assert tools["1"] == [{"name": "remember", "args": {"fact": "I like tea"}, "ok": True}]
    assert tools["2"] == [{"name": "end_call", "args": {"reason": "caller_goodbye"}, "ok": True}]
    stored = [json.loads(m) for m in await stored_metadata(db, cid)]
    assert [m.get("tools", [{}])[0].get("name") for m in stored] == [
        None,
        None,
        "remember",
        None,
        "end_call",
    ]
