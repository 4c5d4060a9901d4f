"""Twilio's recording status callback is stored with the call (issue 5: "recording status
callback stored with the call"), once, and never ends the call."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.gateway.conftest import auth, served
from tests.gateway.test_twilio_call import call_form, new_sid, tw_settings, twilio_post, twiml_of


async def test_recording_callback_is_kept_on_the_call_and_does_not_end_it(
    data_dir: Path, orchestrator: httpx.ASGITransport
) -> None:
    sid = new_sid()
    async with served(tw_settings(data_dir), orchestrator) as gw:
        twiml_of(await twilio_post(gw, "/voice/webhook/twilio", call_form(sid)))
        recording = call_form(
            sid,
            RecordingSid="RE" + "1" * 32,
            RecordingStatus="completed",
            RecordingUrl="https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1",
            RecordingDuration="42",
        )
        for _ in range(2):  # Twilio may deliver it twice
            r = await twilio_post(gw, "/voice/webhook/twilio/recording", recording)
            assert r.status_code == 200
        status = (await gw.client.get(f"/voice/calls/{sid}/status", headers=auth())).json()
        assert status["status"] == "in-progress"
        assert status["metadata"]["recording"] == {
            "sid": "RE" + "1" * 32,
            "status": "completed",
            "url": "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1",
            "duration_s": 42.0,
        }
