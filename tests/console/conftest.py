"""The console's harness: the two services as real uvicorn processes (as `make run` starts them),
the model an OpenAI-compatible fake streaming slowly (`bench/fake_llm.py`: a first token after
150 ms, then one every 120 ms), the generic-http bridge's REST API faked at the HTTP level (a
local server that records the dials), and Debian's headless Chromium driven by Playwright.

The services are session-scoped, the browser this folder's, both shared by the console tests;
each test signs in with a token of its own subject (its own management rate-limit budget) and
makes its own calls and agents.
Every page records the URLs it requested: a test fails if one leaves the machine.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from shared.auth import mint_token
from tests.e2e.services import ROOT, Service, free_port, run_service
from tests.gateway.conftest import GH_SECRET, JWT_SECRET, sign

CHROMIUM = "/usr/bin/chromium"
LAPTOP = {"width": 1366, "height": 850}
PHONE = {"width": 390, "height": 844}
FIRST_TOKEN_MS, TOKEN_MS = 150, 120  # the fake model's pace (12 tokens: ~1.5 s a reply)
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})
WAIT_MS = 15_000  # a condition's headroom on a loaded 2-core machine


@dataclass
class FakeBridge:
    """The generic-http bridge's REST API (`GENERIC_HTTP_BASE_URL`): dials and hang-ups."""

    server: ThreadingHTTPServer
    requests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def dialled(self) -> list[str]:
        return [r["body"].get("to") for r in self.requests if r["path"] == "/calls"]


def start_bridge() -> FakeBridge:
    bridge: FakeBridge

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            size = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(size) or b"{}")
            bridge.requests.append({"path": self.path, "body": body, "headers": dict(self.headers)})
            answer = {"status": "ok"}
            if self.path == "/calls":
                answer = {"call_id": f"out-{uuid.uuid4().hex[:12]}", "status": "queued"}
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    bridge = FakeBridge(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return bridge


@dataclass
class Services:
    gateway: Service
    orchestrator: Service
    llm: Service
    bridge: FakeBridge
    gateway_env: dict[str, str]  # to start another gateway like it

    @property
    def console(self) -> str:
        return f"{self.gateway.url}/console/"

    def token(self, role: str = "operator", sub: str | None = None, ttl_s: float = 1800) -> str:
        sub = sub or f"console-{role}-{uuid.uuid4().hex[:8]}"
        return mint_token(JWT_SECRET, sub=sub, role=role, ttl_s=ttl_s)

    def webhook(self, event: dict[str, Any], gateway: str | None = None) -> dict[str, Any]:
        """Post one signed generic-http event, as a bridge does; its JSON answer."""
        body = json.dumps(event).encode()
        r = httpx.post(
            f"{gateway or self.gateway.url}/voice/webhook/generic-http",
            content=body,
            headers=sign(body),
            timeout=20,
        )
        assert r.status_code == 200, r.text
        answer: dict[str, Any] = r.json()
        return answer

    def create_agent(self, name: str, **configuration: Any) -> dict[str, Any]:
        r = httpx.post(
            f"{self.orchestrator.url}/agents/create",
            json={"name": name, "configuration": configuration},
            headers={"Authorization": f"Bearer {self.token('admin')}"},
            timeout=10,
        )
        assert r.status_code == 201, r.text
        agent: dict[str, Any] = r.json()
        return agent


@pytest.fixture(scope="session")
def services(pg_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    data_dir = tmp_path_factory.mktemp("console-data")
    bridge = start_bridge()
    common = {"DATA_DIR": str(data_dir), "JWT_SECRET": JWT_SECRET, "APP_ENV": "development"}
    pace = {"FAKE_LLM_FIRST_TOKEN_MS": str(FIRST_TOKEN_MS), "FAKE_LLM_TOKEN_MS": str(TOKEN_MS)}
    try:
        with run_service(
            "fake-llm",
            "bench.fake_llm:create_app",
            {**pace, "PYTHONPATH": str(ROOT)},
            data_dir,
        ) as llm:
            orch_env = {
                **common,
                "DATABASE_URL": pg_dsn,
                "OPENAI_API_KEY": "sk-console-tests",
                "OPENAI_BASE_URL": f"{llm.url}/v1",
            }
            with run_service(
                "orchestrator", "orchestrator.main:create_app", orch_env, data_dir
            ) as orch:
                port = free_port()
                gw_env = {
                    **common,
                    "ORCHESTRATOR_URL": orch.url,
                    "VOICE_PROVIDER": "generic-http",
                    "GENERIC_HTTP_SECRET": GH_SECRET,
                    "GENERIC_HTTP_BASE_URL": bridge.url,
                    "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
                    "STREAM_FIRST_TOKEN_TIMEOUT_S": "5",  # no holding line on a loaded machine
                    "TURN_TIMEOUT_S": "10",
                    "SHUTDOWN_DRAIN_S": "0",  # nothing to drain at the end of the tests
                }
                with run_service(
                    "gateway", "realtime_gateway.app:create_app", gw_env, data_dir, port
                ) as gw:
                    yield Services(gw, orch, llm, bridge, gw_env)
    finally:
        bridge.server.shutdown()


@pytest.fixture(scope="package")
def browser(services: Services) -> Iterator[Any]:
    """Chromium for this folder's tests only: Playwright's sync API holds an event loop as the
    thread's running one while it lives, so the session's `asyncio.run` fixtures (made first:
    `services`) and the async tests of other folders (after this one's teardown) keep working."""
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


@dataclass
class Console:
    """One browser page on the console, with the URLs it requested."""

    page: Any
    services: Services
    requested: list[str] = field(default_factory=list)

    def sign_in(self, role: str = "operator", url: str | None = None) -> str:
        token = self.services.token(role)
        self.page.goto(url or self.services.console)
        self.page.get_by_label("Access token (management JWT)").fill(token)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.locator("#connection[data-state=live]").wait_for(timeout=WAIT_MS)
        return token

    def external_requests(self) -> list[str]:
        return [u for u in self.requested if urlsplit(u).hostname not in LOCAL_HOSTS]


@pytest.fixture
def console(browser: Any, services: Services) -> Iterator[Console]:
    context = browser.new_context(viewport=LAPTOP)
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    opened = Console(page, services)
    page.on("request", lambda request: opened.requested.append(request.url))
    try:
        yield opened
    finally:
        context.close()
    assert not opened.external_requests(), opened.external_requests()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """Where the console's screenshots go (not committed): `.data/screenshots`."""
    folder = Path(os.environ.get("DATA_DIR") or ROOT / ".data") / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
