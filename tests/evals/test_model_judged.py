"""Rubrics judged by the model and simulated callers, through the OpenAI-compatible API the
orchestrator uses: against the fake OpenAI-compatible server (bench/fake_llm.py, under uvicorn)
driving a whole simulated call on the real services, and against a scripted fake at the HTTP
layer (respx) for the verdicts a real model gives."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from agent_eval.judge import Model, ModelConfig, ModelError
from agent_eval.runner import RunOptions
from agent_eval.services import ROOT, free_port, wait_ready
from bench.fake_llm import REPLY
from tests.evals.conftest import EvalServices, write
from tests.orchestrator.llm_fakes import OPENAI_BASE, FakeOpenAI

SIMULATED = """\
name: simulated-parking
agent: demo-harbourside-bakery
simulated:
  persona: A hurried customer on their lunch break.
  goal: Learn where to park near the bakery.
  max_turns: 2
expect:
  rubric: The agent told the caller where to park.
"""


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[str]:
    import subprocess

    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "bench.fake_llm:create_app",
            "--port",
            str(port),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        yield f"{url}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@pytest.mark.slow
def test_a_simulated_caller_talks_to_the_agent_and_the_call_is_judged(
    eval_services: EvalServices, fake_llm: str, tmp_path: Path
) -> None:
    path = write(tmp_path, "simulated.yaml", SIMULATED)
    model = ModelConfig(api_key="fake-key", base_url=fake_llm, model="fake")
    (run,) = eval_services.run(path, options=RunOptions(model=model))
    (call,) = run.calls
    assert call.call_id.startswith("eval-simulated-parking-")
    # the fake model is the caller: its line, each turn, up to max_turns, answered by the agent
    assert [t.caller for t in call.turns[1:]] == [f'says "{REPLY}"'] * 2
    assert all(t.reply is not None and t.reply.text for t in call.turns)
    (rubric,) = call.checks
    assert rubric.name == "rubric" and rubric.status != "skip"  # judged, not skipped
    # the fake answers a JSON schema with its minimal instance: passed false, no reason
    assert rubric.status == "fail" and rubric.detail == "(the model gave no reason)"


def test_without_a_model_key_a_simulated_call_is_not_placed_but_skipped(
    eval_services: EvalServices, tmp_path: Path
) -> None:
    (run,) = eval_services.run(write(tmp_path, "simulated.yaml", SIMULATED))
    (call,) = run.calls
    assert call.turns == [] and run.status == "skip"
    assert "no model key" in call.checks[0].detail


def ask(*questions: Callable[[Model], Awaitable[Any]]) -> list[Any]:
    """Each question put to a model at the scripted fake, in order; errors as results."""

    async def run() -> list[Any]:
        config = ModelConfig(api_key="sk-test", base_url=OPENAI_BASE, model="gpt-4o-mini")
        async with httpx.AsyncClient() as http:
            model, out = Model(config, http), []
            for question in questions:
                try:
                    out.append(await question(model))
                except ModelError as exc:
                    out.append(exc)
            return out

    return asyncio.run(run())


def test_the_verdict_is_asked_as_strict_json_and_read_both_ways() -> None:
    with respx.mock(assert_all_called=False) as router:
        fake = FakeOpenAI(router)
        fake.reply(json.dumps({"passed": True, "reason": "It gave the hours: 7 am to 6 pm."}))
        fake.reply(json.dumps({"passed": False, "reason": "It never said where to park."}))
        yes, no = ask(
            lambda m: m.judge("Gives the hours.", "Agent: We open at 7 am."),
            lambda m: m.judge("Says where to park.", "Agent: We open at 7 am."),
        )
    assert (yes.passed, yes.reason) == (True, "It gave the hours: 7 am to 6 pm.")
    assert (no.passed, no.reason) == (False, "It never said where to park.")
    sent = fake.requests[0]
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["strict"] is True
    assert "Gives the hours." in sent["messages"][-1]["content"]


def test_a_model_that_fails_or_answers_off_schema_is_an_error_not_a_verdict() -> None:
    with respx.mock(assert_all_called=False) as router:
        fake = FakeOpenAI(router)
        fake.error(500)
        fake.reply("Sure! It passed.")
        failed, off_schema = ask(lambda m: m.judge("r", "t"), lambda m: m.judge("r", "t"))
    assert isinstance(failed, ModelError) and "HTTP 500" in str(failed)
    assert isinstance(off_schema, ModelError) and "not the JSON asked for" in str(off_schema)


def test_the_simulated_caller_stops_when_the_model_says_it_is_done() -> None:
    with respx.mock(assert_all_called=False) as router:
        fake = FakeOpenAI(router)
        fake.reply("Where can I park?")
        fake.reply("[DONE]")
        lines = [("agent", "Hello, how can I help?")]
        said, done = ask(
            lambda m: m.caller_line("p", "g", lines), lambda m: m.caller_line("p", "g", lines)
        )
    assert said == "Where can I park?" and done is None
    # the agent speaks to the simulated caller: it is the "user" of the caller's model
    assert [m["role"] for m in fake.requests[0]["messages"]] == ["system", "user"]
