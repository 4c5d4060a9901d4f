"""`python -m bench --smoke` end to end, so the benchmark code cannot rot.

No timing is asserted (the machine is shared; `make bench` reports timings against targets):
only that every scenario ran and reported numbers of the right kind.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.__main__ import SCENARIOS

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "target check" in proc.stdout
    return dict(json.loads(out.read_text()))


def test_every_scenario_ran_without_error_and_reports_its_duration(smoke: dict[str, Any]) -> None:
    scenarios = smoke["scenarios"]
    for name in SCENARIOS:
        assert name in scenarios, name
        block = scenarios[name]
        assert not str(block.get("status", "")).startswith("error"), (name, block)
        assert is_number(block["duration_s"]), name


def test_floor_and_turns_report_numbers_at_every_level(smoke: dict[str, Any]) -> None:
    levels = [str(level) for level in smoke["levels"]]
    blocks = [smoke["scenarios"]["floor"]]
    blocks += [smoke["scenarios"]["turn"][p] for p in ("generic-http", "twilio")]
    for block in blocks:
        assert sorted(block["levels"]) == sorted(levels)
        for level in levels:
            r = block["levels"][level]
            for key in ("p50", "p99", "max", "throughput"):
                assert is_number(r[key]), (level, key, r)
            assert r["errors"] == 0, r["error_samples"]
    for provider in ("generic-http", "twilio"):
        for level in levels:
            r = smoke["scenarios"]["turn"][provider]["levels"][level]
            assert is_number(r["ratio_p50"])
            # both services' event_loop_lag_seconds were read from /metrics around the run
            for service in ("gateway", "orchestrator"):
                blocked = r["loop_blocked"][service]
                assert blocked["ticks"] > 0 and 0 <= blocked["over_100ms"] <= blocked["ticks"]


def test_memory_startup_and_rss_report_numbers(smoke: dict[str, Any]) -> None:
    s = smoke["scenarios"]
    for key in ("recall_p50", "recall_p99", "recent_p50", "chroma_p50", "store_write_p50"):
        assert is_number(s["memory"][key]), key
    assert s["memory"]["memories"] > 0 and s["memory"]["recall_hits_per_query"] > 0
    for svc in ("gateway", "orchestrator"):
        assert is_number(s["startup"][svc]["median_s"])
        assert is_number(s["rss"][svc]["idle_mb"]) and is_number(s["rss"][svc]["load_mb"])


def test_stream_and_fanout_report_numbers_or_say_why_not(smoke: dict[str, Any]) -> None:
    stream = smoke["scenarios"]["stream"]
    if stream["status"] == "ok":
        assert is_number(stream["added_p50"]) and is_number(stream["added_p99"])
    else:
        assert stream["status"].startswith("n/a (")
    fanout = smoke["scenarios"]["fanout"]
    if fanout["status"] == "ok":
        for mode in ("all", "per_call"):
            assert is_number(fanout[mode]["p99"]) and is_number(fanout[mode]["rate_achieved"])
            assert fanout[mode]["delivered_ratio"] > 0
    else:
        assert fanout["status"].startswith("n/a (")


def test_call_store_round_trips_are_counted_per_start_turn_and_end(
    smoke: dict[str, Any],
) -> None:
    """The gateway on Redis counts its call-store requests; each phase of the calls made some.
    (The <= 3 per turn target is `make bench`'s to report, not asserted here.)"""
    store = smoke["scenarios"]["callstore"]
    if str(store["status"]).startswith("n/a (no Redis"):
        # no Redis at BENCH_REDIS_URL: skipped locally, a failure in CI (as every server test)
        assert os.environ.get("CI") != "true", store["status"]
        pytest.skip(store["status"])
    assert store["status"] == "ok", store
    for provider in ("generic-http", "twilio"):
        run = store[provider]
        assert run["status"] == "ok" and run["errors"] == 0, run
        assert run["round_trips"]["idle"] == 0, run
        for key in ("per_call_start", "per_turn", "per_call_end", "per_turn_all_in"):
            assert is_number(run[key]) and run[key] > 0, (provider, key, run)
    figures = {c["figure"]: c for c in smoke["checks"]}
    for provider in ("generic-http", "twilio"):
        check = figures[f"call-store round trips per turn (Redis, {provider})"]
        assert check["value"] == store[provider]["per_turn"], check


def test_relay_reports_ours_webhook_mode_and_the_peer_on_the_timed_fake_llm(
    tmp_path: Path,
) -> None:
    """ConversationRelay at one call for a couple of seconds (its own run, ~25 s: the full
    smoke run leaves it out): ours streams (first token -> first frame, prompt -> first
    frame), <Gather> answers, the peer ran or says why not, the floor (a bare relay) streams;
    CPU per turn is read over the measured window, the whole run's beside it."""
    out = tmp_path / "relay.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--only", "relay", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    relay = json.loads(out.read_text())["scenarios"]["relay"]
    assert relay["status"] == "ok", relay
    assert relay["fake_llm"] == {"first_token_ms": 300, "token_ms": 25}
    ours = relay["relay"]["1"]
    assert ours["unmatched"] == 0 and ours["degraded"] == 0, ours
    assert is_number(ours["added"]["p50"]) and is_number(ours["first_word"]["p50"]), ours
    assert ours["first_word"]["p50"] >= 300  # the model's first token came after 300 ms
    assert is_number(ours["cpu_ms_per_turn_total"])
    assert ours["window_prompts"] > 0 and is_number(ours["cpu_ms_per_turn_run"]["gateway"]), ours
    floor = relay["floor"]["levels"]["1"]
    assert floor["errors"] == 0 and floor["unmatched"] == 0, floor
    assert is_number(floor["added"]["p50"]) and floor["first_word"]["p50"] >= 300, floor
    gather = relay["gather"]["1"]
    assert gather["errors"] == 0 and gather["first_word"]["p50"] >= 300, gather
    peer = relay["peer"]
    if peer["status"] == "ok":
        theirs = peer["levels"]["1"]
        assert is_number(theirs["added"]["p50"]) and theirs["errors"] == 0, theirs
        assert is_number(relay["vs_peer"]["1"]["cpu_ratio"])
    else:
        assert peer["status"].startswith("n/a ("), peer


def test_every_target_is_checked_with_a_value_or_a_reason(smoke: dict[str, Any]) -> None:
    figures = [c["figure"] for c in smoke["checks"]]
    assert len(figures) == 17, figures
    for c in smoke["checks"]:
        if c["value"] is None:
            assert c["note"], c  # not measured, or nothing answered in time: it says which
        else:
            assert is_number(c["value"]) and isinstance(c["met"], bool), c


def test_turns_run_with_the_orchestrator_on_a_chroma_server(tmp_path: Path) -> None:
    """`BENCH_CHROMA=server`: the bench starts `chroma run` and the orchestrator uses it."""
    out = tmp_path / "server.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--only", "turn", "--json", str(out)],
        cwd=ROOT,
        env={**os.environ, "BENCH_CHROMA": "server"},
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["chroma"] == "server (chroma run)"
    for provider in ("generic-http", "twilio"):
        for r in result["scenarios"]["turn"][provider]["levels"].values():
            assert is_number(r["p50"]) and r["errors"] == 0, r["error_samples"]
    assert (out.with_name("server-logs") / "chroma.log").stat().st_size > 0  # the server ran
    # and the orchestrator kept its memories and knowledge there
    made = result["chroma_server_collections"]
    assert made and any("memor" in name for name in made), made
