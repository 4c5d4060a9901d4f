"""Forgetting a caller and retention (issue 19, item 6), on the real app: real Postgres, a real
`chroma run` server. Every assertion reads the stores directly: rows with asyncpg, documents with
Chroma's own client, never through the code under test.

- `DELETE /callers/{phone}/memory` erases the caller's conversations in Postgres (transcripts
  deleted; numbers, summaries, metadata erased; the anonymised row kept) and deletes their Chroma
  memories, whatever form the number was stored in (`+1333…`, `1333…`, `+1 (333) …`), as caller
  or as callee;
- a call live at that moment writes no memory afterwards and keeps no transcript past its end;
- MEMORY_RETENTION_DAYS erases expired conversations in Postgres too.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import chromadb
import pytest

from orchestrator.store.records import Conversation
from tests.orchestrator.conftest import ChromaServer, RunningApp, make_settings, run_app


def phone() -> str:
    return "+1333" + "".join(random.choices("0123456789", k=7))


def digits(number: str) -> str:
    return "".join(c for c in number if c.isdigit())


def pretty(number: str) -> str:
    """`+13335551234` as a bridge might send it: `+1 (333) 555-1234`."""
    d = digits(number)
    return f"+1 ({d[1:4]}) {d[4:7]}-{d[7:]}"


@pytest.fixture
async def app(
    pg_dsn: str, data_dir: Path, chroma_server: ChromaServer
) -> AsyncIterator[RunningApp]:
    settings = make_settings(
        data_dir, pg_dsn, chroma_host=chroma_server.host, chroma_port=chroma_server.port
    )
    async with run_app(settings) as running:
        yield running


@pytest.fixture
def memories(app: RunningApp, chroma_server: ChromaServer) -> Any:
    """The app's memory collection, opened with Chroma's own client (no code of ours)."""
    name = app.state["responder"].chroma.memories.name
    client = chromadb.HttpClient(host=chroma_server.host, port=chroma_server.port)
    return client.get_collection(name)


def chroma_docs_of(collection: Any, number: str) -> list[str]:
    """Every memory document whose `caller`, in whatever form, has this number's digits."""
    got = collection.get(include=["documents", "metadatas"])
    return [
        doc
        for doc, meta in zip(got["documents"], got["metadatas"], strict=True)
        if digits(str((meta or {}).get("caller", ""))) == digits(number)
    ]


async def call(
    app: RunningApp,
    headers: dict[str, str],
    *,
    caller: str | None,
    callee: str | None = None,
    turns: tuple[str, ...] = (),
    end: bool = True,
    direction: str = "inbound",
) -> str:
    cid = f"conv-{uuid.uuid4().hex[:12]}"
    body = {
        "call_id": cid,
        "provider": "generic-http",
        "direction": direction,
        "caller": caller,
        "callee": callee,
        "metadata": {"from": caller, "to": callee},
    }
    r = await app.client.post(f"/conversations/{cid}/start", json=body, headers=headers)
    assert r.status_code == 200, r.text
    for i, text in enumerate(turns):
        await say(app, headers, cid, f"t{i}", text, caller=caller)
    if end:
        await end_call(app, headers, cid)
    return cid


async def say(
    app: RunningApp,
    headers: dict[str, str],
    cid: str,
    turn: str,
    text: str,
    caller: str | None = None,
) -> None:
    """A turn as the gateway sends it (the caller's number in the context)."""
    body = {"message": text, "turn_id": turn, "context": {"call_id": cid, "caller": caller}}
    r = await app.client.post(f"/conversations/{cid}/messages", json=body, headers=headers)
    assert r.status_code == 200, r.text


async def end_call(app: RunningApp, headers: dict[str, str], cid: str) -> None:
    r = await app.client.post(f"/conversations/{cid}/end", json={}, headers=headers)
    assert r.status_code == 200, r.text
    await app.state["conversations"].drain()  # the summary is written after the answer


async def conversation_rows(db: asyncpg.Connection, ids: list[str]) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT c.id, c.caller, c.callee, c.summary, c.metadata, c.forgotten_at, c.status,"
        " k.caller AS call_caller, k.callee AS call_callee, k.metadata AS call_metadata,"
        " (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id) AS messages"
        " FROM conversations c JOIN calls k ON k.call_id = c.call_id WHERE c.id = ANY($1::text[])",
        ids,
    )


async def number_anywhere(db: asyncpg.Connection, number: str) -> int:
    """Rows in which the number still appears, in any column, in any written form: its national
    digits in order with at most a little punctuation between them (`(333) 123-4567`,
    `3331234567`). Not any row that merely holds those digits among many others (timestamps,
    ids and timings of other tests' rows share the database)."""
    pattern = "[^0-9a-z]{0,3}".join(digits(number)[1:])
    return int(
        await db.fetchval(
            "SELECT (SELECT count(*) FROM conversations WHERE concat(caller, callee, summary,"
            " metadata::text) ~ $1)"
            " + (SELECT count(*) FROM calls WHERE concat(caller, callee, metadata::text) ~ $1)"
            " + (SELECT count(*) FROM messages WHERE concat(content, metadata::text) ~ $1)",
            pattern,
        )
    )


async def test_forget_erases_every_store_and_every_form_of_the_number(
    app: RunningApp,
    memories: Any,
    db: asyncpg.Connection,
    admin_headers: dict[str, str],
    service_headers: dict[str, str],
) -> None:
    number, other = phone(), phone()
    ours = "+15550009999"
    calls = [
        # E.164 (Twilio), digits only (Vonage, generic-http bridges), punctuated (a bridge)
        await call(app, service_headers, caller=number, callee=ours,
                   turns=("Remember that my door code is 4417",)),
        await call(app, service_headers, caller=digits(number), callee=ours,
                   turns=("Remember that I prefer Tuesdays", "My number is " + number)),
        await call(app, service_headers, caller=pretty(number), callee=ours,
                   turns=("What are your opening hours?",)),
        # we called them: the number is the callee
        await call(app, service_headers, caller=ours, callee=digits(number), direction="outbound",
                   turns=("Yes, that appointment works",)),
    ]  # fmt: skip
    control = await call(
        app, service_headers, caller=other, turns=("Remember that my door code is 9911",)
    )
    # Memories written by earlier versions under the number as the provider sent it.
    caller_memory = app.state["responder"].caller_memory
    await caller_memory.remember(digits(number), "Likes the blue room", agent_id="a-old")
    await caller_memory.remember(pretty(number), "Allergic to latex", agent_id="a-old")

    before = await conversation_rows(db, calls)
    assert sum(r["summary"] is not None for r in before) >= 3
    assert sum(r["messages"] for r in before) > 0
    assert len(chroma_docs_of(memories, number)) >= 5  # 2 facts, summaries, 2 old-form ones

    r = await app.client.delete(f"/callers/{quote(pretty(number))}/memory", headers=admin_headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["conversations_erased"] == 4 and body["messages_deleted"] > 0
    assert body["deleted"] >= 5 and digits(number) not in body["phone"]

    after = await conversation_rows(db, calls)
    assert len(after) == 4  # the calls still count, anonymised
    for row in after:
        assert row["messages"] == 0, row  # transcript deleted
        assert (row["caller"], row["callee"], row["summary"]) == (None, None, None), row
        assert json.loads(row["metadata"]) == {} and row["forgotten_at"] is not None, row
        assert (row["call_caller"], row["call_callee"]) == (None, None), row
        assert json.loads(row["call_metadata"]) == {}, row
    assert await number_anywhere(db, number) == 0
    for phrase in ("4417", "Tuesdays", "opening hours", "appointment works"):
        # in this test's conversations (the database is shared with other tests' calls)
        left = await db.fetchval(
            "SELECT count(*) FROM messages WHERE content LIKE $1 AND conversation_id = ANY($2)",
            f"%{phrase}%",
            calls,
        )
        assert left == 0, phrase
    assert chroma_docs_of(memories, number) == []
    everything = " ".join(d for d in memories.get(include=["documents"])["documents"])
    for phrase in ("4417", "Tuesdays", "blue room", "latex"):
        assert phrase not in everything, phrase

    # The other caller is untouched.
    (kept,) = await conversation_rows(db, [control])
    assert kept["caller"] == other and kept["summary"] and kept["messages"] == 3
    assert kept["forgotten_at"] is None
    assert any("9911" in d for d in chroma_docs_of(memories, other))

    again = await app.client.delete(f"/callers/{number}/memory", headers=admin_headers)
    assert again.status_code == 200 and again.json()["conversations_erased"] == 0


async def test_a_call_live_when_its_caller_is_forgotten_writes_no_memory_afterwards(
    app: RunningApp,
    memories: Any,
    db: asyncpg.Connection,
    admin_headers: dict[str, str],
    service_headers: dict[str, str],
) -> None:
    number = phone()
    cid = await call(
        app,
        service_headers,
        caller=digits(number),
        turns=("Remember that my dog is Rex",),
        end=False,
    )
    # What the end-of-call work reads when the call ends (before the forget, in a real race).
    row = dict(await db.fetchrow("SELECT * FROM conversations WHERE id = $1", cid))
    as_ended = Conversation.from_row({**row, "metadata": json.loads(row["metadata"])})

    r = await app.client.delete(f"/callers/{number}/memory", headers=admin_headers)
    assert r.status_code == 200 and r.json()["conversations_erased"] == 1
    # The call goes on: the caller asks to be remembered again, and hangs up.
    await say(app, service_headers, cid, "t1", "Remember that my cat is Tom", digits(number))
    await end_call(app, service_headers, cid)
    # And end-of-call work that had read the conversation before the forget finishes after it,
    # down to the two writes it makes: the summary kept on the conversation, and the memory.
    await app.state["responder"].on_call_end(as_ended)
    assert await app.state["database"].conversations.set_summary(cid, "Asked about Rex") is False
    late = await app.state["responder"].caller_memory.remember(
        number, "Asked about Rex", agent_id="a-1", kind="summary", conversation_id=cid
    )
    assert late is None

    (after,) = await conversation_rows(db, [cid])
    assert after["messages"] == 0  # what was said after the forget is gone at the end
    assert (after["caller"], after["summary"], after["status"]) == (None, None, "ended")
    assert chroma_docs_of(memories, number) == []
    mine = memories.get(where={"conversation_id": cid}, include=["documents"])
    assert mine["documents"] == []  # no fact, no summary of this call
    assert await number_anywhere(db, number) == 0


async def test_retention_erases_expired_conversations_in_postgres(
    app: RunningApp,
    memories: Any,
    db: asyncpg.Connection,
    service_headers: dict[str, str],
) -> None:
    old_caller, new_caller = phone(), phone()
    old = await call(app, service_headers, caller=old_caller, turns=("Remember I like tea",))
    new = await call(app, service_headers, caller=new_caller, turns=("Remember I like coffee",))
    days = app.state["settings"].memory_retention_days
    await db.execute(
        "UPDATE conversations SET started_at = now() - make_interval(days => $2) WHERE id = $1",
        old,
        days + 1,
    )
    await app.state["responder"].retention.purge_once()

    expired, recent = await conversation_rows(db, [old]), await conversation_rows(db, [new])
    assert expired[0]["messages"] == 0 and expired[0]["summary"] is None
    assert expired[0]["caller"] is None and expired[0]["call_caller"] is None
    assert expired[0]["forgotten_at"] is not None
    assert recent[0]["messages"] == 3 and recent[0]["summary"] and recent[0]["caller"] == new_caller
    assert await number_anywhere(db, old_caller) == 0
    assert chroma_docs_of(memories, new_caller)  # recent memories stay
