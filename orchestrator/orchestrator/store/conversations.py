"""Calls, conversations and messages: the durable record of every call and turn.

Turns are idempotent on `(conversation_id, turn_id, role)`: a turn's user and assistant messages
are written in one transaction with `ON CONFLICT DO NOTHING`, so a retried or duplicated turn is
never stored twice, and whoever loses the race reads the winner's reply.

Erasure (`forget_number`, `erase_started_before`): a forgotten caller's conversations, and those
past MEMORY_RETENTION_DAYS, keep their rows for accounting but lose everything personal: the
transcript is deleted; the numbers, the summary and the metadata are erased (migration 0002 says
why). `forgotten_at` is the tombstone a call still live at that moment meets: `set_summary` and
`forgotten` (which guards the caller memory's writes) refuse it, and `end` deletes what its last
turns stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from orchestrator.store.records import Agent, Conversation, ErasedRecords, Message, StoredReply
from shared.phone import digits_only

GREETING_TURN_ID = "greeting"

_CONVERSATION_COLUMNS = (
    "id, call_id, agent_id, caller, callee, provider, status, started_at, ended_at, end_reason, "
    "summary, metadata"
)
_MESSAGE_COLUMNS = (
    "id, conversation_id, turn_id, role, content, actions, timings, metadata, created_at"
)
_SELECT_REPLY = (
    f"SELECT {_MESSAGE_COLUMNS} FROM messages "  # noqa: S608
    "WHERE conversation_id = $1 AND turn_id = $2 AND role = 'assistant'"
)
_SELECT_QUESTION = (
    "SELECT content FROM messages WHERE conversation_id = $1 AND turn_id = $2 AND role = 'user'"
)
_INSERT_MESSAGE = (
    "INSERT INTO messages (conversation_id, turn_id, role, content, actions, timings, metadata) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT ON CONSTRAINT messages_turn_role DO NOTHING "
)

# A call start in one statement: the call row unless it exists, then its conversation (RETURNING
# nothing when the conversation exists: a duplicate start). The conversation's foreign key to
# the call is checked at the statement's end, so the CTE's call row satisfies it.
_INSERT_START = """
WITH new_call AS (
    INSERT INTO calls (call_id, provider, direction, caller, callee, metadata)
    VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (call_id) DO NOTHING
)
INSERT INTO conversations (id, call_id, agent_id, caller, callee, provider, metadata)
VALUES ($7, $1, $8, $4, $5, $2, $6) ON CONFLICT (id) DO NOTHING
RETURNING *
"""

# A call end in one statement: the conversation ended once (no row when it had ended already),
# its messages gone if its caller was forgotten while the call was live, its call closed.
_END = """
WITH ended AS (
    UPDATE conversations SET status = 'ended', ended_at = now(), end_reason = $2
    WHERE id = $1 AND status = 'active'
    RETURNING *
), purged AS (
    DELETE FROM messages
    WHERE conversation_id IN (SELECT id FROM ended WHERE forgotten_at IS NOT NULL)
), closed AS (
    UPDATE calls SET status = $3, ended_at = coalesce(ended_at, now()),
        duration_s = coalesce($4, extract(epoch FROM now() - started_at))
    WHERE call_id IN (SELECT call_id FROM ended)
)
SELECT * FROM ended
"""

# Both rows of a turn in one statement: the assistant row is inserted only if the user row was
# (ON CONFLICT DO NOTHING waits for a concurrent duplicate to commit or roll back first).
_INSERT_TURN = f"""
WITH user_row AS (
    INSERT INTO messages (conversation_id, turn_id, role, content, metadata)
    VALUES ($1, $2, 'user', $3, $4)
    ON CONFLICT ON CONSTRAINT messages_turn_role DO NOTHING
    RETURNING conversation_id, turn_id
)
INSERT INTO messages (conversation_id, turn_id, role, content, actions, timings, metadata)
SELECT conversation_id, turn_id, 'assistant', $5, $6, $7, $8 FROM user_row
ON CONFLICT ON CONSTRAINT messages_turn_role DO NOTHING
RETURNING {_MESSAGE_COLUMNS}
"""  # noqa: S608 - column names only; values are parameters

# The caller's words of a streamed turn, stored as the turn begins (`record_question`), and its
# reply once written (`record_reply`): a reply cut short by a barge-in keeps its question.
_INSERT_QUESTION = (
    "INSERT INTO messages (conversation_id, turn_id, role, content, metadata) "
    "VALUES ($1, $2, 'user', $3, $4) ON CONFLICT ON CONSTRAINT messages_turn_role DO NOTHING"
)
_INSERT_REPLY = _INSERT_MESSAGE + f"RETURNING {_MESSAGE_COLUMNS}"

# The reply to a turn as the caller heard it (barge-in): inserted if the turn has no reply yet,
# replaced if it has one, left alone if it was marked already (the first record stands). Only a
# turn with a stored message (its question, or the greeting) can be marked.
_INTERRUPTED = f"""
INSERT INTO messages (conversation_id, turn_id, role, content, metadata)
SELECT $1, $2, 'assistant', $3, '{{"interrupted": true}}'::jsonb
WHERE EXISTS (SELECT 1 FROM messages WHERE conversation_id = $1 AND turn_id = $2)
ON CONFLICT ON CONSTRAINT messages_turn_role DO UPDATE
SET content = EXCLUDED.content, metadata = messages.metadata || EXCLUDED.metadata
WHERE NOT coalesce((messages.metadata ->> 'interrupted')::boolean, false)
RETURNING {_MESSAGE_COLUMNS}
"""  # noqa: S608 - column names only; values are parameters


# A number written any way (`+1 (555) 000-2222`, `15550002222`) is found by its digits; the
# expressions are those of the indexes of migration 0002, character for character.
_FIND_NUMBER = (
    "SELECT id FROM conversations "
    "WHERE regexp_replace(caller, '[^0-9]', '', 'g') = $1 "
    "OR regexp_replace(callee, '[^0-9]', '', 'g') = $1 "
    "FOR UPDATE"
)
_FIND_EXPIRED = (
    "SELECT id FROM conversations WHERE forgotten_at IS NULL AND started_at < $1 "
    "ORDER BY started_at LIMIT $2 FOR UPDATE SKIP LOCKED"
)
# Erase the conversations $1 and their calls in one statement (data-modifying CTEs all run).
_ERASE = """
WITH target AS (
    SELECT id, call_id, summary IS NOT NULL AS had_summary
    FROM conversations WHERE id = ANY($1::text[])
), transcript AS (
    DELETE FROM messages WHERE conversation_id IN (SELECT id FROM target) RETURNING 1
), call_rows AS (
    UPDATE calls SET caller = NULL, callee = NULL, metadata = '{}'::jsonb
    WHERE call_id IN (SELECT call_id FROM target) RETURNING 1
), erased AS (
    UPDATE conversations c
    SET caller = NULL, callee = NULL, summary = NULL, metadata = '{}'::jsonb,
        forgotten_at = coalesce(c.forgotten_at, now())
    FROM target t WHERE c.id = t.id
    RETURNING t.had_summary
)
SELECT (SELECT count(*) FROM erased) AS conversations,
       (SELECT count(*) FROM transcript) AS messages,
       (SELECT count(*) FROM erased WHERE had_summary) AS summaries
"""
# Retention erases this many conversations per transaction: a backlog never holds long locks.
ERASE_BATCH = 500


@dataclass(slots=True)
class TurnState:
    """What a turn needs from the store, read on one connection."""

    conversation: Conversation | None
    stored_reply: Message | None
    history: list[Message]
    agent: Agent | None = None  # the conversation's agent, if it still exists


# A turn's reads in one statement (one round trip): the conversation with its agent, and either
# its stored reply to this turn (part 0) or, when there is none, its recent history (part 1),
# the messages as one array per column (jsonb columns as one jsonb array), oldest first.
_TURN_MESSAGES = f"""
WITH reply AS (
    SELECT {_MESSAGE_COLUMNS}, 0 AS part FROM messages
    WHERE conversation_id = $1 AND turn_id = $2 AND role = 'assistant'
), picked AS (
    SELECT * FROM reply
    UNION ALL
    (SELECT {_MESSAGE_COLUMNS}, 1 AS part FROM messages
     WHERE conversation_id = $1 AND NOT EXISTS (SELECT 1 FROM reply)
     ORDER BY id DESC LIMIT $3)
)
SELECT array_agg(id ORDER BY id) AS m_id, array_agg(turn_id ORDER BY id) AS m_turn_id,
       array_agg(role ORDER BY id) AS m_role, array_agg(content ORDER BY id) AS m_content,
       jsonb_agg(actions ORDER BY id) AS m_actions, jsonb_agg(timings ORDER BY id) AS m_timings,
       jsonb_agg(metadata ORDER BY id) AS m_metadata,
       array_agg(created_at ORDER BY id) AS m_created_at, min(part) AS m_part
FROM picked
"""  # noqa: S608
_SELECT_TURN_STATE = (
    f"SELECT {', '.join('c.' + c.strip() for c in _CONVERSATION_COLUMNS.split(','))}, "  # noqa: S608
    "a.id AS a_id, a.name AS a_name, a.agent_type AS a_agent_type, "
    "a.configuration AS a_configuration, a.is_default AS a_is_default, "
    "a.created_at AS a_created_at, a.updated_at AS a_updated_at, m.* "
    "FROM conversations c LEFT JOIN agents a ON a.id = c.agent_id "
    f"LEFT JOIN LATERAL ({_TURN_MESSAGES}) m ON true WHERE c.id = $1"
)


# Message field -> the array column `_TURN_MESSAGES` returns it in.
_MESSAGE_ARRAYS = {
    "id": "m_id",
    "turn_id": "m_turn_id",
    "role": "m_role",
    "content": "m_content",
    "actions": "m_actions",
    "timings": "m_timings",
    "metadata": "m_metadata",
    "created_at": "m_created_at",
}


def _turn_messages(conversation_id: str, row: asyncpg.Record) -> list[Message]:
    """The messages of `_TURN_MESSAGES`' arrays, each read by `Message.from_row`."""
    if row["m_id"] is None:  # no message picked: the aggregates are null
        return []
    fields = list(_MESSAGE_ARRAYS)
    columns = [row[column] for column in _MESSAGE_ARRAYS.values()]
    return [
        Message.from_row(
            {"conversation_id": conversation_id, **dict(zip(fields, values, strict=True))}
        )
        for values in zip(*columns, strict=True)
    ]


def _joined_agent(row: asyncpg.Record) -> Agent | None:
    if row["a_id"] is None:
        return None
    return Agent.from_row({k[2:]: v for k, v in row.items() if k.startswith("a_")})


class ConversationStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    # -- conversations ------------------------------------------------------------------------

    async def start(
        self,
        conversation_id: str,
        *,
        call_id: str,
        provider: str,
        direction: str = "inbound",
        caller: str | None = None,
        callee: str | None = None,
        agent_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> tuple[Conversation, bool]:
        """Create the call and its conversation unless they exist; `(conversation, created)`.
        One statement (`_INSERT_START`), atomic as a statement is: a call start is on the
        caller's path and each round trip wakes two processes."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                _INSERT_START,
                call_id,
                provider,
                direction,
                caller,
                callee,
                metadata or {},
                conversation_id,
                agent_id,
            )
            if row is not None:
                return Conversation.from_row(row), True
            row = await conn.fetchrow(
                f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE id = $1",  # noqa: S608
                conversation_id,
            )
        assert row is not None
        return Conversation.from_row(row), False

    async def get(self, conversation_id: str) -> Conversation | None:
        row = await self._pool.fetchrow(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE id = $1",  # noqa: S608
            conversation_id,
        )
        return Conversation.from_row(row) if row else None

    async def end(
        self,
        conversation_id: str,
        *,
        reason: str = "completed",
        status: str = "completed",
        duration_s: float | None = None,
    ) -> tuple[Conversation | None, bool]:
        """Close the conversation and its call once; `(conversation, ended_now)`, or
        `(None, False)` when there is no such conversation. One statement (`_END`): the
        conversation, its messages if its caller was forgotten while the call was live, and its
        call, together."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(_END, conversation_id, reason, status, duration_s)
            if row is None:
                existing = await conn.fetchrow(
                    f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE id = $1",  # noqa: S608
                    conversation_id,
                )
                return (Conversation.from_row(existing), False) if existing else (None, False)
        return Conversation.from_row(row), True

    async def set_summary(self, conversation_id: str, summary: str) -> bool:
        """Keep the call's summary, unless its caller was forgotten meanwhile (False)."""
        result = await self._pool.execute(
            "UPDATE conversations SET summary = $2 WHERE id = $1 AND forgotten_at IS NULL",
            conversation_id,
            summary,
        )
        return str(result).endswith(" 1")

    # -- erasure ------------------------------------------------------------------------------

    async def forgotten(self, conversation_id: str) -> bool:
        """Whether this conversation was erased (its caller forgotten, or past retention): no
        memory may be written for it any more. An unknown conversation is not forgotten."""
        return bool(
            await self._pool.fetchval(
                "SELECT forgotten_at IS NOT NULL FROM conversations WHERE id = $1",
                conversation_id,
            )
        )

    async def forget_number(self, number: str) -> ErasedRecords:
        """Erase every conversation with this number as caller or callee, in whatever form it
        was stored (matched on digits), live ones included (they become tombstones)."""
        digits = digits_only(number)
        if not digits:
            return ErasedRecords()
        async with self._pool.acquire() as conn, conn.transaction():
            ids = [r["id"] for r in await conn.fetch(_FIND_NUMBER, digits)]
            return await self._erase(conn, ids)

    async def erase_started_before(
        self, cutoff: datetime, *, batch: int = ERASE_BATCH
    ) -> ErasedRecords:
        """Erase the conversations started before `cutoff` (retention), `batch` at a time, each
        batch its own transaction."""
        total = ErasedRecords()
        while True:
            async with self._pool.acquire() as conn, conn.transaction():
                ids = [r["id"] for r in await conn.fetch(_FIND_EXPIRED, cutoff, batch)]
                total += await self._erase(conn, ids)
            if len(ids) < batch:
                return total

    @staticmethod
    async def _erase(conn: asyncpg.Connection, ids: list[str]) -> ErasedRecords:
        if not ids:
            return ErasedRecords()
        row = await conn.fetchrow(_ERASE, ids)
        assert row is not None
        return ErasedRecords(row["conversations"], row["messages"], row["summaries"])

    async def recent_for_caller(self, caller: str, *, limit: int = 5) -> list[Conversation]:
        """The caller's latest conversations, newest first (for memory across calls)."""
        rows = await self._pool.fetch(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations "  # noqa: S608
            "WHERE caller = $1 ORDER BY started_at DESC LIMIT $2",
            caller,
            limit,
        )
        return [Conversation.from_row(r) for r in rows]

    # -- messages -----------------------------------------------------------------------------

    async def get_question(self, conversation_id: str, turn_id: str) -> str | None:
        """The caller's words stored for a turn, if any."""
        text = await self._pool.fetchval(_SELECT_QUESTION, conversation_id, turn_id)
        return str(text) if text is not None else None

    async def get_reply(self, conversation_id: str, turn_id: str) -> Message | None:
        row = await self._pool.fetchrow(_SELECT_REPLY, conversation_id, turn_id)
        return Message.from_row(row) if row else None

    async def turn_state(self, conversation_id: str, turn_id: str, history_turns: int) -> TurnState:
        """The conversation, the stored reply to this turn if any, else the recent history: one
        statement (each round trip to Postgres is a wake-up of two processes on the call's
        path; a paced turn pays for every one)."""
        row = await self._pool.fetchrow(
            _SELECT_TURN_STATE, conversation_id, turn_id, history_turns * 2
        )
        if row is None:
            return TurnState(None, None, [])
        conversation, agent = Conversation.from_row(row), _joined_agent(row)
        messages = _turn_messages(conversation_id, row)
        if row["m_part"] == 0:
            return TurnState(conversation, messages[0], [], agent)
        return TurnState(conversation, None, messages, agent)

    async def history(self, conversation_id: str, turns: int) -> list[Message]:
        async with self._pool.acquire() as conn:
            return await self._history(conn, conversation_id, turns)

    @staticmethod
    async def _history(conn: asyncpg.Connection, conversation_id: str, turns: int) -> list[Message]:
        """The last `turns` turns (two messages each; the greeting counts as one), oldest first."""
        rows = await conn.fetch(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 "  # noqa: S608
            "ORDER BY id DESC LIMIT $2",
            conversation_id,
            turns * 2,
        )
        return [Message.from_row(r) for r in reversed(rows)]

    async def messages(self, conversation_id: str, *, limit: int = 1000) -> list[Message]:
        rows = await self._pool.fetch(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 "  # noqa: S608
            "ORDER BY id LIMIT $2",
            conversation_id,
            limit,
        )
        return [Message.from_row(r) for r in rows]

    async def record_greeting(
        self,
        conversation_id: str,
        text: str,
        actions: list[dict[str, Any]],
        timings: dict[str, float] | None = None,
    ) -> StoredReply:
        """Store the greeting once (turn id `greeting`); a second caller gets the first one."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                _INSERT_MESSAGE + f"RETURNING {_MESSAGE_COLUMNS}",
                conversation_id,
                GREETING_TURN_ID,
                "assistant",
                text,
                actions,
                timings or {},
                {},
            )
            if row is not None:
                return StoredReply(Message.from_row(row), inserted=True)
            row = await conn.fetchrow(_SELECT_REPLY, conversation_id, GREETING_TURN_ID)
        assert row is not None
        return StoredReply(Message.from_row(row), inserted=False)

    async def record_turn(
        self,
        conversation_id: str,
        turn_id: str,
        *,
        user_text: str,
        reply_text: str,
        actions: list[dict[str, Any]],
        timings: dict[str, float] | None = None,
        user_metadata: dict[str, Any] | None = None,
        reply_metadata: dict[str, Any] | None = None,
    ) -> StoredReply:
        """Store the user message and our reply atomically (one statement, one round trip). If
        the user row already existed, a duplicate of this turn finished first: return its
        reply, not ours. `reply_metadata`: the reply's (the tools its turn ran)."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                _INSERT_TURN,
                conversation_id,
                turn_id,
                user_text,
                user_metadata or {},
                reply_text,
                actions,
                timings or {},
                reply_metadata or {},
            )
            if row is not None:
                return StoredReply(Message.from_row(row), inserted=True)
            # The unique key made us wait for the duplicate's transaction, which has committed
            # both of its rows: read its reply.
            existing = await conn.fetchrow(_SELECT_REPLY, conversation_id, turn_id)
        if existing is None:
            # The question was stored alone: a streamed answer to it was cut short by a
            # barge-in and never recorded as heard. This answer is its reply.
            return await self.record_reply(
                conversation_id,
                turn_id,
                text=reply_text,
                actions=actions,
                timings=timings,
                metadata=reply_metadata,
            )
        return StoredReply(Message.from_row(existing), inserted=False)

    async def record_question(
        self,
        conversation_id: str,
        turn_id: str,
        text: str,
        metadata: dict[str, Any] | None = None,
    ) -> bool:
        """Store the caller's message of a turn alone (a streamed turn, before its reply);
        False if the turn's question was stored already (a duplicate of the turn)."""
        result = await self._pool.execute(
            _INSERT_QUESTION, conversation_id, turn_id, text, metadata or {}
        )
        return str(result).endswith(" 1")

    async def record_reply(
        self,
        conversation_id: str,
        turn_id: str,
        *,
        text: str,
        actions: list[dict[str, Any]],
        timings: dict[str, float] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> StoredReply:
        """Store the reply to a turn whose question is stored; if a reply is there already (a
        duplicate of the turn, or the reply recorded as heard after a barge-in), that one."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                _INSERT_REPLY,
                conversation_id,
                turn_id,
                "assistant",
                text,
                actions,
                timings or {},
                metadata or {},
            )
            if row is not None:
                return StoredReply(Message.from_row(row), inserted=True)
            row = await conn.fetchrow(_SELECT_REPLY, conversation_id, turn_id)
        assert row is not None  # the conflicting row has committed (the unique key waited)
        return StoredReply(Message.from_row(row), inserted=False)

    async def record_interruption(
        self, conversation_id: str, turn_id: str, heard: str
    ) -> Message | None:
        """The caller talked over the reply to `turn_id`: the reply becomes `heard`, marked
        `interrupted` in its metadata (inserted if the reply was never stored, replaced if it
        was; a turn marked already keeps its first record). Its actions stay as they were:
        what the agent did (a tool that ran, a transfer) was done. None: no such turn."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(_INTERRUPTED, conversation_id, turn_id, heard)
            if row is None:
                row = await conn.fetchrow(_SELECT_REPLY, conversation_id, turn_id)
        return Message.from_row(row) if row is not None else None
