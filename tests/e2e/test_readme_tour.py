"""The README's 60-second tour works as written: its shell block, run verbatim with bash against
both services started on their development defaults (no GENERIC_HTTP_SECRET, no JWT_SECRET)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.services import ROOT, Service, run_service

pytestmark = pytest.mark.slow


def tour_script() -> str:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- tour:begin -->\s*```bash\n(.*?)```\s*<!-- tour:end -->", readme, re.S)
    assert block, "README.md lost its tour block"
    return block.group(1)


@pytest.fixture(scope="module")
def dev_services(
    pg_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, Service]]:
    data_dir = tmp_path_factory.mktemp("tour-data")
    env = {"DATA_DIR": str(data_dir), "JWT_SECRET": "", "GENERIC_HTTP_SECRET": ""}
    with run_service(
        "orchestrator", "orchestrator.main:create_app", {**env, "DATABASE_URL": pg_dsn}, data_dir
    ) as orch:
        gw_env = {**env, "ORCHESTRATOR_URL": orch.url, "VOICE_PROVIDER": "generic-http"}
        with run_service("gateway", "realtime_gateway.app:create_app", gw_env, data_dir) as gw:
            yield data_dir, gw


def test_readme_tour_places_a_call_with_curl(dev_services: tuple[Path, Service]) -> None:
    data_dir, gw = dev_services
    env = {k: v for k, v in os.environ.items() if k not in ("JWT_SECRET", "PORT")}
    env.update({"GW": gw.url, "DATA_DIR": str(data_dir)})
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", tour_script()],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    greeting, turn1, turn2, ended, status = lines
    assert [a["type"] for a in greeting["actions"]] == ["say", "gather"]
    assert turn1["actions"][-1]["type"] == "gather"
    assert turn2["actions"][-1]["type"] == "hangup"  # "Thanks, goodbye"
    assert ended == {"actions": []}
    assert status["call_id"] == "demo-1"
    assert status["status"] == "completed"
    assert status["turns"] == 2
