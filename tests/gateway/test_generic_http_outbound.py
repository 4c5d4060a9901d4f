"""generic-http outbound: the gateway signs its own requests to the bridge's API the same way
the bridge signs its events. The bridge (an external HTTP API) is faked at the HTTP layer."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import httpx
import pytest
import respx

from realtime_gateway.vocabulary import CallOptions, ProviderConfigError, ProviderError
from tests.gateway.conftest import GH_SECRET, PUBLIC, gateway, settings_for

BRIDGE = "https://bridge.example.com"


def assert_signed(request: httpx.Request) -> None:
    ts = request.headers["X-Gateway-Timestamp"]
    expected = hmac.new(
        GH_SECRET.encode(), ts.encode() + b"." + request.content, hashlib.sha256
    ).hexdigest()
    assert request.headers["X-Gateway-Signature"] == f"v1={expected}"


@pytest.fixture
def bridge() -> respx.Router:
    return respx.Router(base_url=BRIDGE, assert_all_called=False)


async def test_make_call_posts_a_signed_request_and_returns_the_call(
    data_dir: Path, bridge: respx.Router
) -> None:
    route = bridge.post("/calls").respond(201, json={"call_id": "out-42", "status": "queued"})
    settings = settings_for(data_dir, generic_http_base_url=BRIDGE)
    async with gateway(
        settings, provider_transport=httpx.MockTransport(bridge.async_handler)
    ) as gw:
        driver = await gw.rt.drivers.current()
        call = await driver.make_call(
            "+15550003333", CallOptions(from_number="+15550004444", idempotency_key="idem-1")
        )
    assert (call.call_id, call.provider, call.status) == ("out-42", "generic-http", "queued")
    request = route.calls.last.request
    assert_signed(request)
    assert json.loads(request.content) == {
        "to": "+15550003333",
        "from": "+15550004444",
        "callback_url": f"{PUBLIC}/voice/webhook/generic-http",
        "idempotency_key": "idem-1",
    }


async def test_end_call_posts_a_signed_hangup_and_tolerates_an_ended_call(
    data_dir: Path, bridge: respx.Router
) -> None:
    route = bridge.post("/calls/out-42/hangup")
    route.side_effect = [httpx.Response(200, json={}), httpx.Response(404, json={})]
    settings = settings_for(data_dir, generic_http_base_url=BRIDGE)
    async with gateway(
        settings, provider_transport=httpx.MockTransport(bridge.async_handler)
    ) as gw:
        driver = await gw.rt.drivers.current()
        await driver.end_call("out-42")
        await driver.end_call("out-42")  # already gone: not an error
    assert route.call_count == 2
    assert_signed(route.calls.last.request)


@pytest.mark.parametrize(
    ("response", "status"),
    [
        (httpx.Response(422, json={"error": "bad number"}), 400),
        (httpx.Response(502), 502),
        (httpx.Response(200, json={"status": "queued"}), 502),
        (httpx.Response(200, text="ok"), 502),
    ],
    ids=["refused", "bridge-error", "no-call-id", "not-json"],
)
async def test_bridge_failures_become_provider_errors(
    data_dir: Path, bridge: respx.Router, response: httpx.Response, status: int
) -> None:
    bridge.post("/calls").mock(return_value=response)
    settings = settings_for(data_dir, generic_http_base_url=BRIDGE)
    async with gateway(
        settings, provider_transport=httpx.MockTransport(bridge.async_handler)
    ) as gw:
        driver = await gw.rt.drivers.current()
        with pytest.raises(ProviderError) as info:
            await driver.make_call("+15550003333", CallOptions())
    assert info.value.status == status


async def test_outbound_needs_the_bridge_url_and_a_public_url(data_dir: Path) -> None:
    async with gateway(settings_for(data_dir)) as gw:
        driver = await gw.rt.drivers.current()
        with pytest.raises(ProviderConfigError, match="GENERIC_HTTP_BASE_URL"):
            await driver.make_call("+15550003333", CallOptions())
    settings = settings_for(data_dir, generic_http_base_url=BRIDGE, public_base_url=None)
    async with gateway(settings) as gw:
        driver = await gw.rt.drivers.current()
        with pytest.raises(ProviderConfigError, match="PUBLIC_BASE_URL"):
            await driver.make_call("+15550003333", CallOptions())
