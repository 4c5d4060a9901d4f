"""The console's live feed outlives a gateway restart: the socket drops, the console says it is
reconnecting (still signed in), and once a gateway answers on the same address again the feed is
live by itself and new calls appear, with no reload and no new sign-in."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.console.conftest import Console
from tests.e2e.services import free_port, run_service
from tests.gateway.conftest import new_call_id, started

pytestmark = pytest.mark.slow

GATEWAY = "realtime_gateway.app:create_app"


def test_the_console_reconnects_by_itself_when_the_gateway_restarts(
    console: Console, tmp_path: Path
) -> None:
    page, services = console.page, console.services
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**services.gateway_env, "PUBLIC_BASE_URL": url}
    connection = page.locator("#connection")
    with run_service("gateway-restarting", GATEWAY, env, tmp_path, port):
        console.sign_in("operator", url=f"{url}/console/")
    page.locator("#connection[data-state=reconnecting]").wait_for()  # the gateway is gone
    assert page.locator("#app").is_visible()  # still signed in
    with run_service("gateway-restarted", GATEWAY, env, tmp_path, port):
        page.locator("#connection[data-state=live]").wait_for()
        assert connection.inner_text() == "Live"
        call_id = new_call_id()
        services.webhook(started(call_id), gateway=url)
        page.locator(f"#live-calls tr[data-call='{call_id}']").wait_for()
