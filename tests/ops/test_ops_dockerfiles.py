"""The two Dockerfiles and .dockerignore: hadolint (the real linter, from the dev lock), the
rules an operator expects of a service image, and what the build context lets in."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from ops.conftest import ROOT, tool

SERVICES = {
    # folder: (package, factory, default port)
    "realtime-gateway": ("realtime_gateway", "realtime_gateway.app:create_app", 3000),
    "orchestrator": ("orchestrator", "orchestrator.main:create_app", 8000),
}


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def stages(dockerfile: Path) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions(dockerfile):
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    return result


def arg_defaults(dockerfile: Path) -> dict[str, str]:
    found = {}
    for keyword, rest in instructions(dockerfile):
        if keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            found[name] = value
    return found


def test_hadolint_is_clean() -> None:
    files = [str(ROOT / folder / "Dockerfile") for folder in SERVICES]
    proc = subprocess.run(
        [tool("hadolint"), "--no-color", "--failure-threshold", "info", *files],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("folder", list(SERVICES))
def test_image_is_multi_stage_slim_pinned_and_non_root(folder: str) -> None:
    dockerfile = ROOT / folder / "Dockerfile"
    built = stages(dockerfile)
    assert len(built) >= 2, "multi-stage: build tools stay out of the runtime image"
    defaults = arg_defaults(dockerfile)
    for stage in built:
        image = stage[0][1].split(" AS ")[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], image)
        name, _, tag = image.partition(":")
        assert name == "python" and re.fullmatch(r"3\.11-slim(-\w+)?", tag), image
    runtime = built[-1]
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert users, "the runtime stage must drop root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, "numeric non-root uid (Kubernetes runAsNonRoot)"
    for keyword, rest in instructions(dockerfile):
        assert keyword != "ADD", "COPY only (no remote ADD)"
        if keyword == "RUN" and "apt-get install" in rest:
            assert "rm -rf /var/lib/apt/lists" in rest


@pytest.mark.parametrize("folder", list(SERVICES))
def test_only_this_services_pinned_dependencies_are_installed(folder: str) -> None:
    dockerfile = ROOT / folder / "Dockerfile"
    build = stages(dockerfile)[0]
    runs = [rest for keyword, rest in build if keyword == "RUN"]
    copies = [rest for keyword, rest in build if keyword == "COPY"]
    lock = f"{folder}/requirements.lock"
    assert copies[0].split()[0] == lock, "the lock is copied alone first (cached layer)"
    assert any(f"pip install --no-cache-dir -r {lock}" in r for r in runs)
    local = next(r for r in runs if "--no-deps" in r)
    assert f"./shared ./{folder}" in local and "pip check" in local
    other = next(f for f in SERVICES if f != folder)
    assert other not in dockerfile.read_text(), f"{folder}'s image must not install {other}"
    # The lock really is this service's closure: it pins all that its pyproject asks for.
    lines = (ROOT / lock).read_text().splitlines()
    pinned = {canonical(line.split("==")[0]) for line in lines if "==" in line}
    project = tomllib.loads((ROOT / folder / "pyproject.toml").read_text())["project"]
    wanted = {
        canonical(re.split(r"[\[<>=!~; ]", dep, maxsplit=1)[0]) for dep in project["dependencies"]
    }
    assert wanted - {"vao-shared"} <= pinned, wanted - pinned
    assert "vao-shared" not in pinned and canonical(folder) not in pinned


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower().strip()


@pytest.mark.parametrize("folder", list(SERVICES))
def test_entrypoint_runs_uvicorn_on_port_with_graceful_shutdown_and_a_health_probe(
    folder: str,
) -> None:
    package, factory, port = SERVICES[folder]
    found = dict(instructions(ROOT / folder / "Dockerfile"))
    entrypoint = json.loads(found["ENTRYPOINT"])  # exec form: a JSON array
    assert entrypoint[:2] == ["/bin/sh", "-c"]
    script = entrypoint[2]
    assert script.startswith("exec uvicorn "), "uvicorn replaces the shell: it gets SIGTERM"
    assert f"--factory {factory}" in script
    assert '--port "$PORT"' in script and '--host "$HOST"' in script
    assert '--timeout-graceful-shutdown "$GRACEFUL_SHUTDOWN_S"' in script
    assert script.endswith('"$@"'), "extra arguments (compose `command:`) reach uvicorn"
    assert json.loads(found["CMD"]) == []
    env = found["ENV"]
    assert f"PORT={port}" in env and "HOST=0.0.0.0" in env
    assert found["EXPOSE"] == str(port)
    assert found["STOPSIGNAL"] == "SIGTERM"
    health = found["HEALTHCHECK"]
    probe = json.loads(health[health.index("CMD") + 3 :].strip())
    assert probe[0] == "python" and "/health" in probe[-1]
    assert f"os.environ.get('PORT', '{port}')" in probe[-1]
    assert (ROOT / folder / package / "__init__.py").is_file()


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore as Docker reads it: later lines win, `!` re-includes, `**` spans folders."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex += pattern[i : end + 1]
                i = end + 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        rules.append((include, re.compile(regex)))
    return rules


def sent_to_builder(path: str) -> bool:
    """Whether a file is in the build context: a file is left out when it or a folder above it
    matches an exclusion that no later `!` rule undoes."""
    parts = path.split("/")
    excluded = False
    for include, regex in dockerignore_patterns():
        prefixes = ("/".join(parts[: i + 1]) for i in range(len(parts)))
        if any(regex.fullmatch(p) for p in prefixes):
            excluded = not include
    return not excluded


@pytest.mark.parametrize(
    "path",
    [
        "shared/contract.py",
        "shared/pyproject.toml",
        "realtime-gateway/pyproject.toml",
        "realtime-gateway/requirements.lock",
        "realtime-gateway/realtime_gateway/config.py",
        "orchestrator/requirements.lock",
        "orchestrator/orchestrator/config.py",
    ],
)
def test_build_context_holds_what_the_images_need(path: str) -> None:
    assert sent_to_builder(path)
    assert (ROOT / path).exists()


@pytest.mark.parametrize(
    "path",
    [
        "realtime-gateway/.env",
        "orchestrator/.env",
        "orchestrator/.env.production",
        ".env",
        ".git/HEAD",
        ".venv/bin/python",
        ".data/jwt_secret",
        "realtime-gateway/.data/jwt_secret",
        "tests/conftest.py",
        "deploy.sh",
        "docker-compose.yml",
        "shared/vao_shared.egg-info/PKG-INFO",
        "realtime-gateway/realtime_gateway/__pycache__/config.cpython-311.pyc",
        "orchestrator/build/lib/orchestrator/main.py",
    ],
)
def test_build_context_leaves_out_secrets_state_and_other_files(path: str) -> None:
    assert not sent_to_builder(path)
