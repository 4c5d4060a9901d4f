"""`shared.auth` rule by rule, without a server: what makes a secret weak, how the development
secret is made and shared, what a minted token holds, what `verify_*` refuses and why, the
verified-token cache's bounds, and when the service token is renewed (each limit at its edge)."""

from __future__ import annotations

import stat
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jwt
import pytest

from shared import auth
from shared.auth import (
    SecretConfigError,
    ServiceTokenSource,
    TokenError,
    bearer_from_header,
    load_or_create_dev_secret,
    mint_token,
    resolve_jwt_secret,
    secret_is_weak,
    verify_call_token,
    verify_management_token,
    verify_service_token,
    verify_token,
)

# 36 distinct characters, no placeholder: what a strong secret looks like
STRONG = "abcdefghijklmnopqrstuvwxyz0123456789"


def unique_secret() -> str:
    """A secret no other test used: the verified-token cache is keyed by secret."""
    return f"{STRONG}-{time.monotonic_ns()}-{threading.get_ident()}"


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


# ---- secrets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("secret", "weak"),
    [
        (STRONG[:32], False),  # exactly the minimum length
        (STRONG[:31], True),  # one short
        ("Xy7#kL9!pQ2@", True),  # random, but short
        ("abcdefgh" * 4, False),  # 32 characters, 8 distinct: enough variety
        ("abcdefga" * 5, True),  # 40 characters, 7 distinct: too little
        ("a" * 64, True),
        ("your-production-jwt-secret", True),
        ("CHANGEME", True),
    ],
)
def test_secret_is_weak(secret: str, weak: bool) -> None:
    assert secret_is_weak(secret) is weak


def test_resolve_jwt_secret(tmp_path: Path) -> None:
    assert resolve_jwt_secret("short", tmp_path, production=False) == "short"
    assert resolve_jwt_secret(STRONG, tmp_path, production=True) == STRONG
    with pytest.raises(SecretConfigError, match="too weak for APP_ENV=production"):
        resolve_jwt_secret("short", tmp_path, production=True)
    with pytest.raises(SecretConfigError, match="required when APP_ENV=production"):
        resolve_jwt_secret(None, tmp_path, production=True)
    with pytest.raises(SecretConfigError, match="required"):
        resolve_jwt_secret("", tmp_path, production=True)
    assert not (tmp_path / "jwt_secret").exists()  # production never makes one
    made = resolve_jwt_secret(None, tmp_path / "data", production=False)
    assert made == (tmp_path / "data" / "jwt_secret").read_text().strip()


def test_the_development_secret_is_made_once_random_and_private(tmp_path: Path) -> None:
    first = load_or_create_dev_secret(tmp_path / "new")
    path = tmp_path / "new" / "jwt_secret"
    assert path.read_text() == first + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) == 64 and not secret_is_weak(first)  # 48 random bytes
    assert load_or_create_dev_secret(tmp_path / "new") == first  # read, not made again
    nested = load_or_create_dev_secret(tmp_path / "a" / "b")  # DATA_DIR made as needed
    assert (tmp_path / "a" / "b" / "jwt_secret").read_text() == nested + "\n"
    other = load_or_create_dev_secret(tmp_path / "new", filename="generic_http_secret")
    assert other != first and (tmp_path / "new" / "generic_http_secret").exists()


def test_a_dev_secret_being_written_is_waited_for_half_a_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "jwt_secret"
    path.write_text("")
    slept: list[float] = []
    writer = {"after": 3}

    def sleep(seconds: float) -> None:  # the other service writes it after a few polls
        slept.append(seconds)
        if len(slept) == writer["after"]:
            path.write_text("written-meanwhile\n")

    monkeypatch.setattr(auth, "time", SimpleNamespace(sleep=sleep, time=time.time))
    assert load_or_create_dev_secret(tmp_path) == "written-meanwhile"
    path.write_text("  \n")
    slept.clear()
    writer["after"] = 0  # nobody writes it
    with pytest.raises(SecretConfigError, match="is empty; delete it"):
        load_or_create_dev_secret(tmp_path)
    assert sum(slept) == pytest.approx(0.5) and len(slept) == 50


# ---- minting and verifying -------------------------------------------------------------------


def test_a_minted_token_holds_what_was_asked() -> None:
    secret = unique_secret()
    token = mint_token(secret, "ops", "operator")
    c = claims_of(token)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert (c["sub"], c["role"], c["exp"] - c["iat"]) == ("ops", "operator", 3600)
    assert abs(c["iat"] - time.time()) < 60 and "aud" not in c and "iss" not in c
    full = claims_of(
        mint_token(secret, "s", "viewer", ttl_s=90.9, audience="a", issuer="i", extra={"x": 1})
    )
    assert (full["exp"] - full["iat"], full["aud"], full["iss"], full["x"]) == (90, "a", "i", 1)


def test_verify_token_refuses_with_a_reason() -> None:
    secret = unique_secret()
    now = int(time.time())

    def signed(**claims: Any) -> str:
        base: dict[str, Any] = {"sub": "u", "role": "viewer", "exp": now + 60}
        base.update(claims)
        return jwt.encode({k: v for k, v in base.items() if v is not None}, secret, "HS256")

    assert verify_token(secret, signed()).role == "viewer"
    with pytest.raises(TokenError) as exc:
        verify_token(secret, signed(exp=now - 60))
    assert str(exc.value) == "token expired"
    for bad, reason in (
        (signed(role="root"), "invalid token: unknown role"),
        (signed(role=5), "invalid token: unknown role"),
        (signed(role=None), 'invalid token: Token is missing the "role" claim'),
        (signed(sub=None), 'invalid token: Token is missing the "sub" claim'),
        (signed(exp=None), 'invalid token: Token is missing the "exp" claim'),
        (jwt.encode({"sub": "u", "role": "viewer", "exp": now + 60}, secret, "HS512"), "alg"),
        ("garbage", "invalid token: "),
    ):
        with pytest.raises(TokenError) as exc:
            verify_token(secret, bad)
        assert str(exc.value).startswith("invalid token: ") and reason.replace("alg", "") in str(
            exc.value
        ), str(exc.value)
    # a token with an audience passes where none is asked for, and is held to one that is
    with_aud = signed(aud="vao-x")
    assert verify_token(secret, with_aud).sub == "u"
    assert verify_token(secret, with_aud, audience="vao-x").sub == "u"
    with pytest.raises(TokenError, match=r"(?i)audience"):
        verify_token(secret, with_aud, audience="vao-y")
    with pytest.raises(TokenError, match=r"(?i)issuer"):
        verify_token(secret, signed(iss="me"), issuer="you")
    principal = verify_token(secret, signed(sub="ops", role="admin"))
    assert (principal.sub, principal.role, principal.claims["exp"]) == ("ops", "admin", now + 60)


def test_each_verifier_takes_its_own_kind_of_token_only() -> None:
    secret = unique_secret()
    service = ServiceTokenSource(secret).token()
    call = mint_token(secret, "call-1", auth.CALLER_ROLE, audience=auth.CALL_AUDIENCE)
    admin = mint_token(secret, "ops", "admin")
    assert verify_service_token(secret, service).role == auth.SERVICE_ROLE
    assert verify_call_token(secret, call).sub == "call-1"
    assert verify_management_token(secret, admin).role == "admin"
    service_aud = mint_token(
        secret, "x", "admin", audience=auth.SERVICE_AUDIENCE, issuer=auth.SERVICE_ISSUER
    )
    with pytest.raises(TokenError, match="not a service token"):
        verify_service_token(secret, service_aud)
    caller_aud = mint_token(secret, "x", "viewer", audience=auth.CALL_AUDIENCE)
    with pytest.raises(TokenError, match="not a call token"):
        verify_call_token(secret, caller_aud)
    for other in (service, call):
        with pytest.raises(TokenError, match="not a management token"):
            verify_management_token(secret, other)


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (None, None),
        ("", None),
        ("Basic abc", None),
        ("Bearer", None),
        ("Bearer    ", None),
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
    ],
)
def test_bearer_from_header(header: str | None, token: str | None) -> None:
    assert bearer_from_header(header) == token


def test_a_principal_cannot_be_changed_after_verification() -> None:
    secret = unique_secret()
    principal = verify_token(secret, mint_token(secret, "ops", "viewer"))
    with pytest.raises(AttributeError):
        principal.role = "admin"  # type: ignore[misc]
    assert verify_token(secret, mint_token(secret, "ops", "viewer")).role == "viewer"


# ---- the verified-token cache ----------------------------------------------------------------


def test_a_cached_token_expires_with_the_same_leeway_as_a_decode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = unique_secret()
    token = mint_token(secret, "ops", "viewer", ttl_s=60)
    exp = claims_of(token)["exp"]
    verify_token(secret, token)  # decoded once, on the real clock

    def at(t: float) -> None:
        monkeypatch.setattr(auth, "time", SimpleNamespace(time=lambda: t))

    at(exp + 4.99)
    assert verify_token(secret, token).sub == "ops"  # still within PyJWT's 5 s leeway
    at(exp + 5)
    with pytest.raises(TokenError, match="token expired"):
        verify_token(secret, token)
    verify_token(secret, token)  # decoded afresh (forgotten on expiry), then cached again
    at(exp + 3600)
    with pytest.raises(TokenError, match="token expired"):
        verify_token(secret, token)


def test_the_cache_keeps_the_most_recently_used_tokens_up_to_its_size() -> None:
    cache = auth._VerifiedTokens(size=2)
    far = {"exp": time.time() + 600}
    key = {name: ("s", name, None, None) for name in "abc"}
    cache.put(key["a"], far)
    cache.put(key["b"], far)
    assert cache.get(key["a"]) == far and cache.get(key["b"]) == far  # two fit
    assert cache.get(key["a"]) == far  # a used last: b is the least recently used
    cache.put(key["c"], far)
    assert cache.get(key["b"]) is None
    assert cache.get(key["a"]) == far and cache.get(key["c"]) == far


def test_the_shared_cache_is_bounded_at_1024_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "_verified", auth._VerifiedTokens())
    secret = unique_secret()
    tokens = [mint_token(secret, f"u{i}", "viewer") for i in range(1025)]
    for t in tokens:
        verify_token(secret, t)
    decodes: list[str] = []
    real = jwt.decode
    monkeypatch.setattr(auth.jwt, "decode", lambda *a, **k: decodes.append(a[0]) or real(*a, **k))
    verify_token(secret, tokens[1])  # still held
    verify_token(secret, tokens[0])  # the first one went when the 1025th came
    assert decodes == [tokens[0]]


# ---- the service token's renewal -------------------------------------------------------------


def test_the_first_service_token_is_minted_whatever_the_monotonic_clock_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The monotonic clock's origin is arbitrary: it may read 0 in a fresh container."""
    monkeypatch.setattr(auth, "time", SimpleNamespace(time=time.time, monotonic=lambda: 0.0))
    secret = unique_secret()
    token = ServiceTokenSource(secret).token()
    monkeypatch.undo()
    assert verify_service_token(secret, token).role == auth.SERVICE_ROLE


def test_the_service_token_is_renewed_exactly_at_half_its_life(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = SimpleNamespace(wall=1_700_000_000.0, mono=500.0)
    monkeypatch.setattr(
        auth, "time", SimpleNamespace(time=lambda: clock.wall, monotonic=lambda: clock.mono)
    )
    source = ServiceTokenSource(unique_secret())  # the default life: 60 s
    first = source.token()
    c = claims_of(first)
    assert c["exp"] - c["iat"] == 60
    assert (c["aud"], c["iss"], c["sub"]) == (
        auth.SERVICE_AUDIENCE,
        auth.SERVICE_ISSUER,
        auth.SERVICE_ISSUER,
    )
    clock.wall += 29.99
    clock.mono += 29.99
    assert source.token() == first
    clock.wall += 0.01
    clock.mono += 0.01
    second = source.token()
    assert second != first and claims_of(second)["iat"] == 1_700_000_030
