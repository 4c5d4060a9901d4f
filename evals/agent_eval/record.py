"""`vao-eval record <conversation id>` (`make eval-record CONVERSATION=…`): a stored call
becomes a scenario file in one command.

The orchestrator writes the scenario (`GET /conversations/{id}/scenario`: the caller's turns,
the agent's replies, actions and tools as `equals` / `action` / `tool` expectations, to loosen
by hand); this checks it against the schema before writing it, so what is written always loads.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
from rich.console import Console

from agent_eval.api import ApiFailure, ServiceApi
from agent_eval.schema import ScenarioError, parse
from agent_eval.target import Target
from agent_eval.yamlsource import SourceError, loads

RECORDED = Path("evals/scenarios/recorded")


async def fetch(target: Target, conversation_id: str) -> str:
    async with httpx.AsyncClient(timeout=30) as http:
        return await ServiceApi(target, http).exported_scenario(conversation_id)


def default_path(conversation_id: str) -> Path:
    return RECORDED / (re.sub(r"[^A-Za-z0-9._-]", "-", conversation_id) + ".yaml")


def record(target: Target, conversation_id: str, output: Path | None, console: Console) -> int:
    try:
        text = asyncio.run(fetch(target, conversation_id))
    except (ApiFailure, httpx.HTTPError) as exc:
        console.print(f"cannot export {conversation_id!r}: {exc}", highlight=False, markup=False)
        return 3
    path = output or default_path(conversation_id)
    try:
        scenario = parse(loads(text, path))
    except (ScenarioError, SourceError) as exc:
        console.print(f"the exported scenario does not load: {exc}", highlight=False, markup=False)
        return 2
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    turns = sum(len(c.turns) for c in scenario.calls)
    console.print(
        f"wrote {path}: {turns} turns of {conversation_id}, the agent's replies expected "
        "word for word (loosen `equals` to `contains` where wording may change); "
        f"run it: make eval SCENARIOS={path}",
        highlight=False,
        markup=False,
    )
    return 0
