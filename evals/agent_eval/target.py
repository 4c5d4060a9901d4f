"""Which services a run drives, and the credentials it signs and authenticates with.

Running services are given by URL (`--gateway`, `--orchestrator`, or `EVAL_GATEWAY_URL` /
`EVAL_ORCHESTRATOR_URL`; default `make run`'s 127.0.0.1:3000 and :8000). Credentials come from
the environment under the services' own names, so the shell that deploys them can test them:
`GENERIC_HTTP_SECRET` (else `DATA_DIR/generic_http_secret`, `make run`'s development secret),
`TWILIO_AUTH_TOKEN`, `VONAGE_SIGNATURE_SECRET` (+ `VONAGE_API_KEY`), `PUBLIC_BASE_URL` (the URL
provider signatures cover; default the gateway URL), and a management token: `EVAL_TOKEN`,
else one minted with `JWT_SECRET` (else `DATA_DIR`'s development secret), as `make token` does.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shared.auth import mint_token
from shared.config import CommonSettings, load_settings

DEFAULT_GATEWAY = "http://127.0.0.1:3000"
DEFAULT_ORCHESTRATOR = "http://127.0.0.1:8000"
TOKEN_TTL_S = 6 * 3600
GENERIC_SECRET_FILE = "generic_http_secret"  # noqa: S105 - a file name (the gateway's)


@dataclass(frozen=True)
class Target:
    gateway_url: str
    orchestrator_url: str
    token: str
    public_url: str = ""
    generic_secret: str | None = None
    twilio_auth_token: str | None = None
    vonage_signature_secret: str | None = None
    vonage_api_key: str | None = None

    @property
    def public_base(self) -> str:
        return (self.public_url or self.gateway_url).rstrip("/")

    def local(self, public: str) -> str:
        """A URL the gateway gave the provider (on its public base), as this machine reaches it."""
        if public.startswith(self.public_base):
            return self.gateway_url.rstrip("/") + public[len(self.public_base) :]
        return public

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        gateway_url: str | None = None,
        orchestrator_url: str | None = None,
    ) -> Target:
        env = dict(os.environ if env is None else env)
        gateway = gateway_url or env.get("EVAL_GATEWAY_URL") or DEFAULT_GATEWAY
        return cls(
            gateway_url=gateway.rstrip("/"),
            orchestrator_url=(
                orchestrator_url or env.get("EVAL_ORCHESTRATOR_URL") or DEFAULT_ORCHESTRATOR
            ).rstrip("/"),
            token=env.get("EVAL_TOKEN") or _mint(env),
            public_url=(env.get("PUBLIC_BASE_URL") or "").rstrip("/"),
            generic_secret=env.get("GENERIC_HTTP_SECRET") or _dev_secret(env),
            twilio_auth_token=env.get("TWILIO_AUTH_TOKEN") or None,
            vonage_signature_secret=env.get("VONAGE_SIGNATURE_SECRET") or None,
            vonage_api_key=env.get("VONAGE_API_KEY") or None,
        )


def _data_dir(env: Mapping[str, str]) -> Path:
    return Path(env.get("DATA_DIR") or ".data")


def _dev_secret(env: Mapping[str, str]) -> str | None:
    path = _data_dir(env) / GENERIC_SECRET_FILE
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _mint(env: Mapping[str, str]) -> str:
    """An admin token (an agent made for a run may need `allow_private_networks`), as
    `make token` makes one; its own `sub` per run, so the management rate limit (per client)
    counts each run on its own."""
    settings = load_settings(
        CommonSettings,
        _env_file=None,
        data_dir=_data_dir(env),
        jwt_secret=env.get("JWT_SECRET") or None,
    )
    return mint_token(
        settings.resolved_jwt_secret(),
        sub=f"vao-eval-{secrets.token_hex(4)}",
        role="admin",
        ttl_s=TOKEN_TTL_S,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
    )
