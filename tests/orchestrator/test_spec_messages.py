"""The specification's own request, `POST /conversations/{id}/messages` with `{"message",
"context": {"user_id", "session_id"}}` and no turn id, through the real app on real Postgres:
answered with a server-assigned turn id (not idempotent); an `Idempotency-Key` makes it so."""

from __future__ import annotations

import asyncpg

from shared.contract import IDEMPOTENCY_HEADER
from tests.orchestrator.conftest import RunningApp, new_id

SPEC_BODY = {
    "message": "Hello, how can I help you?",
    "context": {"user_id": "user123", "session_id": "session456"},
}


async def user_turns(db: asyncpg.Connection, cid: str) -> list[str]:
    rows = await db.fetch(
        "SELECT turn_id FROM messages WHERE conversation_id = $1 AND role = 'user' ORDER BY id",
        cid,
    )
    return [r["turn_id"] for r in rows]


async def test_the_spec_request_is_answered_with_a_server_assigned_turn_id(
    orch: RunningApp, service_headers: dict[str, str], db: asyncpg.Connection
) -> None:
    cid = new_id()
    url = f"/conversations/{cid}/messages"
    first = await orch.client.post(url, json=SPEC_BODY, headers=service_headers)
    assert first.status_code == 200, first.text
    second = await orch.client.post(url, json=SPEC_BODY, headers=service_headers)
    assert second.status_code == 200, second.text
    a, b = first.json()["turn_id"], second.json()["turn_id"]
    assert a.startswith("srv-") and b.startswith("srv-") and a != b
    assert first.json()["reply"] and not first.json().get("replayed")
    # Not idempotent: the same request twice is two turns.
    assert await user_turns(db, cid) == [a, b]


async def test_an_idempotency_key_makes_the_spec_request_idempotent(
    orch: RunningApp, service_headers: dict[str, str], db: asyncpg.Connection
) -> None:
    cid = new_id()
    url = f"/conversations/{cid}/messages"
    for key, turn_id in (("9b1deb4d-3b7d-4bad", "9b1deb4d-3b7d-4bad"), (f"{cid}:7", "7")):
        headers = {**service_headers, IDEMPOTENCY_HEADER: key}
        first = await orch.client.post(url, json=SPEC_BODY, headers=headers)
        again = await orch.client.post(url, json=SPEC_BODY, headers=headers)
        assert first.status_code == 200 and again.status_code == 200, again.text
        assert first.json()["turn_id"] == again.json()["turn_id"] == turn_id
        assert again.json()["replayed"] is True and again.json()["reply"] == first.json()["reply"]
    assert await user_turns(db, cid) == ["9b1deb4d-3b7d-4bad", "7"]


async def test_an_unusable_idempotency_key_is_a_400_naming_the_header(
    orch: RunningApp, service_headers: dict[str, str]
) -> None:
    cid = new_id()
    for key in ("has space", f"{cid}:", "a/b"):
        r = await orch.client.post(
            f"/conversations/{cid}/messages",
            json=SPEC_BODY,
            headers={**service_headers, IDEMPOTENCY_HEADER: key},
        )
        assert r.status_code == 400, (key, r.text)
        assert r.json()["error"]["code"] == "invalid_idempotency_key"
        assert IDEMPOTENCY_HEADER in r.json()["error"]["message"]
