"""A caller reads out a card and its security code and the model repeats them: through the real
app (`/start`, `/messages` JSON and streamed, `/end`), real Postgres and Chroma, and a fake
OpenAI-compatible server, no digit of the card or the code is stored, embedded, sent to the model
or shown to a viewer."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import asyncpg

from tests.orchestrator.conftest import management_headers, new_id
from tests.orchestrator.llm_fakes import app_with_model

CARD = "4111 1111 1111 1111"
CALLER_SAYS = f"My card is {CARD} 123, can you book it?"
MODEL_ECHO = f"Sure, I have card {CARD} with security code 123 on file."
PIN_SAID = "and my pin is one two three four"
MODEL_PIN_ECHO = "Noted, your PIN one two three four and card four one one one one one one one one"
MODEL_PIN_ECHO += " one one one one one one one."
SUMMARY_ECHO = f"Caller booked with card {CARD}, CVV 123, PIN 1234."
FACT = f"card {CARD} cvv 123"

_WORDS = {"one": "1", "two": "2", "three": "3", "four": "4", "oh": "0", "zero": "0"}


def leaks(text: str) -> list[str]:
    """The card's, the code's or the PIN's digits in `text`: a written number equal to one of
    them, or a run of spoken digits holding one. (Whole numbers only: a timestamp or a timing that
    merely contains "123" is not a leak, and made this test fail at random.)"""
    found: set[str] = set()
    spoken = ""
    for token in re.findall(r"[a-z]+|\d+", text.lower()):
        if token in _WORDS:
            spoken += _WORDS[token]
            continue
        if token.isdigit() and token in SECRETS:
            found.add(token)
        found.update(secret for secret in SECRETS if secret in spoken)
        spoken = ""
    found.update(secret for secret in SECRETS if secret in spoken)
    return sorted(found)


SECRETS = ("4111", "1111", "123", "1234")


async def test_card_cvv_and_pin_never_reach_storage_the_model_or_viewers(
    pg_dsn: str, data_dir: Path, service_headers: dict[str, str]
) -> None:
    cid = new_id()
    caller = "+14155550142"
    async with app_with_model(data_dir, pg_dsn) as (app, fake):
        r = await app.client.post(
            f"/conversations/{cid}/start",
            json={"call_id": cid, "provider": "generic-http", "caller": caller},
            headers=service_headers,
        )
        assert r.status_code == 200, r.text
        # Turn 1: the model notes the card (remember tool) and repeats it.
        fake.tool_call("remember", {"fact": FACT}).reply(MODEL_ECHO)
        r = await app.client.post(
            f"/conversations/{cid}/messages",
            json={"message": CALLER_SAYS, "turn_id": "1", "context": {"call_id": cid}},
            headers=service_headers,
        )
        assert r.status_code == 200, r.text
        first = r.json()
        # Turn 2, streamed: the PIN spoken as words, echoed token by token.
        fake.reply(MODEL_PIN_ECHO)
        r = await app.client.post(
            f"/conversations/{cid}/messages",
            json={"message": PIN_SAID, "turn_id": "2", "context": {"call_id": cid}},
            headers={**service_headers, "Accept": "text/event-stream"},
        )
        assert r.status_code == 200, r.text
        streamed = r.text
        # The end: the model's summary repeats everything.
        fake.reply(SUMMARY_ECHO)
        r = await app.client.post(
            f"/conversations/{cid}/end", json={"reason": "hangup"}, headers=service_headers
        )
        assert r.status_code == 200, r.text
        await app.state["conversations"].drain()
        viewer = await app.client.get(f"/conversations/{cid}", headers=management_headers("viewer"))
        memories = app.state["responder"].chroma.memories.get(
            where={"caller": caller}, include=["documents"]
        )
    # The model was asked, and it echoed: the test exercised the echo paths.
    assert len(fake.requests) == 4 and not fake.script
    # What the caller and the gateway were given back.
    assert leaks(first["reply"]) == [] and "[card number redacted]" in first["reply"]
    assert all(leaks(a.get("text") or "") == [] for a in first["actions"])
    assert leaks(streamed) == [] and "[secret redacted]" in streamed
    # Postgres, read directly: every message, its actions and metadata, the summary.
    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = await conn.fetch(
            "SELECT role, content, actions::text AS actions, metadata::text AS metadata "
            "FROM messages WHERE conversation_id = $1 ORDER BY id",
            cid,
        )
        summary = await conn.fetchval("SELECT summary FROM conversations WHERE id = $1", cid)
    finally:
        await conn.close()
    assert [r["role"] for r in rows].count("user") == 2
    for row in rows:
        metadata = json.loads(row["metadata"] or "{}")
        metadata.pop("timings_ms", None)  # numbers of ours, not the caller's
        for value in (row["content"], row["actions"], json.dumps(metadata)):
            assert leaks(value or "") == [], (row["role"], value)
    assert summary and leaks(summary) == [] and "[card number redacted]" in summary
    user_rows = [r["content"] for r in rows if r["role"] == "user"]
    assert "[card number redacted] [security code redacted]" in user_rows[0]
    assert "[secret redacted]" in user_rows[1]
    # Chroma: the remembered fact and the call summary.
    documents: list[str] = memories["documents"]
    assert len(documents) == 2, documents
    assert all(leaks(d) == [] for d in documents) and any("[card number" in d for d in documents)
    assert all(leaks(t) == [] for t in fake.embedded)
    # Every message the model was sent: this turn, the history (the caller's words and the
    # agent's echo), the tool result, the summary's transcript. (Not the model's own tool call
    # arguments, replayed to it within the turn: a real model cannot write a card it never saw.)
    for body in fake.requests:
        sent = " ".join(str(m.get("content") or "") for m in body["messages"])
        assert leaks(sent) == [], sent
    # What a viewer reads.
    assert viewer.status_code == 200
    view: dict[str, Any] = viewer.json()
    said = [m.get("content") or "" for m in view.get("messages", [])]
    assert all(leaks(text) == [] for text in [*said, str(view.get("summary") or "")])
