"""JWT helpers for both services: management tokens and the gateway's service token.

HS256 only, pinned on verify (no `none`, no algorithm confusion); `sub`, `exp` and `role`
required: a token without `role` is refused (401), never read as a viewer, on every route of both
services (a token minted for something else must not become a management token by omission).
Management tokens carry `role` in admin | operator | viewer. The gateway calls the orchestrator
with a short-lived token of role `service` and audience `SERVICE_AUDIENCE`.
"""

from __future__ import annotations

import os
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

ALGORITHM = "HS256"
ROLES = ("admin", "operator", "viewer")
SERVICE_ROLE = "service"
SERVICE_AUDIENCE = "vao-orchestrator"
# A call token: lets one browser (or test phone) open one streamed call, and nothing else.
CALLER_ROLE = "caller"
CALL_AUDIENCE = "vao-call"
SERVICE_ISSUER = "realtime-gateway"
DEV_SECRET_FILE = "jwt_secret"  # noqa: S105 - a file name, not a secret
MIN_PRODUCTION_SECRET_CHARS = 32
WEAK_SECRETS = frozenset(
    {
        "secret",
        "changeme",
        "change-me",
        "your-production-jwt-secret",
        "your-jwt-secret",
        "jwt-secret",
    }
)


class TokenError(Exception):
    """The token is missing, malformed, badly signed, expired or lacks a required claim."""


class SecretConfigError(ValueError):
    """`JWT_SECRET` is missing or too weak where it must be strong."""


@dataclass(frozen=True, slots=True)
class Principal:
    sub: str
    role: str
    claims: dict[str, Any]


MIN_DISTINCT_SECRET_CHARS = 8


def secret_is_weak(secret: str) -> bool:
    """Too short, a known placeholder, or too little variety (`aaaa...`) to be random."""
    return (
        len(secret) < MIN_PRODUCTION_SECRET_CHARS
        or secret.lower() in WEAK_SECRETS
        or len(set(secret)) < MIN_DISTINCT_SECRET_CHARS
    )


def load_or_create_dev_secret(data_dir: Path, filename: str = DEV_SECRET_FILE) -> str:
    """A random secret made once under DATA_DIR and shared by both services started from it.

    `filename` names the secret (`jwt_secret` by default; the gateway keeps its development
    generic-http secret as `generic_http_secret` the same way)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / filename
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # the other service may be writing it right now
            value = path.read_text().strip()
            if value:
                return value
            time.sleep(0.01)
        raise SecretConfigError(f"{path} is empty; delete it to have a new secret made") from None
    value = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def resolve_jwt_secret(configured: str | None, data_dir: Path, production: bool) -> str:
    if configured:
        if production and secret_is_weak(configured):
            raise SecretConfigError(
                f"JWT_SECRET is too weak for APP_ENV=production "
                f"(need at least {MIN_PRODUCTION_SECRET_CHARS} random characters)"
            )
        return configured
    if production:
        raise SecretConfigError("JWT_SECRET is required when APP_ENV=production")
    return load_or_create_dev_secret(data_dir)


def mint_token(
    secret: str,
    sub: str,
    role: str,
    ttl_s: float = 3600,
    *,
    audience: str | None = None,
    issuer: str | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "role": role, "iat": now, "exp": now + int(ttl_s)}
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    if extra:
        claims.update(extra)
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


LEEWAY_S = 5
VERIFIED_CACHE_SIZE = 1024


class _VerifiedTokens:
    """Tokens whose signature and claims were checked, by (secret, token, audience, issuer).

    The gateway reuses its service token for half its life and an operator's console reuses its
    token, so the same string arrives on every request — and was verified twice a request (the
    rate limiter's identity, then the route's auth). A hit skips the HMAC and the decode of a
    string already proven; `exp` is checked again on every hit, so a cached token expires
    exactly as a fresh decode would. Only valid tokens are kept (a flood of bad tokens
    cannot fill it with entries), bounded, least recently used out first."""

    def __init__(self, size: int = VERIFIED_CACHE_SIZE) -> None:
        self._size = size
        self._items: OrderedDict[tuple[str, str, str | None, str | None], dict[str, Any]] = (
            OrderedDict()
        )

    def get(self, key: tuple[str, str, str | None, str | None]) -> dict[str, Any] | None:
        claims = self._items.get(key)
        if claims is None:
            return None
        now = time.time()
        if float(claims["exp"]) <= now - LEEWAY_S:  # as PyJWT's own check
            del self._items[key]
            raise TokenError("token expired")
        self._items.move_to_end(key)
        return claims

    def put(self, key: tuple[str, str, str | None, str | None], claims: dict[str, Any]) -> None:
        # `nbf`/`iat` passed at decode time and time only moves on: `exp` is the one to recheck.
        self._items[key] = claims
        if len(self._items) > self._size:
            self._items.popitem(last=False)


_verified = _VerifiedTokens()


def verify_token(
    secret: str, token: str, *, audience: str | None = None, issuer: str | None = None
) -> Principal:
    key = (secret, token, audience, issuer)
    claims = _verified.get(key)
    if claims is None:
        try:
            claims = jwt.decode(
                token,
                secret,
                algorithms=[ALGORITHM],
                audience=audience,
                issuer=issuer,
                options={"require": ["sub", "exp", "role"], "verify_aud": audience is not None},
                leeway=LEEWAY_S,
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenError("token expired") from exc
        except jwt.InvalidTokenError as exc:
            raise TokenError(f"invalid token: {exc}") from exc
        role = claims["role"]
        if not isinstance(role, str) or role not in (*ROLES, SERVICE_ROLE, CALLER_ROLE):
            raise TokenError("invalid token: unknown role")
        _verified.put(key, claims)
    return Principal(sub=str(claims["sub"]), role=str(claims["role"]), claims=dict(claims))


class ServiceTokenSource:
    """Mints the gateway's service token and reuses it until shortly before it expires."""

    def __init__(self, secret: str, ttl_s: float = 60.0) -> None:
        self._secret = secret
        self._ttl_s = ttl_s
        self._token = ""
        self._renew_at = 0.0

    def token(self) -> str:
        now = time.monotonic()
        if now >= self._renew_at:
            self._token = mint_token(
                self._secret,
                sub=SERVICE_ISSUER,
                role=SERVICE_ROLE,
                ttl_s=self._ttl_s,
                audience=SERVICE_AUDIENCE,
                issuer=SERVICE_ISSUER,
            )
            self._renew_at = now + self._ttl_s / 2
        return self._token


def verify_service_token(secret: str, token: str) -> Principal:
    principal = verify_token(secret, token, audience=SERVICE_AUDIENCE, issuer=SERVICE_ISSUER)
    if principal.role != SERVICE_ROLE:
        raise TokenError("not a service token")
    return principal


def verify_call_token(secret: str, token: str) -> Principal:
    """A call token (`CALL_AUDIENCE`, role `caller`; `sub` is the call id it opens)."""
    principal = verify_token(secret, token, audience=CALL_AUDIENCE)
    if principal.role != CALLER_ROLE:
        raise TokenError("not a call token")
    return principal


def verify_management_token(
    secret: str, token: str, *, audience: str | None = None, issuer: str | None = None
) -> Principal:
    principal = verify_token(secret, token, audience=audience, issuer=issuer)
    if principal.role not in ROLES:
        raise TokenError("invalid token: not a management token")
    return principal


def bearer_from_header(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
