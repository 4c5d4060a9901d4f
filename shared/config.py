"""Settings both services read the same way: environment variables only (plus `.env` if present).

A missing or malformed value stops start-up with one line naming the variable
(`load_settings` turns pydantic's report into that line).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.auth import resolve_jwt_secret


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    host: str = "0.0.0.0"
    app_env: Literal["development", "production", "test"] = Field(
        "development", validation_alias=AliasChoices("APP_ENV", "NODE_ENV")
    )
    debug: bool = False
    log_level: str | None = None
    # text | json; unset: text on a terminal, else JSON. Always JSON in production.
    log_format: Literal["text", "json"] | None = None
    data_dir: Path = Path(".data")
    jwt_secret: SecretStr | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    sentry_dsn: SecretStr | None = None
    # When set, `GET /metrics` needs `Authorization: Bearer <METRICS_TOKEN>` (for a /metrics
    # reachable through a public load balancer); unset, it is open to the scraper's network.
    metrics_token: SecretStr | None = None

    @field_validator("app_env", mode="before")
    @classmethod
    def _normalise_env(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("jwt_secret", "sentry_dsn", "metrics_token", "log_format", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def production(self) -> bool:
        return self.app_env == "production"

    def resolved_jwt_secret(self) -> str:
        configured = self.jwt_secret.get_secret_value() if self.jwt_secret else None
        return resolve_jwt_secret(configured, self.data_dir, self.production)


S = TypeVar("S", bound=BaseSettings)


class ConfigError(SystemExit):
    """Raised (and printed as one line) when configuration is missing or malformed."""


def describe_settings_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        message = str(err.get("msg"))
        if not loc:  # a check across variables names them itself
            parts.append(message.removeprefix("Value error, "))
            continue
        parts.append(f"{loc[0].upper()}: {message}")
    return "; ".join(parts)


def load_settings(cls: type[S], **overrides: Any) -> S:
    try:
        return cls(**overrides)
    except ValidationError as exc:
        # SystemExit prints its message on stderr once and exits non-zero.
        raise ConfigError(f"configuration error: {describe_settings_error(exc)}") from None
