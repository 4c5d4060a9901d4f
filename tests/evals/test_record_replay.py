"""Record and replay: the README tour's first call, exported with `vao-eval record` (the
orchestrator's `GET /conversations/{id}/scenario`), replays green; once the agent's greeting is
changed, the same replay fails on the greeting with a diff."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from agent_eval.loading import load_file
from tests.e2e.test_readme_tour import run_tour
from tests.evals.conftest import EvalServices

pytestmark = pytest.mark.slow

DEMO = "demo-harbourside-bakery"


def set_greeting(eval_services: EvalServices, greeting: str) -> str:
    """The agent's greeting before the change."""
    target = eval_services.target
    url = f"{target.orchestrator_url}/agents/{DEMO}"
    headers = {"Authorization": f"Bearer {target.token}"}
    before = httpx.get(url, headers=headers).json()["configuration"]["greeting"]
    r = httpx.patch(url, json={"configuration": {"greeting": greeting}}, headers=headers)
    assert r.status_code == 200, r.text
    return str(before)


def test_a_tour_call_exported_replays_green_and_fails_once_the_greeting_changes(
    eval_services: EvalServices, tmp_path: Path
) -> None:
    svc = eval_services.services
    tour = run_tour(svc.data_dir, svc.orchestrator, svc.gateway)
    assert tour.returncode == 0, tour.stderr

    scenario = tmp_path / "demo-1.yaml"
    recorded = eval_services.cli("record", "demo-1", "-o", scenario)
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    exported = load_file(scenario)
    assert exported.agent.id == DEMO
    assert [t.text for t in exported.calls[0].turns] == [
        "What are your opening hours?",
        "Please remember that my name is Sam",
        "Thanks, goodbye",
    ]
    assert "+15550001111" not in scenario.read_text()  # the caller's number stays behind

    report = ["--junit", tmp_path / "j.xml", "--html", tmp_path / "r.html", "--no-start"]
    replay = eval_services.cli("run", scenario, *report)
    assert replay.returncode == 0, replay.stdout + replay.stderr

    before = set_greeting(eval_services, "Good morning, Harbourside Bakery here.")
    try:
        changed = eval_services.cli("run", scenario, *report)
    finally:
        set_greeting(eval_services, before)
    assert changed.returncode == 1, changed.stdout + changed.stderr
    assert "call 1, greeting" in changed.stdout
    assert "actual:   Good morning, Harbourside Bakery here." in changed.stdout, changed.stdout
    assert "diff:     [-Hello, this is the-] {+Good morning,+} Harbourside Bakery" in changed.stdout
