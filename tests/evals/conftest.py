"""One set of running services for every eval test (started once per session, as `make eval`
starts its own: `agent_eval.services.own_services`, the embedded defaults with the demo agent
and a secret for every provider), and helpers to run scenarios in process or through the
`vao-eval` command line against them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent_eval.loading import load_scenarios
from agent_eval.runner import RunOptions, run_scenarios
from agent_eval.services import ROOT, OwnServices, own_services
from agent_eval.target import Target
from agent_eval.transcript import ScenarioRun

STARTER = ROOT / "evals" / "scenarios"


@dataclass(frozen=True)
class EvalServices:
    services: OwnServices
    target: Target

    def env(self) -> dict[str, str]:
        """The environment `vao-eval` needs to drive these services."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("EVAL_", "OPENAI_"))}
        env.update(self.services.env)
        env["EVAL_GATEWAY_URL"] = self.services.gateway.url
        env["EVAL_ORCHESTRATOR_URL"] = self.services.orchestrator.url
        return env

    def run(self, *paths: Path, options: RunOptions | None = None) -> list[ScenarioRun]:
        scenarios = load_scenarios(list(paths))
        return asyncio.run(run_scenarios(scenarios, self.target, options or RunOptions()))

    def cli(self, *args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "agent_eval", *map(str, args)],
            cwd=cwd,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )


@pytest.fixture(scope="session")
def eval_services() -> Iterator[EvalServices]:
    # the agent runs offline (the default); a model for judging is given per test
    with own_services({"OPENAI_API_KEY": ""}) as services:
        target = Target.from_env(
            env=dict(services.env),
            gateway_url=services.gateway.url,
            orchestrator_url=services.orchestrator.url,
        )
        yield EvalServices(services, target)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path
