"""The orchestrator's packages are layered (the `orchestrator` package docstring): every import of
every module, lazy and `TYPE_CHECKING` ones included, goes to its own package or to a layer below,
and the package graph has no cycle. Read from the source with `ast`, nothing is imported."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from orchestrator import config

ROOT = Path(config.__file__).parent  # the package, whatever `orchestrator` names on sys.path
PACKAGE = "orchestrator"

# Bottom to top, as in orchestrator/__init__.py. A unit is a package or a top-level module.
LAYERS: list[set[str]] = [
    {"config", "version", "metrics", "health"},
    {"store"},
    {"turns", "memory"},
    {"llm"},
    {"agents"},
    {"services", "demo"},
    {"security", "openapi", "deps", "state"},
    {"api"},
    {"main"},
    {"__main__"},
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


@dataclass(frozen=True, slots=True)
class Import:
    path: Path
    line: int
    source: str  # the importing unit
    target: str  # the imported unit

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT.parent)}:{self.line}: {self.source} -> {self.target}"


def module_name(path: Path) -> str:
    parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str | None:
    """`orchestrator.agents.graph` -> `agents`; the root package itself -> None."""
    parts = module.split(".")
    return parts[1] if parts[0] == PACKAGE and len(parts) > 1 else None


def is_module(module: str) -> bool:
    relative = Path(*module.split(".")[1:])
    return (ROOT / relative).with_suffix(".py").is_file() or (ROOT / relative).is_dir()


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:  # `from orchestrator.llm import calls` imports a module
                full = f"{base}.{alias.name}"
                yield node.lineno, full if is_module(full) else base


def imports() -> list[Import]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        source = unit_of(module_name(path))
        for line, module in imported_modules(path):
            target = unit_of(module)
            if module.split(".")[0] == PACKAGE and source and target and target != source:
                found.append(Import(path, line, source, target))
    return list(dict.fromkeys(found))  # `from x import a, b` once


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for imp in imports():
        graph.setdefault(imp.source, set()).add(imp.target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path (first node repeated at the end), or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        for target in sorted(graph.get(node, ())):
            if cycle := visit(target, [*path, node]):
                return cycle
        done.add(node)
        return None

    for start in sorted(graph):
        if cycle := visit(start, []):
            return cycle
    return None


def test_every_package_and_top_level_module_has_a_layer() -> None:
    units = {unit_of(module_name(p)) for p in ROOT.rglob("*.py")} - {None}
    assert units - RANK.keys() == set(), "place these in LAYERS and the package docstring"


def test_every_import_goes_to_its_own_package_or_a_lower_layer() -> None:
    upward = [str(i) for i in imports() if RANK[i.target] >= RANK[i.source]]
    assert upward == [], "imports against the layering:\n" + "\n".join(upward)


def test_the_packages_import_each_other_in_no_cycle() -> None:
    assert find_cycle(package_graph()) is None


def test_the_checker_sees_lazy_imports_and_finds_cycles() -> None:
    # build_responder imports the agent graph inside the function, on purpose (chromadb).
    assert "agents" in package_graph()["services"]
    looped = {"agents": {"llm"}, "llm": {"memory"}, "memory": {"agents"}, "store": set()}
    assert find_cycle(looped) == ["agents", "llm", "memory", "agents"]
