"""Management auth on both services, rule by rule (issue 8, item 1).

Every forged, expired, incomplete or misdirected token is a 401 JSON with `WWW-Authenticate`;
a valid token of too small a role is a 403 JSON; a weak production JWT_SECRET stops start-up.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import websockets

from realtime_gateway.app import create_app as create_gateway
from shared.auth import ServiceTokenSource, mint_token, verify_management_token
from shared.config import ConfigError
from tests.gateway.conftest import JWT_SECRET, gateway, served, settings_for
from tests.orchestrator.conftest import SECRET as ORCH_SECRET
from tests.orchestrator.conftest import make_settings as orch_settings
from tests.orchestrator.conftest import run_app

ROOT = Path(__file__).resolve().parents[2]
GATEWAY_READ = "/voice/providers/current"
ORCH_READ = "/agents"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], key: bytes | None) -> str:
    """A JWT built by hand, so any header (alg none, alg confusion) can be produced."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = (
        b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    )
    return f"{signing_input}.{_b64(signature)}"


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    values: dict[str, Any] = {"sub": "mallory", "role": "admin", "iat": now, "exp": now + 600}
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def bad_tokens(secret: str) -> dict[str, str]:
    key = secret.encode()
    now = int(time.time())
    return {
        "other key": mint_token("another-secret-" + "z" * 40, sub="mallory", role="admin"),
        "alg none": forge({"alg": "none", "typ": "JWT"}, claims(), None),
        "alg none, capitalised": forge({"alg": "None"}, claims(), None),
        "alg RS256 header, HMAC signature (confusion)": forge(
            {"alg": "RS256", "typ": "JWT"}, claims(), key
        ),
        # the same key: refused for its algorithm alone (HS256 is pinned), not for its key
        "alg HS512, same key": jwt.encode(claims(), secret, algorithm="HS512"),
        "expired": jwt.encode(claims(exp=now - 120), secret, algorithm="HS256"),
        "no exp": jwt.encode(claims(exp=None), secret, algorithm="HS256"),
        "no sub": jwt.encode(claims(sub=None), secret, algorithm="HS256"),
        "unknown role": jwt.encode(claims(role="root"), secret, algorithm="HS256"),
        "service token as management token": ServiceTokenSource(secret).token(),
        "garbage": "not.a.jwt",
        "tampered payload": _tamper(mint_token(secret, sub="viewer-user", role="viewer")),
    }


def _tamper(token: str) -> str:
    head, _payload, sig = token.split(".")
    return f"{head}.{_b64(json.dumps(claims(role='admin')).encode())}.{sig}"


def assert_401(r: httpx.Response) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"]["code"] in ("unauthorized", "invalid_token")
    assert r.headers["www-authenticate"].startswith("Bearer")


# -- gateway ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(bad_tokens(JWT_SECRET)))
async def test_gateway_rejects_bad_tokens_with_401_json(
    data_dir: Path, orchestrator: httpx.ASGITransport, case: str
) -> None:
    token = bad_tokens(JWT_SECRET)[case]
    async with gateway(settings_for(data_dir), orchestrator) as g:
        assert_401(await g.client.get(GATEWAY_READ))  # no token at all
        assert_401(await g.client.get(GATEWAY_READ, headers={"Authorization": f"Bearer {token}"}))
        assert_401(await g.client.get(GATEWAY_READ, headers={"Authorization": f"Basic {token}"}))
        good = mint_token(JWT_SECRET, sub="ops", role="viewer")
        ok = await g.client.get(GATEWAY_READ, headers={"Authorization": f"Bearer {good}"})
        assert ok.status_code == 200, ok.text


async def test_gateway_checks_audience_and_issuer_when_configured(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    settings = settings_for(data_dir, jwt_audience="vao-dashboard", jwt_issuer="vao-auth")
    async with gateway(settings, orchestrator) as g:

        async def get(**kw: Any) -> httpx.Response:
            token = mint_token(JWT_SECRET, sub="ops", role="admin", **kw)
            return await g.client.get(GATEWAY_READ, headers={"Authorization": f"Bearer {token}"})

        assert_401(await get())  # neither claim
        assert_401(await get(audience="someone-else", issuer="vao-auth"))
        assert_401(await get(audience="vao-dashboard", issuer="evil"))
        assert (await get(audience="vao-dashboard", issuer="vao-auth")).status_code == 200


async def test_gateway_websocket_needs_a_valid_token(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    async with served(settings_for(data_dir), orchestrator) as g:
        for suffix in ("", "?token=not.a.jwt", f"?token={bad_tokens(JWT_SECRET)['alg none']}"):
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with websockets.connect(g.ws_url + suffix, open_timeout=5):
                    pass
            assert refused.value.response.status_code == 401
        token = mint_token(JWT_SECRET, sub="ops", role="viewer")
        async with websockets.connect(f"{g.ws_url}?token={token}", open_timeout=5) as ws:
            assert ws.state.name == "OPEN"


# -- orchestrator -----------------------------------------------------------------------------


@asynccontextmanager
async def orchestrator_app(pg_dsn: str, data_dir: Path, **kw: Any) -> AsyncIterator[Any]:
    async with run_app(orch_settings(data_dir, pg_dsn, **kw)) as running:
        yield running


async def test_orchestrator_rejects_bad_tokens_with_401_json(pg_dsn: str, data_dir: Path) -> None:
    async with orchestrator_app(pg_dsn, data_dir) as orch:
        assert_401(await orch.client.get(ORCH_READ))
        for case, token in bad_tokens(ORCH_SECRET).items():
            if case == "service token as management token":
                continue  # the service token is valid here; its role is checked below
            r = await orch.client.get(ORCH_READ, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 401, (case, r.text)
            assert_401(r)


async def test_orchestrator_roles(pg_dsn: str, data_dir: Path) -> None:
    def hdr(role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint_token(ORCH_SECRET, sub=f'u-{role}', role=role)}"}

    service = {"Authorization": f"Bearer {ServiceTokenSource(ORCH_SECRET).token()}"}
    start = {"call_id": "roles-call-1", "provider": "twilio", "direction": "inbound"}
    agent = {"name": "Role test agent", "configuration": {}}
    async with orchestrator_app(pg_dsn, data_dir) as orch:
        c = orch.client
        # viewer: reads, never writes (no conversation, no agent)
        assert (await c.get(ORCH_READ, headers=hdr("viewer"))).status_code == 200
        for path, body in (("/conversations/roles-call-1/start", start), ("/agents/create", agent)):
            r = await c.post(path, json=body, headers=hdr("viewer"))
            assert r.status_code == 403, r.text
            assert r.json()["error"]["code"] == "forbidden"
        # the service token drives conversations but reads no management data
        assert (await c.get(ORCH_READ, headers=service)).status_code == 403
        r = await c.post("/conversations/roles-call-1/start", json=start, headers=service)
        assert r.status_code == 200, r.text
        # operator: writes; admin: everything
        assert (
            await c.post("/agents/create", json=agent, headers=hdr("operator"))
        ).status_code == 201
        assert (await c.get(ORCH_READ, headers=hdr("admin"))).status_code == 200


async def test_orchestrator_checks_audience_and_issuer_when_configured(
    pg_dsn: str, data_dir: Path
) -> None:
    async with orchestrator_app(pg_dsn, data_dir, jwt_audience="dash", jwt_issuer="idp") as orch:

        async def get(**kw: Any) -> httpx.Response:
            token = mint_token(ORCH_SECRET, sub="ops", role="admin", **kw)
            return await orch.client.get(ORCH_READ, headers={"Authorization": f"Bearer {token}"})

        assert_401(await get())
        assert_401(await get(audience="other", issuer="idp"))
        assert_401(await get(audience="dash", issuer="other"))
        assert (await get(audience="dash", issuer="idp")).status_code == 200
        # the gateway's service token keeps working (its own audience/issuer)
        service = {"Authorization": f"Bearer {ServiceTokenSource(ORCH_SECRET).token()}"}
        start = {"call_id": "aud-call-1", "provider": "twilio", "direction": "inbound"}
        r = await orch.client.post("/conversations/aud-call-1/start", json=start, headers=service)
        assert r.status_code == 200, r.text


# -- production start-up ------------------------------------------------------------------------

WEAK = ["", "secret", "changeme", "your-production-jwt-secret", "short-but-random-7Hq", "ab" * 20]


@pytest.mark.parametrize("secret", WEAK)
def test_weak_jwt_secret_stops_production_start_up_of_both_services(
    data_dir: Path, pg_dsn: str, secret: str
) -> None:
    gw_settings = settings_for(data_dir, app_env="production", jwt_secret=secret or None)
    with pytest.raises(ConfigError, match="JWT_SECRET"):
        create_gateway(gw_settings)
    from orchestrator.main import create_app as create_orchestrator

    orch = orch_settings(data_dir, pg_dsn, app_env="production", jwt_secret=secret or None)
    with pytest.raises(ConfigError, match="JWT_SECRET"):
        create_orchestrator(orch)


def test_strong_jwt_secret_starts_in_production(data_dir: Path, pg_dsn: str) -> None:
    from orchestrator.main import create_app as create_orchestrator

    strong = "Qm9uZCwgSmFtZXMgQm9uZC4gMDA3IGxpY2Vuc2VkIHRv"
    create_orchestrator(orch_settings(data_dir, pg_dsn, app_env="production", jwt_secret=strong))


def test_make_token_prints_a_verifiable_token_of_the_role(tmp_path: Path) -> None:
    secret = "make-token-test-secret-" + "q1w2e3r4" * 4
    env = {**os.environ, "JWT_SECRET": secret, "DATA_DIR": str(tmp_path)}
    env.pop("JWT_AUDIENCE", None)
    env.pop("JWT_ISSUER", None)
    for role in ("admin", "operator", "viewer"):
        out = subprocess.run(
            [sys.executable, "-m", "scripts.token", "--role", role],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        principal = verify_management_token(secret, out.stdout.strip())
        assert principal.role == role


async def test_production_orchestrator_serves_no_unauthenticated_docs(
    pg_dsn: str, data_dir: Path
) -> None:
    strong = "Qm9uZCwgSmFtZXMgQm9uZC4gMDA3IGxpY2Vuc2VkIHRv"
    settings = orch_settings(data_dir, pg_dsn, app_env="production", jwt_secret=strong)
    async with run_app(settings) as orch:
        for path in ("/docs", "/openapi.json", "/redoc"):
            assert (await orch.client.get(path)).status_code in (401, 404), path
        assert (await orch.client.get("/health")).status_code == 200


def test_a_verified_token_is_remembered_but_still_expires_and_stays_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The verified-token cache (one decode per token, not two per request) changes no outcome:
    the same string under another secret/audience is checked afresh, and `exp` is rechecked."""
    from shared import auth

    secret = "s" * 40
    token = mint_token(secret, "ops", "operator", ttl_s=60)
    decodes: list[str] = []
    real_decode = jwt.decode

    def counting_decode(*args: Any, **kwargs: Any) -> Any:
        decodes.append(args[0])
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(auth.jwt, "decode", counting_decode)
    for _ in range(5):
        assert verify_management_token(secret, token).role == "operator"
    assert len(decodes) == 1
    with pytest.raises(auth.TokenError):  # another secret: decoded and refused
        verify_management_token("t" * 40, token)
    with pytest.raises(auth.TokenError):  # an audience it does not carry
        verify_management_token(secret, token, audience="somebody-else")
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    with pytest.raises(auth.TokenError):
        verify_management_token(secret, forged)
    assert len(decodes) == 4
    now = time.time()
    monkeypatch.setattr(auth.time, "time", lambda: now + 60 + auth.LEEWAY_S + 1)
    with pytest.raises(auth.TokenError, match="expired"):
        verify_management_token(secret, token)
    assert len(decodes) == 4  # refused from the cache's own `exp` check, and forgotten:
    monkeypatch.undo()  # back on the real clock (PyJWT reads it too), the token is decoded again
    monkeypatch.setattr(auth.jwt, "decode", counting_decode)
    assert verify_management_token(secret, token).sub == "ops"
    assert len(decodes) == 5
