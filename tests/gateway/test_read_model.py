"""One read model per role, on the gateway too (issue 19, item 7): a viewer reads calls with the
numbers masked and the words withheld — in the call API and on the `/ws` stream — while an
operator reads everything. The same rule as the orchestrator's."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import websockets

from shared.auth import mint_token
from tests.gateway.conftest import JWT_SECRET, new_call_id, said, served, settings_for, started
from tests.gateway.ws_client import collect

CALLER = "+15550001111"


def bearer(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(JWT_SECRET, sub=role, role=role)}"}


async def test_viewers_read_calls_masked_and_without_words(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    call_id = new_call_id()
    async with served(settings_for(data_dir), orchestrator) as gw:
        token = mint_token(JWT_SECRET, sub="v", role="viewer")
        admin = mint_token(JWT_SECRET, sub="a", role="admin")
        url = f"{gw.ws_url}?call_id={call_id}&token="
        async with (
            websockets.connect(url + token) as as_viewer,
            websockets.connect(url + admin) as as_admin,
        ):
            await gw.send({**started(call_id), "from": CALLER, "metadata": {"note": "vip"}})
            await gw.send(said(call_id, "1", "What are your opening hours?"))

            def done(events: list[dict[str, object]]) -> bool:
                return any(e["type"] == "message.sent" for e in events)

            seen_by_viewer = await collect(as_viewer, done)
            seen_by_admin = await collect(as_admin, done)
        viewer_text, admin_text = json.dumps(seen_by_viewer), json.dumps(seen_by_admin)
        assert CALLER in admin_text and "opening hours" in admin_text
        assert CALLER not in viewer_text and "opening hours" not in viewer_text
        assert [e["type"] for e in seen_by_viewer] == [e["type"] for e in seen_by_admin]
        started_event = seen_by_viewer[0]["data"]
        assert started_event["from"] == "+1555***1111" and started_event["personal_data"]

        for path in ("/voice/calls", f"/voice/calls/{call_id}/status"):
            as_viewer_body = (await gw.client.get(path, headers=bearer("viewer"))).json()
            as_operator_body = (await gw.client.get(path, headers=bearer("operator"))).json()
            assert CALLER not in json.dumps(as_viewer_body) and "vip" not in json.dumps(
                as_viewer_body
            )
            assert CALLER in json.dumps(as_operator_body) and "vip" in json.dumps(as_operator_body)
