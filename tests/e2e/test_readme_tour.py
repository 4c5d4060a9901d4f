"""The README's 60-second tour works as written: its shell block, run verbatim with bash against
both services started as `make run` starts them on a fresh clone (no DATABASE_URL: the embedded
Postgres, so the demo agent is made; no GENERIC_HTTP_SECRET, no JWT_SECRET), while a `/ws`
client watches. It shows the product: a knowledge answer, a remembered fact on a second call, a
transfer, the `/ws` events, and the call and its transcript read back."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.e2e.services import ROOT, Service, run_service
from tests.gateway.ws_client import collect

pytestmark = pytest.mark.slow


def tour_script() -> str:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- tour:begin -->\s*```bash\n(.*?)```\s*<!-- tour:end -->", readme, re.S)
    assert block, "README.md lost its tour block"
    return block.group(1)


@pytest.fixture(scope="module")
def dev_services() -> Iterator[tuple[Path, Service, Service]]:
    # Outside pytest's tmp root: as root, the embedded Postgres runs as another account, and a
    # pytest session start resets /tmp/pytest-of-<user> to 0700 (tests/orchestrator/conftest.py).
    data_dir = Path(tempfile.mkdtemp(prefix="vao-tour-"))
    env = {
        "DATA_DIR": str(data_dir),
        "JWT_SECRET": "",
        "GENERIC_HTTP_SECRET": "",
        "DATABASE_URL": "",  # the embedded default, as `make run` on a fresh clone
        "DEMO": "",
        "APP_ENV": "development",
        "OPENAI_API_KEY": "",
    }
    try:
        with run_service("orchestrator", "orchestrator.main:create_app", env, data_dir) as orch:
            gw_env = {**env, "ORCHESTRATOR_URL": orch.url, "VOICE_PROVIDER": "generic-http"}
            with run_service("gateway", "realtime_gateway.app:create_app", gw_env, data_dir) as gw:
                yield data_dir, orch, gw
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def run_tour(data_dir: Path, orch: Service, gw: Service) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("JWT_SECRET", "PORT")}
    env.update({"GW": gw.url, "ORCH": orch.url, "DATA_DIR": str(data_dir)})
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", tour_script()],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


async def tour_with_ws(data_dir: Path, orch: Service, gw: Service) -> tuple[Any, list[Any]]:
    token = subprocess.run(
        ["make", "-s", "token", "ROLE=viewer"],
        cwd=ROOT,
        env={**os.environ, "DATA_DIR": str(data_dir), "JWT_SECRET": ""},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ws_url = gw.url.replace("http://", "ws://") + f"/ws?token={token}"
    async with connect(ws_url) as ws:
        result = await asyncio.to_thread(run_tour, data_dir, orch, gw)
        events = await collect(
            ws,
            lambda evs: any(e["type"] == "call.ended" and e["call_id"] == "demo-2" for e in evs),
            timeout_s=10,
        )
    return result, events


def test_readme_tour_shows_knowledge_memory_transfer_events_and_transcript(
    dev_services: tuple[Path, Service, Service],
) -> None:
    data_dir, orch, gw = dev_services
    result, events = asyncio.run(tour_with_ws(data_dir, orch, gw))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    greet1, hours, remember, bye, end1, greet2, transfer, end2, status, conversation = lines

    def said(reply: dict[str, Any]) -> str:
        return " ".join(a["text"] for a in reply["actions"] if a["type"] == "say")

    assert "Harbourside Bakery demo agent" in said(greet1)
    # the knowledge answer, from the demo's knowledge base through the offline responder
    assert "Monday to Friday from 7 am to 6 pm" in said(hours)
    assert "Saturday from 8 am to 4 pm" in said(hours)
    assert hours["actions"][-1]["type"] == "gather"
    assert "remember that your name is Sam" in said(remember)
    assert bye["actions"][-1]["type"] == "hangup"
    assert end1 == {"actions": []} and end2 == {"actions": []}
    # the remembered fact, on the second call
    assert "Welcome back" in said(greet2) and "your name is Sam" in said(greet2)
    # the transfer, as the bridge receives it
    assert transfer["actions"][-1] == {"type": "transfer", "to": "+15550100199"}
    # read back: the gateway's call, the orchestrator's conversation and transcript
    assert status["call_id"] == "demo-2" and status["status"] == "completed"
    assert status["turns"] == 1
    assert conversation["agent_id"] == "demo-harbourside-bakery"
    assert conversation["status"] == "ended"
    transcript = [(m["role"], m["content"]) for m in conversation["messages"]]
    assert ("user", "What are your opening hours?") in transcript
    assert any(role == "assistant" and "7 am to 6 pm" in text for role, text in transcript)
    # the /ws events, per call
    by_call: dict[str, list[str]] = {}
    for event in events:
        assert set(event) == {"type", "call_id", "timestamp", "data"}
        by_call.setdefault(event["call_id"], []).append(event["type"])
    turn = ["message.received", "message.sent"]
    assert by_call["demo-1"] == ["call.started", *turn * 3, "call.ended"]
    assert by_call["demo-2"] == ["call.started", *turn, "call.ended"]
