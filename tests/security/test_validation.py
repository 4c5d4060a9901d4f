"""Input validation (issue 8, item 4): phone numbers in E.164, ids, enums and lengths are
checked on both services, each refusal a 4xx JSON naming the field; roles on the call API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.auth import ServiceTokenSource, mint_token
from tests.gateway.conftest import JWT_SECRET, gateway, settings_for
from tests.orchestrator.conftest import SECRET as ORCH_SECRET
from tests.orchestrator.conftest import make_settings as orch_settings
from tests.orchestrator.conftest import run_app


def gw_auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(JWT_SECRET, sub=f'v-{role}', role=role)}"}


def named(r: httpx.Response, field: str, statuses: tuple[int, ...] = (400, 422)) -> None:
    assert r.status_code in statuses, r.text
    assert field in r.json()["error"]["message"], r.text


async def test_a_viewer_cannot_place_or_end_a_call(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    async with gateway(settings_for(data_dir), orchestrator) as g:
        body = {"phone_number": "+14155550100"}
        r = await g.client.post("/voice/calls/initiate", json=body, headers=gw_auth("viewer"))
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        r = await g.client.post("/voice/calls/some-call/end", headers=gw_auth("viewer"))
        assert r.status_code == 403
        assert (await g.client.get("/voice/calls", headers=gw_auth("viewer"))).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"phone_number": "4155550100"}, "phone_number"),  # no country code
        ({"phone_number": "+1 (415) 555-0100"}, "phone_number"),  # not written in E.164
        ({"phone_number": "+10000000000"}, "phone_number"),  # not a valid number
        ({"phone_number": "call me"}, "phone_number"),
        ({"phone_number": "+14155550100", "from_number": "12"}, "from_number"),
        ({"phone_number": "+14155550100", "options": {"recording": "loud"}}, "recording"),
        ({"phone_number": "+14155550100", "surprise": 1}, "surprise"),
        ({"phone_number": "+1" + "4" * 70}, "phone_number"),
    ],
)
async def test_call_initiation_checks_numbers_and_fields(
    data_dir: Path, orchestrator: httpx.ASGITransport, body: dict[str, Any], field: str
) -> None:
    async with gateway(settings_for(data_dir), orchestrator) as g:
        r = await g.client.post("/voice/calls/initiate", json=body, headers=gw_auth("operator"))
        named(r, field)


async def test_orchestrator_checks_ids_enums_lengths_and_numbers(
    pg_dsn: str, data_dir: Path
) -> None:
    service = {"Authorization": f"Bearer {ServiceTokenSource(ORCH_SECRET).token()}"}
    admin = {"Authorization": f"Bearer {mint_token(ORCH_SECRET, sub='v', role='admin')}"}
    async with run_app(orch_settings(data_dir, pg_dsn)) as orch:
        c = orch.client
        start = {"call_id": "v-1", "provider": "twilio", "direction": "inbound"}
        assert (await c.post("/conversations/v-1/start", json=start, headers=service)).is_success
        named(
            await c.post(
                "/conversations/v-1/start", json={**start, "direction": "sideways"}, headers=service
            ),
            "direction",
        )
        named(
            await c.post(
                "/conversations/v-1/messages",
                json={"message": "x" * 4001, "turn_id": "1", "context": {"call_id": "v-1"}},
                headers=service,
            ),
            "message",
        )
        named(
            await c.post(
                "/conversations/v-1/messages",
                json={"message": "hi", "turn_id": "a b/c", "context": {"call_id": "v-1"}},
                headers=service,
            ),
            "turn_id",
        )
        r = await c.get("/conversations/bad%20id%3B%20DROP", headers=admin)
        assert r.status_code in (400, 404, 422), r.text
        agent = {"name": "Transfer desk", "configuration": {"transfer_number": "555-0100"}}
        named(await c.post("/agents/create", json=agent, headers=admin), "transfer_number")
        r = await c.delete("/callers/not-a-number/memory", headers=admin)
        assert 400 <= r.status_code < 500, r.text
        assert r.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize(
    ("overrides", "ok"),
    [
        ({"voice_provider": "aws-connect", "turn_timeout_s": 7.5}, False),
        ({"voice_provider": "aws-connect", "turn_timeout_s": 6.8}, False),
        ({"voice_provider": "aws-connect", "turn_timeout_s": 6.5}, True),
        (
            {"voice_provider": "twilio", "aws_connect_instance_id": "i-1", "turn_timeout_s": 9},
            False,
        ),
        ({"voice_provider": "aws-connect", "turn_timeout_s": 6}, True),
        ({"voice_provider": "twilio", "turn_timeout_s": 14}, True),  # below Twilio's 15 s
        ({"voice_provider": "twilio", "turn_timeout_s": 15}, False),
    ],
)
def test_turn_budget_stays_below_each_providers_limit(
    data_dir: Path, overrides: dict[str, Any], ok: bool
) -> None:
    from realtime_gateway.config import get_settings
    from shared.config import ConfigError

    if ok:
        get_settings(_env_file=None, data_dir=data_dir, **overrides)
        return
    with pytest.raises(ConfigError, match="TURN_TIMEOUT_S") as refused:
        get_settings(_env_file=None, data_dir=data_dir, **overrides)
    assert "?" not in str(refused.value)
