"""`/knowledge`, `DELETE /callers/{phone}/memory` and the SSE turn stream, on the real app (real
Postgres, real Chroma: embedded and a `chroma run` server)."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.orchestrator.conftest import (
    ChromaServer,
    RunningApp,
    make_settings,
    new_id,
    run_app,
)
from tests.orchestrator.llm_fakes import app_with_model

FAQ = (
    "Our clinic opens at 8am and closes at 6pm on weekdays.\n\n"
    "Flu vaccinations are free for patients over 65. Bring your insurance card."
)


def phone() -> str:
    return "+1333" + "".join(random.choices("0123456789", k=7))


@pytest.fixture(params=["embedded", "server"])
async def app(
    request: pytest.FixtureRequest, pg_dsn: str, data_dir: Path
) -> AsyncIterator[RunningApp]:
    overrides: dict[str, Any] = {}
    if request.param == "server":
        server: ChromaServer = request.getfixturevalue("chroma_server")
        overrides = {"chroma_host": server.host, "chroma_port": server.port}
    async with run_app(make_settings(data_dir, pg_dsn, **overrides)) as running:
        yield running


async def call(app: RunningApp, headers: dict[str, str], caller: str, *turns: str) -> list[str]:
    cid = new_id()
    body = {"call_id": cid, "provider": "generic-http", "caller": caller}
    r = await app.client.post(f"/conversations/{cid}/start", json=body, headers=headers)
    replies = [r.json()["reply"]]
    for i, text in enumerate(turns):
        r = await app.client.post(
            f"/conversations/{cid}/messages",
            json={"message": text, "turn_id": f"t{i}"},
            headers=headers,
        )
        assert r.status_code == 200, r.text
        replies.append(r.json()["reply"])
    await app.client.post(f"/conversations/{cid}/end", json={}, headers=headers)
    await app.state["conversations"].drain()
    return replies


async def test_ingest_search_answer_and_delete(
    app: RunningApp, admin_headers: dict[str, str], service_headers: dict[str, str]
) -> None:
    r = await app.client.post(
        "/knowledge",
        json={"title": "Clinic FAQ", "text": FAQ, "id": "faq-1"},
        headers=admin_headers,
    )
    assert r.status_code == 201, r.text
    assert r.json()["documents"] == [
        {"id": "faq-1", "title": "Clinic FAQ", "agent_id": "*", "chunks": 1}
    ]
    r = await app.client.get(
        "/knowledge/search", params={"q": "flu vaccine"}, headers=admin_headers
    )
    results = r.json()["results"]
    assert results[0]["document_id"] == "faq-1" and "Flu vaccinations" in results[0]["text"]

    replies = await call(app, service_headers, phone(), "Are flu vaccinations free?")
    assert "free for patients over 65" in replies[1]

    r = await app.client.delete("/knowledge/faq-1", headers=admin_headers)
    assert r.status_code == 204
    r = await app.client.get(
        "/knowledge/search", params={"q": "flu vaccine"}, headers=admin_headers
    )
    assert r.json()["results"] == []
    r = await app.client.delete("/knowledge/faq-1", headers=admin_headers)
    assert r.status_code == 404 and r.json()["error"]["code"] == "document_not_found"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "text"),
        ({"text": ""}, "text"),
        ({"text": "x", "agent_id": "agt_missing"}, "agent_id"),
        ({"documents": [{"title": "no text"}]}, "documents.0.text"),
    ],
)
async def test_bad_ingest_is_a_4xx_naming_the_field(
    orch: RunningApp, admin_headers: dict[str, str], body: dict[str, Any], field: str
) -> None:
    r = await orch.client.post("/knowledge", json=body, headers=admin_headers)
    assert r.status_code == 422, r.text
    assert field in r.json()["error"]["message"]


async def test_search_needs_q(orch: RunningApp, admin_headers: dict[str, str]) -> None:
    r = await orch.client.get("/knowledge/search", headers=admin_headers)
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("query.q")


async def test_forgetting_a_caller_removes_every_memory(
    app: RunningApp,
    admin_headers: dict[str, str],
    service_headers: dict[str, str],
    viewer_headers: dict[str, str],
) -> None:
    caller = phone()
    await call(app, service_headers, caller, "Remember that I prefer morning appointments")
    again = await call(app, service_headers, caller)
    assert "morning appointments" in again[0]
    shown = await app.client.get(f"/callers/{caller}/memory", headers=admin_headers)
    kept = shown.json()["memories"]
    assert sorted(m["kind"] for m in kept) == ["fact", "summary"]
    assert any(m["text"] == "I prefer morning appointments" for m in kept)
    viewer = await app.client.get(f"/callers/{caller}/memory", headers=viewer_headers)
    assert viewer.status_code == 403  # personal data: operators and admins only
    vonage_style = caller.lstrip("+")  # the same number as Vonage sends it
    r = await app.client.delete(f"/callers/{vonage_style}/memory", headers=admin_headers)
    assert r.status_code == 200 and r.json()["deleted"] == 2  # the fact + the call summary
    assert r.json()["summaries_cleared"] == 1  # the summary kept on the first conversation
    summaries = await app.state["database"].pool.fetchval(
        "SELECT count(summary) FROM conversations WHERE caller = $1", caller
    )
    assert summaries == 0
    assert "***" in r.json()["phone"]
    shown = await app.client.get(f"/callers/{caller}/memory", headers=admin_headers)
    assert shown.json()["memories"] == []
    forgotten = await call(app, service_headers, caller)
    assert "morning" not in forgotten[0] and "Welcome back" not in forgotten[0]
    r = await app.client.delete("/callers/not-a-phone/memory", headers=admin_headers)
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("phone")


async def test_caller_memory_takes_a_number_as_people_and_providers_write_it(
    app: RunningApp, admin_headers: dict[str, str], service_headers: dict[str, str]
) -> None:
    caller = phone()
    await call(app, service_headers, caller, "Remember that I prefer morning appointments")
    digits = caller.lstrip("+")
    for written in (f"+1 ({digits[1:4]}) {digits[4:7]}-{digits[7:]}", digits):
        r = await app.client.get(f"/callers/{quote(written)}/memory", headers=admin_headers)
        assert r.status_code == 200, r.text
        assert [m["text"] for m in r.json()["memories"] if m["kind"] == "fact"] == [
            "I prefer morning appointments"
        ]
    for bad in ("klingon", "client:alice", "12"):
        r = await app.client.get(f"/callers/{quote(bad)}/memory", headers=admin_headers)
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "validation_error"
        assert error["message"].startswith(f"phone: '{bad}' is not a phone number"), error


async def test_health_reports_the_vector_store(app: RunningApp) -> None:
    health = (await app.client.get("/health")).json()
    assert health["services"]["vector_store"] == "connected"
    checks = (await app.client.get("/health/database")).json()["checks"]
    assert checks["chroma"]["status"] == "connected"
    assert checks["chroma"]["mode"] in ("embedded", "http")


def parse_sse(raw: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in raw.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


async def test_messages_stream_as_server_sent_events_offline(
    orch: RunningApp, service_headers: dict[str, str]
) -> None:
    cid = new_id()
    body = {"call_id": cid, "provider": "generic-http", "caller": phone()}
    await orch.client.post(f"/conversations/{cid}/start", json=body, headers=service_headers)
    headers = {**service_headers, "Accept": "text/event-stream"}
    r = await orch.client.post(
        f"/conversations/{cid}/messages", json={"message": "hello", "turn_id": "1"}, headers=headers
    )
    assert r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text)
    assert events[-1][0] == "reply"
    tokens = "".join(e[1]["text"] for e in events if e[0] == "token")
    assert sum(e[0] == "token" for e in events) > 3  # word by word, as a model would
    assert tokens == events[-1][1]["reply"]
    # a replay streams the stored reply, flagged as replayed
    again = parse_sse(
        (
            await orch.client.post(
                f"/conversations/{cid}/messages",
                json={"message": "hello", "turn_id": "1"},
                headers=headers,
            )
        ).text
    )
    assert again[-1][1]["replayed"] is True and again[-1][1]["reply"] == events[-1][1]["reply"]
    # errors found before streaming are plain JSON
    await orch.client.post(f"/conversations/{cid}/end", headers=headers)
    r = await orch.client.post(
        f"/conversations/{cid}/messages", json={"message": "x", "turn_id": "9"}, headers=headers
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "conversation_ended"


async def test_messages_stream_token_by_token_from_the_llm(
    pg_dsn: str, data_dir: Path, service_headers: dict[str, str], admin_headers: dict[str, str]
) -> None:
    async with app_with_model(data_dir, pg_dsn) as (app, fake):
        cid = new_id()
        body = {"call_id": cid, "provider": "generic-http", "caller": phone()}
        await app.client.post(f"/conversations/{cid}/start", json=body, headers=service_headers)
        fake.reply("Happy to help with that.", tokens=["Happy", " to help", " with that."])
        r = await app.client.post(
            f"/conversations/{cid}/messages",
            json={"message": "Can you help?", "turn_id": "1"},
            headers={**service_headers, "Accept": "text/event-stream"},
        )
        events = parse_sse(r.text)
        stored = await app.client.get(f"/conversations/{cid}", headers=admin_headers)
    assert [e[1]["text"] for e in events if e[0] == "token"] == ["Happy", " to help", " with that."]
    assert events[-1][0] == "reply" and events[-1][1]["reply"] == "Happy to help with that."
    assert stored.json()["messages"][-1]["content"] == "Happy to help with that."
