"""Logs (issue 8, item 6): both services as real processes with DEBUG=true and every secret
set; a call with a JWT, provider signatures, a `/ws?token=`, forged requests and phone numbers
in speech. Every line is JSON; request lines carry a request id and call lines a call id; no
secret, token or full phone number appears anywhere in the output."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from shared.auth import mint_token
from tests.e2e.services import run_service
from tests.gateway.conftest import sign

pytestmark = pytest.mark.slow

JWT_SECRET = "logs-test-jwt-secret-" + "Pq7Zk2" * 6
GH_SECRET = "logs-test-generic-http-secret-Wm4"
TWILIO_TOKEN = "logs-test-twilio-auth-token-9f8e7d"
VONAGE_SIGNATURE = "logs-test-vonage-signature-secret-2b"
OPENAI_KEY = "sk-logs-test-openai-key-5c4b3a2918"
CALLER = "+15550001111"
CALLEE = "+15550002222"
SPOKEN_NUMBER = "+1 555 123 4567"


def signed(ev: dict[str, Any], secret: str = GH_SECRET) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(ev).encode()
    return body, sign(body, secret=secret)


def ev(type_: str, call_id: str, **fields: Any) -> dict[str, Any]:
    return {"event_id": uuid.uuid4().hex, "type": type_, "call_id": call_id, **fields}


async def test_logs_are_json_with_ids_and_never_hold_secrets(pg_dsn: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    common = {
        "DATA_DIR": str(data_dir),
        "JWT_SECRET": JWT_SECRET,
        "APP_ENV": "development",
        "DEBUG": "true",
    }
    orch_env = {
        **common,
        "DATABASE_URL": pg_dsn,
        "OPENAI_API_KEY": OPENAI_KEY,
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",  # nothing listens: the LLM call fails
        "LLM_TIMEOUT_S": "1",
    }
    token = mint_token(JWT_SECRET, sub="log-auditor", role="admin")
    call = f"logs-{uuid.uuid4().hex[:10]}"
    with run_service("orchestrator", "orchestrator.main:create_app", orch_env, tmp_path) as orch:
        gw_env = {
            **common,
            "ORCHESTRATOR_URL": orch.url,
            "VOICE_PROVIDER": "generic-http",
            "GENERIC_HTTP_SECRET": GH_SECRET,
            "TWILIO_ACCOUNT_SID": "AC" + "1" * 32,
            "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
            "VONAGE_SIGNATURE_SECRET": VONAGE_SIGNATURE,
            "TURN_TIMEOUT_S": "4",
        }
        with run_service("gateway", "realtime_gateway.app:create_app", gw_env, tmp_path) as gw:
            ws_url = gw.url.replace("http://", "ws://") + f"/ws?call_id={call}&token={token}"
            async with (
                websockets.connect(ws_url),
                httpx.AsyncClient(base_url=gw.url, timeout=10) as client,
            ):
                auth = {"Authorization": f"Bearer {token}"}
                hook = "/voice/webhook/generic-http"
                start = ev("call.started", call, **{"from": CALLER, "to": CALLEE})
                body, headers = signed(start)
                assert (await client.post(hook, content=body, headers=headers)).status_code == 200
                words = f"My card is 4111 1111 1111 1111, call me on {SPOKEN_NUMBER}"
                turn = ev("call.input", call, turn_id="1", input={"type": "speech", "text": words})
                body, headers = signed(turn)
                assert (await client.post(hook, content=body, headers=headers)).status_code == 200
                assert (await client.get(f"/voice/calls/{call}/status", headers=auth)).is_success
                # forged and malformed traffic, with secrets in the wrong places
                body, headers = signed(start, secret="wrong-" + GH_SECRET)
                await client.post(hook, content=body, headers=headers)
                await client.get(
                    "/voice/providers/current", headers={"Authorization": f"Bearer {token}x"}
                )
                await client.post(
                    "/voice/webhook/twilio",
                    data={"CallSid": "CA" + "2" * 32, "From": CALLER},
                    headers={"X-Twilio-Signature": "forged"},
                )
                body, headers = signed(ev("call.ended", call, reason="hangup"))
                assert (await client.post(hook, content=body, headers=headers)).status_code == 200
        logs = {"gateway": gw.logs(), "orchestrator": orch.logs()}

    secrets = [JWT_SECRET, GH_SECRET, TWILIO_TOKEN, VONAGE_SIGNATURE, OPENAI_KEY, token]
    for service, text in logs.items():
        for secret in secrets:
            assert secret not in text, f"{service} logged a secret ({secret[:8]}...)"
        assert "eyJ" not in text, f"{service} logged a JWT"
        for number in (CALLER, CALLEE, "15550001111", "5551234567", "4111 1111 1111 1111"):
            assert number not in text, f"{service} logged {number}"
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
        assert len(records) > 10
        assert any(str(r["level"]).lower() == "debug" for r in records), (
            f"{service}: DEBUG adds detail"
        )
        access = [r for r in records if r.get("msg") == "request"]
        assert all(r.get("request_id") for r in access), f"{service}: request without its id"
        of_call = [r for r in records if r.get("call_id") == call]
        assert of_call, f"{service}: no line names the call"
        assert any(r.get("request_id") for r in of_call), f"{service}: call lines lack ids"
    assert any(r.get("msg") == "request" for r in map(json.loads, logs["gateway"].splitlines()))
