"""`GET /conversations/{id}/scenario`: a stored call as a `make eval` scenario (replies, actions
and the tools each turn ran as expectations), on the real app and Postgres; what it writes
loads in the eval's own schema (agent_eval), so an export always runs."""

from __future__ import annotations

from typing import Any

import yaml

from agent_eval.schema import parse
from agent_eval.yamlsource import loads
from shared.contract import IDEMPOTENCY_HEADER, idempotency_key
from tests.orchestrator.conftest import RunningApp, management_headers
from tests.orchestrator.test_api import caller_for, start


async def say(
    orch: RunningApp, headers: dict[str, str], cid: str, turn: str, text: str, kind: str = "speech"
) -> dict[str, Any]:
    r = await orch.client.post(
        f"/conversations/{cid}/messages",
        json={"message": text, "context": {"call_id": cid, "input_type": kind}},
        headers={**headers, IDEMPOTENCY_HEADER: idempotency_key(cid, turn)},
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_a_call_exports_as_a_scenario_with_its_replies_expected(
    orch: RunningApp, service_headers: dict[str, str]
) -> None:
    cid = await start(orch, service_headers)
    greeting = (
        await orch.client.get(f"/conversations/{cid}", headers=management_headers("admin"))
    ).json()
    hours = await say(orch, service_headers, cid, "1", "What are your opening hours?")
    pressed = await say(orch, service_headers, cid, "2", "5", kind="dtmf")
    await say(orch, service_headers, cid, "3", "", kind="timeout")
    bye = await say(orch, service_headers, cid, "4", "Thanks, goodbye")

    r = await orch.client.get(
        f"/conversations/{cid}/scenario", headers=management_headers("operator")
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/yaml")
    assert caller_for(cid) not in r.text  # the caller's number is not exported
    data = yaml.safe_load(r.text)
    assert data["name"] == f"conversation-{cid}" and data["provider"] == "generic-http"
    assert data["agent"] == greeting["agent_id"]
    stored_greeting = greeting["messages"][0]["content"]
    assert data["greeting"] == {"equals": stored_greeting, "action": "gather"}
    assert data["turns"] == [
        {
            "say": "What are your opening hours?",
            "expect": {"equals": hours["reply"], "action": "gather"},
        },
        {"dtmf": "5", "expect": {"equals": pressed["reply"], "action": "gather"}},
        {
            "silence": True,
            "expect": {"equals": data["turns"][2]["expect"]["equals"], "action": "gather"},
        },
        {
            "say": "Thanks, goodbye",
            "expect": {
                "equals": bye["reply"],
                "action": "hangup",
                # the tools the turn ran, as they ran
                "tool": [{"name": "end_call", "args": {"reason": "caller_goodbye"}, "ok": True}],
            },
        },
    ]
    scenario = parse(loads(r.text, "exported.yaml"))  # the eval's schema takes it as it is
    assert [t.action for t in scenario.calls[0].turns] == ["say", "dtmf", "silence", "say"]
    assert [t.describe() for t in scenario.calls[0].turns[3].expect.tools] == [
        "end_call(reason='caller_goodbye') ok"
    ]


async def test_only_operators_and_admins_export_and_an_unknown_call_is_a_404(
    orch: RunningApp, service_headers: dict[str, str], viewer_headers: dict[str, str]
) -> None:
    cid = await start(orch, service_headers)
    url = f"/conversations/{cid}/scenario"
    refused = await orch.client.get(url, headers=viewer_headers)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert (await orch.client.get(url)).status_code == 401
    assert (await orch.client.get(url, headers=management_headers("admin"))).status_code == 200
    missing = await orch.client.get(
        "/conversations/no-such-call/scenario", headers=management_headers("admin")
    )
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "conversation_not_found"
