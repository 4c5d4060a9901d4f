"""JUnit XML for CI: a testsuite per run, a testcase per call (each repeat its own), a
`<failure>` with the same text the terminal shows, a `<skipped>` with its reason (a rubric or a
simulated caller without a model key)."""

from __future__ import annotations

import xml.etree.ElementTree as ET  # we write XML here, never parse it
from collections.abc import Sequence
from pathlib import Path

from agent_eval.reports.table import failure_text
from agent_eval.transcript import ScenarioRun


def junit_xml(runs: Sequence[ScenarioRun]) -> str:
    suite = ET.Element("testsuite", name="agent-eval")
    counts = {"tests": 0, "failures": 0, "skipped": 0}
    total_s = 0.0
    for run in runs:
        suffix = f" (run {run.repeat + 1})" if run.repeat else ""
        calls = run.calls or []
        if run.error or not calls:
            case = _case(suite, run, f"{run.scenario.name}{suffix}", run.duration_s)
            ET.SubElement(case, "failure", message="not run").text = run.error or "no call placed"
            counts["tests"] += 1
            counts["failures"] += 1
            continue
        for call in calls:
            name = f"{run.scenario.name} call {call.index + 1}{suffix}"
            case = _case(suite, run, name, run.duration_s / len(calls))
            counts["tests"] += 1
            failures = [f for f in run.failures() if f[0] is call]
            if failures:
                counts["failures"] += 1
                text = "\n\n".join(failure_text(run, *f) for f in failures)
                first = text.splitlines()[0]
                ET.SubElement(case, "failure", message=first).text = text
            elif call.status == "skip":
                counts["skipped"] += 1
                reasons = [c.detail for t in call.turns for c in t.checks if c.status == "skip"]
                reasons += [c.detail for c in call.checks if c.status == "skip"]
                ET.SubElement(case, "skipped", message=reasons[0] if reasons else "skipped")
        total_s += run.duration_s
    for key, value in counts.items():
        suite.set(key, str(value))
    suite.set("errors", "0")
    suite.set("time", f"{total_s:.3f}")
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def _case(suite: ET.Element, run: ScenarioRun, name: str, seconds: float) -> ET.Element:
    return ET.SubElement(
        suite,
        "testcase",
        classname=f"eval.{run.scenario.provider}",
        name=name,
        file=str(run.scenario.path),
        time=f"{seconds:.3f}",
    )


def write_junit(runs: Sequence[ScenarioRun], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(junit_xml(runs), encoding="utf-8")
