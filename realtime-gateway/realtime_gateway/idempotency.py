"""Turn and event idempotency on the gateway side: every dedupe key, and how long it is kept.

Providers redeliver. A retried turn must be answered with the same reply and counted once; a
redelivered status callback must change nothing; a replayed generic-http event is refused. The
gateway marks each with a key in the call store (`CallStore.first_time`, `SET NX` across instances
with Redis) and the orchestrator stores one reply per `Idempotency-Key: <call id>:<turn id>`
(`shared.contract.idempotency_key`), so a turn that reaches it twice is answered from storage.

- `turn_key`: the caller's turn was received (counted, `message.received` emitted) once;
- `sent_key`: its reply was announced (`message.sent`) once;
- `event_key`: a provider event id (generic-http `event_id`) seen before is a replay: 409;
- `token_key`: a provider's signed token seen before (Vonage's JWT `jti`) is a replay: 409;
- `signature_key`: a signed request seen before (the Amazon Connect forwarder's timestamp +
  HMAC, as `signatures.hmac_request_id` computes it) is a replay: 409;
- `delivery_key`: a provider's redelivery of a callback (Twilio's `I-Twilio-Idempotency-Token`,
  a status with its sequence number, a Vonage event with its timestamp): acknowledged, ignored.
"""

from __future__ import annotations

from shared.contract import idempotency_key

SEEN_TTL_S = 86_400  # a day: longer than any call, and than any provider's retry window

__all__ = [
    "SEEN_TTL_S",
    "delivery_key",
    "event_key",
    "idempotency_key",
    "sent_key",
    "signature_key",
    "token_key",
    "turn_key",
]


def turn_key(call_id: str, turn_id: str) -> str:
    return f"turn:{call_id}:{turn_id}"


def sent_key(call_id: str, turn_id: str) -> str:
    return f"sent:{call_id}:{turn_id}"


def event_key(provider: str, event_id: str) -> str:
    return f"{provider}:event:{event_id}"


def token_key(provider: str, token_id: str) -> str:
    return f"{provider}:token:{token_id}"


def signature_key(provider: str, signature: str) -> str:
    return f"{provider}:signature:{signature}"


def delivery_key(provider: str, *parts: str) -> str:
    return ":".join((provider, "delivery", *parts))
