"""The demo agent (issue 23): made on an empty store outside production, never with
`APP_ENV=production` or `DEMO=false`, answered from its knowledge base offline, and gone without
a trace once deleted through the API. Each test has a database of its own (the demo needs an
empty store); assertions read Postgres with asyncpg and Chroma with Chroma's own client.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import chromadb
import pytest

from orchestrator.demo import DEMO_AGENT_ID, DEMO_PHONE_NUMBER, DEMO_TRANSFER_NUMBER
from tests.conftest import unavailable
from tests.live_servers import PostgresServer, with_database
from tests.orchestrator.conftest import ChromaServer, RunningApp, make_settings, run_app

CALLER = "+15550001111"


@pytest.fixture
def fresh_dsn(postgres_server: PostgresServer) -> Iterator[str]:
    """An empty database of this test's own (on the session's server), dropped afterwards."""
    name = f"vao_demo_{uuid.uuid4().hex[:10]}"
    admin_dsn = postgres_server.admin_dsn

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(admin_dsn, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        unavailable(f"Postgres at {admin_dsn}", exc)
    yield with_database(admin_dsn, name)
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def settings_for(dsn: str, data_dir: Path, chroma: ChromaServer, **overrides: Any) -> Any:
    return make_settings(
        data_dir, dsn, chroma_host=chroma.host, chroma_port=chroma.port, **overrides
    )


@pytest.fixture
async def demo_app(
    fresh_dsn: str, data_dir: Path, chroma_server: ChromaServer
) -> AsyncIterator[RunningApp]:
    async with run_app(settings_for(fresh_dsn, data_dir, chroma_server, demo=True)) as app:
        await demo_knowledge_loaded(app)
        yield app
        for purpose in ("knowledge", "memories"):  # the Chroma server is the session's
            chroma_collection(app, chroma_server, purpose).delete(where={"agent_id": DEMO_AGENT_ID})


async def demo_knowledge_loaded(app: RunningApp) -> None:
    """It is ingested just after ready, in the background: wait for it (a few ms)."""
    knowledge = app.state["responder"].knowledge
    for _ in range(100):
        if await knowledge.has_knowledge(DEMO_AGENT_ID):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the demo knowledge was not loaded")


def chroma_collection(app: RunningApp, chroma: ChromaServer, purpose: str) -> Any:
    name = getattr(app.state["responder"].chroma, purpose).name
    return chromadb.HttpClient(host=chroma.host, port=chroma.port).get_collection(name)


def demo_chunks(collection: Any) -> list[dict[str, Any]]:
    got = collection.get(where={"agent_id": DEMO_AGENT_ID}, include=["metadatas"])
    return [dict(m or {}) for m in got["metadatas"]]


def purge_demo_data(chroma: ChromaServer) -> None:
    """Demo chunks or memories another test left in the session's Chroma server (only when that
    test failed): so each absence test sees only what its own app wrote."""
    client = chromadb.HttpClient(host=chroma.host, port=chroma.port)
    for collection in client.list_collections():
        client.get_collection(collection.name).delete(where={"agent_id": DEMO_AGENT_ID})


async def agent_rows(dsn: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch("SELECT id, name, configuration FROM agents"))
    finally:
        await conn.close()


async def turn(app: RunningApp, headers: dict[str, str], cid: str, n: int, text: str) -> Any:
    body = {"message": text, "turn_id": str(n), "context": {"call_id": cid, "caller": CALLER}}
    r = await app.client.post(f"/conversations/{cid}/messages", json=body, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


async def start(app: RunningApp, headers: dict[str, str], cid: str) -> Any:
    body = {
        "call_id": cid,
        "provider": "generic-http",
        "direction": "inbound",
        "caller": CALLER,
        "callee": DEMO_PHONE_NUMBER,
    }
    r = await app.client.post(f"/conversations/{cid}/start", json=body, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


async def test_demo_agent_is_made_on_an_empty_store_labelled_as_a_demo(
    demo_app: RunningApp,
    fresh_dsn: str,
    chroma_server: ChromaServer,
    admin_headers: dict[str, str],
) -> None:
    r = await demo_app.client.get(f"/agents/{DEMO_AGENT_ID}", headers=admin_headers)
    assert r.status_code == 200, r.text
    agent = r.json()
    assert "demo" in agent["name"].lower()
    assert "DEMO" in agent["configuration"]["description"]
    assert agent["configuration"]["phone_numbers"] == [DEMO_PHONE_NUMBER]
    assert agent["configuration"]["transfer_number"] == DEMO_TRANSFER_NUMBER
    tool = agent["configuration"]["tools"][0]
    port = demo_app.app.state.settings.port
    assert tool["url"] == f"http://127.0.0.1:{port}/demo/orders/{{order_id}}"
    chunks = demo_chunks(chroma_collection(demo_app, chroma_server, "knowledge"))
    assert chunks and all(
        c["source"] == "demo" and c["title"].startswith("Demo:") and c["doc_id"].startswith("demo-")
        for c in chunks
    )
    # the tool's endpoint, served by the orchestrator itself
    r = await demo_app.client.get("/demo/orders/1042")
    assert r.status_code == 200 and r.json()["order_id"] == "1042" and r.json()["demo"] is True


async def test_demo_agent_answers_from_its_knowledge_offline(
    demo_app: RunningApp, service_headers: dict[str, str]
) -> None:
    cid = f"conv-{uuid.uuid4().hex[:12]}"
    greeting = await start(demo_app, service_headers, cid)
    assert "Harbourside Bakery" in greeting["actions"][0]["text"]
    hours = await turn(demo_app, service_headers, cid, 1, "What are your opening hours?")
    assert "Monday to Friday from 7 am to 6 pm" in hours["actions"][0]["text"]
    transfer = await turn(demo_app, service_headers, cid, 2, "Can I speak to a person?")
    assert transfer["actions"][-1] == {"type": "transfer", "to": DEMO_TRANSFER_NUMBER}


@pytest.mark.parametrize(
    "overrides",
    [
        {"app_env": "production", "demo": True},  # production wins over DEMO=true
        {"demo": False},
        {},  # unset: only on the embedded Postgres, and this is an external one
    ],
    ids=["production", "DEMO=false", "unset-external-db"],
)
async def test_no_demo_data_in_production_or_with_demo_false(
    overrides: dict[str, Any],
    fresh_dsn: str,
    data_dir: Path,
    chroma_server: ChromaServer,
    admin_headers: dict[str, str],
) -> None:
    purge_demo_data(chroma_server)
    settings = settings_for(fresh_dsn, data_dir, chroma_server, **overrides)
    async with run_app(settings) as app:
        await asyncio.sleep(0.3)  # what a background load would have had time to write
        agent = await app.client.get(f"/agents/{DEMO_AGENT_ID}", headers=admin_headers)
        assert agent.status_code == 404
        knowledge = chroma_collection(app, chroma_server, "knowledge")
        chunks = demo_chunks(knowledge)
        knowledge.delete(where={"agent_id": DEMO_AGENT_ID})  # a failure here stays here
        demo_route = await app.client.get("/demo/orders/1042")
    rows = await agent_rows(fresh_dsn)
    assert len(rows) == 1 and rows[0]["id"] != DEMO_AGENT_ID  # the default agent only
    assert "demo" not in json.dumps([dict(r) for r in rows], default=str).lower()
    assert chunks == []
    if overrides:  # production or DEMO=false: not even the tool's endpoint
        assert demo_route.status_code == 404


async def test_demo_is_made_only_on_an_empty_store(
    fresh_dsn: str, data_dir: Path, chroma_server: ChromaServer
) -> None:
    async with run_app(settings_for(fresh_dsn, data_dir, chroma_server, demo=False)):
        pass  # the store now holds the default agent
    async with run_app(settings_for(fresh_dsn, data_dir, chroma_server, demo=True)):
        pass
    ids = [r["id"] for r in await agent_rows(fresh_dsn)]
    assert len(ids) == 1 and ids[0] != DEMO_AGENT_ID


async def test_deleting_the_demo_agent_leaves_no_trace_in_postgres_or_chroma(
    demo_app: RunningApp,
    fresh_dsn: str,
    data_dir: Path,
    chroma_server: ChromaServer,
    admin_headers: dict[str, str],
    service_headers: dict[str, str],
) -> None:
    cid = f"conv-{uuid.uuid4().hex[:12]}"
    await start(demo_app, service_headers, cid)
    await turn(demo_app, service_headers, cid, 1, "Please remember that my name is Sam")
    r = await demo_app.client.post(f"/conversations/{cid}/end", json={}, headers=service_headers)
    assert r.status_code == 200, r.text
    await demo_app.state["conversations"].drain()
    knowledge = chroma_collection(demo_app, chroma_server, "knowledge")
    memories = chroma_collection(demo_app, chroma_server, "memories")
    assert demo_chunks(knowledge) and demo_chunks(memories)  # there was something to remove

    r = await demo_app.client.delete(f"/agents/{DEMO_AGENT_ID}", headers=admin_headers)
    assert r.status_code == 204, r.text

    assert demo_chunks(knowledge) == [] and demo_chunks(memories) == []
    got = knowledge.get(where={"source": "demo"}, include=[])
    assert got["ids"] == []
    conn = await asyncpg.connect(fresh_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM agents WHERE id = $1", DEMO_AGENT_ID) == 0
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM agents WHERE name ILIKE '%demo%' OR configuration::text "
                "ILIKE '%demo%'"
            )
            == 0
        )
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM conversations WHERE agent_id = $1", DEMO_AGENT_ID
            )
            == 0
        )
    finally:
        await conn.close()
    r = await demo_app.client.get(
        "/knowledge/search",
        params={"q": "opening hours", "agent_id": DEMO_AGENT_ID},
        headers=admin_headers,
    )
    assert r.status_code == 200 and r.json()["results"] == []


async def test_demo_false_on_the_embedded_default_makes_nothing(
    embedded_data_dir: Path, chroma_server: ChromaServer, admin_headers: dict[str, str]
) -> None:
    """The embedded Postgres is where the demo is made by default: DEMO=false stops it there."""
    purge_demo_data(chroma_server)
    settings = settings_for(None, embedded_data_dir, chroma_server, demo=False)  # type: ignore[arg-type]
    async with run_app(settings) as app:
        await asyncio.sleep(0.3)
        r = await app.client.get("/agents", headers=admin_headers)
        knowledge = chroma_collection(app, chroma_server, "knowledge")
        chunks = demo_chunks(knowledge)
        knowledge.delete(where={"agent_id": DEMO_AGENT_ID})
    assert app.state["database_mode"] == "embedded"
    assert [a["id"] for a in r.json()["agents"]] != [] and all(
        a["id"] != DEMO_AGENT_ID and "demo" not in a["name"].lower() for a in r.json()["agents"]
    )
    assert chunks == []


@pytest.mark.parametrize(
    ("app_env", "demo", "embedded", "made"),
    [
        ("development", None, True, True),
        ("development", None, False, False),
        ("development", True, False, True),
        ("development", False, True, False),
        ("production", True, True, False),
        ("production", None, True, False),
    ],
)
def test_when_the_demo_is_made(
    app_env: str, demo: bool | None, embedded: bool, made: bool, data_dir: Path
) -> None:
    from orchestrator.demo import demo_enabled

    settings = make_settings(data_dir, None, app_env=app_env, demo=demo)
    assert demo_enabled(settings, embedded_database=embedded) is made
