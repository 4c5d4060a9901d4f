"""Headers, CORS, body size, hostile JSON and XML on both services (issue 8, items 3 and 4)."""

from __future__ import annotations

import ast
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from realtime_gateway.app import create_app as create_gateway
from shared.auth import ServiceTokenSource, mint_token
from shared.body_limit import json_depth_exceeds
from shared.config import ConfigError
from tests.gateway.conftest import (
    JWT_SECRET,
    WEBHOOK,
    auth,
    gateway,
    new_call_id,
    settings_for,
    sign,
    started,
)
from tests.orchestrator.conftest import SECRET as ORCH_SECRET
from tests.orchestrator.conftest import make_settings as orch_settings
from tests.orchestrator.conftest import run_app

ROOT = Path(__file__).resolve().parents[2]
TWO_MB = b"x" * (2 * 1024 * 1024)
BASE_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def assert_hardened(r: httpx.Response, https: bool) -> None:
    for name, value in BASE_HEADERS.items():
        assert r.headers.get(name) == value, (name, dict(r.headers))
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert ("strict-transport-security" in r.headers) is https


def orch_admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(ORCH_SECRET, sub='ops', role='admin')}"}


def orch_service() -> dict[str, str]:
    return {"Authorization": f"Bearer {ServiceTokenSource(ORCH_SECRET).token()}"}


async def chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def deep_json(depth: int) -> bytes:
    return b'{"message": ' + b"[" * depth + b"]" * depth + b', "turn_id": "t1"}'


# -- headers and CORS ---------------------------------------------------------------------------


async def test_gateway_security_headers_and_hsts_only_over_https(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    async with gateway(settings_for(data_dir), orchestrator) as g:
        assert_hardened(await g.client.get("/health"), https=False)
        assert_hardened(await g.client.get("/voice/providers/current"), https=False)  # a 401
        assert_hardened(await g.client.get("/voice/providers/current", headers=auth()), False)
    https = settings_for(data_dir, public_base_url="https://voice.example.com")
    async with gateway(https, orchestrator) as g:
        r = await g.client.get("/health")
        assert_hardened(r, https=True)
        assert "max-age=31536000" in r.headers["strict-transport-security"]


async def test_orchestrator_security_headers_hsts_behind_a_trusted_proxy(
    pg_dsn: str, data_dir: Path
) -> None:
    async with run_app(orch_settings(data_dir, pg_dsn)) as orch:
        assert_hardened(await orch.client.get("/health"), https=False)
        assert_hardened(await orch.client.get("/agents"), https=False)
        # an untrusted X-Forwarded-Proto is ignored
        r = await orch.client.get("/health", headers={"X-Forwarded-Proto": "https"})
        assert_hardened(r, https=False)
    async with run_app(orch_settings(data_dir, pg_dsn, trust_proxy=True)) as orch:
        r = await orch.client.get("/health", headers={"X-Forwarded-Proto": "https"})
        assert_hardened(r, https=True)


async def test_cors_allows_only_the_configured_origins(
    data_dir: Path, orchestrator: httpx.ASGITransport, pg_dsn: str
) -> None:
    origin = "https://dashboard.example.com"
    preflight = {
        "Origin": origin,
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }
    evil = {**preflight, "Origin": "https://evil.example.net"}
    gw_settings = settings_for(
        data_dir, cors_origin=f"{origin}, https://ops.example.com", cors_credentials=True
    )
    async with gateway(gw_settings, orchestrator) as g:
        ok = await g.client.options("/voice/providers/current", headers=preflight)
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == origin
        assert ok.headers["access-control-allow-credentials"] == "true"
        bad = await g.client.options("/voice/providers/current", headers=evil)
        assert bad.status_code == 400
        assert "access-control-allow-origin" not in bad.headers
        r = await g.client.get("/health", headers={"Origin": "https://evil.example.net"})
        assert "access-control-allow-origin" not in r.headers
    o_settings = orch_settings(data_dir, pg_dsn, cors_origin=origin)
    async with run_app(o_settings) as orch:
        ok = await orch.client.options("/agents", headers=preflight)
        assert ok.headers["access-control-allow-origin"] == origin
        assert "access-control-allow-credentials" not in ok.headers
        bad = await orch.client.options("/agents", headers=evil)
        assert "access-control-allow-origin" not in bad.headers


def test_cors_wildcard_with_credentials_stops_start_up(data_dir: Path, pg_dsn: str) -> None:
    with pytest.raises(ConfigError, match="CORS_ORIGIN"):
        create_gateway(settings_for(data_dir, cors_origin="*", cors_credentials=True))
    from orchestrator.main import create_app as create_orchestrator

    with pytest.raises(ConfigError, match="CORS_ORIGIN"):
        create_orchestrator(orch_settings(data_dir, pg_dsn, cors_origin="*", cors_credentials=True))


# -- body size ------------------------------------------------------------------------------------


async def test_gateway_2mb_body_is_413_before_parsing(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    async with gateway(settings_for(data_dir), orchestrator) as g:
        for path, headers in (
            (WEBHOOK, sign(TWO_MB)),  # even correctly signed
            ("/voice/webhook/twilio", {"Content-Type": "application/x-www-form-urlencoded"}),
            ("/voice/providers/current", auth()),
        ):
            r = await g.client.post(path, content=TWO_MB, headers=headers)
            assert r.status_code == 413, (path, r.text)
            assert r.json()["error"]["code"] == "payload_too_large"
            # streamed without Content-Length (chunked): counted as it arrives
            r = await g.client.post(path, content=chunks(TWO_MB), headers=headers)
            assert r.status_code == 413, (path, r.text)
        # a body just under the limit is not refused for its size
        small = json.dumps(started(new_call_id())).encode()
        assert (await g.client.post(WEBHOOK, content=small, headers=sign(small))).status_code == 200


async def test_orchestrator_2mb_body_is_413_before_parsing(pg_dsn: str, data_dir: Path) -> None:
    async with run_app(orch_settings(data_dir, pg_dsn)) as orch:
        for path, headers in (
            ("/agents/create", orch_admin()),
            ("/conversations/c-413/messages", orch_service()),
            ("/knowledge", orch_admin()),
            ("/agents/create", {}),  # unauthenticated: refused for size first, nothing parsed
        ):
            hdrs = {**headers, "Content-Type": "application/json"}
            r = await orch.client.post(path, content=TWO_MB, headers=hdrs)
            assert r.status_code == 413, (path, r.text)
            assert r.json()["error"]["code"] == "payload_too_large"
            r = await orch.client.post(path, content=chunks(TWO_MB), headers=hdrs)
            assert r.status_code == 413, (path, r.text)


# -- hostile JSON ---------------------------------------------------------------------------------


def test_json_depth_scan() -> None:
    assert not json_depth_exceeds(b'{"a": [1, {"b": "[[[[[[[[[[[["}]}', 3)
    assert json_depth_exceeds(b'{"a": [[[[]]]]}', 3)
    assert not json_depth_exceeds(b'"\\"[[[[[["', 1)  # brackets inside a string with an escape


async def test_deeply_nested_json_is_400_on_both_services(
    data_dir: Path, orchestrator: httpx.ASGITransport, pg_dsn: str
) -> None:
    body = deep_json(100_000)
    async with run_app(orch_settings(data_dir, pg_dsn)) as orch:
        hdrs = {**orch_service(), "Content-Type": "application/json"}
        started_at = time.monotonic()
        r = await orch.client.post("/conversations/c-deep/messages", content=body, headers=hdrs)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "invalid_json"
        assert time.monotonic() - started_at < 2
        # moderately nested but legal structures still reach validation (422 naming the field)
        legal = deep_json(20)
        r = await orch.client.post("/conversations/c-deep/messages", content=legal, headers=hdrs)
        assert r.status_code == 422 and "message" in r.json()["error"]["message"]
        # whatever the declared type (FastAPI parses a body without one as JSON)
        for content_type in ({}, {"Content-Type": "text/plain"}):
            hdrs = {**orch_service(), **content_type}
            r = await orch.client.post("/conversations/c-deep/messages", content=body, headers=hdrs)
            assert r.status_code == 400, r.text
    async with gateway(settings_for(data_dir), orchestrator) as g:
        nested = b'{"type": "call.started", "metadata": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
        r = await g.client.post(WEBHOOK, content=nested, headers=sign(nested))
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
        plain = {**sign(nested), "Content-Type": "text/plain"}
        r = await g.client.post(WEBHOOK, content=nested, headers=plain)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
        operator = {"Authorization": f"Bearer {mint_token(JWT_SECRET, sub='o', role='operator')}"}
        r = await g.client.post("/voice/calls/initiate", content=b"[" * 100_000, headers=operator)
        assert r.status_code == 400, r.text


# -- hostile XML ----------------------------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<Response><Say>&lol9;</Say></Response>"""


async def test_billion_laughs_is_rejected_by_every_webhook(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    """No provider sends us XML (Twilio: form posts, Vonage and Connect: JSON), so no service
    parses XML; an XML bomb posted anywhere is refused without being expanded."""
    async with gateway(settings_for(data_dir), orchestrator) as g:
        for path in (
            WEBHOOK,
            "/voice/webhook/twilio",
            "/voice/webhook/twilio/gather",
            "/voice/webhook/vonage/answer",
            "/voice/webhook/aws-connect",
        ):
            started_at = time.monotonic()
            r = await g.client.post(
                path, content=BILLION_LAUGHS, headers={"Content-Type": "application/xml"}
            )
            assert 400 <= r.status_code < 500 or r.status_code == 503, (path, r.status_code)
            assert r.headers["content-type"].startswith("application/json")
            assert time.monotonic() - started_at < 1, path


def test_the_twiml_checker_refuses_entity_expansion() -> None:
    """What does parse XML (the TwiML checks in the tests) uses defusedxml, which refuses it."""
    from defusedxml import EntitiesForbidden

    from tests.gateway.provider_fakes import parse_twiml

    with pytest.raises(EntitiesForbidden):
        parse_twiml(BILLION_LAUGHS.decode())


SERVICE_PACKAGES = ("shared", "realtime-gateway/realtime_gateway", "orchestrator/orchestrator")
UNSAFE_XML_MODULES = ("xml.etree", "xml.dom", "xml.sax", "lxml", "xmltodict", "xml.parsers")


def test_no_service_module_imports_an_unhardened_xml_parser() -> None:
    """Guard: XML parsing added to a service must go through defusedxml."""
    offenders = []
    for package in SERVICE_PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            typing_only = {
                id(inner)
                for node in ast.walk(tree)
                if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                for inner in ast.walk(node)
            }
            for node in ast.walk(tree):
                if id(node) in typing_only:  # types only (e.g. Element), nothing parsed
                    continue
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                for name in names:
                    if name.startswith(UNSAFE_XML_MODULES):
                        offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert offenders == []
