"""`--profile`: py-spy samples each service while a load runs; a short summary of where the time
went (self and inclusive, by function) lands beside the JSON, the raw stacks too (load them in
speedscope or `flamegraph.pl`). py-spy is not a dependency: `pip install py-spy` to use this.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.services import ServiceProcess

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str | None:
    """`PY_SPY=/path/to/py-spy`, else next to this Python, else on PATH."""
    configured = os.environ.get("PY_SPY")
    if configured and Path(configured).exists():
        return configured
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def short(frame: str) -> str:
    """`func (path/to/file.py:12)` -> `func (pkg/file.py)`: site-packages paths trimmed."""
    m = FRAME.match(frame)
    if not m:
        return frame
    path = m.group("file")
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m.group('func')} ({path})"


def summarize(raw: Path, top: int = 25) -> dict[str, Any]:
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [short(f) for f in stack.split(";") if f and not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread ")]
        if not frames:
            continue
        total += count
        self_counts[frames[-1]] += count
        for f in set(frames):
            incl_counts[f] += count
    return {
        "samples": total,
        "self": [(f, round(100 * c / total, 1)) for f, c in self_counts.most_common(top)],
        "inclusive": [(f, round(100 * c / total, 1)) for f, c in incl_counts.most_common(top * 2)],
    }


@contextmanager
def profiled(
    services: dict[str, ServiceProcess],
    out_dir: Path,
    label: str,
    duration_s: float,
    sink: dict[str, Any],
) -> Iterator[None]:
    tool = py_spy()
    if tool is None:
        sink[label] = "py-spy not installed (pip install py-spy)"
        yield
        return
    procs = {}
    for name, svc in services.items():
        raw = out_dir / f"profile-{label}-{name}.txt"
        cmd = [tool, "record", "-p", str(svc.proc.pid), "-d", str(int(duration_s)), "-r", "250"]
        cmd += ["-f", "raw", "-o", str(raw), "--nonblocking", "--subprocesses"]
        procs[name] = (
            subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE),
            raw,
        )
    try:
        yield
    finally:
        result: dict[str, Any] = {}
        for name, (proc, raw) in procs.items():
            try:
                _, err = proc.communicate(timeout=duration_s + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            if raw.exists():
                summary = summarize(raw)
                result[name] = summary
                lines = [f"{label} / {name}: {summary['samples']} samples", "", "self %:"]
                lines += [f"  {pct:5.1f}  {f}" for f, pct in summary["self"]]
                lines += ["", "inclusive %:"]
                lines += [f"  {pct:5.1f}  {f}" for f, pct in summary["inclusive"]]
                (out_dir / f"profile-{label}-{name}.summary.txt").write_text("\n".join(lines))
            else:
                result[name] = f"py-spy failed: {err.decode()[-300:]}"
        sink[label] = result
