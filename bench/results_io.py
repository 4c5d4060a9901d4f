"""Results of the worker processes go through a file named in their spec, never through stdout:
an event loop may leave stdout non-blocking, and a large result then arrives cut short."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def write_result(spec: dict[str, Any], result: Any) -> None:
    out = spec.get("out")
    if out:
        Path(out).write_text(json.dumps(result))
    else:
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


def read_result(path: Path) -> Any:
    return json.loads(path.read_text())
