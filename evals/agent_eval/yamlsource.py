"""YAML read with the line of every value, so a bad scenario is refused naming its line.

PyYAML's composer keeps each node's position; the usual loaders throw it away. `load` builds
plain Python values (dicts, lists, strings, numbers, booleans, None) from the node tree with the
safe constructors and records, for each path (`("calls", 0, "turns", 1, "say")`), the 1-based
line it starts on. `Source.line_of` gives the line of a path, or of its nearest parent present
(a missing field is reported at the mapping that lacks it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PathKey = tuple[str | int, ...]


class SourceError(ValueError):
    """A file that is not YAML at all, with the line the parser stopped at."""

    def __init__(self, path: Path, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path, self.line, self.message = path, line, message


@dataclass
class Source:
    path: Path
    data: Any
    lines: dict[PathKey, int] = field(default_factory=dict)

    def line_of(self, where: Sequence[str | int]) -> int:
        key = tuple(where)
        while key and key not in self.lines:
            key = key[:-1]
        return self.lines.get(key, 1)


def load(path: Path) -> Source:
    return loads(path.read_text(encoding="utf-8"), path)


def loads(text: str, path: Path | str = "<text>") -> Source:
    """The values of one YAML document, with their lines; `SourceError` if it is not YAML."""
    path = Path(path)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise SourceError(path, line, f"not valid YAML: {exc.problem or exc}") from None
    source = Source(path, None)
    if node is not None:
        source.data = _build(node, (), source.lines)
    return source


_SCALARS = yaml.SafeLoader("")  # only its constructors are used (resolved scalar values)


def _build(node: yaml.Node, where: PathKey, lines: dict[PathKey, int]) -> Any:
    lines[where] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _build(key_node, (*where, "<key>"), {})
            if not isinstance(key, str | int | float | bool) and key is not None:
                key = str(key)
            child = (*where, str(key))
            lines[child] = key_node.start_mark.line + 1
            out[key] = _build(value_node, child, lines)
            lines[child] = key_node.start_mark.line + 1  # the key's line, not its value's
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*where, i), lines) for i, item in enumerate(node.value)]
    return _SCALARS.construct_object(node, deep=True)
