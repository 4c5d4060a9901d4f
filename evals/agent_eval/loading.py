"""Finding and loading scenario files: a folder (every `*.yaml` / `*.yml` in it, recursively,
in name order) or single files. Every file is checked before anything runs; all the refused
files are reported together (`InvalidScenarios`), so one run shows every mistake."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from agent_eval.schema import Scenario, ScenarioError, parse
from agent_eval.yamlsource import SourceError, load

SUFFIXES = (".yaml", ".yml")


class InvalidScenarios(ValueError):
    def __init__(self, errors: list[ScenarioError | SourceError]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


def scenario_files(paths: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such scenario file or folder")
    return files


def load_file(path: Path) -> Scenario:
    """One scenario, or `ScenarioError` / `SourceError` naming file, line and field."""
    return parse(load(path))


def load_scenarios(paths: Iterable[Path]) -> list[Scenario]:
    files = scenario_files(paths)
    if not files:
        raise FileNotFoundError("no scenario files (*.yaml) found")
    scenarios: list[Scenario] = []
    errors: list[ScenarioError | SourceError] = []
    seen: dict[str, Path] = {}
    for path in files:
        try:
            scenario = load_file(path)
        except (ScenarioError, SourceError) as exc:
            errors.append(exc)
            continue
        if scenario.name in seen:
            errors.append(
                ScenarioError(path, 1, "name", f"'{scenario.name}' is also {seen[scenario.name]}'s")
            )
            continue
        seen[scenario.name] = path
        scenarios.append(scenario)
    if errors:
        raise InvalidScenarios(errors)
    return scenarios
