"""One read model per role, through the real app on real Postgres: viewers read a conversation's
shape (numbers masked, words withheld), operators and admins everything, and an HTTP tool's
header values are write-only for every role (and survive a read-edit-write round trip)."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from tests.orchestrator.conftest import RunningApp, management_headers, new_id

CALLER = "+14155550142"
CALLEE = "+14155550199"
API_KEY = "sk-live-0123456789abcdef"
ROLES = ("viewer", "operator", "admin")


async def a_call(orch: RunningApp, service_headers: dict[str, str]) -> str:
    cid = new_id()
    r = await orch.client.post(
        f"/conversations/{cid}/start",
        json={"call_id": cid, "provider": "generic-http", "caller": CALLER, "callee": CALLEE},
        headers=service_headers,
    )
    assert r.status_code == 200, r.text
    r = await orch.client.post(
        f"/conversations/{cid}/messages",
        json={"message": "I live at 12 Elm Street", "turn_id": "1", "context": {"call_id": cid}},
        headers=service_headers,
    )
    assert r.status_code == 200, r.text
    return cid


async def test_a_viewer_reads_a_conversation_without_its_words_or_full_numbers(
    orch: RunningApp, service_headers: dict[str, str]
) -> None:
    cid = await a_call(orch, service_headers)
    r = await orch.client.get(f"/conversations/{cid}", headers=management_headers("viewer"))
    assert r.status_code == 200, r.text
    view = r.json()
    assert view["personal_data"] == "withheld"
    assert view["caller"] == "+1415***0142" and view["callee"] == "+1415***0199"
    assert view["summary"] is None
    assert [(m["turn_id"], m["role"]) for m in view["messages"]] == [
        ("greeting", "assistant"),
        ("1", "user"),
        ("1", "assistant"),
    ]
    assert all(m["content"] is None for m in view["messages"])
    assert all(set(a) == {"type"} for m in view["messages"] for a in m["actions"])
    assert any(a["type"] == "say" for a in view["messages"][-1]["actions"])
    raw = json.dumps(view)
    assert "Elm" not in raw and "5550142" not in raw and "5550199" not in raw


async def test_operators_and_admins_read_the_whole_conversation(
    orch: RunningApp, service_headers: dict[str, str]
) -> None:
    cid = await a_call(orch, service_headers)
    for role in ("operator", "admin"):
        r = await orch.client.get(f"/conversations/{cid}", headers=management_headers(role))
        assert r.status_code == 200, r.text
        view = r.json()
        assert view["personal_data"] == "shown"
        assert view["caller"] == CALLER and view["callee"] == CALLEE
        assert view["messages"][1]["content"] == "I live at 12 Elm Street"
        assert view["messages"][2]["actions"][0].get("text")


async def test_caller_memory_follows_the_same_rule(
    orch: RunningApp,
) -> None:
    r = await orch.client.get(f"/callers/{CALLER}/memory", headers=management_headers("viewer"))
    assert r.status_code == 403


def crm_tool(key: str = API_KEY) -> dict[str, Any]:
    return {
        "name": "crm",
        "description": "CRM lookup",
        "url": "https://crm.example.com/lookup",
        "headers": {"Authorization": f"Bearer {key}", "X-Tenant": "acme"},
    }


async def test_tool_header_values_are_never_returned_to_any_role(
    orch: RunningApp, db: asyncpg.Connection
) -> None:
    r = await orch.client.post(
        "/agents/create",
        json={"configuration": {"allowed_hosts": ["crm.example.com"], "tools": [crm_tool()]}},
        headers=management_headers("operator"),
    )
    assert r.status_code == 201, r.text
    assert API_KEY not in r.text
    agent_id = r.json()["id"]
    for role in ROLES:
        headers = management_headers(role)
        one = await orch.client.get(f"/agents/{agent_id}", headers=headers)
        listed = await orch.client.get("/agents", params={"limit": 500}, headers=headers)
        assert one.status_code == 200 and listed.status_code == 200
        assert API_KEY not in one.text and API_KEY not in listed.text, role
        (tool,) = one.json()["configuration"]["tools"]
        assert tool["headers"] == {"Authorization": "***", "X-Tenant": "***"}
    stored = await db.fetchval("SELECT configuration::text FROM agents WHERE id = $1", agent_id)
    assert API_KEY in stored  # the tool still has its credential


async def test_writing_back_what_was_read_keeps_the_stored_secret(
    orch: RunningApp, db: asyncpg.Connection
) -> None:
    operator = management_headers("operator")
    config = {"allowed_hosts": ["crm.example.com"], "tools": [crm_tool()]}
    r = await orch.client.post("/agents/create", json={"configuration": config}, headers=operator)
    agent_id = r.json()["id"]
    read = (await orch.client.get(f"/agents/{agent_id}", headers=operator)).json()
    read["configuration"]["greeting"] = "Hello from Acme."
    put = await orch.client.put(
        f"/agents/{agent_id}",
        json={"name": read["name"], "configuration": read["configuration"]},
        headers=operator,
    )
    assert put.status_code == 200, put.text
    patch = await orch.client.patch(
        f"/agents/{agent_id}",
        json={"configuration": {"tools": read["configuration"]["tools"]}},
        headers=operator,
    )
    assert patch.status_code == 200, patch.text
    stored = json.loads(
        await db.fetchval("SELECT configuration::text FROM agents WHERE id = $1", agent_id)
    )
    assert stored["greeting"] == "Hello from Acme."
    assert stored["tools"][0]["headers"] == {
        "Authorization": f"Bearer {API_KEY}",
        "X-Tenant": "acme",
    }
    # A new value replaces it; '***' for a header the tool never had is refused.
    rotated = await orch.client.patch(
        f"/agents/{agent_id}",
        json={"configuration": {"tools": [crm_tool("sk-live-rotated")]}},
        headers=operator,
    )
    assert rotated.status_code == 200
    stored = json.loads(
        await db.fetchval("SELECT configuration::text FROM agents WHERE id = $1", agent_id)
    )
    assert stored["tools"][0]["headers"]["Authorization"] == "Bearer sk-live-rotated"
    unknown = {**crm_tool(), "headers": {"X-Other": "***"}}
    bad = await orch.client.patch(
        f"/agents/{agent_id}", json={"configuration": {"tools": [unknown]}}, headers=operator
    )
    assert bad.status_code == 422 and "X-Other" in bad.json()["error"]["message"]
    new = await orch.client.post(
        "/agents/create",
        json={"configuration": {**config, "tools": [unknown]}},
        headers=operator,
    )
    assert new.status_code == 422, new.text
