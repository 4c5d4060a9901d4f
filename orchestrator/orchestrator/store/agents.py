"""Agents: who answers a call, with what greeting, prompt, transfer number and phone numbers.

`configuration` is free-form JSON; the keys the platform reads are `greeting`, `system_prompt`,
`transfer_number` and `phone_numbers` (the dialled numbers routed to this agent).
"""

from __future__ import annotations

import secrets
from typing import Any

import asyncpg

from orchestrator.store.records import Agent
from shared.phone import to_e164

_COLUMNS = "id, name, agent_type, configuration, is_default, created_at, updated_at"


def new_agent_id() -> str:
    return f"agt_{secrets.token_hex(8)}"


class AgentStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def list_all(self, *, limit: int = 100, offset: int = 0) -> list[Agent]:
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM agents ORDER BY is_default DESC, created_at, id "  # noqa: S608
            "LIMIT $1 OFFSET $2",
            limit,
            offset,
        )
        return [Agent.from_row(r) for r in rows]

    async def count(self) -> int:
        return int(await self._pool.fetchval("SELECT count(*) FROM agents"))

    async def get(self, agent_id: str) -> Agent | None:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM agents WHERE id = $1",  # noqa: S608
            agent_id,
        )
        return Agent.from_row(row) if row else None

    async def get_default(self) -> Agent | None:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM agents WHERE is_default",  # noqa: S608
        )
        return Agent.from_row(row) if row else None

    async def find_by_phone(self, number: str) -> Agent | None:
        """The agent whose `configuration.phone_numbers` lists `number`, if any. Providers differ
        on the `+` (Vonage sends `14155550100`): compared in E.164, as the numbers are stored."""
        e164 = to_e164(number)
        if e164 is None:  # `anonymous`, a SIP user: no agent answers it by number
            return None
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM agents "  # noqa: S608
            "WHERE configuration -> 'phone_numbers' @> jsonb_build_array($1::text) "
            "ORDER BY is_default DESC, created_at, id LIMIT 1",
            e164,
        )
        return Agent.from_row(row) if row else None

    async def create(
        self,
        *,
        name: str,
        agent_type: str = "voice",
        configuration: dict[str, Any] | None = None,
        is_default: bool = False,
        agent_id: str | None = None,
    ) -> Agent:
        """Insert an agent; `is_default=True` moves the default flag to it. Raises
        `asyncpg.UniqueViolationError` when `agent_id` is taken."""
        async with self._pool.acquire() as conn, conn.transaction():
            if is_default:
                await conn.execute("UPDATE agents SET is_default = false WHERE is_default")
            row = await conn.fetchrow(
                "INSERT INTO agents (id, name, agent_type, configuration, is_default) "
                "VALUES ($1, $2, $3, $4, $5) RETURNING *",
                agent_id or new_agent_id(),
                name,
                agent_type,
                configuration or {},
                is_default,
            )
        assert row is not None
        return Agent.from_row(row)

    async def update(
        self,
        agent_id: str,
        *,
        name: str | None = None,
        agent_type: str | None = None,
        configuration: dict[str, Any] | None = None,
        is_default: bool | None = None,
    ) -> Agent | None:
        """Change the given fields (None leaves a field as it is; `configuration` is replaced
        whole). Returns None when there is no such agent."""
        async with self._pool.acquire() as conn, conn.transaction():
            if is_default:
                await conn.execute(
                    "UPDATE agents SET is_default = false WHERE is_default AND id <> $1", agent_id
                )
            row = await conn.fetchrow(
                "UPDATE agents SET name = coalesce($2, name), "
                "agent_type = coalesce($3, agent_type), "
                "configuration = coalesce($4, configuration), "
                "is_default = coalesce($5, is_default), updated_at = now() "
                "WHERE id = $1 RETURNING *",
                agent_id,
                name,
                agent_type,
                configuration,
                is_default,
            )
        return Agent.from_row(row) if row else None

    async def delete(self, agent_id: str) -> bool:
        """Delete an agent; its past conversations keep their rows with `agent_id` NULL."""
        status = await self._pool.execute("DELETE FROM agents WHERE id = $1", agent_id)
        return str(status).endswith(" 1")

    async def ensure_default(
        self,
        *,
        name: str,
        greeting: str,
        system_prompt: str,
        transfer_number: str | None = None,
    ) -> Agent:
        """Create the default agent from settings unless one exists (safe with concurrent starts:
        at most one row can have `is_default`)."""
        configuration: dict[str, Any] = {
            "greeting": greeting,
            "system_prompt": system_prompt,
            "phone_numbers": [],
        }
        if transfer_number:
            configuration["transfer_number"] = transfer_number
        await self._pool.execute(
            "INSERT INTO agents (id, name, agent_type, configuration, is_default) "
            "SELECT $1, $2, 'voice', $3, true WHERE NOT EXISTS "
            "(SELECT 1 FROM agents WHERE is_default) ON CONFLICT DO NOTHING",
            new_agent_id(),
            name,
            configuration,
        )
        agent = await self.get_default()
        assert agent is not None
        return agent
