"""The production stack's public URL (issue 17, defect 5): compose refuses to start without
PUBLIC_BASE_URL, the gateway's environment from compose loads as production settings with a
provider that signs URLs, and nginx forwards the scheme and host (with its port) the provider
called, worked out from the config text (`nginx_headers`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ops.nginx_headers import Request, conf_text, upstream_headers
from realtime_gateway.config import GatewaySettings

PROD = ("docker-compose.yml", "docker-compose.prod.yml")
PUBLIC = "https://voice.example.com"


def test_prod_refuses_to_start_without_public_base_url(compose_raw: Callable[..., Any]) -> None:
    proc = compose_raw(*PROD, env={"POSTGRES_PASSWORD": "a-strong-password"})
    assert proc.returncode != 0
    assert "set PUBLIC_BASE_URL" in proc.stderr


def test_prod_gateway_settings_load_with_twilio_and_trust_only_the_stack(
    compose_config: Callable[..., dict[str, Any]],
) -> None:
    env = compose_config(
        *PROD, env={"POSTGRES_PASSWORD": "a-strong-password", "PUBLIC_BASE_URL": PUBLIC}
    )["services"]["node-backend"]["environment"]
    assert env["PUBLIC_BASE_URL"] == PUBLIC
    values = {k.lower(): v for k, v in env.items() if k != "PYTHONPATH"}
    settings = GatewaySettings(
        _env_file=None,  # type: ignore[call-arg]
        **values,
        jwt_secret="Prod-" + "k7Qz" * 10,
        generic_http_secret="g" * 40,
        twilio_auth_token="twilio-token",
    )
    assert settings.production and settings.public_url() == PUBLIC
    proxies = settings.proxy_trust()
    assert proxies.trusts("172.20.0.5") and proxies.trusts("192.168.16.3")  # Docker networks
    assert not proxies.trusts("203.0.113.7")


def test_nginx_passes_on_the_scheme_and_host_the_tls_terminator_saw() -> None:
    sent = upstream_headers(
        conf_text(),
        Request(
            {
                "Host": "voice.example.com",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "voice.example.com:8443",
                "X-Forwarded-For": "198.51.100.23",
                "X-Twilio-Signature": "sig",
            },
            remote_addr="172.18.0.2",
        ),
    )
    assert sent["x-forwarded-proto"] == "https"
    assert sent["x-forwarded-host"] == "voice.example.com:8443"
    assert sent["x-forwarded-for"] == "198.51.100.23, 172.18.0.2"
    assert sent["x-twilio-signature"] == "sig"  # nginx passes the provider's headers on


def test_nginx_alone_sends_its_own_scheme_and_the_host_with_its_port() -> None:
    sent = upstream_headers(
        conf_text(), Request({"Host": "gw.example.com:3000"}, remote_addr="198.51.100.23")
    )
    assert sent["host"] == "gw.example.com:3000"
    assert sent["x-forwarded-host"] == "gw.example.com:3000"
    assert sent["x-forwarded-proto"] == "http"
    assert sent["x-forwarded-for"] == "198.51.100.23"
    assert sent["x-real-ip"] == "198.51.100.23"
