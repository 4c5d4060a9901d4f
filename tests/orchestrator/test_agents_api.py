"""`/agents` on the real app and Postgres: create/list/get/status/update/delete, 422 naming the
field, routing a call by the dialled number, roles."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tests.orchestrator.conftest import RunningApp, new_id


def number() -> str:
    return "+1444" + "".join(random.choices("0123456789", k=7))


async def create(orch: RunningApp, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    r = await orch.client.post("/agents/create", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def test_create_list_get_update_delete(
    orch: RunningApp, admin_headers: dict[str, str]
) -> None:
    agent = await create(
        orch,
        admin_headers,
        agent_type="orchestrator",
        configuration={
            "name": "Billing",
            "model": "gpt-4o",
            "temperature": 0.2,
            "system_prompt": "You handle billing.",
            "greeting": "Billing, how can I help?",
            "language": "en-GB",
            "voice": "alice",
            "tools": [
                "transfer_call",
                {"name": "balance", "description": "d", "url": "https://api.example.com/b"},
            ],
            "allowed_hosts": ["api.example.com"],
            "transfer_number": "+15550002222",
            "phone_numbers": [number()],
        },
    )
    assert agent["name"] == "Billing" and agent["agent_type"] == "orchestrator"
    assert agent["configuration"]["tools"][1]["url"] == "https://api.example.com/b"
    listed = (await orch.client.get("/agents", headers=admin_headers)).json()
    assert agent["id"] in [a["id"] for a in listed["agents"]] and listed["total"] >= 2
    got = await orch.client.get(f"/agents/{agent['id']}", headers=admin_headers)
    assert got.json()["configuration"]["greeting"] == "Billing, how can I help?"

    patched = await orch.client.patch(
        f"/agents/{agent['id']}",
        json={"configuration": {"temperature": 0.9}},
        headers=admin_headers,
    )
    assert patched.status_code == 200, patched.text
    config = patched.json()["configuration"]
    assert config["temperature"] == 0.9 and config["greeting"] == "Billing, how can I help?"

    replaced = await orch.client.put(
        f"/agents/{agent['id']}",
        json={"agent_type": "tool", "name": "Tools", "configuration": {"greeting": "Hi"}},
        headers=admin_headers,
    )
    assert replaced.json()["configuration"] == {"greeting": "Hi"}
    assert replaced.json()["agent_type"] == "tool"

    r = await orch.client.delete(f"/agents/{agent['id']}", headers=admin_headers)
    assert r.status_code == 204
    r = await orch.client.get(f"/agents/{agent['id']}", headers=admin_headers)
    assert r.status_code == 404 and r.json()["error"]["code"] == "agent_not_found"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"agent_type": "robot"}, "agent_type"),
        ({"configuration": {"temperature": 3}}, "configuration.temperature"),
        ({"configuration": {"phone_numbers": ["555-1234"]}}, "configuration.phone_numbers"),
        ({"configuration": {"transfer_number": "12"}}, "configuration.transfer_number"),
        ({"configuration": {"tools": ["teleport"]}}, "configuration.tools"),
        (
            {"configuration": {"tools": [{"name": "x", "description": "d", "url": "ftp://h/"}]}},
            "configuration.tools.0",
        ),
        ({"configuration": {"model": ""}}, "configuration.model"),
        ({"configuration": {"favourite_colour": "red"}}, "configuration.favourite_colour"),
        (
            {
                "configuration": {
                    "tools": [{"name": "x", "description": "d", "url": "https://h.io/"}]
                }
            },
            "configuration.tools.0.url",
        ),
    ],
)
async def test_invalid_configuration_is_a_422_naming_the_field(
    orch: RunningApp, admin_headers: dict[str, str], body: dict[str, Any], field: str
) -> None:
    r = await orch.client.post("/agents/create", json=body, headers=admin_headers)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "validation_error" and error["message"].startswith(field), error


async def test_a_bare_language_the_providers_speak_is_accepted_as_written(
    orch: RunningApp, admin_headers: dict[str, str]
) -> None:
    agent = await create(orch, admin_headers, configuration={"language": "fr"})
    assert agent["configuration"]["language"] == "fr"
    url = f"/agents/{agent['id']}"
    r = await orch.client.patch(
        url, json={"configuration": {"language": "es-MX"}}, headers=admin_headers
    )
    assert r.status_code == 200 and r.json()["configuration"]["language"] == "es-MX"


@pytest.mark.parametrize("language", ["xx-YY", "klingon"])
async def test_a_language_no_provider_speaks_is_a_422_naming_it(
    orch: RunningApp, admin_headers: dict[str, str], language: str
) -> None:
    r = await orch.client.post(
        "/agents/create", json={"configuration": {"language": language}}, headers=admin_headers
    )
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "validation_error"
    assert error["message"].startswith("configuration.language") and language in error["message"]
    agent = await create(orch, admin_headers, configuration={"language": "en-GB"})
    for method in ("put", "patch"):
        r = await orch.client.request(
            method,
            f"/agents/{agent['id']}",
            json={"configuration": {"language": language}},
            headers=admin_headers,
        )
        assert r.status_code == 422, r.text
        message = r.json()["error"]["message"]
        assert message.startswith("configuration.language") and language in message
    got = await orch.client.get(f"/agents/{agent['id']}", headers=admin_headers)
    assert got.json()["configuration"]["language"] == "en-GB"


async def test_patch_with_a_bad_field_is_a_422_and_changes_nothing(
    orch: RunningApp, admin_headers: dict[str, str]
) -> None:
    agent = await create(orch, admin_headers, configuration={"temperature": 0.5})
    r = await orch.client.patch(
        f"/agents/{agent['id']}", json={"configuration": {"temperature": -1}}, headers=admin_headers
    )
    assert r.status_code == 422 and "configuration.temperature" in r.json()["error"]["message"]
    got = await orch.client.get(f"/agents/{agent['id']}", headers=admin_headers)
    assert got.json()["configuration"]["temperature"] == 0.5


async def test_a_number_routes_to_one_agent_only(
    orch: RunningApp, admin_headers: dict[str, str]
) -> None:
    dialled = number()
    first = await create(orch, admin_headers, configuration={"phone_numbers": [dialled]})
    r = await orch.client.post(
        "/agents/create",
        json={"configuration": {"phone_numbers": [dialled]}},
        headers=admin_headers,
    )
    assert r.status_code == 409 and first["id"] in r.json()["error"]["message"]


async def test_the_agent_listing_the_dialled_number_answers_else_the_default(
    orch: RunningApp, admin_headers: dict[str, str], service_headers: dict[str, str]
) -> None:
    dialled = number()
    agent = await create(
        orch, admin_headers, configuration={"phone_numbers": [dialled], "greeting": "Sales here."}
    )
    cid = new_id()
    body = {"call_id": cid, "provider": "generic-http", "caller": number(), "callee": dialled}
    r = await orch.client.post(f"/conversations/{cid}/start", json=body, headers=service_headers)
    assert r.json()["agent_id"] == agent["id"] and r.json()["reply"] == "Sales here."
    other = new_id()
    body = {"call_id": other, "provider": "generic-http", "caller": number(), "callee": number()}
    r = await orch.client.post(f"/conversations/{other}/start", json=body, headers=service_headers)
    default = [
        a
        for a in (await orch.client.get("/agents", headers=admin_headers)).json()["agents"]
        if a["is_default"]
    ]
    assert r.json()["agent_id"] == default[0]["id"]


async def test_agent_numbers_are_stored_in_e164_and_a_vonage_style_callee_routes(
    orch: RunningApp, admin_headers: dict[str, str], service_headers: dict[str, str]
) -> None:
    dialled = number()
    area, rest = dialled[2:5], dialled[5:]
    agent = await create(
        orch,
        admin_headers,
        configuration={
            "phone_numbers": [f"+1 ({area}) {rest[:3]}-{rest[3:]}", dialled],
            "transfer_number": "15550002222",
            "greeting": "Support here.",
        },
    )
    assert agent["configuration"]["phone_numbers"] == [dialled]
    assert agent["configuration"]["transfer_number"] == "+15550002222"
    cid = new_id()
    body = {"call_id": cid, "provider": "vonage", "caller": number(), "callee": dialled[1:]}
    r = await orch.client.post(f"/conversations/{cid}/start", json=body, headers=service_headers)
    assert r.json()["agent_id"] == agent["id"] and r.json()["reply"] == "Support here."


async def test_status_reports_turns_and_latency_percentiles(
    orch: RunningApp, admin_headers: dict[str, str], service_headers: dict[str, str]
) -> None:
    agent = await create(orch, admin_headers, configuration={"phone_numbers": [number()]})
    cid = new_id()
    body = {"call_id": cid, "provider": "generic-http", "caller": number(), "agent_id": agent["id"]}
    await orch.client.post(f"/conversations/{cid}/start", json=body, headers=service_headers)
    for turn in range(3):
        r = await orch.client.post(
            f"/conversations/{cid}/messages",
            json={"message": "hello there", "turn_id": f"t{turn}"},
            headers=service_headers,
        )
        assert r.status_code == 200
    r = await orch.client.get(f"/agents/{agent['id']}/status", headers=admin_headers)
    status = r.json()
    assert status["state"] == "active" and status["llm_mode"] == "offline"
    assert status["turns_handled"] == 3 and status["latency_ms"]["window"] == 3
    assert 0 < status["latency_ms"]["p50"] <= status["latency_ms"]["p99"]
    assert status["this_instance"]["turns_since_start"] == 3


async def test_roles_and_the_default_agent_are_protected(
    orch: RunningApp, admin_headers: dict[str, str], viewer_headers: dict[str, str]
) -> None:
    r = await orch.client.post("/agents/create", json={}, headers=viewer_headers)
    assert r.status_code == 403
    assert (await orch.client.get("/agents", headers=viewer_headers)).status_code == 200
    assert (await orch.client.get("/agents")).status_code == 401
    agents = (await orch.client.get("/agents", headers=admin_headers)).json()["agents"]
    default = next(a for a in agents if a["is_default"])
    r = await orch.client.delete(f"/agents/{default['id']}", headers=admin_headers)
    assert r.status_code == 409 and r.json()["error"]["code"] == "default_agent_required"
