"""deploy.sh, run for real against fake `aws` / `gcloud` / `docker` binaries that log their argv:
the dry-run plan, create-on-first-deploy vs update-on-redeploy, a real (faked) deploy's order,
the rendered documents (validated with botocore / the Cloud Run checks), and its errors."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest
import yaml

from ops.conftest import ROOT, FakeClouds, tool
from ops.test_ops_aws_ecs import botocore_errors
from ops.test_ops_cloud_run import check_cloud_run_service

AWS_ENV = {
    "AWS_REGION": "eu-west-1",
    "ECS_CLUSTER": "voice-prod",
    "ECS_SUBNETS": "subnet-a,subnet-b",
    "ECS_SECURITY_GROUPS": "sg-1",
    "VPC_ID": "vpc-1",
    "ALB_ARN": "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/voice/1",
    "ALB_LISTENER_ARN": "arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener/app/v/1/2",
    "ECS_EXECUTION_ROLE_ARN": "arn:aws:iam::123456789012:role/vao-exec",
    "ECS_TASK_ROLE_ARN": "arn:aws:iam::123456789012:role/vao-task",
    "PUBLIC_BASE_URL": "https://voice.example.com",
    "CHROMA_HOST": "chroma.internal",
}
GCP_ENV = {
    "GCP_PROJECT": "acme-voice",
    "GCP_REGION": "europe-west1",
    "GCP_NETWORK": "default",
    "GCP_SUBNET": "default",
    "CHROMA_HOST": "10.0.0.5",
}
MUTATING = re.compile(
    r"\b(create|update|register|modify|put|enable|replace|add-iam|push|build|login|wait)"
)


def plan(stdout: str) -> list[str]:
    return [line[2:] for line in stdout.splitlines() if line.startswith("+ ")]


def commands(calls: list[dict[str, Any]]) -> list[str]:
    return [" ".join([c["cli"], *c["args"]]) for c in calls]


def index(lines: list[str], needle: str) -> int:
    return next(i for i, line in enumerate(lines) if needle in line)


def test_shellcheck_is_clean() -> None:
    proc = subprocess.run(
        [tool("shellcheck"), "--severity=style", str(ROOT / "deploy.sh")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- AWS ECS ----------------------------------------------------------------------------------


def test_ecs_dry_run_first_deploy_plans_creates_and_changes_nothing(
    fake_clouds: FakeClouds,
) -> None:
    proc = fake_clouds.run("--dry-run", "aws-ecs", env=fake_clouds.env(**AWS_ENV))
    assert proc.returncode == 0, proc.stderr
    lines = plan(proc.stdout)
    image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/vao/realtime-gateway:abc123"
    expected = [
        "aws ecs update-cluster --region eu-west-1 --cluster voice-prod "
        "--service-connect-defaults namespace=vao",
        "aws ecr create-repository --region eu-west-1 --repository-name vao/realtime-gateway",
        "aws ecr create-repository --region eu-west-1 --repository-name vao/orchestrator",
        "| docker login --username AWS --password-stdin",
        f"docker build --platform linux/amd64 -f {ROOT}/realtime-gateway/Dockerfile -t {image}",
        f"docker push {image}",
        "aws logs create-log-group --region eu-west-1 --log-group-name /ecs/vao/realtime-gateway",
        "aws elbv2 create-target-group",
        "aws elbv2 modify-load-balancer-attributes",
        "aws elbv2 modify-target-group-attributes",
        "aws elbv2 modify-listener",
        "aws ecs register-task-definition",
        "aws ecs create-service",
        "aws ecs wait services-stable",
    ]
    for needle in expected:
        assert any(needle in line for line in lines), f"not in the plan: {needle}"
    # Orchestrator before gateway; each service created after its task definition.
    assert index(lines, "--cli-input-json file://") < index(lines, "create-service")
    orch = index(lines, "service-orchestrator.json")
    assert orch < index(lines, "service-realtime-gateway.json")
    assert "update-service" not in proc.stdout
    # A dry run only looked things up: nothing that changes anything ran, docker never did.
    ran = commands(fake_clouds.calls())
    assert ran and all(not MUTATING.search(c) for c in ran), ran
    assert all(c.split()[1] in ("sts", "ecs", "ssm", "ecr", "logs", "elbv2") for c in ran)
    assert "DRY RUN" in proc.stdout


def test_ecs_redeploy_updates_in_place(fake_clouds: FakeClouds) -> None:
    env = fake_clouds.env(**AWS_ENV, FAKE_STATE="present")
    proc = fake_clouds.run("--dry-run", "aws-ecs", env=env)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for absent in (
        "create-repository",
        "create-log-group",
        "create-target-group",
        "create-service",
    ):
        assert absent not in out, absent
    lines = plan(out)
    updates = [line for line in lines if "ecs update-service" in line]
    assert [re.search(r"--service (\S+)", u).group(1) for u in updates] == [  # type: ignore[union-attr]
        "orchestrator",
        "realtime-gateway",
    ]
    assert any("aws elbv2 modify-target-group " in line for line in lines)
    assert all("--network-configuration" in u for u in updates)


def test_ecs_rendered_documents_are_valid_and_complete(fake_clouds: FakeClouds) -> None:
    proc = fake_clouds.run("--dry-run", "aws-ecs", env=fake_clouds.env(**AWS_ENV))
    assert proc.returncode == 0, proc.stderr
    rendered = fake_clouds.render_dir
    checks = {
        "task-definition-realtime-gateway.json": ("ecs", "RegisterTaskDefinition", {}),
        "task-definition-orchestrator.json": ("ecs", "RegisterTaskDefinition", {}),
        "service-realtime-gateway.json": ("ecs", "CreateService", {"taskDefinition": "f:1"}),
        "service-orchestrator.json": ("ecs", "CreateService", {"taskDefinition": "f:1"}),
        "target-group.json": ("elbv2", "CreateTargetGroup", {}),
        "target-group-attributes.json": ("elbv2", "ModifyTargetGroupAttributes", {}),
        "load-balancer-attributes.json": ("elbv2", "ModifyLoadBalancerAttributes", {}),
    }
    for name, (service, operation, extra) in checks.items():
        text = (rendered / name).read_text()
        assert not re.search(r"\$\{[A-Z_]+\}", text), f"{name}: placeholder left"
        assert botocore_errors(service, operation, {**json.loads(text), **extra}) == "", name
    task = json.loads((rendered / "task-definition-realtime-gateway.json").read_text())
    (ctr,) = task["containerDefinitions"]
    assert (
        ctr["image"] == "123456789012.dkr.ecr.eu-west-1.amazonaws.com/vao/realtime-gateway:abc123"
    )
    env = {e["name"]: e["value"] for e in ctr["environment"]}
    assert env["PUBLIC_BASE_URL"] == "https://voice.example.com"
    assert env["VOICE_PROVIDER"] == "twilio"
    assert task["taskRoleArn"] == AWS_ENV["ECS_TASK_ROLE_ARN"]
    assert {s["valueFrom"] for s in ctr["secrets"]} >= {
        "arn:aws:ssm:eu-west-1:123456789012:parameter/vao/production/JWT_SECRET"
    }
    service = json.loads((rendered / "service-realtime-gateway.json").read_text())
    assert service["loadBalancers"][0]["targetGroupArn"].endswith(
        "targetgroup/vao-realtime-gateway/dry-run"
    )


def test_ecs_deploy_runs_every_step_in_order(fake_clouds: FakeClouds) -> None:
    env = fake_clouds.env(**AWS_ENV, FAKE_STATE="present")
    proc = fake_clouds.run("aws-ecs", env=env)
    assert proc.returncode == 0, proc.stderr
    calls = fake_clouds.calls()
    ran = commands(calls)
    assert all(c["env"]["AWS_PAGER"] == "" for c in calls if c["cli"] == "aws"), "no pager"
    login = next(c for c in calls if c["cli"] == "docker" and c["args"][0] == "login")
    assert login["stdin"].strip() == "fake-ecr-password", "password piped from get-login-password"
    order = [
        "aws ssm get-parameters",
        "docker login",
        "docker build",
        "docker push",
        "aws ecs register-task-definition",
        "aws ecs update-service --region eu-west-1 --cluster voice-prod --service orchestrator",
        "aws ecs update-service --region eu-west-1 --cluster voice-prod --service realtime-gateway",
        "aws ecs wait services-stable",
    ]
    positions = [index(ran, step) for step in order]
    assert positions == sorted(positions), ran
    # The exact revision just registered is what each service is moved to.
    updates = [c for c in ran if "update-service" in c]
    assert "task-definition/vao-orchestrator:7" in updates[0]
    assert "task-definition/vao-realtime-gateway:7" in updates[1]


def test_ecs_missing_secret_stops_a_deploy_but_only_warns_in_a_dry_run(
    fake_clouds: FakeClouds,
) -> None:
    env = fake_clouds.env(**AWS_ENV, FAKE_MISSING_SECRETS="OPENAI_API_KEY")
    proc = fake_clouds.run("aws-ecs", env=env)
    assert proc.returncode == 1
    assert "SSM parameters missing: /vao/production/OPENAI_API_KEY" in proc.stderr
    assert "aws ssm put-parameter --type SecureString" in proc.stderr
    assert not any(c["cli"] == "docker" for c in fake_clouds.calls())
    dry = fake_clouds.run("--dry-run", "aws-ecs", env=env)
    assert dry.returncode == 0 and "warning: SSM parameters missing" in dry.stderr


def test_ecs_missing_variables_are_named_together(fake_clouds: FakeClouds) -> None:
    partial = {k: v for k, v in AWS_ENV.items() if k not in ("VPC_ID", "ALB_ARN", "CHROMA_HOST")}
    proc = fake_clouds.run("--dry-run", "aws-ecs", env=fake_clouds.env(**partial))
    assert proc.returncode == 1
    assert "missing required variable(s) for aws-ecs: VPC_ID ALB_ARN CHROMA_HOST" in proc.stderr
    assert "deploy/aws-ecs/README.md" in proc.stderr
    assert fake_clouds.calls() == []


@pytest.mark.parametrize(
    ("target", "cli", "env"), [("aws-ecs", "aws", AWS_ENV), ("google-cloud-run", "gcloud", GCP_ENV)]
)
def test_missing_cli_is_reported(
    fake_clouds: FakeClouds, target: str, cli: str, env: dict[str, str]
) -> None:
    proc = fake_clouds.run(target, env=fake_clouds.env(without=(cli,), **env))
    assert proc.returncode == 1
    assert f"'{cli}' is not on PATH" in proc.stderr
    docker = fake_clouds.run(target, env=fake_clouds.env(without=("docker",), **env))
    assert docker.returncode == 1 and "'docker' is not on PATH" in docker.stderr
    assert fake_clouds.calls() == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"DEPLOY_NAME": "Bad_Name"}, "DEPLOY_NAME must be 1-15 lowercase"),
        ({"PUBLIC_BASE_URL": 'https://x"y'}, "PUBLIC_BASE_URL must not contain quotes"),
        ({"GATEWAY_DESIRED_COUNT": "0"}, "GATEWAY_DESIRED_COUNT must be a whole number"),
    ],
)
def test_bad_values_are_refused(
    fake_clouds: FakeClouds, extra: dict[str, str], message: str
) -> None:
    proc = fake_clouds.run("--dry-run", "aws-ecs", env=fake_clouds.env(**{**AWS_ENV, **extra}))
    assert proc.returncode == 1
    assert message in proc.stderr


def test_usage_errors(fake_clouds: FakeClouds) -> None:
    env = fake_clouds.env()
    none = fake_clouds.run(env=env)
    assert none.returncode == 1 and "no target given" in none.stderr and "usage:" in none.stderr
    bad = fake_clouds.run("heroku", env=env)
    assert bad.returncode == 1 and "unknown argument 'heroku'" in bad.stderr
    both = fake_clouds.run("aws-ecs", "google-cloud-run", env=env)
    assert both.returncode == 1 and "one target at a time" in both.stderr
    helped = fake_clouds.run("--help", env=env)
    assert helped.returncode == 0 and "aws-ecs" in helped.stdout
    assert fake_clouds.calls() == []


# --- Google Cloud Run -------------------------------------------------------------------------


def test_cloud_run_dry_run_first_deploy(fake_clouds: FakeClouds) -> None:
    proc = fake_clouds.run("--dry-run", "google-cloud-run", env=fake_clouds.env(**GCP_ENV))
    assert proc.returncode == 0, proc.stderr
    lines = plan(proc.stdout)
    image = "europe-west1-docker.pkg.dev/acme-voice/vao/orchestrator:abc123"
    for needle in (
        "gcloud services enable run.googleapis.com artifactregistry.googleapis.com "
        "secretmanager.googleapis.com --project acme-voice",
        "gcloud artifacts repositories create vao --repository-format docker",
        "gcloud auth configure-docker europe-west1-docker.pkg.dev --quiet",
        f"docker push {image}",
        "gcloud iam service-accounts create vao-realtime-gateway",
        "gcloud secrets add-iam-policy-binding vao-jwt-secret",
        "gcloud run services add-iam-policy-binding realtime-gateway",
        "--update-env-vars PUBLIC_BASE_URL=",
    ):
        assert any(needle in line for line in lines), f"not in the plan: {needle}"
    replaces = [line for line in lines if "gcloud run services replace" in line]
    assert [r.split()[4].rsplit("/", 1)[-1] for r in replaces] == [
        "orchestrator.yaml",
        "realtime-gateway.yaml",
    ]
    ran = commands(fake_clouds.calls())
    assert ran and all(not MUTATING.search(c) for c in ran), ran
    for service in ("orchestrator", "realtime-gateway"):
        text = (fake_clouds.render_dir / f"{service}.yaml").read_text()
        assert not re.search(r"\$\{[A-Z_]+\}", text)
        doc = yaml.safe_load(text)
        check_cloud_run_service(doc, service)
        notes = doc["spec"]["template"]["metadata"]["annotations"]
        assert int(notes["autoscaling.knative.dev/minScale"]) >= 1
        account = doc["spec"]["template"]["spec"]["serviceAccountName"]
        assert account == f"vao-{service}@acme-voice.iam.gserviceaccount.com"


def test_cloud_run_deploy_wires_the_orchestrator_url_into_the_gateway(
    fake_clouds: FakeClouds,
) -> None:
    proc = fake_clouds.run("google-cloud-run", env=fake_clouds.env(**GCP_ENV))
    assert proc.returncode == 0, proc.stderr
    calls = fake_clouds.calls()
    assert all(
        c["env"]["CLOUDSDK_CORE_DISABLE_PROMPTS"] == "1" for c in calls if c["cli"] == "gcloud"
    )
    ran = commands(calls)
    replace_orch = index(ran, "gcloud run services replace")
    describe_orch = index(ran, "gcloud run services describe orchestrator")
    assert replace_orch < describe_orch < index(ran, "realtime-gateway.yaml")
    # First deploy: the gateway's own URL becomes PUBLIC_BASE_URL once it exists.
    assert ran[-1].endswith(
        "--update-env-vars PUBLIC_BASE_URL=https://realtime-gateway-abc123-ew.a.run.app"
    )
    # The real (non-dry) run removes its rendered files; re-render to read the gateway's env.
    dry = fake_clouds.run(
        "--dry-run", "google-cloud-run", env=fake_clouds.env(**GCP_ENV, FAKE_STATE="present")
    )
    assert dry.returncode == 0, dry.stderr
    doc = yaml.safe_load((fake_clouds.render_dir / "realtime-gateway.yaml").read_text())
    env = {
        e["name"]: e.get("value") for e in doc["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["ORCHESTRATOR_URL"] == "https://orchestrator-abc123-ew.a.run.app"
    assert env["PUBLIC_BASE_URL"] == "https://realtime-gateway-abc123-ew.a.run.app"
    assert "--update-env-vars" not in dry.stdout, "a redeploy keeps the known URL"
    assert "repositories create" not in dry.stdout and "service-accounts create" not in dry.stdout


def test_cloud_run_missing_secret_stops_the_deploy(fake_clouds: FakeClouds) -> None:
    env = fake_clouds.env(**GCP_ENV, FAKE_MISSING_SECRETS="vao-database-url")
    proc = fake_clouds.run("google-cloud-run", env=env)
    assert proc.returncode == 1
    assert "Secret Manager secrets missing: vao-database-url" in proc.stderr
    assert not any("services replace" in c for c in commands(fake_clouds.calls()))


def test_cloud_run_missing_variables(fake_clouds: FakeClouds) -> None:
    proc = fake_clouds.run("google-cloud-run", env=fake_clouds.env(GCP_REGION="europe-west1"))
    assert proc.returncode == 1
    assert (
        "missing required variable(s) for google-cloud-run: "
        "GCP_PROJECT GCP_NETWORK GCP_SUBNET CHROMA_HOST" in proc.stderr
    )
    aliased = {k: v for k, v in GCP_ENV.items() if k != "GCP_PROJECT"}
    ok = fake_clouds.run(
        "--dry-run",
        "google-cloud-run",
        env=fake_clouds.env(**aliased, GOOGLE_CLOUD_PROJECT="acme-voice"),
    )
    assert ok.returncode == 0, ok.stderr


# --- make targets -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("deploy-ecs", "./deploy.sh --dry-run aws-ecs"),
        ("deploy-cloud-run", "./deploy.sh --dry-run google-cloud-run"),
        ("up", "docker-compose up -d"),
        ("up-prod", "docker-compose -f docker-compose.yml -f docker-compose.prod.yml up -d"),
        ("up-debug", "docker-compose -f docker-compose.yml -f docker-compose.debug.yml up"),
        ("docker-build", "docker-compose build node-backend python-backend"),
        ("down", "docker-compose down --remove-orphans"),
    ],
)
def test_make_targets(target: str, expected: str) -> None:
    proc = subprocess.run(
        ["make", "--no-print-directory", "-n", target, "COMPOSE=docker-compose"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert expected in proc.stdout


def test_cloud_deploys_run_for_real_only_with_confirm() -> None:
    for target, cloud in (("deploy-ecs", "aws-ecs"), ("deploy-cloud-run", "google-cloud-run")):
        proc = subprocess.run(
            # --no-print-directory: under `make test` this make is nested and would print
            # "make[1]: Entering directory" around the recipe.
            ["make", "--no-print-directory", "-n", target, "CONFIRM=1"],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        assert proc.returncode == 0
        assert proc.stdout.split() == ["./deploy.sh", cloud]
