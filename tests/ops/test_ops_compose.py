"""docker-compose.yml, docker-compose.prod.yml and docker-compose.debug.yml, as Compose v2 itself
loads and merges them (`docker-compose config`, no engine needed), plus the nginx load balancer
and the container healthcheck commands run for real against local HTTP servers."""

from __future__ import annotations

import http.server
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from ops.conftest import ROOT
from orchestrator.config import OrchestratorSettings
from realtime_gateway.config import GatewaySettings

BASE = ("docker-compose.yml",)
PROD = ("docker-compose.yml", "docker-compose.prod.yml")
DEBUG = ("docker-compose.yml", "docker-compose.debug.yml")
APP_SERVICES = {"node-backend": "realtime-gateway", "python-backend": "orchestrator"}
SETTINGS = {"node-backend": GatewaySettings, "python-backend": OrchestratorSettings}
DATA_SERVICES = ("postgres", "chroma", "redis")
PROD_ENV = {
    "POSTGRES_PASSWORD": "a-strong-password",
    "PUBLIC_BASE_URL": "https://voice.example.com",
}

Config = dict[str, Any]


@pytest.fixture(scope="module")
def base(compose_config: Callable[..., Config]) -> Config:
    return compose_config(*BASE)


@pytest.fixture(scope="module")
def prod(compose_config: Callable[..., Config]) -> Config:
    return compose_config(*PROD, env=PROD_ENV)


@pytest.fixture(scope="module")
def debug(compose_config: Callable[..., Config]) -> Config:
    return compose_config(*DEBUG)


def aliases(config: Config) -> dict[str, str]:
    """Every name a container can be reached by on the default network -> its service."""
    names = {}
    for name, svc in config["services"].items():
        names[name] = name
        for net in (svc.get("networks") or {}).values():
            for alias in (net or {}).get("aliases") or []:
                names[alias] = name
    return names


def env_names(settings: type[Any]) -> set[str]:
    names = {field.upper() for field in settings.model_fields}
    return names | {"APP_ENV", "NODE_ENV"}


# --- all three files -------------------------------------------------------------------------


@pytest.mark.parametrize("files", [BASE, PROD, DEBUG], ids=["base", "prod", "debug"])
def test_every_service_has_a_healthcheck_and_waits_for_healthy_dependencies(
    files: tuple[str, ...], compose_config: Callable[..., Config]
) -> None:
    config = compose_config(*files, env=PROD_ENV)
    services = config["services"]
    assert set(APP_SERVICES) | set(DATA_SERVICES) <= set(services)
    for name, svc in services.items():
        check = svc.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on undefined service {dep}"
            assert cond["condition"] == "service_healthy", f"{name} -> {dep}"


@pytest.mark.parametrize("files", [BASE, PROD, DEBUG], ids=["base", "prod", "debug"])
def test_only_defined_volumes_and_existing_files_are_referenced(
    files: tuple[str, ...], compose_config: Callable[..., Config]
) -> None:
    config = compose_config(*files, env=PROD_ENV)
    declared = set(config.get("volumes") or {})
    for name, svc in config["services"].items():
        for mount in svc.get("volumes") or []:
            if mount["type"] == "volume":
                assert mount["source"] in declared, f"{name}: undeclared volume {mount['source']}"
            else:
                assert mount["type"] == "bind"
                source = Path(mount["source"])
                assert source.is_relative_to(ROOT), f"{name} mounts {source} outside the repo"
                assert source.exists(), f"{name} mounts {source}, which does not exist"
        build = svc.get("build")
        if build:
            assert Path(build["context"]) == ROOT
            assert (ROOT / build["dockerfile"]).is_file()


def test_env_files_are_each_services_own_dotenv_and_optional() -> None:
    """The spec's local flow: `cp .env.example .env` in each service folder; a fresh clone
    (no .env yet) still loads because the files are `required: false`."""
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name, folder in APP_SERVICES.items():
        assert raw["services"][name]["env_file"] == [{"path": f"{folder}/.env", "required": False}]
        assert (ROOT / folder / ".env.example").is_file(), f"{folder}/.env.example is missing"
    for name in DATA_SERVICES:
        assert "env_file" not in raw["services"][name]


def test_copied_env_examples_load_and_the_container_wiring_wins(
    tmp_path: Path, compose_raw: Callable[..., Any], base: Config
) -> None:
    """After `cp .env.example .env` (values meant for `make run` on one host), the containers
    still talk to each other: compose's `environment:` wins over the `.env` file."""
    shutil.copy(ROOT / "docker-compose.yml", tmp_path)
    examples = {}
    for folder in APP_SERVICES.values():
        (tmp_path / folder).mkdir()
        shutil.copy(ROOT / folder / ".env.example", tmp_path / folder / ".env")
        examples[folder] = dotenv_values(ROOT / folder / ".env.example")
    proc = compose_raw("docker-compose.yml", project_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    services = json.loads(proc.stdout)["services"]
    for name, folder in APP_SERVICES.items():
        env = services[name]["environment"]
        wiring = base["services"][name]["environment"]
        for key, value in wiring.items():
            assert env[key] == value, f"{name}: {key} from .env beat the wiring"
        assert set(examples[folder]) - set(wiring), "the example sets more than the wiring"
        for key, value in examples[folder].items():
            if key not in wiring:
                assert env.get(key, "") == value, f"{name}: {key} from .env not loaded"


def dotenv_values(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip().strip("'\"")
    return values


def test_service_urls_point_at_services_of_the_stack(base: Config) -> None:
    names = aliases(base)
    gateway = base["services"]["node-backend"]["environment"]
    orch = base["services"]["python-backend"]["environment"]
    targets = {
        gateway["ORCHESTRATOR_URL"]: ("python-backend", 8000),
        gateway["REDIS_URL"]: ("redis", 6379),
        orch["DATABASE_URL"]: ("postgres", 5432),
    }
    for url, (service, port) in targets.items():
        parts = urlsplit(url)
        assert names.get(parts.hostname or "") == service, url
        assert parts.port == port, url
    assert names[orch["CHROMA_HOST"]] == "chroma"
    assert orch["CHROMA_PORT"] == "8000"
    assert (
        urlsplit(orch["DATABASE_URL"]).path
        == "/" + base["services"]["postgres"]["environment"]["POSTGRES_DB"]
    )


@pytest.mark.parametrize("files", [BASE, PROD, DEBUG], ids=["base", "prod", "debug"])
def test_app_environment_uses_only_settings_the_services_read(
    files: tuple[str, ...], compose_config: Callable[..., Config]
) -> None:
    config = compose_config(*files, env=PROD_ENV)
    for name, settings in SETTINGS.items():
        env = config["services"][name]["environment"]
        unknown = set(env) - env_names(settings) - {"PYTHONPATH", "WATCHFILES_FORCE_POLLING"}
        assert not unknown, f"{name} sets variables its settings do not read: {unknown}"
        # The healthcheck probes the port the service listens on.
        probe = " ".join(config["services"][name]["healthcheck"]["test"])
        assert f"127.0.0.1:{env['PORT']}/health" in probe


def test_both_services_share_the_data_dir_volume(base: Config) -> None:
    """Without JWT_SECRET, both containers must agree on the dev secret under DATA_DIR."""
    mounts = {}
    for name in APP_SERVICES:
        svc = base["services"][name]
        (mount,) = [m for m in svc["volumes"] if m["target"] == svc["environment"]["DATA_DIR"]]
        mounts[name] = mount["source"]
    assert mounts["node-backend"] == mounts["python-backend"]


def test_local_ports_are_published_on_loopback_only(base: Config) -> None:
    for name, svc in base["services"].items():
        for port in svc.get("ports") or []:
            assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port}"
    gateway_port = base["services"]["node-backend"]["ports"][0]
    assert (gateway_port["published"], gateway_port["target"]) == ("3000", 3000)


def test_chroma_server_matches_the_client_version(base: Config) -> None:
    lock = (ROOT / "orchestrator" / "requirements.lock").read_text()
    version = re.search(r"^chromadb==(\S+)$", lock, re.M)
    assert version, "chromadb is not pinned in orchestrator/requirements.lock"
    assert base["services"]["chroma"]["image"] == f"chromadb/chroma:{version.group(1)}"


def test_images_are_pinned(prod: Config) -> None:
    for name, svc in prod["services"].items():
        image = svc["image"]
        assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), (name, image)


# --- production override ----------------------------------------------------------------------


def test_prod_publishes_no_database_ports_and_gateway_only_through_the_balancer(
    prod: Config,
) -> None:
    services = prod["services"]
    for name in (*DATA_SERVICES, "node-backend"):
        assert not services[name].get("ports"), f"{name} still publishes {services[name]['ports']}"
    (orch_port,) = services["python-backend"]["ports"]
    assert orch_port["host_ip"] == "127.0.0.1"
    (lb_port,) = services["load-balancer"]["ports"]
    assert (lb_port["published"], lb_port["target"]) == ("3000", 8080)


def test_prod_runs_replicas_with_restart_policies_and_limits(prod: Config) -> None:
    services = prod["services"]
    assert services["node-backend"]["deploy"]["replicas"] >= 2
    for name, svc in services.items():
        if "monitoring" in (svc.get("profiles") or []):
            continue
        assert svc.get("restart") in ("unless-stopped", "always"), name
        limits = svc["deploy"]["resources"]["limits"]
        assert float(limits["cpus"]) > 0 and int(limits["memory"]) > 0, name
    for name in APP_SERVICES:
        env = services[name]["environment"]
        assert env["APP_ENV"] == "production"
        assert services[name].get("command") in (None, []), "no --reload in production"


def test_prod_needs_a_postgres_password(compose_raw: Callable[..., Any]) -> None:
    proc = compose_raw(*PROD, env={"PUBLIC_BASE_URL": PROD_ENV["PUBLIC_BASE_URL"]})
    assert proc.returncode != 0
    assert "POSTGRES_PASSWORD" in proc.stderr


def test_prod_password_reaches_both_postgres_and_the_orchestrator(prod: Config) -> None:
    services = prod["services"]
    password = PROD_ENV["POSTGRES_PASSWORD"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == password
    assert urlsplit(services["python-backend"]["environment"]["DATABASE_URL"]).password == password


def test_load_balancer_proxies_websockets_to_every_gateway_replica(prod: Config) -> None:
    lb = prod["services"]["load-balancer"]
    assert lb["depends_on"]["node-backend"]["condition"] == "service_healthy"
    (mount,) = lb["volumes"]
    assert mount["target"] == "/etc/nginx/nginx.conf" and mount.get("read_only")
    conf = Path(mount["source"]).read_text()
    upstream = re.search(r"upstream node_backend \{(.*?)\}", conf, re.S)
    assert upstream, "the spec's `upstream node_backend` is missing"
    assert re.search(r"server node-backend:3000 resolve", upstream.group(1))
    assert "zone node_backend" in upstream.group(1), "`resolve` needs a shared zone"
    assert "resolver 127.0.0.11" in conf, "Docker's DNS, for the replicas' addresses"
    assert "proxy_pass http://node_backend;" in conf
    assert "proxy_set_header Upgrade $http_upgrade;" in conf
    assert "proxy_set_header Connection $connection_upgrade;" in conf
    assert "proxy_http_version 1.1;" in conf
    read_timeout = re.search(r"proxy_read_timeout (\d+)s;", conf)
    assert read_timeout and int(read_timeout.group(1)) >= 3600
    assert "listen 8080;" in conf
    probe = lb["healthcheck"]["test"]
    location = re.search(r"location = (\S+) \{", conf)
    assert location and f"http://127.0.0.1:8080{location.group(1)}" in probe
    assert prod["services"]["node-backend"]["environment"]["TRUST_PROXY"] == "true"


# --- debug override ---------------------------------------------------------------------------


def test_debug_reloads_mounted_source_with_debug_logs(debug: Config) -> None:
    for name, service_dir in APP_SERVICES.items():
        svc = debug["services"][name]
        env = svc["environment"]
        assert env["DEBUG"] == "true" and env["LOG_LEVEL"] == "debug"
        command = svc["command"]
        assert "--reload" in command
        assert command[0].startswith("--"), "arguments are appended to the image's uvicorn"
        src = Path(env["PYTHONPATH"])
        assert command[command.index("--reload-dir") + 1] == str(src)
        mounted = {m["target"]: Path(m["source"]) for m in svc["volumes"] if m["type"] == "bind"}
        package = service_dir.replace("-", "_")
        assert mounted[str(src / "shared")] == ROOT / "shared"
        assert mounted[str(src / package)] == ROOT / service_dir / package
        assert (ROOT / service_dir / package / "__init__.py").is_file()


# --- healthcheck commands, run for real -------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, int] = {}

    def do_GET(self) -> None:
        status = self.routes.get(self.path, 404)
        body = b'{"status":"ok"}'
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[Callable[[dict[str, int]], int]]:
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(routes: dict[str, int]) -> int:
        handler = type("Handler", (_Handler,), {"routes": routes})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return int(server.server_address[1])

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_probe(test: list[str], port_from: int, port_to: int) -> int:
    """Run a compose healthcheck (CMD form) here, aimed at port_to instead of port_from."""
    assert test[0] == "CMD"
    argv = [a.replace(f"127.0.0.1:{port_from}", f"127.0.0.1:{port_to}") for a in test[1:]]
    argv = [a.replace(f"127.0.0.1/{port_from}", f"127.0.0.1/{port_to}") for a in argv]
    argv = [a.replace("$$", "$") for a in argv]  # compose's escape for a literal $
    if argv[0] == "python":
        argv[0] = sys.executable
    return subprocess.run(argv, capture_output=True, timeout=15).returncode


def test_chroma_healthcheck_asks_the_v2_heartbeat(
    base: Config, http_server: Callable[[dict[str, int]], int]
) -> None:
    test = base["services"]["chroma"]["healthcheck"]["test"]
    assert run_probe(test, 8000, http_server({"/api/v2/heartbeat": 200})) == 0
    assert run_probe(test, 8000, http_server({"/api/v1/heartbeat": 200})) != 0
    assert run_probe(test, 8000, free_port()) != 0


@pytest.mark.parametrize("service", list(APP_SERVICES))
def test_app_healthchecks_need_a_200_from_health(
    service: str, base: Config, http_server: Callable[[dict[str, int]], int]
) -> None:
    svc = base["services"][service]
    port = int(svc["environment"]["PORT"])
    test = svc["healthcheck"]["test"]
    assert run_probe(test, port, http_server({"/health": 200})) == 0
    assert run_probe(test, port, http_server({"/health": 503})) != 0
    assert run_probe(test, port, free_port()) != 0
