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
from types import SimpleNamespace
from urllib.parse import parse_qsl, urlencode, urlsplit

import jwt
import pytest
from twilio.request_validator import HMAC_SHA1, HMAC_SHA256, RequestValidator

from realtime_gateway.signatures import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    hmac_request_id,
    sign,
    signed_callback_query,
    signed_headers,
    twilio_signed_params,
    verify_hmac,
    verify_hmac_request,
    verify_twilio,
    verify_vonage,
    verify_vonage_query,
    vonage_callback_sig,
    vonage_payload_hashes,
    vonage_token_id,
)
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


# ---- every check at its edge: status, code and limit (one test per rule) ----------------------


def refused(call, *args, **kwargs) -> SignatureError:  # type: ignore[no-untyped-def]
    with pytest.raises(SignatureError) as exc:
        call(*args, **kwargs)
    return exc.value


def test_generic_http_refusals_name_their_status_and_code() -> None:
    ts = "1700000000"
    good = f"v1={mac(SECRET, ts)}"
    cases = [
        ((ts, None), 401, None, "missing X-Gateway-Signature"),
        ((ts, ""), 401, None, "missing X-Gateway-Signature"),
        ((ts, "sha256=" + mac(SECRET, ts)), 401, None, "malformed"),
        ((None, good), 401, "stale_request", "missing X-Gateway-Timestamp"),
        (("", good), 401, "stale_request", "missing X-Gateway-Timestamp"),
        (("soon", good), 401, "stale_request", "not unix seconds"),
        ((ts, f"v1={mac('other', ts)}"), 401, None, "bad signature"),
    ]
    for (timestamp, signature), status, code, words in cases:
        err = refused(verify_hmac, SECRET, timestamp, signature, BODY, now=1700000000)
        assert (err.status, err.code) == (status, code) and words in str(err), (timestamp, err)


def test_the_generic_http_timestamp_tolerance_is_300_s_either_way() -> None:
    ts = 1700000000
    signature = f"v1={mac(SECRET, str(ts))}"
    for now in (ts - 300, ts, ts + 300, ts + 299.5):
        verify_hmac(SECRET, str(ts), signature, BODY, now=now)
    for now in (ts - 300.5, ts + 300.5, ts + 301):
        err = refused(verify_hmac, SECRET, str(ts), signature, BODY, now=now)
        assert (err.status, err.code) == (401, "stale_request") and "300s" in str(err)
    # the header is read with spaces around it, and the MAC covers the stripped value
    verify_hmac(SECRET, f" {ts} ", signature, BODY, now=ts)
    verify_hmac(SECRET, str(ts), f"v1={mac(SECRET, str(ts)).upper()}", BODY, now=ts)


def as_request(headers: dict[str, str]) -> WebhookRequest:
    lowered = {k.lower(): v for k, v in headers.items()}
    return WebhookRequest("POST", "https://gw.example.com/x", lowered, {}, BODY)


def test_signed_headers_and_the_request_id() -> None:
    headers = signed_headers(SECRET, BODY, now=1700000000.9)
    assert headers == {
        TIMESTAMP_HEADER: "1700000000",
        SIGNATURE_HEADER: f"v1={mac(SECRET, '1700000000')}",
    }
    before = int(time.time())
    fresh = signed_headers(SECRET, BODY)
    assert before <= int(fresh[TIMESTAMP_HEADER]) <= int(time.time())
    verify_hmac_request(SECRET, as_request(fresh))  # checked against the clock
    old = as_request(signed_headers(SECRET, BODY, now=time.time() - 400))
    assert refused(verify_hmac_request, SECRET, old).code == "stale_request"
    request = as_request(headers)
    assert hmac_request_id(SECRET, request) == mac(SECRET, "1700000000")
    respelled = WebhookRequest(
        "POST",
        request.url,
        {
            TIMESTAMP_HEADER.lower(): " 1700000000 ",
            SIGNATURE_HEADER.lower(): "V1=ABC, " + headers[SIGNATURE_HEADER],
        },
        {},
        BODY,
    )
    assert hmac_request_id(SECRET, respelled) == hmac_request_id(SECRET, request)
    unsigned = WebhookRequest("POST", request.url, {}, {}, BODY)
    assert hmac_request_id(SECRET, unsigned) == sign(SECRET, "", BODY)[3:]


def test_twilio_refusals_and_what_a_signature_covers() -> None:
    validator = RequestValidator(TW_TOKEN)
    signature = validator.compute_signature(TW_URL, TW_FORM)
    request = twilio_request(signature, None)
    err = refused(verify_twilio, None, request, [TW_URL])
    assert err.status == 403 and "TWILIO_AUTH_TOKEN" in str(err)
    for unsigned in ({}, {"x-twilio-signature": ""}):
        err = refused(
            verify_twilio, TW_TOKEN, WebhookRequest("POST", TW_URL, unsigned, {}, b""), [TW_URL]
        )
        assert err.status == 403 and "missing X-Twilio-Signature" in str(err)
    # any one of the URLs the public URL may have been
    verify_twilio(TW_TOKEN, request, ["https://other.example.com/voice/webhook/twilio", TW_URL])
    err = refused(verify_twilio, TW_TOKEN, request, ["https://other.example.com/x"])
    assert err.status == 403 and "invalid X-Twilio-Signature" in str(err)
    # a GET is signed over its URL alone: a form sent with it is not part of it
    get_url = TW_URL + "?CallSid=CA1&Digits=5"
    get_sig = validator.compute_signature(get_url, {})
    get = WebhookRequest(
        "get", get_url, {"x-twilio-signature": get_sig}, {"CallSid": "CA1"}, b"x=1", form={"x": "1"}
    )
    verify_twilio(TW_TOKEN, get, [get_url])
    post = WebhookRequest(
        "post", TW_URL, {"x-twilio-signature": signature}, {}, b"", form=dict(TW_FORM)
    )
    verify_twilio(TW_TOKEN, post, [TW_URL])  # method names in any case
    # a JSON body is covered through bodySHA256 in the signed URL
    body = b'{"CallSid":"CA1"}'
    json_url = f"{TW_URL}?bodySHA256={hashlib.sha256(body).hexdigest()}"
    json_sig = validator.compute_signature(json_url, {})
    query = {"bodySHA256": hashlib.sha256(body).hexdigest()}
    verify_twilio(
        TW_TOKEN,
        WebhookRequest("POST", json_url, {"x-twilio-signature": json_sig}, query, body),
        [json_url],
    )
    tampered = WebhookRequest(
        "POST", json_url, {"x-twilio-signature": json_sig}, query, body + b" "
    )
    assert refused(verify_twilio, TW_TOKEN, tampered, [json_url]).status == 403


def test_twilio_signed_params_are_the_query_and_a_posts_form() -> None:
    query = {"a": "1", "bodySHA256": "ab"}
    form = {"b": "2"}
    post = WebhookRequest("post", TW_URL, {}, query, b"b=2", form=form)
    assert twilio_signed_params(post) == {"a": "1", "b": "2"}
    get = WebhookRequest("GET", TW_URL, {}, query, b"b=2", form=form)
    assert twilio_signed_params(get) == {"a": "1"}
    assert query == {"a": "1", "bodySHA256": "ab"}  # the request's own query is left alone


VG_URL = "https://gw.example.com/voice/webhook/vonage/event"
VG_BODY = b'{"uuid":"abc","status":"answered"}'


def signatures_clock() -> float:
    """The clock `verify_vonage` reads (frozen in some tests)."""
    from realtime_gateway import signatures

    return signatures.time.time()


def vonage_post(
    claims: dict[str, object] | None = None, *, auth: str | None = None
) -> WebhookRequest:
    full: dict[str, object] = {
        "iat": signatures_clock(),
        "jti": str(uuid.uuid4()),
        "payload_hash": hashlib.sha256(VG_BODY).hexdigest(),
        "api_key": VG_KEY,
    }
    full.update(claims or {})
    token = jwt.encode(
        {k: v for k, v in full.items() if v is not None}, VG_SECRET, algorithm="HS256"
    )
    headers = {"authorization": auth if auth is not None else f"Bearer {token}"}
    return WebhookRequest("POST", VG_URL, headers, {}, VG_BODY)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_vonage_accepts_a_good_token_and_returns_its_claims() -> None:
    claims = verify_vonage(VG_SECRET, VG_KEY, vonage_post({"jti": "tok-1"}))
    assert claims["jti"] == "tok-1" and claims["api_key"] == VG_KEY
    minimal = {"iat": int(time.time()), "jti": "j", "payload_hash": sha(VG_BODY)}
    token = jwt.encode(minimal, VG_SECRET, algorithm="HS256")
    verify_vonage(VG_SECRET, VG_KEY, vonage_post(auth=f"bearer   {token}"))  # any case, spaces
    verify_vonage(VG_SECRET, None, vonage_post({"api_key": "another-account"}))  # no key to check
    verify_vonage(VG_SECRET, VG_KEY, vonage_post({"api_key": None}))  # a token without api_key


T = 1_800_000_000  # the frozen clock's reading


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> int:
    """Both clocks a Vonage check reads (ours for the token's age, PyJWT's for `iat` in the
    future) stopped at T, so each limit is tested to the second on a machine of any speed."""
    from datetime import datetime

    import jwt.api_jwt

    from realtime_gateway import signatures

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[no-untyped-def]
            return datetime.fromtimestamp(T, tz)

    monkeypatch.setattr(jwt.api_jwt, "datetime", Frozen)
    monkeypatch.setattr(signatures, "time", SimpleNamespace(time=lambda: float(T)))
    return T


def test_vonage_refusals_name_the_problem(frozen_clock: int) -> None:
    now = frozen_clock
    cases: list[tuple[str | None, WebhookRequest, int, str]] = [
        (None, vonage_post(), 403, "VONAGE_SIGNATURE_SECRET"),
        (VG_SECRET, vonage_post(auth=""), 401, "missing Vonage signature"),
        (VG_SECRET, vonage_post(auth="Basic abc"), 401, "missing Vonage signature"),
        (VG_SECRET, vonage_post(auth="Bearer "), 401, "missing Vonage signature"),
        (
            VG_SECRET,
            vonage_post(auth="Bearer not-a-jwt"),
            403,
            "invalid Vonage signature: DecodeError",
        ),
        (VG_SECRET, vonage_post({"jti": None}), 403, "MissingRequiredClaimError"),
        (VG_SECRET, vonage_post({"iat": now - 300.5}), 403, "stale Vonage signature"),
        (VG_SECRET, vonage_post({"iat": now + 31}), 403, "ImmatureSignatureError"),
        (VG_SECRET, vonage_post({"iat": "soon"}), 403, "invalid Vonage signature"),
        (VG_SECRET, vonage_post({"jti": ""}), 403, "no usable jti"),
        (VG_SECRET, vonage_post({"jti": "j" * 201}), 403, "no usable jti"),
        (VG_SECRET, vonage_post({"jti": 7}), 403, "InvalidJTIError"),
        (VG_SECRET, vonage_post({"api_key": "another-account"}), 403, "another account"),
        (VG_SECRET, vonage_post({"payload_hash": None}), 403, "no payload_hash"),
        (VG_SECRET, vonage_post({"payload_hash": 5}), 403, "no payload_hash"),
        (VG_SECRET, vonage_post({"payload_hash": "0" * 64}), 403, "payload does not match"),
    ]
    for secret, request, status, words in cases:
        err = refused(verify_vonage, secret, VG_KEY, request)
        assert err.status == status and words in str(err), (words, str(err))
    # at the limits: accepted
    for claims in ({"iat": now - 300}, {"iat": now + 30}, {"jti": "j" * 200}, {"jti": "j"}):
        verify_vonage(VG_SECRET, VG_KEY, vonage_post({"iat": now, **claims}))


def test_vonage_payload_hashes_of_a_get_and_a_post() -> None:
    get = WebhookRequest("get", f"{VG_URL}?uuid=abc&to=%2B44", {}, {}, b"ignored")
    assert vonage_payload_hashes(get) == [sha(b'{"uuid":"abc","to":"+44"}')]
    # blank values and non-ASCII text as Vonage sends them: kept, and as UTF-8
    odd = WebhookRequest("GET", f"{VG_URL}?from=&name=Jos%C3%A9", {}, {}, b"")
    assert vonage_payload_hashes(odd) == [sha('{"from":"","name":"José"}'.encode())]
    bare = WebhookRequest("GET", VG_URL, {}, {}, b"ignored")
    assert vonage_payload_hashes(bare) == [sha(b"{}"), sha(b"")]
    post = WebhookRequest("post", f"{VG_URL}?uuid=abc", {}, {}, VG_BODY)
    assert vonage_payload_hashes(post) == [sha(VG_BODY)]


def test_vonage_token_id_reads_a_usable_jti_only() -> None:
    assert vonage_token_id(vonage_post({"jti": "tok-9"})) == "tok-9"
    assert vonage_token_id(vonage_post(auth="Bearer not-a-jwt")) is None
    assert vonage_token_id(vonage_post(auth="")) is None
    assert vonage_token_id(vonage_post({"jti": ""})) is None
    assert vonage_token_id(vonage_post({"jti": 12})) is None


def test_vonage_callback_query_sig() -> None:
    params = {"turn": 3, "direction": "inbound"}
    query = signed_callback_query(VG_SECRET, "/input/", params)
    assert query == {**params, "sig": vonage_callback_sig(VG_SECRET, "input", params)}
    # order-free, keyed by a key derived from the secret (never the secret itself)
    assert (
        vonage_callback_sig(VG_SECRET, "input", {"direction": "inbound", "turn": "3"})
        == query["sig"]
    )
    canonical = b"input?direction=inbound&turn=3"
    key = hmac.new(VG_SECRET.encode(), b"vao:vonage-callback-query:v1", hashlib.sha256).digest()
    assert query["sig"] == hmac.new(key, canonical, hashlib.sha256).hexdigest()
    assert query["sig"] != hmac.new(VG_SECRET.encode(), canonical, hashlib.sha256).hexdigest()
    assert vonage_callback_sig("other", "input", params) != query["sig"]
    assert vonage_callback_sig(VG_SECRET, "event", params) != query["sig"]

    def request(method: str, q: str) -> WebhookRequest:
        return WebhookRequest(method, f"{VG_URL}?{q}" if q else VG_URL, {}, {}, b"{}")

    good = urlencode(query)
    verify_vonage_query(VG_SECRET, "input", request("POST", good))
    verify_vonage_query(VG_SECRET, "input", request("POST", ""))  # nothing to cover
    verify_vonage_query(VG_SECRET, "input", request("get", "agent_id=a1"))  # the JWT covers it
    refusals = [
        ("POST", good + "&turn=4", "repeated"),
        ("POST", "turn=3&direction=inbound", "must carry the gateway's sig"),
        ("post", "turn=3", "must carry the gateway's sig"),
        ("POST", "turn=", "must carry the gateway's sig"),  # a blank value is a parameter too
        ("POST", good.replace("turn=3", "turn=4"), "do not match"),
        ("POST", good + "&extra=1", "do not match"),
        ("GET", good.replace("turn=3", "turn=4"), "do not match"),
    ]
    for method, q, words in refusals:
        err = refused(verify_vonage_query, VG_SECRET, "input", request(method, q))
        assert err.status == 403 and words in str(err), (q, str(err))
    err = refused(verify_vonage_query, VG_SECRET, "event", request("POST", good))
    assert "do not match" in str(err)
