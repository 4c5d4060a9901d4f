"""deploy/aws-ecs: the JSON documents deploy.sh sends, checked with botocore's own parameter
validation for the API call each one feeds (the service models ship with botocore; no network),
and against the services' settings so a variable name cannot drift."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.validate import ParamValidator
from pydantic import SecretStr

from ops.conftest import ROOT
from orchestrator.config import OrchestratorSettings
from realtime_gateway.config import GatewaySettings

ECS_DIR = ROOT / "deploy" / "aws-ecs"
SERVICES: dict[str, tuple[type[Any], int]] = {
    "realtime-gateway": (GatewaySettings, 3000),
    "orchestrator": (OrchestratorSettings, 8000),
}
SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PRIVATE|API_KEY|_KEY$|DSN|DATABASE_URL|REDIS_URL")
# (file, service model, operation, extra params deploy.sh adds on the command line)
DOCUMENTS = [
    ("task-definition-realtime-gateway.json", "ecs", "RegisterTaskDefinition", {}),
    ("task-definition-orchestrator.json", "ecs", "RegisterTaskDefinition", {}),
    ("service-realtime-gateway.json", "ecs", "CreateService", {"taskDefinition": "family:1"}),
    ("service-orchestrator.json", "ecs", "CreateService", {"taskDefinition": "family:1"}),
    ("target-group-realtime-gateway.json", "elbv2", "CreateTargetGroup", {}),
    ("target-group-attributes.json", "elbv2", "ModifyTargetGroupAttributes", {}),
    ("load-balancer-attributes.json", "elbv2", "ModifyLoadBalancerAttributes", {}),
]


def botocore_errors(service: str, operation: str, params: dict[str, Any]) -> str:
    model = botocore.session.get_session().get_service_model(service)
    shape = model.operation_model(operation).input_shape
    report = ParamValidator().validate(params, shape)
    return str(report.generate_report()) if report.has_errors() else ""


def load(name: str, folder: Path = ECS_DIR) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / name).read_text())
    return data


def secret_fields(settings: type[Any]) -> set[str]:
    return {
        name.upper()
        for name, field in settings.model_fields.items()
        if SecretStr in getattr(field.annotation, "__args__", (field.annotation,))
    }


def container(service: str, folder: Path = ECS_DIR) -> dict[str, Any]:
    (definition,) = load(f"task-definition-{service}.json", folder)["containerDefinitions"]
    return definition


@pytest.mark.parametrize(("name", "service", "operation", "extra"), DOCUMENTS)
def test_documents_pass_botocore_validation(
    name: str, service: str, operation: str, extra: dict[str, Any]
) -> None:
    assert botocore_errors(service, operation, {**load(name), **extra}) == ""


def test_botocore_validation_does_catch_a_bad_document() -> None:
    broken = load("task-definition-realtime-gateway.json")
    broken["containerDefinitions"][0]["portMappings"][0]["containerPort"] = "3000"
    broken["containerDefinitions"][0]["healthcheck"] = {}
    report = botocore_errors("ecs", "RegisterTaskDefinition", broken)
    assert "containerPort" in report and "healthcheck" in report


@pytest.mark.parametrize("service", list(SERVICES))
def test_no_plain_text_secret_in_environment(service: str) -> None:
    settings, _ = SERVICES[service]
    definition = container(service)
    env = {e["name"]: e["value"] for e in definition["environment"]}
    assert not {n for n in env if SECRET_NAME.search(n)}, "secrets go in `secrets`"
    assert {"JWT_SECRET", "SENTRY_DSN"} <= secret_fields(settings)
    assert not set(env) & secret_fields(settings)
    secrets = definition["secrets"]
    # METRICS_TOKEN: the gateway's port is public (providers reach it), so /metrics is not open.
    assert {"JWT_SECRET", "METRICS_TOKEN"} <= {s["name"] for s in secrets}
    for secret in secrets:
        assert re.fullmatch(
            r"arn:aws:(ssm:[^:]+:[^:]+:parameter/.+|secretsmanager:[^:]+:[^:]+:secret:.+)",
            secret["valueFrom"],
        ), secret
        assert secret["valueFrom"].endswith("/" + secret["name"])


@pytest.mark.parametrize("service", list(SERVICES))
def test_variables_are_ones_the_service_reads(service: str) -> None:
    settings, port = SERVICES[service]
    definition = container(service)
    names = {e["name"] for e in definition["environment"]} | {
        s["name"] for s in definition["secrets"]
    }
    known = {field.upper() for field in settings.model_fields} | {"APP_ENV"}
    assert names <= known, names - known
    env = {e["name"]: e["value"] for e in definition["environment"]}
    assert env["APP_ENV"] == "production"
    assert int(env["PORT"]) == port


@pytest.mark.parametrize("service", list(SERVICES))
def test_health_check_ports_and_logs(service: str) -> None:
    _, port = SERVICES[service]
    task = load(f"task-definition-{service}.json")
    definition = container(service)
    assert task["requiresCompatibilities"] == ["FARGATE"] and task["networkMode"] == "awsvpc"
    assert definition["portMappings"] == [
        {"name": "http", "containerPort": port, "protocol": "tcp", "appProtocol": "http"}
    ]
    check = definition["healthCheck"]
    assert check["command"][0] == "CMD"
    assert f"http://127.0.0.1:{port}/health" in check["command"][-1]
    assert 0 < check["startPeriod"] <= 300
    logs = definition["logConfiguration"]
    assert logs["logDriver"] == "awslogs"
    assert logs["options"]["awslogs-group"] == "/ecs/${DEPLOY_NAME}/" + service
    assert {"awslogs-region", "awslogs-stream-prefix"} <= set(logs["options"])
    # Graceful stop: the image gives uvicorn 25 s to drain, ECS waits longer before SIGKILL.
    assert definition["stopTimeout"] > 25
    assert definition["image"].startswith("${") and task["family"].endswith(service)


def test_gateway_sits_behind_the_alb_with_websocket_friendly_settings() -> None:
    service = load("service-realtime-gateway.json")
    (lb,) = service["loadBalancers"]
    assert (lb["containerName"], lb["containerPort"]) == ("realtime-gateway", 3000)
    assert lb["targetGroupArn"] == "${GATEWAY_TARGET_GROUP_ARN}"
    tg = load("target-group-realtime-gateway.json")
    assert (tg["Port"], tg["TargetType"], tg["HealthCheckPath"]) == (3000, "ip", "/health")
    assert tg["Matcher"] == {"HttpCode": "200"}
    tg_attrs = {a["Key"]: a["Value"] for a in load("target-group-attributes.json")["Attributes"]}
    assert tg_attrs["stickiness.enabled"] == "true"
    assert int(tg_attrs["deregistration_delay.timeout_seconds"]) >= 25
    lb_attrs = {a["Key"]: a["Value"] for a in load("load-balancer-attributes.json")["Attributes"]}
    assert 3600 <= int(lb_attrs["idle_timeout.timeout_seconds"]) <= 4000  # ALB maximum: 4000
    assert service["deploymentConfiguration"]["deploymentCircuitBreaker"] == {
        "enable": True,
        "rollback": True,
    }


def test_gateway_reaches_the_orchestrator_through_service_connect() -> None:
    orch = load("service-orchestrator.json")["serviceConnectConfiguration"]
    (entry,) = orch["services"]
    (alias,) = entry["clientAliases"]
    gateway_env = {e["name"]: e["value"] for e in container("realtime-gateway")["environment"]}
    assert gateway_env["ORCHESTRATOR_URL"] == f"http://{alias['dnsName']}:{alias['port']}"
    assert entry["portName"] == container("orchestrator")["portMappings"][0]["name"]
    gateway = load("service-realtime-gateway.json")["serviceConnectConfiguration"]
    assert gateway["enabled"] and gateway["namespace"] == orch["namespace"]
    assert "loadBalancers" not in load("service-orchestrator.json"), "not public"


def test_execution_role_policy_covers_every_secret() -> None:
    policy = load("execution-role-secrets-policy.json")
    (statement,) = policy["Statement"]
    assert statement["Action"] == ["ssm:GetParameters"]
    prefix = statement["Resource"].removesuffix("*")
    for service in SERVICES:
        for secret in container(service)["secrets"]:
            assert secret["valueFrom"].startswith(prefix)
