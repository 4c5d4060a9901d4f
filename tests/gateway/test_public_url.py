"""Which URL provider signatures are checked against (issue 17 defect 5, issue 19 item 5).

Twilio webhooks are signed with Twilio's own `RequestValidator.compute_signature` over the URL
Twilio called (https, with its port), then sent to the real gateway app the way they reach it:
through the shipped nginx (`tests/ops/nginx_headers.py` works out from `deploy/nginx/nginx.conf`
the headers nginx sends) from nginx's address, or straight from an address that is no proxy of
ours. The orchestrator is the real one on Postgres.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from twilio.request_validator import RequestValidator

from realtime_gateway import __main__ as gateway_main
from realtime_gateway.app import create_app
from realtime_gateway.config import GatewaySettings
from shared.config import ConfigError, load_settings
from shared.ratelimit import client_address
from tests.gateway.conftest import GH_SECRET, JWT_SECRET, auth, settings_for
from tests.ops.nginx_headers import Request as NginxRequest
from tests.ops.nginx_headers import conf_text, upstream_headers

TOKEN = "public-url-tests-twilio-auth-token"
ACCOUNT = "AC" + "3" * 32
NGINX = "172.18.0.9"  # the load balancer on the compose network (Docker's 172.16.0.0/12)
TLS_TERMINATOR = "172.18.0.2"  # e.g. a TLS proxy container in front of nginx
OUTSIDER = "203.0.113.7"  # anyone on the internet
CALLER_IP = "198.51.100.23"
STATUS_PATH = "/voice/webhook/twilio/status"


def tw_settings(data_dir: Path, **overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "voice_provider": "twilio",
        "public_base_url": None,
        "twilio_account_sid": ACCOUNT,
        "twilio_auth_token": TOKEN,
        "twilio_phone_number": "+15550009999",
        "trusted_proxies": "172.16.0.0/12",
    }
    values.update(overrides)
    return settings_for(data_dir, **values)


def status_form() -> dict[str, str]:
    return {
        "CallSid": "CA" + uuid.uuid4().hex,
        "AccountSid": ACCOUNT,
        "CallStatus": "completed",
        "CallDuration": "3",
        "ApiVersion": "2010-04-01",
    }


def twilio_signs(url: str, form: dict[str, str]) -> str:
    return str(RequestValidator(TOKEN).compute_signature(url, form))


@asynccontextmanager
async def from_peer(
    settings: GatewaySettings, orchestrator: httpx.AsyncBaseTransport, peer: str
) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose requests reach the gateway's socket from `peer`."""
    app = create_app(settings, orchestrator_transport=orchestrator)
    transport = httpx.ASGITransport(app=app, client=(peer, 41000))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://node-backend:3000") as client,
    ):
        yield client


def through_nginx(client_headers: dict[str, str], remote_addr: str) -> dict[str, str]:
    """The headers a gateway replica receives when nginx gets `client_headers`."""
    return upstream_headers(conf_text(), NginxRequest(client_headers, remote_addr))


# ---- behind the shipped nginx (issue 17, defect 5) ---------------------------------------------


async def test_twilio_signature_verifies_with_tls_ended_in_front_of_nginx(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    """Twilio calls https://voice.example.com; the TLS terminator passes plain HTTP to nginx
    with X-Forwarded-Proto: https. nginx must pass that on, not its own `http`."""
    form = status_form()
    signature = twilio_signs(f"https://voice.example.com{STATUS_PATH}", form)
    headers = through_nginx(
        {
            "Host": "voice.example.com",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-For": CALLER_IP,
            "X-Twilio-Signature": signature,
        },
        remote_addr=TLS_TERMINATOR,
    )
    async with from_peer(tw_settings(data_dir), orchestrator, NGINX) as client:
        r = await client.post(STATUS_PATH, data=form, headers=headers)
    assert r.status_code == 200, r.text


async def test_twilio_signature_verifies_when_nginx_is_published_on_a_port(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    """Twilio calls http://gw.example.com:3000 (compose publishes nginx on 3000): the port is
    part of the signed URL, so nginx must keep it in Host / X-Forwarded-Host."""
    form = status_form()
    signature = twilio_signs(f"http://gw.example.com:3000{STATUS_PATH}", form)
    headers = through_nginx(
        {"Host": "gw.example.com:3000", "X-Twilio-Signature": signature}, remote_addr=CALLER_IP
    )
    async with from_peer(tw_settings(data_dir), orchestrator, NGINX) as client:
        r = await client.post(STATUS_PATH, data=form, headers=headers)
    assert r.status_code == 200, r.text


# ---- forwarded headers only from trusted proxies (issue 19, item 5) ----------------------------


async def test_forwarded_host_from_a_peer_that_is_no_trusted_proxy_is_ignored(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    """TRUST_PROXY=true no longer means "believe anyone" once TRUSTED_PROXIES names the
    proxies: the same signed request is good from nginx and refused from an outsider."""
    settings = tw_settings(data_dir, trust_proxy=True)
    form = status_form()
    headers = {
        "Host": "node-backend:3000",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "attacker.example",
        "X-Twilio-Signature": twilio_signs(f"https://attacker.example{STATUS_PATH}", form),
    }
    async with from_peer(settings, orchestrator, OUTSIDER) as client:
        r = await client.post(STATUS_PATH, data=form, headers=headers)
    assert r.status_code == 403, r.text
    async with from_peer(settings, orchestrator, NGINX) as client:
        r = await client.post(STATUS_PATH, data=form, headers=headers)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("app_env", ["test", "production"])
async def test_configured_webhook_url_is_what_signatures_are_checked_against(
    app_env: str, data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    """TWILIO_WEBHOOK_URL set, no PUBLIC_BASE_URL: a signature Twilio made for another
    deployment's URL (same account token, e.g. staging) replayed here with that deployment's
    Host is refused; Twilio's own request for our URL verifies."""
    settings = tw_settings(
        data_dir, app_env=app_env, twilio_webhook_url="https://voice.example.com/voice/webhook"
    )
    form = status_form()
    replayed = {
        "Host": "staging.example.com",
        "X-Forwarded-Host": "staging.example.com",
        "X-Twilio-Signature": twilio_signs(f"http://staging.example.com{STATUS_PATH}", form),
    }
    genuine = {
        "X-Twilio-Signature": twilio_signs(f"https://voice.example.com{STATUS_PATH}", form),
    }
    for peer in (OUTSIDER, NGINX):
        async with from_peer(settings, orchestrator, peer) as client:
            r = await client.post(STATUS_PATH, data=form, headers=replayed)
            assert r.status_code == 403, (peer, r.text)
            r = await client.post(STATUS_PATH, data=form, headers=genuine)
            assert r.status_code == 200, (peer, r.text)


async def test_production_never_takes_the_public_url_from_request_headers(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    """Production, no PUBLIC_BASE_URL (generic-http needs none): even from a trusted proxy,
    Host and X-Forwarded-Host do not become the public URL; the socket address does."""
    settings = settings_for(
        data_dir, app_env="production", public_base_url=None, trusted_proxies="172.16.0.0/12"
    )
    headers = {"Host": "attacker.example", "X-Forwarded-Host": "attacker2.example"}
    async with from_peer(settings, orchestrator, NGINX) as client:
        r = await client.post("/voice/webhook/test", headers={**headers, **auth()})
    assert r.json()["public_url"] == "http://node-backend:3000/voice/webhook/test"


async def test_development_rebuilds_the_url_from_a_trusted_proxy_only(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    """A laptop behind ngrok (no PUBLIC_BASE_URL): the proxy's X-Forwarded-Proto/-Host when
    the peer is a trusted proxy, else the Host this process received."""
    settings = settings_for(data_dir, public_base_url=None, trusted_proxies="127.0.0.1")
    headers = {
        "Host": "localhost:3000",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "abc.ngrok.app",
    }
    async with from_peer(settings, orchestrator, "127.0.0.1") as client:
        r = await client.post("/voice/webhook/test", headers={**headers, **auth()})
        assert r.json()["public_url"] == "https://abc.ngrok.app/voice/webhook/test"
    async with from_peer(settings, orchestrator, OUTSIDER) as client:
        r = await client.post("/voice/webhook/test", headers={**headers, **auth()})
        assert r.json()["public_url"] == "http://localhost:3000/voice/webhook/test"


# ---- start-up: production needs the URL from configuration -------------------------------------


def production(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "_env_file": None,
        "app_env": "production",
        "jwt_secret": JWT_SECRET,
        "generic_http_secret": GH_SECRET,
        "public_base_url": None,
    }
    values.update(overrides)
    return values


def test_production_with_twilio_and_no_public_url_stops_start_up(data_dir: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(GatewaySettings, **production(data_dir=data_dir, twilio_auth_token=TOKEN))
    message = str(exc.value)
    assert "PUBLIC_BASE_URL is required in production" in message
    assert "twilio (or TWILIO_WEBHOOK_URL)" in message and TOKEN not in message
    with pytest.raises(ConfigError, match=r"vonage \(or VONAGE_WEBHOOK_URL\)"):
        load_settings(GatewaySettings, **production(data_dir=data_dir, voice_provider="vonage"))


@pytest.mark.parametrize(
    "overrides",
    [
        {"twilio_auth_token": TOKEN, "public_base_url": "https://voice.example.com"},
        {"twilio_auth_token": TOKEN, "twilio_webhook_url": "https://voice.example.com/x"},
        {"voice_provider": "generic-http"},
        {"twilio_auth_token": TOKEN, "app_env": "development"},
    ],
    ids=["public-base-url", "twilio-webhook-url", "no-url-provider", "development"],
)
def test_start_up_accepts_a_configured_url_or_no_need_for_one(
    overrides: dict[str, Any], data_dir: Path
) -> None:
    load_settings(GatewaySettings, **production(data_dir=data_dir, **overrides))


def test_a_malformed_trusted_proxies_list_stops_start_up(data_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"TRUSTED_PROXIES: .*'nginx'"):
        load_settings(GatewaySettings, _env_file=None, trusted_proxies="10.0.0.0/8, nginx")


# ---- the same list for uvicorn and the rate limiters -------------------------------------------


def test_uvicorn_believes_forwarded_headers_from_the_same_list(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    runs: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kw: runs.append(kw))
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    for name in ("TRUST_PROXY", "TRUSTED_PROXIES", "APP_ENV", "NODE_ENV"):
        monkeypatch.delenv(name, raising=False)
    gateway_main.main()
    monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.0/8,192.168.1.7")
    gateway_main.main()
    monkeypatch.setenv("TRUST_PROXY", "true")
    monkeypatch.delenv("TRUSTED_PROXIES")
    gateway_main.main()
    assert [(kw["proxy_headers"], kw["forwarded_allow_ips"]) for kw in runs] == [
        (False, None),
        (True, "10.0.0.0/8,192.168.1.7"),
        (True, "*"),
    ]


def test_rate_limited_client_is_the_one_a_trusted_proxy_forwarded_for() -> None:
    proxies = GatewaySettings(_env_file=None, trusted_proxies="172.16.0.0/12").proxy_trust()  # type: ignore[call-arg]
    forwarded = [(b"x-forwarded-for", f"1.2.3.4, {CALLER_IP}, {TLS_TERMINATOR}".encode())]
    via_nginx = {"type": "http", "client": (NGINX, 1), "headers": forwarded}
    direct = {"type": "http", "client": (OUTSIDER, 1), "headers": forwarded}
    assert client_address(via_nginx, proxies) == CALLER_IP  # the terminator is ours too
    assert client_address(direct, proxies) == OUTSIDER  # a forged X-Forwarded-For buys nothing
