"""The HTTP API on the real app (lifespan run) and the session's real Postgres."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
from pydantic import TypeAdapter, ValidationError

from shared.auth import mint_token
from shared.contract import IDEMPOTENCY_HEADER, Identifier, TurnReply, idempotency_key
from tests.live_servers import with_database
from tests.orchestrator.conftest import SECRET, RunningApp, make_settings, new_id, run_app


def caller_for(conversation_id: str) -> str:
    """A caller number of its own per conversation: a shared one would make a later test's
    caller a returning caller (greeted with an earlier test's call summary)."""
    digest = int(hashlib.sha256(conversation_id.encode()).hexdigest(), 16)
    return f"+1555{digest % 10**7:07d}"


def start_body(conversation_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "call_id": conversation_id,
        "provider": "generic-http",
        "caller": caller_for(conversation_id),
        **extra,
    }


async def start(orch: RunningApp, headers: dict[str, str], **extra: Any) -> str:
    cid = new_id()
    r = await orch.client.post(
        f"/conversations/{cid}/start", json=start_body(cid, **extra), headers=headers
    )
    assert r.status_code == 200, r.text
    return cid


async def turn(
    orch: RunningApp, headers: dict[str, str], cid: str, turn_id: str, message: str
) -> httpx.Response:
    return await orch.client.post(
        f"/conversations/{cid}/messages",
        json={"message": message, "context": {"call_id": cid}},
        headers={**headers, IDEMPOTENCY_HEADER: idempotency_key(cid, turn_id)},
    )


async def message_rows(db: asyncpg.Connection, cid: str) -> list[tuple[str, str]]:
    rows = await db.fetch(
        "SELECT turn_id, role FROM messages WHERE conversation_id = $1 ORDER BY id", cid
    )
    return [(r["turn_id"], r["role"]) for r in rows]


# -- health -------------------------------------------------------------------------------------


async def test_health_reports_the_spec_shape_with_a_real_database_check(orch: RunningApp) -> None:
    r = await orch.client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "healthy" and body["version"]
    assert body["timestamp"].endswith("Z")
    assert body["services"]["database"] == "connected"
    assert body["services"]["llm"] == orch.state["responder"].mode == "offline"
    assert body["services"]["vector_store"] in ("connected", "not_configured")


async def test_health_database_reports_postgres_latency(orch: RunningApp) -> None:
    r = await orch.client.get("/health/database")
    assert r.status_code == 200
    postgres = r.json()["checks"]["postgres"]
    assert postgres["status"] == "connected" and postgres["mode"] == "external"
    assert postgres["latency_ms"] >= 0 and postgres["server_version"]


async def test_health_is_503_and_degraded_when_the_database_is_gone(orch: RunningApp) -> None:
    await orch.state["database"].pool.close()
    r = await orch.client.get("/health")
    assert r.status_code == 503
    assert r.json()["status"] == "degraded"
    assert r.json()["services"]["database"] == "disconnected"
    assert r.json()["degraded"] == ["database"]
    r = await orch.client.get("/health/database")
    assert r.status_code == 503 and r.json()["checks"]["postgres"]["status"] == "disconnected"


async def test_a_registered_check_appears_in_both_health_endpoints(orch: RunningApp) -> None:
    async def chroma() -> dict[str, Any]:
        raise ConnectionError("down")

    orch.state["health"].add("chroma", chroma)
    r = await orch.client.get("/health")
    assert r.status_code == 200  # the database still answers turns
    assert r.json()["status"] == "degraded"
    assert r.json()["services"]["vector_store"] == "disconnected"
    r = await orch.client.get("/health/database")
    assert r.json()["checks"]["chroma"] == {
        "status": "disconnected",
        "latency_ms": r.json()["checks"]["chroma"]["latency_ms"],
        "error": "ConnectionError",
    }


# -- the call contract ----------------------------------------------------------------------------


async def test_a_call_start_to_end_is_answered_and_stored(
    orch: RunningApp, service_headers: dict[str, str], db: asyncpg.Connection
) -> None:
    cid = new_id()
    r = await orch.client.post(
        f"/conversations/{cid}/start", json=start_body(cid), headers=service_headers
    )
    assert r.status_code == 200, r.text
    greeting = TurnReply.model_validate(r.json())
    assert greeting.turn_id == "greeting" and not greeting.replayed
    default = await orch.state["database"].agents.get_default()
    # Other tests share this database and may make another agent the default; one without a
    # greeting of its own greets with the configured DEFAULT_AGENT_GREETING.
    expected = default.greeting or orch.app.state.settings.default_agent_greeting
    assert greeting.reply == expected and greeting.agent_id == default.id
    assert [a.type for a in greeting.actions] == ["say", "gather"]
    assert greeting.agent_id is not None

    r = await turn(orch, service_headers, cid, "1", "What are your opening hours?")
    assert r.status_code == 200, r.text
    reply = TurnReply.model_validate(r.json())
    assert reply.turn_id == "1" and reply.reply and not reply.replayed
    assert reply.actions[0].type == "say" and reply.actions[0].text == reply.reply
    assert reply.actions[-1].type == "gather"
    assert {"store_read", "respond", "store_write", "total"} <= reply.timings_ms.keys()
    assert r.headers["x-request-id"]

    r = await turn(orch, service_headers, cid, "2", "Okay, goodbye")
    assert [a["type"] for a in r.json()["actions"]] == ["say", "hangup"]

    r = await orch.client.post(
        f"/conversations/{cid}/end",
        json={"reason": "hangup", "status": "completed", "duration_s": 12.5},
        headers=service_headers,
    )
    assert r.status_code == 200
    assert r.json() == {"conversation_id": cid, "status": "ended", "already_ended": False}
    r = await orch.client.post(f"/conversations/{cid}/end", headers=service_headers)
    assert r.json()["already_ended"] is True

    assert await message_rows(db, cid) == [
        ("greeting", "assistant"),
        ("1", "user"),
        ("1", "assistant"),
        ("2", "user"),
        ("2", "assistant"),
    ]
    conversation = await db.fetchrow(
        "SELECT status, end_reason FROM conversations WHERE id=$1", cid
    )
    assert dict(conversation) == {"status": "ended", "end_reason": "hangup"}
    call = await db.fetchrow("SELECT status, duration_s, caller FROM calls WHERE call_id=$1", cid)
    assert dict(call) == {"status": "completed", "duration_s": 12.5, "caller": caller_for(cid)}


async def test_a_retried_turn_returns_the_same_reply_and_stores_one_pair(
    orch: RunningApp, service_headers: dict[str, str], db: asyncpg.Connection
) -> None:
    cid = await start(orch, service_headers)
    first = await turn(orch, service_headers, cid, "1", "hello there")
    retry = await turn(orch, service_headers, cid, "1", "hello there")
    assert first.status_code == retry.status_code == 200
    assert first.json()["replayed"] is False and retry.json()["replayed"] is True
    assert retry.json()["reply"] == first.json()["reply"]
    assert retry.json()["actions"] == first.json()["actions"]
    assert await message_rows(db, cid) == [
        ("greeting", "assistant"),
        ("1", "user"),
        ("1", "assistant"),
    ]


async def test_concurrent_duplicates_of_a_turn_get_one_reply_and_store_one_pair(
    orch: RunningApp, service_headers: dict[str, str], db: asyncpg.Connection
) -> None:
    cid = await start(orch, service_headers)
    responses = await asyncio.gather(
        *(turn(orch, service_headers, cid, "1", "I need help") for _ in range(6))
    )
    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["reply"] for r in responses}) == 1
    assert await message_rows(db, cid) == [
        ("greeting", "assistant"),
        ("1", "user"),
        ("1", "assistant"),
    ]


async def test_start_twice_returns_the_stored_greeting(
    orch: RunningApp, service_headers: dict[str, str], db: asyncpg.Connection
) -> None:
    cid = new_id()
    url = f"/conversations/{cid}/start"
    first = await orch.client.post(url, json=start_body(cid), headers=service_headers)
    again = await orch.client.post(url, json=start_body(cid), headers=service_headers)
    assert again.json()["replayed"] is True and again.json()["reply"] == first.json()["reply"]
    assert await message_rows(db, cid) == [("greeting", "assistant")]


async def test_turn_id_can_come_from_the_body(
    orch: RunningApp, service_headers: dict[str, str]
) -> None:
    cid = await start(orch, service_headers)
    r = await orch.client.post(
        f"/conversations/{cid}/messages",
        json={"message": "hi", "turn_id": "t-1"},
        headers=service_headers,
    )
    assert r.status_code == 200 and r.json()["turn_id"] == "t-1"


async def test_a_malformed_idempotency_key_or_a_disagreeing_turn_id_is_400(
    orch: RunningApp, service_headers: dict[str, str]
) -> None:
    cid = await start(orch, service_headers)
    url = f"/conversations/{cid}/messages"
    bad = await orch.client.post(
        url, json={"message": "hi"}, headers={**service_headers, IDEMPOTENCY_HEADER: "a b"}
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_idempotency_key"
    mismatch = await orch.client.post(
        url,
        json={"message": "hi", "turn_id": "2"},
        headers={**service_headers, IDEMPOTENCY_HEADER: f"{cid}:3"},
    )
    assert mismatch.status_code == 400 and mismatch.json()["error"]["code"] == "turn_id_mismatch"


async def test_transfer_and_routing_by_dialled_number_use_the_agent_configuration(
    orch: RunningApp, service_headers: dict[str, str]
) -> None:
    number = "+1555" + "".join(c for c in new_id() if c.isdigit()).ljust(7, "1")[:7]
    agent = await orch.state["database"].agents.create(
        name="Support",
        configuration={
            "greeting": "Support desk, hello.",
            "transfer_number": "+15557654321",
            "phone_numbers": [number],
        },
    )
    cid = new_id()
    r = await orch.client.post(
        f"/conversations/{cid}/start",
        json=start_body(cid, callee=number),
        headers=service_headers,
    )
    assert r.json()["reply"] == "Support desk, hello." and r.json()["agent_id"] == agent.id
    r = await turn(orch, service_headers, cid, "1", "Can I speak to a human please")
    assert r.json()["actions"][-1] == {"type": "transfer", "to": "+15557654321"}


async def test_an_unknown_agent_id_is_404_naming_it(
    orch: RunningApp, service_headers: dict[str, str]
) -> None:
    cid = new_id()
    r = await orch.client.post(
        f"/conversations/{cid}/start",
        json=start_body(cid, agent_id="agt_missing"),
        headers=service_headers,
    )
    assert r.status_code == 404 and "agent_id" in r.json()["error"]["message"]


async def test_a_turn_after_the_end_is_409_but_a_retry_of_an_old_turn_still_replays(
    orch: RunningApp, service_headers: dict[str, str]
) -> None:
    cid = await start(orch, service_headers)
    first = await turn(orch, service_headers, cid, "1", "hello")
    await orch.client.post(f"/conversations/{cid}/end", headers=service_headers)
    late = await turn(orch, service_headers, cid, "2", "still there?")
    assert late.status_code == 409 and late.json()["error"]["code"] == "conversation_ended"
    retry = await turn(orch, service_headers, cid, "1", "hello")
    assert retry.status_code == 200 and retry.json()["reply"] == first.json()["reply"]


async def test_unknown_conversations_are_404_json(
    orch: RunningApp, service_headers: dict[str, str], admin_headers: dict[str, str]
) -> None:
    cid = new_id()
    for r in (
        await orch.client.post(f"/conversations/{cid}/end", headers=service_headers),
        await orch.client.get(f"/conversations/{cid}", headers=admin_headers),
    ):
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "conversation_not_found"


async def test_a_turn_for_a_conversation_never_started_starts_it_late(
    orch: RunningApp, service_headers: dict[str, str], admin_headers: dict[str, str]
) -> None:
    """The call started while the orchestrator was down (or its start was refused, or its row
    was lost): its first turn starts the conversation, once, and everything is stored."""
    cid = new_id()
    context = {"call_id": cid, "caller": "+15550001111", "provider": "twilio"}
    body = {"message": "hello", "turn_id": "1", "context": context}
    first, again = await asyncio.gather(
        *(
            orch.client.post(f"/conversations/{cid}/messages", json=body, headers=service_headers)
            for _ in range(2)
        )
    )
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert first.json()["reply"] == again.json()["reply"]
    second = await turn(orch, service_headers, cid, "2", "what are your hours?")
    assert second.status_code == 200
    view = (await orch.client.get(f"/conversations/{cid}", headers=admin_headers)).json()
    assert view["caller"] == "+15550001111" and view["provider"] == "twilio"
    assert [m["role"] for m in view["messages"]] == ["user", "assistant"] * 2
    end = await orch.client.post(f"/conversations/{cid}/end", headers=service_headers)
    assert end.status_code == 200


async def test_get_conversation_shows_status_and_messages(
    orch: RunningApp, service_headers: dict[str, str], admin_headers: dict[str, str]
) -> None:
    """What each role reads: test_read_model.py."""
    cid = await start(orch, service_headers)
    await turn(orch, service_headers, cid, "1", "hello")
    r = await orch.client.get(f"/conversations/{cid}", headers=admin_headers)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "active" and body["conversation_id"] == cid
    assert [(m["turn_id"], m["role"]) for m in body["messages"]] == [
        ("greeting", "assistant"),
        ("1", "user"),
        ("1", "assistant"),
    ]
    assert body["messages"][1]["content"] == "hello"


# -- errors and auth ------------------------------------------------------------------------------


async def test_malformed_json_is_a_400_json_error(
    orch: RunningApp, service_headers: dict[str, str]
) -> None:
    cid = await start(orch, service_headers)
    r = await orch.client.post(
        f"/conversations/{cid}/messages",
        content=b'{"message": ',
        headers={**service_headers, "content-type": "application/json"},
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_json"


async def test_invalid_fields_are_422_naming_the_field(
    orch: RunningApp, service_headers: dict[str, str]
) -> None:
    cid = new_id()
    r = await orch.client.post(
        f"/conversations/{cid}/start", json={"provider": "twilio"}, headers=service_headers
    )
    assert r.status_code == 422
    assert r.json()["error"]["message"].startswith("call_id: ")
    r = await orch.client.post(
        f"/conversations/{cid}/messages",
        json={"message": "x" * 5000, "turn_id": "1"},
        headers=service_headers,
    )
    assert r.status_code == 422 and "message" in r.json()["error"]["message"]
    r = await orch.client.post(
        "/conversations/bad%20id/start", json=start_body("x"), headers=service_headers
    )
    assert r.status_code == 422 and "conversation_id" in r.json()["error"]["message"]


async def test_a_conversation_id_is_what_the_contract_calls_an_identifier(
    orch: RunningApp, service_headers: dict[str, str]
) -> None:
    identifier = TypeAdapter(Identifier)
    for cid in (f"{new_id()}@sip+1:a.b_c-d", f"{new_id()} x", f"{new_id()}\u00e9", "x" * 129):
        try:
            identifier.validate_python(cid)
            valid = True
        except ValidationError:
            valid = False
        r = await orch.client.post(
            f"/conversations/{quote(cid)}/start", json=start_body(new_id()), headers=service_headers
        )
        assert r.status_code == (200 if valid else 422), (cid, r.text)


async def test_missing_or_invalid_tokens_are_401_json_and_change_nothing(
    orch: RunningApp, db: asyncpg.Connection
) -> None:
    cid = new_id()
    url = f"/conversations/{cid}/start"
    wrong_secret = mint_token("another-secret-" + "y" * 30, sub="x", role="admin")
    expired = mint_token(SECRET, sub="x", role="admin", ttl_s=-60)
    for headers in (
        {},
        {"Authorization": "Basic abc"},
        {"Authorization": f"Bearer {wrong_secret}"},
        {"Authorization": f"Bearer {expired}"},
        {"Authorization": "Bearer not-a-jwt"},
    ):
        r = await orch.client.post(url, json=start_body(cid), headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["error"]["code"] in ("unauthorized", "invalid_token")
        assert r.headers["www-authenticate"] == "Bearer"
    r = await orch.client.get(f"/conversations/{cid}")
    assert r.status_code == 401
    assert await db.fetchval("SELECT count(*) FROM conversations WHERE id = $1", cid) == 0


async def test_roles_viewer_cannot_drive_a_conversation_and_service_cannot_read_one(
    orch: RunningApp,
    service_headers: dict[str, str],
    viewer_headers: dict[str, str],
    admin_headers: dict[str, str],
) -> None:
    cid = new_id()
    r = await orch.client.post(
        f"/conversations/{cid}/start", json=start_body(cid), headers=viewer_headers
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = await orch.client.post(
        f"/conversations/{cid}/start", json=start_body(cid), headers=admin_headers
    )
    assert r.status_code == 200
    r = await orch.client.get(f"/conversations/{cid}", headers=service_headers)
    assert r.status_code == 403


async def test_unknown_routes_are_404_json(orch: RunningApp) -> None:
    r = await orch.client.get("/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


async def test_the_default_agent_is_created_once_across_restarts(
    settings: Any, db: asyncpg.Connection
) -> None:
    async with run_app(settings):
        first = await db.fetch("SELECT id FROM agents WHERE is_default")
    async with run_app(settings):
        second = await db.fetch("SELECT id FROM agents WHERE is_default")
    assert len(first) == 1 and first == second


async def test_two_instances_starting_together_on_a_fresh_database_share_one_schema_and_default(
    pg_dsn: str, tmp_path: Any
) -> None:
    name = f"vao_two_{new_id('')[1:].replace('-', '')}"
    admin = await asyncpg.connect(pg_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = with_database(pg_dsn, name)
    try:
        started = asyncio.Event()
        results: list[int] = []

        async def instance(i: int) -> None:
            data_dir = tmp_path / f"i{i}"
            data_dir.mkdir()
            async with run_app(make_settings(data_dir, dsn)) as orch:
                results.append((await orch.client.get("/health")).status_code)
                await started.wait()

        tasks = [asyncio.create_task(instance(i)) for i in range(2)]
        while len(results) < 2 and not any(t.done() for t in tasks):
            await asyncio.sleep(0.01)
        started.set()
        await asyncio.gather(*tasks)
        assert results == [200, 200]
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT count(*) FROM agents WHERE is_default") == 1
            assert await conn.fetchval("SELECT count(*) FROM schema_migrations") >= 1
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_a_lost_database_is_a_503_json_error_not_a_500(
    orch: RunningApp, service_headers: dict[str, str]
) -> None:
    await orch.state["database"].pool.close()
    cid = new_id()
    r = await orch.client.post(
        f"/conversations/{cid}/start", json=start_body(cid), headers=service_headers
    )
    assert r.status_code == 503
    assert r.json() == {
        "error": {
            "code": "database_unavailable",
            "message": "the database is unavailable; retry shortly",
        }
    }


async def test_concurrent_starts_of_one_call_store_one_greeting(
    orch: RunningApp, service_headers: dict[str, str], db: asyncpg.Connection
) -> None:
    cid = new_id()
    responses = await asyncio.gather(
        *(
            orch.client.post(
                f"/conversations/{cid}/start", json=start_body(cid), headers=service_headers
            )
            for _ in range(5)
        )
    )
    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["reply"] for r in responses}) == 1
    assert await message_rows(db, cid) == [("greeting", "assistant")]
    assert await db.fetchval("SELECT count(*) FROM calls WHERE call_id = $1", cid) == 1


async def test_production_start_up_freezes_its_objects_out_of_the_gc(
    pg_dsn: str, data_dir: Any
) -> None:
    """A full collection over start-up's ~320,000 objects stopped the event loop for 360-380 ms;
    in production they are frozen once ready. Tests (APP_ENV=test) leave the GC alone."""
    import gc

    before = gc.get_freeze_count()
    try:
        async with run_app(make_settings(data_dir, pg_dsn)):
            assert gc.get_freeze_count() == before
        prod = make_settings(
            data_dir, pg_dsn, app_env="production", jwt_secret="Prod-" + "k7Qz" * 10
        )
        async with run_app(prod) as app:
            assert gc.get_freeze_count() > before + 50_000
            r = await app.client.get("/health")
            assert r.status_code == 200
    finally:
        gc.unfreeze()
