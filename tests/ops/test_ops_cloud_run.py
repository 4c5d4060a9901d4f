"""deploy/google-cloud-run: each service YAML has what Cloud Run requires of a Knative Service
(and rejects otherwise), what WebSocket calls need, and only variables the service reads."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from ops.conftest import ROOT
from orchestrator.config import OrchestratorSettings
from realtime_gateway.config import GatewaySettings

RUN_DIR = ROOT / "deploy" / "google-cloud-run"
SERVICES: dict[str, tuple[type[Any], int]] = {
    "realtime-gateway": (GatewaySettings, 3000),
    "orchestrator": (OrchestratorSettings, 8000),
}
# Set by Cloud Run itself; a service that sets one is rejected.
RESERVED_ENV = {"PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"}
SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PRIVATE|API_KEY|_KEY$|DSN|DATABASE_URL|REDIS_URL")


def load(service: str, folder: Path = RUN_DIR) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((folder / f"{service}.yaml").read_text())
    return data


def check_cloud_run_service(doc: dict[str, Any], service: str) -> None:
    """The fields `gcloud run services replace` needs, with Cloud Run's limits."""
    assert doc["apiVersion"] == "serving.knative.dev/v1"
    assert doc["kind"] == "Service"
    name = doc["metadata"]["name"]
    assert name == service
    assert re.fullmatch(r"[a-z]([-a-z0-9]{0,47}[a-z0-9])?", name), "Cloud Run service name rules"
    template = doc["spec"]["template"]
    for notes in (
        doc["metadata"].get("annotations", {}),
        template["metadata"]["annotations"],
    ):
        for key, value in notes.items():
            assert isinstance(value, str), f"annotation {key} must be a string, got {value!r}"
    spec = template["spec"]
    assert 1 <= spec["timeoutSeconds"] <= 3600
    assert 1 <= spec["containerConcurrency"] <= 1000
    (ctr,) = spec["containers"]  # one serving container
    assert ctr["image"]
    (port,) = ctr["ports"]
    assert port["name"] in ("http1", "h2c") and isinstance(port["containerPort"], int)
    limits = ctr["resources"]["limits"]
    assert float(limits["cpu"]) in (1, 2, 4, 6, 8)
    assert re.fullmatch(r"\d+(Mi|Gi)", limits["memory"])
    for env in ctr["env"]:
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env["name"])
        assert env["name"] not in RESERVED_ENV, f"{env['name']} is reserved by Cloud Run"
        assert ("value" in env) != ("valueFrom" in env)
        if "value" in env:
            assert isinstance(env["value"], str), f"{env['name']}: values are strings"
        else:
            ref = env["valueFrom"]["secretKeyRef"]
            assert (ref["name"] and ref["key"] in ("latest",)) or ref["key"].isdigit()
    for probe_name in ("startupProbe", "livenessProbe"):
        probe = ctr[probe_name]
        assert probe["httpGet"] == {"path": "/health", "port": port["containerPort"]}
        assert probe["periodSeconds"] * probe["failureThreshold"] <= 240
        assert probe["timeoutSeconds"] <= probe["periodSeconds"]
    assert doc["spec"]["traffic"] == [{"percent": 100, "latestRevision": True}]


@pytest.mark.parametrize("service", list(SERVICES))
def test_service_has_the_fields_cloud_run_requires(service: str) -> None:
    check_cloud_run_service(load(service), service)


def test_the_check_rejects_what_cloud_run_rejects() -> None:
    doc = load("realtime-gateway")
    doc["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "PORT", "value": "1"})
    with pytest.raises(AssertionError, match="reserved"):
        check_cloud_run_service(doc, "realtime-gateway")
    doc = load("realtime-gateway")
    doc["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/minScale"] = 1
    with pytest.raises(AssertionError, match="must be a string"):
        check_cloud_run_service(doc, "realtime-gateway")


@pytest.mark.parametrize("service", list(SERVICES))
def test_settings_for_calls_over_websockets(service: str) -> None:
    doc = load(service)
    template = doc["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert template["spec"]["timeoutSeconds"] == 3600, "a WebSocket lives as long as a request"
    assert annotations["autoscaling.knative.dev/minScale"].startswith("${")
    assert annotations["run.googleapis.com/cpu-throttling"] == "false"
    if service == "realtime-gateway":
        assert annotations["run.googleapis.com/sessionAffinity"] == "true"
    (ctr,) = template["spec"]["containers"]
    assert ctr["ports"][0]["containerPort"] == SERVICES[service][1]


@pytest.mark.parametrize("service", list(SERVICES))
def test_secrets_come_from_secret_manager_and_names_are_settings(service: str) -> None:
    settings, _ = SERVICES[service]
    (ctr,) = load(service)["spec"]["template"]["spec"]["containers"]
    known = {field.upper() for field in settings.model_fields} | {"APP_ENV"}
    secret_fields = {
        name.upper()
        for name, field in settings.model_fields.items()
        if SecretStr in getattr(field.annotation, "__args__", (field.annotation,))
    }
    plain = {e["name"] for e in ctr["env"] if "value" in e}
    from_secrets = {e["name"] for e in ctr["env"] if "valueFrom" in e}
    assert plain | from_secrets <= known, (plain | from_secrets) - known
    assert not {n for n in plain if SECRET_NAME.search(n)} and not plain & secret_fields
    assert {"JWT_SECRET", "METRICS_TOKEN"} <= from_secrets  # /metrics is not open on a public URL
    env = {e["name"]: e.get("value") for e in ctr["env"]}
    assert env["APP_ENV"] == "production"
