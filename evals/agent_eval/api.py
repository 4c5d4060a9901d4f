"""The management APIs a run uses besides the provider paths: agents (checked, or made for the
run and deleted), knowledge for a made agent, a caller's memory (read, forgotten), a
conversation read back, and a stored call exported as a scenario. One pooled client, the
management token on every request; a refusal is an `ApiFailure` naming the request."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

import httpx

from agent_eval.schema import KnowledgeDoc
from agent_eval.target import Target


class ApiFailure(RuntimeError):
    def __init__(self, what: str, response: httpx.Response) -> None:
        try:
            error = response.json().get("error", {})
            reason = f"{error.get('code')}: {error.get('message')}"
        except (ValueError, AttributeError):
            reason = response.text[:200]
        super().__init__(f"{what}: HTTP {response.status_code} ({reason})")
        self.status = response.status_code


class ServiceApi:
    def __init__(self, target: Target, http: httpx.AsyncClient) -> None:
        self.target = target
        self.http = http
        self.headers = {"Authorization": f"Bearer {target.token}"}
        self._agents: dict[str, dict[str, Any]] = {}  # read once per run

    async def _call(self, what: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        r = await self.http.request(method, url, headers=self.headers, **kwargs)
        if r.status_code >= 400:
            raise ApiFailure(what, r)
        return r

    def _orch(self, path: str) -> str:
        return f"{self.target.orchestrator_url}{path}"

    async def agent(self, agent_id: str) -> dict[str, Any]:
        if agent_id not in self._agents:
            r = await self._call(
                f"agent {agent_id!r}", "GET", self._orch(f"/agents/{quote(agent_id, safe='')}")
            )
            self._agents[agent_id] = dict(r.json())
        return self._agents[agent_id]

    async def create_agent(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        body = {"name": name[:100], "configuration": config}
        r = await self._call(
            "making the scenario's agent", "POST", self._orch("/agents/create"), json=body
        )
        return dict(r.json())

    async def delete_agent(self, agent_id: str) -> None:
        await self.http.delete(
            self._orch(f"/agents/{quote(agent_id, safe='')}"), headers=self.headers
        )

    async def add_knowledge(self, agent_id: str, docs: tuple[KnowledgeDoc, ...]) -> None:
        documents = [
            {
                "id": f"eval-{uuid.uuid4().hex[:12]}",
                "title": d.title,
                "text": d.text,
                "source": "eval",
            }
            for d in docs
        ]
        await self._call(
            "adding the scenario's knowledge",
            "POST",
            self._orch("/knowledge"),
            json={"agent_id": agent_id, "documents": documents},
        )

    async def memories(self, phone: str) -> list[str]:
        """What is remembered of a caller (operator read)."""
        r = await self._call(
            "reading the caller's memory", "GET", self._orch(f"/callers/{quote(phone)}/memory")
        )
        return [str(m.get("text", "")) for m in r.json().get("memories", [])]

    async def forget(self, phone: str) -> None:
        await self.http.delete(self._orch(f"/callers/{quote(phone)}/memory"), headers=self.headers)

    async def conversation(self, conversation_id: str) -> dict[str, Any] | None:
        r = await self.http.get(
            self._orch(f"/conversations/{quote(conversation_id, safe='')}"), headers=self.headers
        )
        if r.status_code == 404:
            return None
        if r.status_code >= 400:
            raise ApiFailure(f"reading conversation {conversation_id!r}", r)
        return dict(r.json())

    async def exported_scenario(self, conversation_id: str) -> str:
        r = await self._call(
            f"exporting conversation {conversation_id!r}",
            "GET",
            self._orch(f"/conversations/{quote(conversation_id, safe='')}/scenario"),
        )
        return r.text
