"""Orchestrator settings, from the spec's environment variable names (see `.env.example`)."""

from __future__ import annotations

from typing import Literal

from pydantic import AnyHttpUrl, Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from shared.config import CommonSettings, load_settings
from shared.ratelimit import parse_rate


class OrchestratorSettings(CommonSettings):
    # `NAME=` (as in .env.example) means "unset": the default applies.
    model_config = SettingsConfigDict(env_ignore_empty=True)  # merged with CommonSettings

    port: int = Field(8000, ge=1, le=65535)
    # No DATABASE_URL: the orchestrator starts and owns a PostgreSQL under DATA_DIR (pgserver).
    database_url: str | None = None
    db_pool_min: int = Field(2, ge=1)
    db_pool_max: int = Field(20, ge=1)
    db_command_timeout_s: float = Field(5.0, gt=0)
    # How long start-up waits for DATABASE_URL's server (e.g. a compose Postgres still booting).
    db_connect_wait_s: float = Field(30.0, ge=0)

    chroma_host: str | None = None
    chroma_port: int = Field(8000, ge=1, le=65535)
    chroma_path: str | None = None  # default: DATA_DIR/chroma
    # Embedded Chroma (no CHROMA_HOST) in a child process (default), so its writes, which hold
    # the GIL for 7-23 ms each, do not stop every call on the instance; false: in process.
    chroma_embedded_process: bool = True

    openai_api_key: SecretStr | None = None
    openai_base_url: AnyHttpUrl | None = None
    openai_model: str = "gpt-4o-mini"
    openai_embedding_model: str = "text-embedding-3-small"
    llm_timeout_s: float = Field(10.0, gt=0)
    # The LLM client's transport: "aiohttp" (httpx's API over aiohttp, the transport OpenAI ships
    # as its SDK's aiohttp option; measured 0.75 ms less CPU and 0.6 ms less latency a call) or
    # "httpx" (httpx's own: what respx fakes in tests).
    llm_http_transport: Literal["aiohttp", "httpx"] = "aiohttp"

    memory_retention_days: int = Field(365, ge=1)
    history_turns: int = Field(10, ge=1, le=100)

    default_agent_name: str = "Receptionist"
    default_agent_greeting: str = "Hello! Thanks for calling. How can I help you today?"
    default_agent_system_prompt: str = (
        "You are a helpful, concise phone agent. Answer in one or two short spoken sentences."
    )
    default_transfer_number: str | None = None
    # The demo agent and its knowledge (orchestrator.demo): unset = on the embedded Postgres
    # only; true = on any empty store; false = never. Never in production.
    demo: bool | None = None

    # Security (issue 8): management rate limit (shared by instances through REDIS_URL),
    # request body limit, browser access.
    rate_limit_management: str = "100/15minutes"
    redis_url: str | None = None
    trust_proxy: bool = False
    max_body_bytes: int = Field(1_048_576, ge=1024)
    cors_origin: str | None = None
    cors_credentials: bool = False

    @field_validator(
        "database_url",
        "chroma_host",
        "chroma_path",
        "openai_api_key",
        "redis_url",
        "cors_origin",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("rate_limit_management")
    @classmethod
    def _a_rate(cls, value: str) -> str:
        parse_rate(value)
        return value

    @field_validator("database_url")
    @classmethod
    def _postgres_only(cls, value: str | None) -> str | None:
        if value and not value.startswith(("postgres://", "postgresql://")):
            raise ValueError("must be a postgresql:// URL")
        return value


def get_settings(**overrides: object) -> OrchestratorSettings:
    return load_settings(OrchestratorSettings, **overrides)
