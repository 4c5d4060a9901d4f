"""deploy/monitoring: the Prometheus scrape config, alert rules and Grafana dashboard use only
metrics of the contract (metrics.yml), scrape what the compose stack runs, and cover every
metric the issue asks for."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from ops.conftest import ROOT

MON = ROOT / "deploy" / "monitoring"
SPEC_BUCKETS = [0.1, 0.3, 0.5, 0.7, 1, 3, 5, 7, 10]
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan",
}  # fmt: skip
BUILTIN_SERIES = {"up"}
BUILTIN_LABELS = {"le", "job", "instance"}


@pytest.fixture(scope="module")
def contract() -> dict[str, dict[str, Any]]:
    data = yaml.safe_load((MON / "metrics.yml").read_text())
    return {m["name"]: m for m in data["metrics"]}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((MON / "grafana-dashboard.json").read_text())
    return data


@pytest.fixture(scope="module")
def alerts() -> list[dict[str, Any]]:
    data = yaml.safe_load((MON / "prometheus-alerts.yml").read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def series_and_labels(expr: str) -> tuple[set[str], set[str]]:
    """Metric names and grouping/matcher labels a PromQL expression uses."""
    labels: set[str] = set()
    for group in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        labels |= {x.strip() for x in group.split(",") if x.strip()}
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        labels |= set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    bare = re.sub(r'"[^"]*"', "", expr)
    bare = re.sub(r"\{[^}]*\}", "", bare)
    bare = re.sub(r"\[[^\]]*\]", "", bare)
    bare = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", bare)
    bare = re.sub(r"\$\w+", "", bare)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare):
        rest = bare[match.end() :].lstrip()
        if rest.startswith("(") or match.group().lower() in PROMQL_WORDS:
            continue
        names.add(match.group())
    return names, labels


def base_metric(series: str, contract: dict[str, dict[str, Any]]) -> str | None:
    if series in contract or series in BUILTIN_SERIES:
        return series
    for suffix in ("_bucket", "_sum", "_count"):
        name = series.removesuffix(suffix)
        if name != series and contract.get(name, {}).get("type") == "histogram":
            return name
    return None


def dashboard_exprs(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            yield panel["title"], target["expr"]


def check_expr(where: str, expr: str, contract: dict[str, dict[str, Any]]) -> set[str]:
    names, labels = series_and_labels(expr)
    assert names, f"{where}: no metric in {expr!r}"
    used = set()
    for series in names:
        metric = base_metric(series, contract)
        assert metric, f"{where}: {series} is not in metrics.yml"
        used.add(metric)
    allowed = BUILTIN_LABELS | {
        label for m in used for label in contract.get(m, {}).get("labels", [])
    }
    assert labels <= allowed, f"{where}: labels {labels - allowed} are not on {used}"
    return used


def test_expression_parser_finds_metrics_and_labels() -> None:
    names, labels = series_and_labels(
        'histogram_quantile(0.95, sum by (le, stage) (rate(voice_x_bucket{job="a"}[5m]))) > 3'
    )
    assert names == {"voice_x_bucket"} and labels == {"le", "stage", "job"}


def test_contract_covers_what_the_issue_asks_for(contract: dict[str, dict[str, Any]]) -> None:
    http = contract["http_request_duration_seconds"]
    assert http["type"] == "histogram" and set(http["labels"]) == {"method", "route", "code"}
    assert set(SPEC_BUCKETS) <= set(http["buckets"])
    assert set(http["services"]) == {"realtime-gateway", "orchestrator"}
    assert contract["voice_active_calls"]["type"] == "gauge"
    assert contract["voice_turns_total"]["type"] == "counter"
    assert "stage" in contract["voice_turn_stage_duration_seconds"]["labels"]
    assert contract["voice_webhook_requests_total"]["labels"] == ["provider", "outcome"]
    assert contract["voice_orchestrator_errors_total"]["type"] == "counter"
    assert contract["voice_ws_clients"]["type"] == "gauge"
    for name, metric in contract.items():
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", name)
        assert (metric["type"] == "counter") == name.endswith("_total"), name
        if metric["type"] == "histogram":
            assert name.endswith("_seconds") and metric["buckets"] == sorted(metric["buckets"])
        assert metric["help"] and set(metric["services"]) <= {"realtime-gateway", "orchestrator"}


def test_dashboard_is_importable_and_uses_only_contract_metrics(
    dashboard: dict[str, Any], contract: dict[str, dict[str, Any]]
) -> None:
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    (ds_var,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    used: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${" + ds_var["name"] + "}"}
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        for target in panel["targets"]:
            used |= check_expr(panel["title"], target["expr"], contract)
    assert set(contract) <= used, f"metrics without a panel: {set(contract) - used}"


def test_dashboard_shows_latency_percentiles_per_stage_and_route(dashboard: dict[str, Any]) -> None:
    exprs = [expr for _, expr in dashboard_exprs(dashboard)]
    stage = [e for e in exprs if "voice_turn_stage_duration_seconds_bucket" in e]
    assert stage and all("histogram_quantile" in e and "stage" in e for e in stage)
    http = [e for e in exprs if "http_request_duration_seconds_bucket" in e]
    assert http and all("route" in e for e in http)
    quantiles = {
        float(q)
        for e in exprs
        if "voice_turn_duration_seconds_bucket" in e
        for q in re.findall(r"histogram_quantile\(([\d.]+)", e)
    }
    assert {0.5, 0.95, 0.99} <= quantiles


def test_alert_rules_are_well_formed(
    alerts: list[dict[str, Any]], contract: dict[str, dict[str, Any]]
) -> None:
    names = [rule["alert"] for rule in alerts]
    assert len(names) == len(set(names))
    for rule in alerts:
        check_expr(rule["alert"], rule["expr"], contract)
        assert re.fullmatch(r"\d+[smh]", rule["for"])
        assert rule["labels"]["severity"] in ("critical", "warning")
        assert rule["annotations"]["summary"]
        assert rule["expr"].count("(") == rule["expr"].count(")")
    assert {"GatewayDown", "OrchestratorDown"} <= set(names)


def test_prometheus_scrapes_every_app_service_the_stack_runs(
    compose_config: Callable[..., dict[str, Any]],
) -> None:
    config = yaml.safe_load((MON / "prometheus.yml").read_text())
    stack = compose_config("docker-compose.yml", "docker-compose.prod.yml",
                           env={"POSTGRES_PASSWORD": "x",
                                "PUBLIC_BASE_URL": "https://voice.example.com"})  # fmt: skip
    services = stack["services"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for job_name, service in (("realtime-gateway", "node-backend"),
                              ("orchestrator", "python-backend")):  # fmt: skip
        job = jobs[job_name]
        assert job["metrics_path"] == "/metrics"
        (sd,) = job["dns_sd_configs"]
        assert sd["names"] == [service] and sd["type"] == "A"
        assert sd["port"] == int(services[service]["environment"]["PORT"])
    # The rule file Prometheus loads is the one compose mounts.
    mounts = {m["target"]: m["source"] for m in services["prometheus"]["volumes"]
              if m["type"] == "bind"}  # fmt: skip
    (rule_file,) = config["rule_files"]
    assert mounts[rule_file] == str(MON / "prometheus-alerts.yml")
    assert mounts[services["prometheus"]["command"][0].split("=", 1)[1]] == str(
        MON / "prometheus.yml"
    )
    grafana = {m["target"]: m["source"] for m in services["grafana"]["volumes"]
               if m["type"] == "bind"}  # fmt: skip
    provider = yaml.safe_load((MON / "grafana/provisioning/dashboards/dashboards.yml").read_text())[
        "providers"
    ][0]
    dashboards = [t for t in grafana if t.startswith(provider["options"]["path"] + "/")]
    assert [grafana[t] for t in dashboards] == [str(MON / "grafana-dashboard.json")]
    datasource = yaml.safe_load(
        (MON / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"
    assert (
        datasource["uid"]
        == json.loads((MON / "grafana-dashboard.json").read_text())["templating"]["list"][0][
            "current"
        ]["value"]
    )
