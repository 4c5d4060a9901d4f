"""The gateway's own time per webhook, in process: signed webhooks through `httpx.ASGITransport`
into the real gateway app, the orchestrator answered instantly at the HTTP layer (respx).

Everything measured is the gateway's (plus the in-process client's) CPU: middleware, signature
check, call store, events, the orchestrator client (httpx request building and response reading,
with no socket), TwiML/JSON rendering. `python -m bench.gateway_inproc [--turns 2000]` prints
µs per turn for generic-http and Twilio Gather turns; it is a profiling aid, not a target.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import respx

from bench.loadgen import generic_signed
from realtime_gateway.app import create_app
from realtime_gateway.config import GatewaySettings

SECRET = "inproc-generic-http-secret"
TWILIO_TOKEN = "inproc" + "0" * 26
TWILIO_SID = "AC" + "0" * 32
PUBLIC = "https://gateway.inproc.example"
ORCH = "http://orchestrator.inproc"
QUESTION = "Where is my order?"


def orchestrator() -> httpx.MockTransport:
    router = respx.Router(base_url=ORCH, assert_all_called=False)

    def reply(request: httpx.Request) -> httpx.Response:
        call_id = request.url.path.split("/")[2]
        body = json.loads(request.content or b"{}")
        return httpx.Response(
            200,
            json={
                "conversation_id": call_id,
                "turn_id": str(body.get("turn_id") or "0"),
                "reply": "Sure, your order ships tomorrow.",
                "actions": [
                    {"type": "say", "text": "Sure, your order ships tomorrow."},
                    {"type": "gather"},
                ],
            },
        )

    router.post(path__regex=r"^/conversations/[^/]+/(start|messages)$").mock(side_effect=reply)
    router.post(path__regex=r"^/conversations/[^/]+/end$").mock(
        side_effect=lambda r: httpx.Response(
            200, json={"conversation_id": r.url.path.split("/")[2], "status": "ended"}
        )
    )
    return httpx.MockTransport(router.handler)


def settings(data_dir: Path) -> GatewaySettings:
    return GatewaySettings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=data_dir,
        jwt_secret="inproc-jwt-secret-" + "k" * 32,
        generic_http_secret=SECRET,
        orchestrator_url=ORCH,
        public_base_url=PUBLIC,
        app_env="production",
        log_level="WARNING",
        redis_url=None,
        voice_provider="generic-http",
        twilio_account_sid=TWILIO_SID,
        twilio_auth_token=TWILIO_TOKEN,
        twilio_phone_number="+15550002222",
    )


def generic(ev: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    return generic_signed(SECRET, ev)


def summary(name: str, samples: list[float], cpu_s: float) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        f"{name}_cpu_us_per_turn": cpu_s / len(samples) * 1e6,
        f"{name}_us_p50": statistics.median(ordered) * 1e6,
        f"{name}_us_mean": statistics.fmean(ordered) * 1e6,
        f"{name}_us_p99": ordered[int(len(ordered) * 0.99)] * 1e6,
        f"{name}_us_max": ordered[-1] * 1e6,
    }


async def run(turns: int, calls: int) -> dict[str, float]:
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(TWILIO_TOKEN)
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(settings(Path(tmp)), orchestrator_transport=orchestrator())
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=PUBLIC) as client:
                results: dict[str, float] = {}
                # generic-http
                ids = [f"inproc-{uuid.uuid4().hex[:10]}" for _ in range(calls)]
                for cid in ids:
                    body, h = generic(
                        {
                            "event_id": uuid.uuid4().hex,
                            "type": "call.started",
                            "call_id": cid,
                            "timestamp": int(time.time()),
                            "from": "+15550001111",
                            "to": "+15550002222",
                            "direction": "inbound",
                            "metadata": {},
                        }
                    )
                    r = await client.post("/voice/webhook/generic-http", content=body, headers=h)
                    assert r.status_code == 200, r.text
                bodies = []
                for n in range(turns):
                    ev = {
                        "event_id": uuid.uuid4().hex,
                        "type": "call.input",
                        "call_id": ids[n % calls],
                        "timestamp": int(time.time()),
                        "turn_id": str(n // calls + 1),
                        "input": {
                            "type": "speech",
                            "text": "Where is my order?",
                            "confidence": 0.9,
                        },
                    }
                    bodies.append(generic(ev))
                samples = []
                cpu = time.process_time()
                for body, h in bodies:
                    t0 = time.perf_counter()
                    r = await client.post("/voice/webhook/generic-http", content=body, headers=h)
                    samples.append(time.perf_counter() - t0)
                    assert r.status_code == 200 and b"ships tomorrow" in r.content, r.text
                results.update(summary("generic", samples, time.process_time() - cpu))
                # Twilio Gather
                sids = ["CA" + uuid.uuid4().hex for _ in range(calls)]
                base = {
                    "AccountSid": TWILIO_SID,
                    "From": "+15550001111",
                    "To": "+15550002222",
                    "Direction": "inbound",
                    "ApiVersion": "2010-04-01",
                }
                for sid in sids:
                    form = {**base, "CallSid": sid, "CallStatus": "ringing"}
                    sig = validator.compute_signature(f"{PUBLIC}/voice/webhook/twilio", form)
                    r = await client.post(
                        "/voice/webhook/twilio",
                        content=urlencode(form).encode(),
                        headers={
                            "Content-Type": "application/x-www-form-urlencoded",
                            "X-Twilio-Signature": sig,
                        },
                    )
                    assert r.status_code == 200, r.text
                reqs = []
                for n in range(turns):
                    path = f"/voice/webhook/twilio/gather?turn={n // calls + 1}"
                    form = {
                        **base,
                        "CallSid": sids[n % calls],
                        "CallStatus": "in-progress",
                        "SpeechResult": "Where is my order?",
                        "Confidence": "0.93",
                    }
                    sig = validator.compute_signature(PUBLIC + path, form)
                    reqs.append((path, urlencode(form).encode(), sig))
                samples = []
                cpu = time.process_time()
                for path, body, sig in reqs:
                    t0 = time.perf_counter()
                    r = await client.post(
                        path,
                        content=body,
                        headers={
                            "Content-Type": "application/x-www-form-urlencoded",
                            "X-Twilio-Signature": sig,
                        },
                    )
                    samples.append(time.perf_counter() - t0)
                    assert r.status_code == 200 and b"ships tomorrow" in r.content, r.text
                results.update(summary("twilio", samples, time.process_time() - cpu))
                return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=2000)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    out = asyncio.run(run(args.turns, args.calls))
    print(json.dumps({k: round(v, 1) for k, v in out.items()}))


if __name__ == "__main__":
    main()
