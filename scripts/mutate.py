"""`make mutate`: mutation testing of the modules that hold a protection (cosmic-ray).

Each module is mutated against its own tests only (MODULES below), so a run stays short.

Where the mutants live: the three projects are installed in editable mode, so a test process
started in /work/main always imports /work/main's files, and cosmic-ray mutates the file it is
given in place. To leave the working tree untouched (and any test run beside this one unharmed),
every worker gets its own copy of the tree (tracked and new files, no .venv/.git/.data) and runs
pytest there: pytest's `pythonpath` setting puts the copy's `orchestrator/`,
`realtime-gateway/` and `.` first on sys.path, ahead of the editable finders (they come after
the path finder), and PYTHONPATH does the same for any subprocess a test starts. A check before
the first mutant proves the copy's file is the one imported. cosmic-ray does the rest: `init`
lists the mutants into a session database per module, each worker applies one with
`mutate_and_test` (which restores the file after the test run) and the results go back into that
database; `cr-report <db>` reads it too.

    python -m scripts.mutate                     # every module, report to docs/mutation-report.md
    python -m scripts.mutate redaction addresses # some (the report keeps the others' last run)
    python -m scripts.mutate --list              # the modules and their tests
    MUTATE_JOBS=2 ...                            # workers (default: the CPU count, at most 4)

Survivors judged equivalent are listed in EQUIVALENT (module, line, operator, reason); every
other survivor is reported as a missing test. Mutants inside type annotations are not run and
count as equivalent (every module here postpones annotations, so none is ever evaluated). A run
of every module records its wall time, which the report shows (the target: under 30 minutes
with MUTATE_JOBS=2 on a loaded 2-core machine).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path

from cosmic_ray.commands.init import init as cr_init
from cosmic_ray.mutating import mutate_and_test
from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import (
    MutationSpec,
    TestOutcome,
    WorkerOutcome,
    WorkItem,
    WorkResult,
)

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / ".data" / "mutate"
REPORT = ROOT / "docs" / "mutation-report.md"
# cosmic-ray makes every alternative at each site (`+` becomes each of 11 other operators, each
# number n+1 and n-1): 844 mutants for redaction.py alone. One per site and operator family (the
# first in cosmic-ray's order) keeps a run short and still asks whether the site is tested;
# MUTATE_ALL=1 runs every alternative.
ONE_PER_SITE = os.environ.get("MUTATE_ALL") != "1"
TIMEOUT_S = 300.0  # per mutant; a hung test run counts as killed (cosmic-ray's rule)


@dataclass(frozen=True)
class Module:
    name: str
    path: str  # relative to the repository root
    tests: tuple[str, ...]
    # Only these functions/methods (cosmic-ray's definition name), when set.
    only: tuple[str, ...] = field(default=())
    # The pytest plugins the tests use (the timeout one always): starting the others took most
    # of each short run. `conftest=False`: the tests take no fixture from a conftest.py.
    plugins: tuple[str, ...] = field(default=())
    conftest: bool = True


# Each module's tests: the fast files that exercise it directly (unit tests on both call stores,
# the real Redis where one is shared), first the one most likely to fail, so a killed mutant
# costs one short pytest run. The end-to-end flows over the same code run in `make test`.
MODULES: tuple[Module, ...] = (
    Module(
        "signatures",
        "realtime-gateway/realtime_gateway/signatures.py",
        ("tests/gateway/test_signature_edges.py",),
        conftest=False,
    ),
    Module(
        "idempotency",
        "realtime-gateway/realtime_gateway/idempotency.py",
        ("tests/gateway/test_idempotency.py", "tests/gateway/test_call_store.py"),
        plugins=("asyncio",),
    ),
    Module(
        "calls-turns",
        "realtime-gateway/realtime_gateway/calls.py",
        ("tests/gateway/test_call_store.py", "tests/gateway/test_idempotency.py"),
        only=("begin_turn", "first_time"),
        plugins=("asyncio",),
    ),
    Module(
        "auth",
        "shared/auth.py",
        ("tests/shared/test_auth.py", "tests/shared/test_service_token.py"),
        conftest=False,
    ),
    Module(
        "ratelimit",
        "shared/ratelimit.py",
        ("tests/shared/test_ratelimit.py",),
        plugins=("asyncio",),
    ),
    Module(
        "redaction",
        "shared/redaction.py",
        ("tests/shared/test_redaction.py",),
        conftest=False,
    ),
    Module(
        "addresses",
        "orchestrator/orchestrator/agents/addresses.py",
        ("tests/orchestrator/test_addresses.py",),
        plugins=("asyncio",),
        conftest=False,
    ),
)
BY_NAME = {m.name: m for m in MODULES}

# Survivors judged equivalent: (module name, line, operator) -> why no test can tell them apart;
# (module name, line, operator, text of the mutated line) where one line has two such sites.
# A survivor not listed here is reported as a missing test.
_ONLY_SPEED = "a short cut only: every size past 19 digits is not a card (no network is longer)"
EQUIVALENT: dict[tuple[str, int, str] | tuple[str, int, str, str], str] = {
    ("redaction", 129, "core/NumberReplacer", "> 8"): (
        "`d > 8` for `d > 9`: d was doubled, so it is even and never 9"
    ),
    ("redaction", 155, "core/NumberReplacer", "> 20"): (
        "`size > 20` for `size > 19`: size 20 is then tried, and no card network has 20 digits"
    ),
    ("redaction", 156, "core/ReplaceBreakWithContinue"): _ONLY_SPEED,
    ("redaction", 159, "core/ReplaceComparisonOperator_GtE_Eq"): _ONLY_SPEED,
    ("redaction", 160, "core/ReplaceBreakWithContinue"): _ONLY_SPEED,
    ("redaction", 157, "core/NumberReplacer", ">= 12"): (
        "`size >= 12` for `size >= 13`: no card network's number is shorter than 13 digits, "
        "so `is_card_number` refuses 12 anyway"
    ),
    ("redaction", 159, "core/NumberReplacer", ">= 20"): _ONLY_SPEED,
    ("redaction", 406, "core/NumberReplacer", ">= 2"): (
        "what is held always has a digit or digit word in it (nothing is held before one), so "
        "with two words one of the last two is one of them and the number is not over either way"
    ),
    ("redaction", 183, "core/NumberReplacer", ">= 12"): (
        "`total >= 12` for `total >= 13`: `_find_card` only tries 13 digits and more"
    ),
    ("auth", 79, "core/ReplaceBinaryOperator_BitOr_Add"): (
        "O_WRONLY, O_CREAT and O_EXCL are distinct bits: their sum is their union"
    ),
    ("auth", 52, "core/ReplaceTrueWithFalse", "slots=False"): (
        "slots only change how `Principal` is stored: frozen, it refuses every assignment "
        "either way, and nothing reads its `__dict__` or takes a weak reference to it"
    ),
    **{
        ("addresses", line, "core/ReplaceComparisonOperator_Is_Eq"): (
            "`classify` returns one of the three `AddressClass` members, whose values differ: "
            "`==` and `is` agree on every one"
        )
        for line in (91, 97, 99)
    },
    ("addresses", 54, "core/NumberReplacer", '"%", 2'): (
        "the first piece of a split is the text before the first `%`, whatever the maxsplit"
    ),
    ("ratelimit", 58, "core/ReplaceTrueWithFalse", "slots=False"): (
        "slots only change how `Decision` is stored: frozen, it refuses every assignment "
        "either way, and nothing reads its `__dict__` or takes a weak reference to it"
    ),
    ("ratelimit", 86, "core/NumberReplacer", "-1, stats.remaining"): (
        "`max(-1, remaining)`: `limits` never counts more hits than the limit under one key "
        "(a hit past it is refused, not stored, and the key holds the limit), so remaining is "
        "never below 0"
    ),
    ("calls-turns", 122, "core/NumberReplacer"): (
        "the `CallStore` protocol's default: never called (each store has its own default)"
    ),
}


# Survivors that are not equivalent but have no test, and why: still counted as survivors.
NO_TEST: dict[tuple[str, int, str] | tuple[str, int, str, str], str] = {
    ("calls-turns", 472, "core/NumberReplacer", "max( 2"): (
        "a key kept 2 ms instead of 1 for a TTL under 2 ms: Redis cannot be read within a "
        "millisecond without a race, and the value sent sits at a position in the Lua script's "
        "arguments a test would have to hard-code (`first_time`'s is checked on `SET`)"
    ),
    ("redaction", 357, "core/NumberReplacer", "range( 3)"): (
        "a third pass would also redact a 3-4 digit number said after a second date after a "
        "card; a test of two passes would pin a result that redacting once more changes"
    ),
}


def _equivalence(module: str, line: int, operator: str, diff: str) -> str | None:
    """The reason a survivor is equivalent, if EQUIVALENT lists it."""
    return _lookup(EQUIVALENT, module, line, operator, diff)


def _lookup(
    table: dict[tuple[str, int, str] | tuple[str, int, str, str], str],
    module: str,
    line: int,
    operator: str,
    diff: str,
) -> str | None:
    added = "\n".join(ln for ln in diff.splitlines() if ln.startswith("+"))
    for key, reason in table.items():
        if key[:3] == (module, line, operator) and (len(key) == 3 or key[3] in added):
            return reason
    return None


# Mutants inside a type annotation are not run: in a module with `from __future__ import
# annotations` no annotation is evaluated, so no input can tell them apart (they count as
# equivalent, and the report says how many).
Span = tuple[tuple[int, int], tuple[int, int]]
ANNOTATION_REASON = "inside a type annotation, which is never evaluated (postponed annotations)"


def _annotation_spans(path: Path) -> list[Span]:
    """(start, end) positions, (line, column) as cosmic-ray gives them, of every annotation."""
    tree = ast.parse(path.read_text())
    postponed = any(
        isinstance(node, ast.ImportFrom)
        and node.module == "__future__"
        and any(a.name == "annotations" for a in node.names)
        for node in tree.body
    )
    if not postponed:
        return []
    found: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.arg | ast.AnnAssign) and node.annotation is not None:
            found.append(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.returns:
            found.append(node.returns)
    return [
        ((a.lineno, a.col_offset), (a.end_lineno or a.lineno, a.end_col_offset or 0)) for a in found
    ]


def _in_annotation(spec: MutationSpec, spans: list[Span]) -> bool:
    where = (tuple(spec.start_pos), tuple(spec.end_pos))
    return any(start <= where[0] and where[1] <= end for start, end in spans)


def _copy_tree(dest: Path) -> None:
    """The working tree as git sees it (tracked + untracked-not-ignored files), into dest."""
    git = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    files = subprocess.run(  # noqa: S603
        git,
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for raw in files:
        if not raw:
            continue
        rel = raw.decode()
        src = ROOT / rel
        if not src.is_file():  # deleted in the working tree
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)


# Written into each copy as sitecustomize.py, so every Python process a test run starts loads it.
# Why PYTHONPATH alone is not enough: pytest puts tests/ first on sys.path, so in tests/shared/
# the name `shared` is the test folder (it has an __init__.py) and `shared.redaction` is then
# found by the editable finder, i.e. in /work/main. This finder, first on sys.meta_path, serves
# the module under mutation from the copy whatever `shared` turned out to be.
_PIN = """
import importlib.util, os, sys

class _Pin:
    name, path = os.environ["MUTATE_PIN"].split("=", 1)

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname != cls.name:
            return None
        return importlib.util.spec_from_file_location(fullname, cls.path)

if os.environ.get("MUTATE_PIN"):
    sys.meta_path.insert(0, _Pin)
"""

_PROBE = """
import importlib, os

def test_mutated_file_is_imported():
    name, path = os.environ["MUTATE_PIN"].split("=", 1)
    assert importlib.import_module(name).__file__ == path
"""


def _dotted(module: Module) -> str:
    dotted = module.path.removesuffix(".py")
    for prefix in ("orchestrator/", "realtime-gateway/"):
        dotted = dotted.removeprefix(prefix)
    return dotted.replace("/", ".")


def _pythonpath(copy: Path) -> str:
    return os.pathsep.join(str(copy / p) for p in ("orchestrator", "realtime-gateway", "."))


def _plugin_options(module: Module) -> list[str]:
    """`-p no:<name>` for every installed pytest plugin the module's tests do not use."""
    keep = {"timeout", *module.plugins}
    names = sorted({ep.name for ep in entry_points(group="pytest11")} - keep)
    return [*(f"-pno:{name}" for name in names), *([] if module.conftest else ["--noconftest"])]


def _test_command(copy: Path, module: Module) -> str:
    # `env -C` runs pytest in the copy (cosmic-ray starts the command with no cwd of its own).
    args = [
        "env",
        "-C",
        str(copy),
        f"PYTHONPATH={_pythonpath(copy)}",
        f"MUTATE_PIN={_dotted(module)}={copy / module.path}",
        sys.executable,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=--strict-markers",
        *_plugin_options(module),
        *module.tests,
    ]
    return shlex.join(args)


def _check_import(copy: Path, module: Module) -> None:
    """The copy's file, not /work/main's, is what a test in the copy imports."""
    probe = copy / Path(module.tests[0]).parent / "test_zz_mutate_probe.py"
    probe.write_text(_PROBE)
    command = shlex.split(_test_command(copy, module))
    command[-len(module.tests) :] = [str(probe.relative_to(copy))]
    done = subprocess.run(command, capture_output=True, text=True)  # noqa: S603
    probe.unlink()
    if done.returncode != 0:
        sys.stdout.write(done.stdout[-3000:])
        raise SystemExit(f"{module.name}: the tests would not import the copy's file")


def run_module(module: Module, jobs: int, workdir: Path) -> Path:
    db_path = STATE / f"{module.name}.sqlite"
    db_path.parent.mkdir(parents=True, exist_ok=True)
    copies = []
    for i in range(jobs):
        copy = workdir / f"{module.name}-{i}"
        _copy_tree(copy)
        (copy / "sitecustomize.py").write_text(_PIN)
        copies.append(copy)
    _check_import(copies[0], module)

    # The baseline: the tests must pass unmutated, or every mutant would count as killed.
    started = time.monotonic()
    base = subprocess.run(  # noqa: S603
        shlex.split(_test_command(copies[0], module)), capture_output=True
    )
    baseline_s = time.monotonic() - started
    if base.returncode != 0:
        sys.stdout.write(base.stdout.decode()[-4000:])
        raise SystemExit(f"{module.name}: its tests fail unmutated")

    with use_db(str(db_path), WorkDB.Mode.create) as db:
        cr_init([copies[0] / module.path], db, {})
        pending = list(db.pending_work_items)
        todo = []
        seen = set()
        annotations = _annotation_spans(ROOT / module.path)
        in_annotations = 0

        # In the file's order, so the mutant kept at a site is the same on every run (job ids
        # are random): the first occurrence cosmic-ray makes there.
        def order(item: WorkItem) -> tuple[str, tuple[int, int], int]:
            (spec,) = item.mutations
            return (spec.operator_name, tuple(spec.start_pos), spec.occurrence)

        for item in sorted(pending, key=order):
            (spec,) = item.mutations
            site = (spec.operator_name.split("_")[0], spec.start_pos, spec.end_pos)
            redundant = ONE_PER_SITE and site in seen
            seen.add(site)
            if redundant or (module.only and spec.definition_name not in module.only):
                db.set_result(item.job_id, WorkResult(worker_outcome=WorkerOutcome.SKIPPED))
            elif _in_annotation(spec, annotations):
                in_annotations += 1
                db.set_result(item.job_id, WorkResult(worker_outcome=WorkerOutcome.SKIPPED))
            else:
                todo.append(item)
        print(
            f"[{module.name}] {len(todo)} mutants ({len(pending) - len(todo)} skipped: "
            f"out of scope or another at the same site; {in_annotations} in annotations, "
            f"equivalent), baseline {baseline_s:.1f}s, "
            f"{jobs} workers",
            flush=True,
        )

        free = list(copies)

        def one(item):  # each worker holds one copy for the length of one mutant
            copy = free.pop()
            try:
                (spec,) = item.mutations
                local = MutationSpec(
                    module_path=copy / module.path,
                    operator_name=spec.operator_name,
                    occurrence=spec.occurrence,
                    start_pos=spec.start_pos,
                    end_pos=spec.end_pos,
                    operator_args=spec.operator_args,
                    definition_name=spec.definition_name,
                )
                return item, mutate_and_test([local], _test_command(copy, module), TIMEOUT_S)
            finally:
                free.append(copy)

        done = 0
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for item, result in pool.map(one, todo):
                db.set_result(item.job_id, result)
                done += 1
                if result.test_outcome == TestOutcome.SURVIVED:
                    (spec,) = item.mutations
                    where = f"line {spec.start_pos[0]} {spec.operator_name}"
                    print(f"[{module.name}] survived: {where}", flush=True)
                if done % 20 == 0:
                    print(f"[{module.name}] {done}/{len(todo)}", flush=True)
    # The copies must still hold the original file: a mutation left applied is a bug.
    for copy in copies:
        if (copy / module.path).read_bytes() != (ROOT / module.path).read_bytes():
            raise SystemExit(f"{module.name}: a mutation was left applied in {copy}")
    meta = {
        "seconds": round(time.monotonic() - started, 1),
        "baseline_s": round(baseline_s, 1),
        "in_annotations": in_annotations,
    }
    (STATE / f"{module.name}.json").write_text(json.dumps(meta))
    return db_path


TOTAL = STATE / "total.json"


def _total_line() -> str:
    if not TOTAL.exists():
        return "No full run (every module in one `make mutate`) recorded yet.\n\n"
    total = json.loads(TOTAL.read_text())
    return (
        f"Last full run (every module): {total['seconds'] / 60:.1f} min wall time with "
        f"{total['jobs']} workers (`MUTATE_JOBS`) on {total['cpus']} CPUs shared with other "
        f"work, finished {total['finished']}; the run column is each module's own time.\n\n"
    )


def write_report() -> None:
    rows = []
    details = []
    for module in MODULES:
        db_path = STATE / f"{module.name}.sqlite"
        if not db_path.exists():
            rows.append(f"| `{module.name}` | `{module.path}` | not run | | | | |")
            continue
        meta_path = STATE / f"{module.name}.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        killed = survived_missing = other = 0
        equivalent = meta.get("in_annotations", 0)
        surv_lines = []
        if equivalent:
            surv_lines.append(f"- {equivalent} mutant(s) not run, equivalent: {ANNOTATION_REASON}")
        with use_db(str(db_path), WorkDB.Mode.open) as db:
            for item, result in db.completed_work_items:
                if result.worker_outcome == WorkerOutcome.SKIPPED:
                    continue
                (spec,) = item.mutations
                if result.worker_outcome != WorkerOutcome.NORMAL:
                    other += 1
                    continue
                if result.test_outcome != TestOutcome.SURVIVED:
                    killed += 1
                    continue
                line = spec.start_pos[0]
                diff = "\n".join(
                    ln
                    for ln in (result.diff or "").splitlines()
                    if ln[:1] in "+-" and ln[:3] not in ("+++", "---")
                )
                reason = _equivalence(module.name, line, spec.operator_name, diff)
                if reason:
                    equivalent += 1
                else:
                    survived_missing += 1
                verdict = f"equivalent: {reason}" if reason else "**missing test**"
                why_not = _lookup(NO_TEST, module.name, line, spec.operator_name, diff)
                if why_not and not reason:
                    verdict += f" (none written: {why_not})"
                surv_lines.append(
                    f"- line {line}, `{spec.operator_name}` in `{spec.definition_name}`: "
                    f"{verdict}\n\n  ```diff\n"
                    + "\n".join(f"  {d}" for d in diff.splitlines())
                    + "\n  ```"
                )
            pending = db.num_work_items - db.num_results
        scored = killed + survived_missing
        score = f"{100 * killed / scored:.1f} %" if scored else "-"
        state = "complete" if pending == 0 else f"{pending} not run"
        rows.append(
            f"| `{module.name}` | `{module.path}` | {score} | {killed} | {survived_missing} "
            f"| {equivalent} | {other} | {meta.get('seconds', '?')} s, {state} |"
        )
        tests = ", ".join(f"`{t}`" for t in module.tests)
        scope = f" (only `{'`, `'.join(module.only)}`)" if module.only else ""
        details.append(
            f"### `{module.name}`{scope}\n\nTests: {tests}\n\n"
            + ("\n".join(surv_lines) if surv_lines else "No survivors.")
            + "\n"
        )
    text = (
        "# Mutation report\n\n"
        "Generated by `make mutate` (`scripts/mutate.py`, cosmic-ray, every core operator);\n"
        "do not edit by hand. Score = killed / (killed + survivors not judged equivalent).\n"
        + (
            "One mutant per site and operator family (`MUTATE_ALL=1` for all). "
            if ONE_PER_SITE
            else ""
        )
        + "A mutant whose "
        f"tests hang past {TIMEOUT_S:.0f} s counts as killed. One module: "
        "`make mutate MODULES=redaction`.\n\n"
        + _total_line()
        + "| module | file | score | killed | survived (missing test) | equivalent | "
        "error/no test | run |\n|---|---|---|---|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n\n## Survivors\n\n"
        + "\n".join(details)
    )
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(text)
    print(f"report: {REPORT.relative_to(ROOT)}")


def main() -> None:
    # A stop (timeout, Ctrl-C) unwinds: the mutation is restored and the copies removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="module names (default: all)")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    if args.list:
        for m in MODULES:
            print(f"{m.name}: {m.path} <- {' '.join(m.tests)}")
        return
    unknown = [n for n in args.modules if n not in BY_NAME]
    if unknown:
        raise SystemExit(f"unknown module(s) {unknown}; known: {list(BY_NAME)}")
    if not args.report_only:
        jobs = int(os.environ.get("MUTATE_JOBS") or min(4, os.cpu_count() or 1))
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="vao-mutate-") as tmp:
            for name in args.modules or list(BY_NAME):
                run_module(BY_NAME[name], jobs, Path(tmp))
                write_report()
        if set(args.modules or BY_NAME) == set(BY_NAME):
            total = {
                "seconds": round(time.monotonic() - started, 1),
                "jobs": jobs,
                "cpus": os.cpu_count(),
                "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            }
            TOTAL.write_text(json.dumps(total))
    write_report()


if __name__ == "__main__":
    main()
