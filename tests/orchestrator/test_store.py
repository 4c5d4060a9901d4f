"""Store contract: the same behaviour on the real Postgres (`pg_dsn`) and on the embedded server."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from orchestrator.store.database import Database
from orchestrator.store.migrations import apply_migrations, load_migrations
from tests.live_servers import with_database
from tests.orchestrator.conftest import new_id


async def start_conversation(database: Database, caller: str = "+15550001111") -> str:
    conversation_id = new_id()
    await database.conversations.start(
        conversation_id, call_id=conversation_id, provider="generic-http", caller=caller
    )
    return conversation_id


async def test_migrations_are_recorded_and_rerunning_them_changes_nothing(
    database: Database,
) -> None:
    async with database.pool.acquire() as conn:
        assert await apply_migrations(conn) == []
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations ORDER BY version")
    expected = load_migrations()
    assert [(r["version"], r["checksum"]) for r in rows] == [
        (m.version, m.checksum) for m in expected
    ]
    assert rows, "at least the initial migration"


async def test_start_is_idempotent_and_creates_one_call_and_one_conversation(
    database: Database,
) -> None:
    cid = new_id()
    first, created = await database.conversations.start(
        cid, call_id=cid, provider="twilio", caller="+15550001111", metadata={"k": "v"}
    )
    again, created_again = await database.conversations.start(cid, call_id=cid, provider="twilio")
    assert created and not created_again
    assert again.started_at == first.started_at and again.metadata == {"k": "v"}
    async with database.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM calls WHERE call_id = $1", cid) == 1
        assert await conn.fetchval("SELECT count(*) FROM conversations WHERE id = $1", cid) == 1


async def test_a_turn_is_stored_once_and_a_second_write_returns_the_first_reply(
    database: Database,
) -> None:
    cid = await start_conversation(database)
    store = database.conversations
    first = await store.record_turn(
        cid, "1", user_text="hello", reply_text="first reply", actions=[{"type": "say"}]
    )
    second = await store.record_turn(
        cid, "1", user_text="hello", reply_text="second reply", actions=[{"type": "hangup"}]
    )
    assert first.inserted and not second.inserted
    assert second.message.content == "first reply"
    assert second.message.actions == [{"type": "say"}]
    messages = await store.messages(cid)
    assert [(m.turn_id, m.role, m.content) for m in messages] == [
        ("1", "user", "hello"),
        ("1", "assistant", "first reply"),
    ]


async def test_concurrent_writes_of_one_turn_store_one_pair_and_agree_on_the_reply(
    database: Database,
) -> None:
    cid = await start_conversation(database)
    results = await asyncio.gather(
        *(
            database.conversations.record_turn(
                cid, "7", user_text="hi", reply_text=f"reply {i}", actions=[]
            )
            for i in range(5)
        )
    )
    assert sum(r.inserted for r in results) == 1
    assert len({r.message.content for r in results}) == 1
    assert len(await database.conversations.messages(cid)) == 2


async def test_turn_state_returns_the_stored_reply_or_the_recent_history(
    database: Database,
) -> None:
    cid = await start_conversation(database)
    store = database.conversations
    await store.record_greeting(cid, "Hello!", [{"type": "say", "text": "Hello!"}])
    for turn in range(1, 5):
        await store.record_turn(
            cid,
            str(turn),
            user_text=f"u{turn}",
            reply_text=f"a{turn}",
            actions=[{"type": "say", "text": f"a{turn}"}, {"type": "gather"}],
            timings={"llm": 1.5 * turn},
            user_metadata={"input_type": "speech", "confidence": 0.9},
        )
    replay = await store.turn_state(cid, "2", history_turns=2)
    assert replay.stored_reply is not None and replay.stored_reply.content == "a2"
    assert replay.stored_reply == await store.get_reply(cid, "2")  # every field, read alike
    fresh = await store.turn_state(cid, "5", history_turns=2)
    assert fresh.stored_reply is None
    assert [m.content for m in fresh.history] == ["u3", "a3", "u4", "a4"]
    assert fresh.history == await store.history(cid, 2)
    assert fresh.history[-1].actions[1] == {"type": "gather"}
    assert fresh.history[-1].timings == {"llm": 6.0}
    assert fresh.history[-2].metadata == {"input_type": "speech", "confidence": 0.9}
    assert fresh.agent is None  # this conversation has no agent
    missing = await store.turn_state(new_id(), "1", history_turns=2)
    assert missing.conversation is None
    silent = await store.turn_state(await start_conversation(database), "1", history_turns=2)
    assert silent.conversation is not None
    assert silent.stored_reply is None and silent.history == []


async def test_turn_state_brings_the_conversations_agent_in_the_same_read(
    database: Database,
) -> None:
    agent = await database.agents.create(
        name="Joined", configuration={"greeting": "Hi there", "phone_numbers": ["+15550100"]}
    )
    cid = new_id()
    await database.conversations.start(
        cid, call_id=cid, provider="generic-http", caller="+15550001111", agent_id=agent.id
    )
    state = await database.conversations.turn_state(cid, "1", history_turns=2)
    assert state.agent == await database.agents.get(agent.id)
    assert state.agent is not None and state.agent.greeting == "Hi there"
    assert state.conversation is not None and state.conversation.id == cid


async def test_greeting_is_stored_once(database: Database) -> None:
    cid = await start_conversation(database)
    first = await database.conversations.record_greeting(cid, "Hi!", [])
    second = await database.conversations.record_greeting(cid, "Other", [])
    assert first.inserted and not second.inserted and second.message.content == "Hi!"


async def test_end_closes_conversation_and_call_once(database: Database) -> None:
    cid = await start_conversation(database)
    ended, now = await database.conversations.end(cid, reason="hangup", status="completed")
    again, now_again = await database.conversations.end(cid, reason="other")
    assert now and not now_again
    assert ended is not None and again is not None
    assert again.status == "ended" and again.end_reason == "hangup"
    async with database.pool.acquire() as conn:
        call = await conn.fetchrow(
            "SELECT status, ended_at, duration_s FROM calls WHERE call_id=$1", cid
        )
    assert call["status"] == "completed" and call["ended_at"] is not None
    assert call["duration_s"] is not None and call["duration_s"] >= 0
    assert await database.conversations.end(new_id()) == (None, False)


async def test_messages_need_an_existing_conversation(database: Database) -> None:
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await database.conversations.record_turn(
            new_id(), "1", user_text="x", reply_text="y", actions=[]
        )


async def test_agents_crud_default_and_phone_routing(database: Database) -> None:
    agents = database.agents
    number = "+1555" + "".join(c for c in new_id() if c.isdigit()).ljust(7, "0")[:7]
    created = await agents.create(
        name="Sales",
        configuration={"greeting": "Sales here", "phone_numbers": [number]},
    )
    assert created.id.startswith("agt_") and created.greeting == "Sales here"
    assert (await agents.get(created.id)) == created
    assert (await agents.find_by_phone(number)) == created
    assert (await agents.find_by_phone(number.lstrip("+"))) == created  # Vonage drops the "+"
    assert await agents.find_by_phone("+19999999999") is None
    updated = await agents.update(created.id, name="Sales EU", configuration={"greeting": "Hej"})
    assert updated is not None and updated.name == "Sales EU" and updated.greeting == "Hej"
    assert updated.updated_at >= created.updated_at
    assert await agents.find_by_phone(number) is None  # configuration replaced whole
    assert await agents.update(new_id(), name="x") is None
    assert created.id in [a.id for a in await agents.list_all(limit=1000)]
    with pytest.raises(asyncpg.UniqueViolationError):
        await agents.create(name="dup", agent_id=created.id)
    assert await agents.delete(created.id) and not await agents.delete(created.id)
    assert await agents.get(created.id) is None


async def test_there_is_at_most_one_default_agent(database: Database) -> None:
    agents = database.agents
    default = await agents.ensure_default(name="Reception", greeting="Hi", system_prompt="Be nice")
    assert default.is_default
    assert (await agents.ensure_default(name="Other", greeting="x", system_prompt="y")) == default
    promoted = await agents.create(name="New default", is_default=True)
    assert (await agents.get_default()) == promoted
    assert not (await agents.get(default.id)).is_default  # type: ignore[union-attr]
    back = await agents.update(default.id, is_default=True)
    assert back is not None and back.is_default
    assert (await agents.get_default()).id == default.id  # type: ignore[union-attr]
    async with database.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM agents WHERE is_default") == 1
    await agents.delete(promoted.id)


async def test_deleting_an_agent_keeps_its_conversations(database: Database) -> None:
    agent = await database.agents.create(name="Temp")
    cid = new_id()
    await database.conversations.start(cid, call_id=cid, provider="vonage", agent_id=agent.id)
    await database.agents.delete(agent.id)
    conversation = await database.conversations.get(cid)
    assert conversation is not None and conversation.agent_id is None


async def test_two_instances_migrating_a_fresh_database_together_apply_each_migration_once(
    pg_dsn: str,
) -> None:
    name = f"vao_mig_{new_id('')[1:].replace('-', '')}"
    admin = await asyncpg.connect(pg_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = with_database(pg_dsn, name)
    try:
        conns = [await asyncpg.connect(dsn) for _ in range(3)]
        applied = await asyncio.gather(*(apply_migrations(c) for c in conns))
        assert sorted(len(a) for a in applied) == [0, 0, len(load_migrations())]
        assert await conns[0].fetchval("SELECT count(*) FROM schema_migrations") == len(
            load_migrations()
        )
        for c in conns:
            await c.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def test_the_logged_database_target_never_contains_credentials() -> None:
    from orchestrator.store.database import describe_dsn

    assert describe_dsn("postgresql://app:s3cret@db.internal:6543/vao") == "db.internal:6543/vao"
    assert "s3cret" not in describe_dsn("postgres://app:s3cret@db/vao?sslmode=require")
    embedded = describe_dsn("postgresql://postgres@/postgres?host=/data/postgres&port=5432")
    assert embedded == "/data/postgres:5432/postgres"


async def test_a_released_connection_comes_back_clean_without_the_reset_round_trip(
    store_dsn: str,
) -> None:
    """The pool releases without asyncpg's reset statement (`store/database.py`): what it would
    have cleaned is never left behind. The one connection of this pool ran the migrations (its
    session advisory lock is released), and a transaction left open is rolled back."""
    database = await Database.open(store_dsn, min_size=1, max_size=1)
    try:
        cid = new_id()
        async with database.pool.acquire() as conn:
            held = await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                "AND pid = pg_backend_pid()"
            )
            assert held == 0, "the migration lock outlived the migrations"
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            await conn.execute("BEGIN")
            await conn.execute(
                "INSERT INTO calls (call_id, provider, status) VALUES ($1, 'generic-http', 'x')",
                cid,
            )
        async with database.pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == pid  # the same connection
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT count(*) FROM calls WHERE call_id = $1", cid) == 0
    finally:
        await database.close()
