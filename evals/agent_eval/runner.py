"""Running scenarios: each one (times `--repeat`) on its agent, at most `concurrency` at once,
with a progress bar on a terminal (a line per scenario elsewhere, e.g. CI logs).

A scenario's calls come from one caller number: its own (`caller:`), else a fresh one per run,
forgotten afterwards (`DELETE /callers/{phone}/memory`) so runs never see each other's memory
and an eval leaves nothing behind. An agent given as `config:` is made for the run (with its
`knowledge:`) and deleted after it. Setting up or driving a scenario can fail (an unknown
agent, a refused request): that run fails with the reason; other runs go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agent_eval.api import ApiFailure, ServiceApi
from agent_eval.calls import DRIVE_ERRORS, CallContext, play_call
from agent_eval.events import EventWatch
from agent_eval.judge import Model, ModelConfig
from agent_eval.providers.base import REPLY_TIMEOUT_S, CallSetup
from agent_eval.schema import STREAMING, AgentRef, Scenario
from agent_eval.target import Target
from agent_eval.transcript import ScenarioRun

DEFAULT_DIALLED = "+15550100000"  # fictional (555-01xx): an agent without a number of its own


class SetupError(RuntimeError):
    """The scenario cannot run here (e.g. its agent does not exist)."""


@dataclass(frozen=True)
class RunOptions:
    concurrency: int = 4
    repeat: int = 1
    model: ModelConfig | None = None
    console: Console | None = None  # progress goes to stderr when None


def fresh_caller() -> str:
    """A caller number no one else uses: +1 555 and seven random digits (a possible number,
    not a real one)."""
    return f"+1555{secrets.randbelow(10**7):07d}"


async def run_scenarios(
    scenarios: Sequence[Scenario], target: Target, options: RunOptions
) -> list[ScenarioRun]:
    jobs = [(s, i) for s in scenarios for i in range(options.repeat)]
    limits = httpx.Limits(max_connections=max(10, options.concurrency * 4))
    timeout = httpx.Timeout(REPLY_TIMEOUT_S, connect=5.0)
    console = options.console or Console(stderr=True)
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=timeout, limits=limits))
        api = ServiceApi(target, http)
        model = Model(options.model, http) if options.model is not None else None
        events = None
        if any(s.provider in STREAMING for s in scenarios):
            events = await EventWatch.open(target.gateway_url, target.token)
            stack.push_async_callback(events.close)
        tools = RunTools(target, http, api, model, events)
        gate = asyncio.Semaphore(max(1, options.concurrency))
        with _progress(console, len(jobs)) as advance:

            async def one(scenario: Scenario, repeat: int) -> ScenarioRun:
                async with gate:
                    run = await run_scenario(scenario, repeat, tools)
                advance(run)
                return run

            return list(await asyncio.gather(*(one(s, i) for s, i in jobs)))


@dataclass(frozen=True)
class RunTools:
    """What every scenario of a run shares: one HTTP pool, the APIs, the model, /ws events."""

    target: Target
    http: httpx.AsyncClient
    api: ServiceApi
    model: Model | None
    events: EventWatch | None


async def run_scenario(scenario: Scenario, repeat: int, tools: RunTools) -> ScenarioRun:
    run = ScenarioRun(scenario, repeat)
    api = tools.api
    started = time.perf_counter()
    caller = scenario.caller or fresh_caller()
    made: str | None = None
    try:
        agent_id, dialled, made = await _agent(scenario, api)
        setup = CallSetup(caller, scenario.to or dialled, agent_id, scenario.name)
        ctx = CallContext(
            tools.target,
            tools.http,
            api,
            scenario.provider,
            setup,
            tools.model,
            scenario.latency_ms,
            tools.events,
        )
        for index, call in enumerate(scenario.calls):
            record = await play_call(call, index, ctx)
            run.calls.append(record)
    except (SetupError, *DRIVE_ERRORS) as exc:
        run.error = str(exc) or type(exc).__name__
    finally:
        with contextlib.suppress(*DRIVE_ERRORS):
            if made is not None:
                await api.delete_agent(made)
            if scenario.caller is None:
                await api.forget(caller)
    run.duration_s = time.perf_counter() - started
    return run


async def _agent(scenario: Scenario, api: ServiceApi) -> tuple[str, str, str | None]:
    """(agent id, the number to dial, the id of an agent made for this run or None)."""
    ref: AgentRef = scenario.agent
    if ref.id is not None:
        try:
            agent = await api.agent(ref.id)
        except ApiFailure as exc:
            if exc.status != 404:
                raise
            raise SetupError(
                f"agent {ref.id!r} does not exist on {api.target.orchestrator_url} (the starter "
                "set's demo agent is made by `make run` on a fresh DATA_DIR)"
            ) from None
        return ref.id, _number_of(agent), None
    config = dict(ref.config or {})
    agent = await api.create_agent(f"eval: {scenario.name}", config)
    agent_id = str(agent["id"])
    if ref.knowledge:
        try:
            await api.add_knowledge(agent_id, ref.knowledge)
        except DRIVE_ERRORS:
            await api.delete_agent(agent_id)
            raise
    return agent_id, _number_of(agent), agent_id


def _number_of(agent: dict[str, object]) -> str:
    config = agent.get("configuration")
    numbers = config.get("phone_numbers") if isinstance(config, dict) else None
    if isinstance(numbers, list) and numbers and isinstance(numbers[0], str):
        return numbers[0]
    return DEFAULT_DIALLED


@contextlib.contextmanager
def _progress(console: Console, total: int) -> Iterator[Callable[[ScenarioRun], None]]:
    if not console.is_terminal:

        def line(run: ScenarioRun) -> None:
            console.print(f"{run.status:4}  {run.scenario.name}", highlight=False)

        yield line
        return
    progress = Progress(
        TextColumn("[bold]eval"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    with progress:
        task = progress.add_task("", total=total)

        def advance(run: ScenarioRun) -> None:
            progress.update(task, advance=1, description=f"{run.scenario.name}: {run.status}")

        yield advance
