"""The gateway's service token, on a clock the test controls (issue 20): it is reused for a while
and renewed at half its life, so a token the gateway sends always has time left; renewing later
(say at twice its life) would send expired tokens and every caller would hear the apology."""

from __future__ import annotations

import time
from types import SimpleNamespace

import jwt
import pytest

from shared import auth
from shared.auth import ServiceTokenSource, TokenError, verify_service_token

SECRET = "service-token-clock-tests-" + "q" * 24
TTL_S = 120.0  # the gateway's own (realtime_gateway.runtime.SERVICE_TOKEN_TTL_S)


class Clock:
    """`time.time` and `time.monotonic` for `shared.auth`, moved by the test only."""

    def __init__(self, wall: float) -> None:
        self.wall = wall
        self.mono = 1_000.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds

    def module(self) -> SimpleNamespace:
        return SimpleNamespace(
            time=lambda: self.wall, monotonic=lambda: self.mono, sleep=time.sleep
        )


def claims_of(token: str) -> dict[str, float]:
    # signature checked, expiry read by the test against its own clock
    return jwt.decode(
        token,
        SECRET,
        algorithms=["HS256"],
        audience=auth.SERVICE_AUDIENCE,
        options={"verify_exp": False, "verify_iat": False},
    )


def test_the_token_sent_always_has_at_least_half_its_life_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock(wall=1_700_000_000.0)
    monkeypatch.setattr(auth, "time", clock.module())
    source = ServiceTokenSource(SECRET, ttl_s=TTL_S)
    minted: set[str] = set()
    for _ in range(int(4 * TTL_S) // 5):  # four lifetimes, a turn every 5 s
        token = source.token()
        minted.add(token)
        left = claims_of(token)["exp"] - clock.wall
        assert left >= TTL_S / 2 - 1, f"sent with {left:.0f} s left at t={clock.mono - 1000:.0f}"
        clock.advance(5)
    # reused, not minted per request: one token per half life, about
    assert 7 <= len(minted) <= 10, len(minted)


def test_a_token_reused_up_to_now_still_verifies_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """The clock runs from 200 s ago up to the real now, a turn every 10 s; the token then in use
    must pass the orchestrator's real check (PyJWT on the real clock, 5 s leeway)."""
    now = time.time()
    clock = Clock(wall=now - 200)
    monkeypatch.setattr(auth, "time", clock.module())
    source = ServiceTokenSource(SECRET, ttl_s=60.0)
    token = source.token()
    while clock.wall < now:
        clock.advance(min(10.0, now - clock.wall))
        token = source.token()
    monkeypatch.undo()
    principal = verify_service_token(SECRET, token)
    assert principal.role == auth.SERVICE_ROLE


def test_an_expired_service_token_is_refused() -> None:
    """The other side of the check above: what an expired one meets."""
    stale = auth.mint_token(
        SECRET,
        sub=auth.SERVICE_ISSUER,
        role=auth.SERVICE_ROLE,
        ttl_s=-30,
        audience=auth.SERVICE_AUDIENCE,
        issuer=auth.SERVICE_ISSUER,
    )
    with pytest.raises(TokenError, match="expired"):
        verify_service_token(SECRET, stale)
