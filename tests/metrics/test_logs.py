"""Logs: one JSON object per line on stdout, phone numbers masked and tokens dropped, and the
spec's log search (`docker-compose logs | grep ERROR`) finds the errors."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.metrics.conftest import ROOT

SCRIPT = """
import logging
from shared.logging import setup_logging
setup_logging("realtime-gateway")
log = logging.getLogger("realtime_gateway.test")
log.info("call greeted", extra={"caller": "+15550001111"})
log.error("orchestrator refused the call for +15550001111",
          extra={"authorization": "Bearer abc.def.ghi"})
"""


def test_logs_are_json_lines_on_stdout_and_grep_error_finds_errors() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, check=True
    )
    lines = proc.stdout.splitlines()
    records = [json.loads(line) for line in lines]  # every line is JSON
    assert [r["level"] for r in records] == ["INFO", "ERROR"]
    assert all(r["service"] == "realtime-gateway" for r in records)
    errors = [line for line in lines if "ERROR" in line]  # docker-compose logs | grep ERROR
    assert len(errors) == 1 and "orchestrator refused" in errors[0]
    assert "15550001111" not in proc.stdout and "abc.def.ghi" not in proc.stdout
    assert records[0]["caller"] == "+1555***1111"
    assert proc.stderr == ""
