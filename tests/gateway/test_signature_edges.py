"""Signature checks at their edges, each one a change that once went unnoticed (issue 20):
the generic-http HMAC compared in full and over every `v1=` value in any order, Twilio's
HMAC-SHA256 signatures (made with Twilio's own SDK), and a Vonage POST whose JWT covers the
URL's query instead of the body."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from urllib.parse import parse_qsl, urlencode, urlsplit

import jwt
import pytest
from twilio.request_validator import HMAC_SHA1, HMAC_SHA256, RequestValidator

from realtime_gateway.signatures import verify_hmac, verify_twilio, verify_vonage
from realtime_gateway.vocabulary import SignatureError, WebhookRequest

SECRET = "edge-generic-http-secret"
BODY = b'{"event_id":"e1","type":"call.started","call_id":"c1"}'


def mac(secret: str, ts: str, body: bytes = BODY) -> str:
    """HMAC-SHA256(secret, timestamp + "." + body), computed here, not by the gateway."""
    return hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()


# ---- generic-http --------------------------------------------------------------------------


def test_a_signature_matching_only_its_first_16_hex_characters_is_refused() -> None:
    ts = str(int(time.time()))
    good = mac(SECRET, ts)
    near = good[:16] + ("0" if good[16] != "0" else "1") + good[17:]
    verify_hmac(SECRET, ts, f"v1={good}", BODY)
    for forged in (near, good[:16] + "f" * 48, good[:63] + ("0" if good[63] != "0" else "1")):
        with pytest.raises(SignatureError) as exc:
            verify_hmac(SECRET, ts, f"v1={forged}", BODY)
        assert exc.value.status == 401


@pytest.mark.parametrize("order", ["new-first", "new-last", "new-between"])
def test_every_v1_value_counts_whatever_its_place_during_a_secret_rotation(order: str) -> None:
    ts = str(int(time.time()))
    new, old, junk = mac(SECRET, ts), mac("old-secret", ts), "0" * 64
    values = {
        "new-first": [new, old],
        "new-last": [old, new],
        "new-between": [junk, new, old],
    }[order]
    verify_hmac(SECRET, ts, ", ".join(f"v1={v}" for v in values), BODY)
    with pytest.raises(SignatureError):  # without the current secret's value: refused
        verify_hmac(SECRET, ts, ", ".join(f"v1={v}" for v in values if v != new), BODY)


# ---- Twilio: HMAC-SHA256 signatures --------------------------------------------------------

TW_TOKEN = "twilio-edge-auth-token-0123456789"
TW_URL = "https://gw.example.com/voice/webhook/twilio"
TW_FORM = {"CallSid": "CA" + "1" * 32, "From": "+14155550100", "To": "+14155550111"}
SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"


def twilio_request(signature: str, settings: str | None) -> WebhookRequest:
    headers = {"x-twilio-signature": signature}
    if settings is not None:
        headers[SETTINGS_HEADER.lower()] = settings
    body = urlencode(TW_FORM).encode()
    return WebhookRequest("POST", TW_URL, headers, {}, body, form=dict(TW_FORM))


def test_a_twilio_hmac_sha256_signature_is_checked_as_sha256() -> None:
    validator = RequestValidator(TW_TOKEN)  # Twilio's own SDK signs
    sha256 = validator.compute_signature(TW_URL, TW_FORM, algorithm=HMAC_SHA256)
    sha1 = validator.compute_signature(TW_URL, TW_FORM, algorithm=HMAC_SHA1)
    assert sha256 != sha1
    settings = f"key=webhooks_sharedkey_edge,algorithm={HMAC_SHA256}"
    verify_twilio(TW_TOKEN, twilio_request(sha256, settings), [TW_URL])
    verify_twilio(TW_TOKEN, twilio_request(sha1, None), [TW_URL])  # the legacy default
    for signature, header in ((sha256, None), (sha1, settings)):  # algorithm and header disagree
        with pytest.raises(SignatureError) as exc:
            verify_twilio(TW_TOKEN, twilio_request(signature, header), [TW_URL])
        assert exc.value.status == 403
    forged = RequestValidator("another-token").compute_signature(
        TW_URL, TW_FORM, algorithm=HMAC_SHA256
    )
    with pytest.raises(SignatureError):
        verify_twilio(TW_TOKEN, twilio_request(forged, settings), [TW_URL])


# ---- Vonage: a POST's payload_hash covers its body, never its query -------------------------

VG_SECRET = "vonage-edge-signature-secret-0123456789"
VG_KEY = "abcd1234"


def vonage_token(payload_hash: str) -> str:
    claims = {
        "iat": int(time.time()),
        "jti": str(uuid.uuid4()),
        "iss": "Vonage",
        "payload_hash": payload_hash,
        "api_key": VG_KEY,
    }
    return jwt.encode(claims, VG_SECRET, algorithm="HS256")


def test_a_vonage_post_signed_over_its_query_instead_of_its_body_is_refused() -> None:
    url = "https://gw.example.com/voice/webhook/vonage/event?uuid=abc&step=status"
    body = json.dumps({"uuid": "abc", "status": "completed"}).encode()
    query = dict(parse_qsl(urlsplit(url).query))
    query_hash = hashlib.sha256(json.dumps(query, separators=(",", ":")).encode()).hexdigest()

    def request(payload_hash: str) -> WebhookRequest:
        headers = {"authorization": f"Bearer {vonage_token(payload_hash)}"}
        return WebhookRequest("POST", url, headers, query, body)

    verify_vonage(VG_SECRET, VG_KEY, request(hashlib.sha256(body).hexdigest()))
    for wrong in (query_hash, hashlib.sha256(b"").hexdigest()):
        with pytest.raises(SignatureError, match="payload"):
            verify_vonage(VG_SECRET, VG_KEY, request(wrong))
