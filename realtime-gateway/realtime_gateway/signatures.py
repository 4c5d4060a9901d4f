"""Webhook signatures, every provider's, in one place: each check fails closed.

- **generic-http and Amazon Connect's forwarder**: `X-Gateway-Timestamp` + `X-Gateway-Signature:
  v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>`; several `v1=` values are accepted (a
  secret being rotated), each compared in constant time, none skipped; a timestamp more than
  `TOLERANCE_S` from our clock is refused.
- **Twilio**: `X-Twilio-Signature` over the public URL and the POSTed form (the SDK's
  `RequestValidator`, HMAC-SHA1 or, with `X-Twilio-Webhooks-Signature-Settings`, HMAC-SHA256). A
  GET is signed over its URL alone, so nothing but the URL's query may be used from it; a JSON body
  is covered through the `bodySHA256` query parameter.
- **Vonage**: an HS256 JWT (`Authorization: Bearer`) signed with the account's signature secret,
  no older than `VONAGE_MAX_TOKEN_AGE_S`, with a `jti`, whose `payload_hash` is the sha256 of what
  was sent: the raw body of a POST; a GET's query as compact JSON (the hash of an empty body only
  for a GET with no query at all, which cannot name a call) — the SDK checks the JWT only, not the
  hash. Each `jti` is accepted once (the Vonage driver's replay key; Vonage retries a failed
  webhook with a new token). The JWT does not cover a POST's query, so the query parameters the
  gateway puts in the callback URLs it gives Vonage (turn number, silent turns, direction, agent,
  recording) carry our own `sig`: HMAC-SHA256 over the webhook step and those parameters, keyed
  with a key derived from the signature secret (`vonage_callback_sig`). A POST whose query has
  parameters without a matching `sig` is refused (403), so a captured input cannot be replayed
  under another turn number and a status URL's parameters do not work on the answer URL. A GET's
  query is covered by the JWT itself (e.g. an `agent_id` an operator wrote into the answer URL).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from realtime_gateway.vocabulary import SignatureError, WebhookRequest

TIMESTAMP_HEADER = "X-Gateway-Timestamp"
SIGNATURE_HEADER = "X-Gateway-Signature"
TOLERANCE_S = 300
VONAGE_MAX_TOKEN_AGE_S = 300
VONAGE_CLOCK_SKEW_S = 30
VONAGE_QUERY_SIG = "sig"  # our HMAC over the query of a callback URL we gave Vonage
MAX_TOKEN_ID_CHARS = 200
_CALLBACK_KEY_LABEL = b"vao:vonage-callback-query:v1"
_SIG_RE = re.compile(r"v1=([0-9a-fA-F]{64})")


# ---- generic-http HMAC (also the Connect forwarder's) -------------------------------------------


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """`v1=<hex>` for `timestamp + "." + body`."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"v1={mac.hexdigest()}"


def signed_headers(secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    ts = str(int(now if now is not None else time.time()))
    return {TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: sign(secret, ts, body)}


def verify_hmac(
    secret: str,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: float | None = None,
    tolerance_s: int = TOLERANCE_S,
) -> None:
    """Raise `SignatureError` (401) unless one `v1=` matches and the timestamp is fresh."""
    if not signature:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header", status=401)
    candidates = _SIG_RE.findall(signature)
    if not candidates:
        raise SignatureError(f"malformed {SIGNATURE_HEADER} header (want v1=<hex>)", status=401)
    if not timestamp:
        raise SignatureError(f"missing {TIMESTAMP_HEADER} header", status=401, code="stale_request")
    try:
        ts = int(timestamp.strip())
    except ValueError:
        raise SignatureError(
            f"{TIMESTAMP_HEADER} is not unix seconds", status=401, code="stale_request"
        ) from None
    expected = sign(secret, timestamp.strip(), body)[3:]
    matched = False
    for candidate in candidates:  # compare every candidate: no early exit on a match
        matched |= hmac.compare_digest(candidate.lower(), expected)
    if not matched:
        raise SignatureError("bad signature", status=401)
    current = now if now is not None else time.time()
    if abs(current - ts) > tolerance_s:
        raise SignatureError(
            f"stale request: {TIMESTAMP_HEADER} is more than {tolerance_s}s from now",
            status=401,
            code="stale_request",
        )


def verify_hmac_request(secret: str, request: WebhookRequest) -> None:
    verify_hmac(
        secret, request.header(TIMESTAMP_HEADER), request.header(SIGNATURE_HEADER), request.body
    )


def hmac_request_id(secret: str, request: WebhookRequest) -> str:
    """What a verified request's signature is: the hex HMAC of its (stripped) timestamp and
    body, computed here, so a replay cannot pass as new by re-spelling the header (another
    case, an extra `v1=` value). The replay ledger's key for the Connect forwarder."""
    timestamp = (request.header(TIMESTAMP_HEADER) or "").strip()
    return sign(secret, timestamp, request.body)[3:]


# ---- Twilio -----------------------------------------------------------------------------------


def twilio_signed_params(request: WebhookRequest) -> dict[str, str]:
    """The parameters a Twilio signature covers: the URL's query, and a POST's form. A GET's
    body is not signed, so it is never read."""
    params = dict(request.query)
    params.pop("bodySHA256", None)
    if request.method.upper() == "POST":
        params.update(request.form)
    return params


def verify_twilio(auth_token: str | None, request: WebhookRequest, urls: Iterable[str]) -> None:
    """Raise `SignatureError` (403) unless `X-Twilio-Signature` matches one of `urls` (the
    public URL Twilio requested, as configuration says it is)."""
    from twilio.request_validator import RequestValidator, get_signature_algorithm

    signature = request.header("X-Twilio-Signature")
    if auth_token is None:
        raise SignatureError("TWILIO_AUTH_TOKEN is not configured", status=403)
    if not signature:
        raise SignatureError("missing X-Twilio-Signature", status=403)
    algorithm = get_signature_algorithm(request.header("X-Twilio-Webhooks-Signature-Settings"))
    validator = RequestValidator(auth_token)
    params: Mapping[str, str] | str
    if "bodySHA256" in request.query:
        params = request.body.decode("utf-8", errors="replace")
    elif request.method.upper() == "POST":
        params = dict(request.form)
    else:
        params = {}  # a GET: every parameter is in the signed URL
    if not any(validator.validate(url, params, signature, algorithm) for url in urls):
        raise SignatureError("invalid X-Twilio-Signature", status=403)


# ---- Vonage -----------------------------------------------------------------------------------


def query_payload_hash(url: str) -> str:
    """Vonage's payload hash of a GET webhook: its query as compact JSON, in order."""
    pairs = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    text = json.dumps(dict(pairs), separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def vonage_payload_hashes(request: WebhookRequest) -> list[str]:
    """The hashes a Vonage JWT may carry for this request. A GET's is its query as compact JSON
    (Vonage's documented form): the query is what drives state on a GET, so the hash of an empty
    body is accepted only for a GET with no query at all (nothing to cover, nothing it could
    start)."""
    if request.method.upper() == "GET":
        hashes = [query_payload_hash(request.url)]
        if not urlsplit(request.url).query:
            hashes.append(hashlib.sha256(b"").hexdigest())
        return hashes
    return [hashlib.sha256(request.body).hexdigest()]


def verify_vonage(
    secret: str | None, api_key: str | None, request: WebhookRequest
) -> dict[str, Any]:
    """The JWT's claims, or `SignatureError` (401 unsigned, 403 otherwise)."""
    import jwt

    if secret is None:
        raise SignatureError("VONAGE_SIGNATURE_SECRET is not configured", status=403)
    header = request.header("Authorization") or ""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise SignatureError("missing Vonage signature (Authorization: Bearer JWT)", 401)
    try:
        claims: dict[str, Any] = jwt.decode(
            token.strip(),
            secret,
            algorithms=["HS256"],
            options={"require": ["iat", "jti"]},
            leeway=VONAGE_CLOCK_SKEW_S,
        )
    except jwt.PyJWTError as exc:
        raise SignatureError(f"invalid Vonage signature: {type(exc).__name__}") from None
    iat = claims.get("iat")
    if not isinstance(iat, int | float) or time.time() - float(iat) > VONAGE_MAX_TOKEN_AGE_S:
        raise SignatureError("stale Vonage signature (iat too old)")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_TOKEN_ID_CHARS:
        raise SignatureError("Vonage signature has no usable jti (token id)")
    if api_key and claims.get("api_key") not in (None, api_key):
        raise SignatureError("Vonage signature is for another account")
    claimed = claims.get("payload_hash")
    if not isinstance(claimed, str):
        raise SignatureError("Vonage signature has no payload_hash")
    if not any(hmac.compare_digest(claimed, h) for h in vonage_payload_hashes(request)):
        raise SignatureError("payload does not match the Vonage signature")
    return claims


def vonage_token_id(request: WebhookRequest) -> str | None:
    """The `jti` of the request's Vonage JWT, read without checking the token again: only for a
    request `verify_vonage` has accepted (the adapter parses only verified requests)."""
    import jwt

    token = (request.header("Authorization") or "").partition(" ")[2].strip()
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    jti = claims.get("jti")
    return jti if isinstance(jti, str) and jti else None


def _callback_key(secret: str) -> bytes:
    """Our own key for callback URLs, derived from the signature secret (never the secret
    itself, so a leaked `sig` says nothing about the key Vonage signs with)."""
    return hmac.new(secret.encode(), _CALLBACK_KEY_LABEL, hashlib.sha256).digest()


def vonage_callback_sig(secret: str, step: str, params: Mapping[str, str | int]) -> str:
    """Our `sig` over a callback URL's webhook step and query parameters (order-free)."""
    pairs = sorted((str(k), str(v)) for k, v in params.items())
    canonical = f"{step.strip('/')}?{urlencode(pairs)}"
    return hmac.new(_callback_key(secret), canonical.encode(), hashlib.sha256).hexdigest()


def signed_callback_query(
    secret: str, step: str, params: Mapping[str, str | int]
) -> dict[str, str | int]:
    """`params` with our `sig` added: the query of a callback URL we give Vonage."""
    return {**params, VONAGE_QUERY_SIG: vonage_callback_sig(secret, step, params)}


def verify_vonage_query(secret: str, step: str, request: WebhookRequest) -> None:
    """Raise `SignatureError` (403) unless the query is covered: by Vonage's JWT (a GET, whose
    `payload_hash` is its query), or by our `sig` for this webhook `step`. A POST with query
    parameters and no `sig`, a `sig` that does not match (a changed turn, a parameter added, a
    URL made for another step) or a repeated parameter is refused."""
    pairs = parse_qsl(urlsplit(request.url).query, keep_blank_values=True)
    given = [v for k, v in pairs if k == VONAGE_QUERY_SIG]
    params = [(k, v) for k, v in pairs if k != VONAGE_QUERY_SIG]
    if len({k for k, _ in pairs}) != len(pairs):
        raise SignatureError("a query parameter is repeated in a Vonage webhook URL")
    if not given:
        if request.method.upper() == "GET" or not params:
            return
        raise SignatureError(
            "query parameters on a Vonage POST must carry the gateway's sig "
            "(only callback URLs the gateway made may have a query)"
        )
    expected = vonage_callback_sig(secret, step, dict(params))
    if not hmac.compare_digest(given[0].encode(), expected.encode()):
        raise SignatureError(
            "query parameters do not match their sig (changed, or made for another step)"
        )
