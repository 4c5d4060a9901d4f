"""`vao-eval` (`make eval`, `make eval-record`): run scenarios, or export a stored call as one.

    vao-eval [run] [PATHS...]        run scenario files / folders (default evals/scenarios)
    vao-eval record CONVERSATION_ID  write a stored call as a scenario (its replies expected)

Exit status: 0 every scenario passed (skips allowed: a rubric without a model key), 1 a
scenario failed, 2 a scenario file was refused (file:line: field: why) or bad usage, 3 the
services could not be reached or started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
from rich.console import Console

from agent_eval.judge import ModelConfig
from agent_eval.loading import InvalidScenarios, load_scenarios
from agent_eval.record import record
from agent_eval.reports.html import write_html
from agent_eval.reports.junit import write_junit
from agent_eval.reports.summary import failed
from agent_eval.reports.table import print_failures, print_table
from agent_eval.runner import RunOptions, run_scenarios
from agent_eval.services import own_services
from agent_eval.target import Target
from agent_eval.transcript import ScenarioRun
from agent_eval.yamlsource import SourceError

EXIT_FAILED, EXIT_INVALID, EXIT_UNREACHABLE = 1, 2, 3
DEFAULT_SCENARIOS = Path("evals/scenarios")
DEFAULT_RESULTS = Path("eval-results")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vao-eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run scenarios")
    run.add_argument("paths", nargs="*", type=Path, default=[DEFAULT_SCENARIOS])
    _service_args(run)
    start = run.add_mutually_exclusive_group()
    start.add_argument("--start", action="store_true", help="always start services of its own")
    start.add_argument(
        "--no-start", action="store_true", help="never start services; fail if none answer"
    )
    run.add_argument("--concurrency", type=int, default=4, help="scenarios at once (default 4)")
    run.add_argument("--repeat", type=int, default=1, help="run each scenario N times: a pass rate")
    run.add_argument("--junit", type=Path, default=DEFAULT_RESULTS / "junit.xml")
    run.add_argument("--html", type=Path, default=DEFAULT_RESULTS / "report.html")
    rec = sub.add_parser("record", help="export a stored call as a scenario")
    rec.add_argument("conversation_id")
    rec.add_argument(
        "-o", "--output", type=Path, help="file (default evals/scenarios/recorded/<id>.yaml)"
    )
    _service_args(rec)
    return p


def _service_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--gateway", help="gateway URL (EVAL_GATEWAY_URL; default http://127.0.0.1:3000)"
    )
    p.add_argument("--orchestrator", help="orchestrator URL (EVAL_ORCHESTRATOR_URL; default :8000)")


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if not args_in or args_in[0] not in ("run", "record", "-h", "--help"):
        args_in.insert(0, "run")
    args = parser().parse_args(args_in)
    out = Console()
    # SIGTERM as Ctrl-C: services started here are stopped either way (no orphans)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _command(args, out)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _command(args: argparse.Namespace, out: Console) -> int:
    if args.command == "record":
        target = Target.from_env(gateway_url=args.gateway, orchestrator_url=args.orchestrator)
        return record(target, args.conversation_id, args.output, out)
    if args.concurrency < 1 or args.repeat < 1:
        out.print("--concurrency and --repeat must be at least 1")
        return EXIT_INVALID
    try:
        scenarios = load_scenarios(args.paths)
    except (InvalidScenarios, SourceError, FileNotFoundError) as exc:
        print(f"refused:\n{exc}", file=sys.stderr)
        return EXIT_INVALID
    try:
        with _target(args, out) as target:
            runs = asyncio.run(run_scenarios(scenarios, target, _options(args)))
    except ServicesUnavailable as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_UNREACHABLE
    return report(runs, args, out)


class ServicesUnavailable(RuntimeError):
    pass


def _options(args: argparse.Namespace) -> RunOptions:
    return RunOptions(
        concurrency=args.concurrency, repeat=args.repeat, model=ModelConfig.from_env()
    )


def report(runs: list[ScenarioRun], args: argparse.Namespace, out: Console) -> int:
    print_table(runs, out)
    print_failures(runs, out)
    write_junit(runs, args.junit)
    write_html(runs, args.html)
    out.print(f"JUnit: {args.junit}   HTML: {args.html}", highlight=False)
    return EXIT_FAILED if failed(runs) else 0


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code in (200, 503)
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def _target(args: argparse.Namespace, out: Console) -> Iterator[Target]:
    """Running services (given, or `make run`'s), else services started here."""
    target = Target.from_env(gateway_url=args.gateway, orchestrator_url=args.orchestrator)
    running = _answers(target.gateway_url) and _answers(target.orchestrator_url)
    if running and not args.start:
        out.print(f"services: {target.gateway_url} and {target.orchestrator_url}", highlight=False)
        yield target
        return
    if args.no_start:
        raise ServicesUnavailable(
            f"no services answer at {target.gateway_url} and {target.orchestrator_url} (--no-start)"
        )
    out.print(
        "services: starting both with the embedded defaults (a fresh DATA_DIR)...", highlight=False
    )
    with contextlib.ExitStack() as stack:
        try:
            svc = stack.enter_context(own_services())
        except (RuntimeError, TimeoutError) as exc:
            raise ServicesUnavailable(f"could not start the services: {exc}") from None
        yield Target.from_env(
            env={**svc.env}, gateway_url=svc.gateway.url, orchestrator_url=svc.orchestrator.url
        )


if __name__ == "__main__":
    raise SystemExit(main())
