"""Turn idempotency under a model that never says the same thing twice (issue 20).

The offline responder answers a question the same way every time, so a duplicate that returned
its own draft instead of the stored reply looked right. Here the model (OpenAI faked at the HTTP
layer) answers each request with a new random sentence, and it holds every request until all the
duplicates have asked, so each of them has a draft of its own before any reply is stored: the
one stored first is the only one any of them may return. And what the caller said first stays
on record: a retry of the turn with other words never rewrites it."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import respx

from shared.contract import IDEMPOTENCY_HEADER, idempotency_key
from tests.orchestrator.conftest import RunningApp, make_settings, new_id, run_app
from tests.orchestrator.llm_fakes import OPENAI_BASE, FakeOpenAI

SSE = "text/event-stream"


class DraftingModel(FakeOpenAI):
    """Each chat request gets a sentence no other request gets, and waits (up to 10 s) until
    `together` requests have arrived, so concurrent turns all draft before any of them stores."""

    def __init__(self, router: respx.MockRouter, together: int) -> None:
        super().__init__(router)
        self.together = together
        self.arrived = 0
        self.everyone_asked = asyncio.Event()
        self.sentences: list[str] = []
        self.drafted_for: dict[str, str] = {}  # the caller's words -> the sentence drafted for them

    async def _answer(self, request: httpx.Request) -> httpx.Response:  # type: ignore[override]
        sentence = f"Reply {uuid.uuid4().hex[:10]} to you."
        self.sentences.append(sentence)
        said = [m for m in json.loads(request.content)["messages"] if m["role"] == "user"]
        if said:
            self.drafted_for[str(said[-1]["content"])] = sentence
        self.reply(sentence)
        self.arrived += 1
        if self.arrived >= self.together:
            self.everyone_asked.set()
        await asyncio.wait_for(self.everyone_asked.wait(), 10)
        return super()._answer(request)


@pytest.fixture
async def model_app(pg_dsn: str, data_dir: Path) -> AsyncIterator[tuple[RunningApp, respx.Router]]:
    settings = make_settings(
        data_dir, pg_dsn, openai_api_key="sk-test", openai_base_url=OPENAI_BASE
    )
    with respx.mock(assert_all_called=False) as router:
        async with run_app(settings) as app:
            yield app, router


async def start_call(app: RunningApp, headers: dict[str, str]) -> str:
    cid = new_id("race")
    body = {"call_id": cid, "provider": "generic-http", "caller": "+15550104242"}
    r = await app.client.post(f"/conversations/{cid}/start", json=body, headers=headers)
    assert r.status_code == 200, r.text
    return cid


def parse_sse(raw: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in raw.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


async def post_turn(
    app: RunningApp, headers: dict[str, str], cid: str, text: str, *, streamed: bool
) -> dict[str, Any]:
    """The turn's final reply body (the JSON answer, or the SSE stream's `reply` event)."""
    extra = {IDEMPOTENCY_HEADER: idempotency_key(cid, "1")}
    if streamed:
        extra["Accept"] = SSE
    r = await app.client.post(
        f"/conversations/{cid}/messages",
        json={"message": text, "context": {"call_id": cid}},
        headers={**headers, **extra},
    )
    assert r.status_code == 200, r.text
    if not streamed:
        body: dict[str, Any] = r.json()
        return body
    events = parse_sse(r.text)
    assert events[-1][0] == "reply", events
    return events[-1][1]


async def stored(db: asyncpg.Connection, cid: str) -> dict[str, list[str]]:
    rows = await db.fetch(
        "SELECT role, content FROM messages WHERE conversation_id = $1 AND turn_id = '1' "
        "ORDER BY id",
        cid,
    )
    out: dict[str, list[str]] = {}
    for row in rows:
        out.setdefault(row["role"], []).append(row["content"])
    return out


@pytest.mark.parametrize("streamed", [False, True], ids=["json", "sse"])
async def test_the_loser_of_a_concurrent_duplicate_returns_the_stored_reply(
    model_app: tuple[RunningApp, respx.Router],
    service_headers: dict[str, str],
    db: asyncpg.Connection,
    streamed: bool,
) -> None:
    app, router = model_app
    model = DraftingModel(router, together=2)
    cid = await start_call(app, service_headers)
    a, b = await asyncio.gather(
        *(post_turn(app, service_headers, cid, "Can you help me?", streamed=streamed) for _ in "ab")
    )
    assert model.arrived == 2 and len(set(model.sentences)) == 2  # two different drafts
    rows = await stored(db, cid)
    assert rows["user"] == ["Can you help me?"] and len(rows["assistant"]) == 1
    reply = rows["assistant"][0]
    assert reply in model.sentences
    assert a["reply"] == b["reply"] == reply, (a["reply"], b["reply"], reply)
    assert sorted([a["replayed"], b["replayed"]]) == [False, True]


async def test_a_retry_with_other_words_keeps_the_first_words_and_reply(
    model_app: tuple[RunningApp, respx.Router],
    service_headers: dict[str, str],
    db: asyncpg.Connection,
) -> None:
    app, router = model_app
    model = DraftingModel(router, together=1)
    cid = await start_call(app, service_headers)
    first = await post_turn(app, service_headers, cid, "I want to book a table.", streamed=False)
    retry = await post_turn(app, service_headers, cid, "Cancel my order.", streamed=False)
    assert retry["replayed"] is True and retry["reply"] == first["reply"]
    assert await stored(db, cid) == {
        "user": ["I want to book a table."],
        "assistant": [first["reply"]],
    }
    assert model.arrived == 1  # the retry was answered from the store, not drafted again


TWO_VERSIONS = ("What time do you open?", "What time do you close?")


async def test_concurrent_duplicates_with_other_words_store_the_winners_words(
    model_app: tuple[RunningApp, respx.Router],
    service_headers: dict[str, str],
    db: asyncpg.Connection,
) -> None:
    """Two versions of one turn (a provider's retry with a revised transcript) race: the words
    stored are the ones whose reply was stored (one statement writes both), and the loser's
    words overwrite nothing."""
    app, router = model_app
    DraftingModel(router, together=2)
    cid = await start_call(app, service_headers)
    replies = await asyncio.gather(
        *(post_turn(app, service_headers, cid, t, streamed=False) for t in TWO_VERSIONS)
    )
    winner = next(t for t, r in zip(TWO_VERSIONS, replies, strict=True) if not r["replayed"])
    rows = await stored(db, cid)
    assert rows["user"] == [winner], (rows, winner)
    assert replies[0]["reply"] == replies[1]["reply"] == rows["assistant"][0]


async def test_streamed_concurrent_duplicates_with_other_words_store_one_question_one_reply(
    model_app: tuple[RunningApp, respx.Router],
    service_headers: dict[str, str],
    db: asyncpg.Connection,
) -> None:
    """The streamed path stores the question as the turn begins and the reply as it ends:
    the version whose question was stored first also stores the reply (the other waits for it),
    so the question on record and the reply on record belong together; both callers get the one
    stored reply."""
    app, router = model_app
    model = DraftingModel(router, together=2)
    cid = await start_call(app, service_headers)
    replies = await asyncio.gather(
        *(post_turn(app, service_headers, cid, t, streamed=True) for t in TWO_VERSIONS)
    )
    rows = await stored(db, cid)
    assert len(rows["user"]) == 1 and rows["user"][0] in TWO_VERSIONS, rows
    assert replies[0]["reply"] == replies[1]["reply"] == rows["assistant"][0]
    assert sorted(r["replayed"] for r in replies) == [False, True]
    assert rows["assistant"][0] == model.drafted_for[rows["user"][0]], (rows, model.drafted_for)


@pytest.mark.parametrize("streamed", [False, True], ids=["json", "sse"])
async def test_a_question_stored_alone_keeps_its_words_when_the_turn_is_retried(
    model_app: tuple[RunningApp, respx.Router],
    service_headers: dict[str, str],
    db: asyncpg.Connection,
    streamed: bool,
) -> None:
    """A streamed turn cut short before its reply was stored leaves its question alone on
    record; the turn retried with other words is answered, and the first words stay."""
    app, router = model_app
    DraftingModel(router, together=1)
    cid = await start_call(app, service_headers)
    await db.execute(
        "INSERT INTO messages (conversation_id, turn_id, role, content) "
        "VALUES ($1, '1', 'user', 'Where is my parcel?')",
        cid,
    )
    body = await post_turn(app, service_headers, cid, "Never mind.", streamed=streamed)
    assert body["replayed"] is False  # nothing was answered yet: this is the answer
    rows = await stored(db, cid)
    assert rows["user"] == ["Where is my parcel?"], rows
    assert rows["assistant"] == [body["reply"]], (rows, body)
