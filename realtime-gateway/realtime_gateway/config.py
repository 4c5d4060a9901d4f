"""Gateway settings, from the spec's environment variable names (see `.env.example`)."""

from __future__ import annotations

from typing import Literal

from pydantic import AnyHttpUrl, Field, SecretStr, field_validator, model_validator

from shared.config import CommonSettings, load_settings
from shared.proxies import TrustedProxies, parse_trusted_proxies
from shared.ratelimit import parse_rate

ProviderName = Literal["twilio", "vonage", "aws-connect", "generic-http"]
PROVIDERS: tuple[ProviderName, ...] = ("twilio", "vonage", "aws-connect", "generic-http")


# Amazon Connect gives its Lambda 8 s and our forwarder Lambda gives up at 7 s
# (deploy/aws-connect): the gateway must have answered before that.
CONNECT_MAX_TURN_S = 6.5


class GatewaySettings(CommonSettings):
    port: int = Field(3000, ge=1, le=65535)
    voice_provider: ProviderName = "generic-http"
    public_base_url: AnyHttpUrl | None = None
    orchestrator_url: AnyHttpUrl = AnyHttpUrl("http://127.0.0.1:8000")
    redis_url: str | None = None
    # The Redis pub/sub channel of `/ws` events. Pub/sub ignores Redis db numbers: deployments
    # (or tests, benchmarks) sharing one Redis server need their own channel.
    events_channel: str = Field("vao:gw:events", min_length=1, max_length=200)
    trust_proxy: bool = False
    # Proxies whose X-Forwarded-Proto/-Host/-For are believed: addresses or CIDRs,
    # comma-separated, or `*`. Unset: TRUST_PROXY=true means any peer, false means none.
    trusted_proxies: str | None = None
    cors_origin: str | None = None
    cors_credentials: bool = False

    # Turn budget: below every provider's own limit (Twilio 15 s, Amazon Connect 8 s).
    turn_timeout_s: float = Field(6.0, gt=0, le=14)
    # Streamed turns: with no first token by then, the caller hears the holding line while the
    # agent keeps working (up to the turn budget, then an apology).
    stream_first_token_timeout_s: float = Field(1.2, gt=0, le=10)
    # Twilio voice mode for agents that do not choose: `gather` (webhook turns) or `relay`
    # (ConversationRelay: streamed replies and barge-in; enable it on the Twilio account first).
    twilio_voice_mode: Literal["gather", "relay"] = "gather"
    orchestrator_connect_timeout_s: float = Field(0.5, gt=0)
    ws_client_queue: int = Field(256, ge=1)
    max_body_bytes: int = Field(1_048_576, ge=1024)

    # Security and failure handling (issue 8).
    rate_limit_management: str = "100/15minutes"
    rate_limit_webhook_failures: str = "20/minute"
    orchestrator_breaker_failures: int = Field(5, ge=1)
    orchestrator_breaker_reset_s: float = Field(10.0, gt=0)
    # SIGTERM: seconds of draining (health 503, new calls told to call back, calls in progress
    # served) before the server stops and pending writes are flushed.
    shutdown_drain_s: float = Field(5.0, ge=0, le=60)

    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_phone_number: str | None = None
    twilio_webhook_url: AnyHttpUrl | None = None
    # Twilio's regional API (e.g. region "ie1", edge "dublin"); unset: Twilio's US default.
    twilio_region: str | None = Field(None, pattern=r"^[a-z0-9-]{2,16}$")
    twilio_edge: str | None = Field(None, pattern=r"^[a-z0-9-]{2,32}$")

    vonage_api_key: str | None = None
    vonage_api_secret: SecretStr | None = None
    vonage_application_id: str | None = None
    vonage_private_key: SecretStr | None = None
    vonage_phone_number: str | None = None
    # The Vonage API host (e.g. api-eu.vonage.com); a call's own `region_url` wins for it.
    vonage_api_host: str | None = Field(None, pattern=r"^[A-Za-z0-9.-]{3,253}$")
    vonage_webhook_url: AnyHttpUrl | None = None
    vonage_signature_secret: SecretStr | None = None

    aws_access_key_id: str | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_region: str | None = None
    aws_connect_instance_id: str | None = None
    aws_connect_contact_flow_id: str | None = None
    aws_connect_queue_id: str | None = None
    aws_connect_phone_number: str | None = None
    aws_connect_webhook_url: AnyHttpUrl | None = None

    generic_http_secret: SecretStr | None = None
    generic_http_base_url: AnyHttpUrl | None = None

    supabase_url: AnyHttpUrl | None = None
    supabase_anon_key: SecretStr | None = None
    supabase_service_role_key: SecretStr | None = None

    @field_validator(
        "public_base_url",
        "twilio_webhook_url",
        "vonage_webhook_url",
        "aws_connect_webhook_url",
        "generic_http_base_url",
        "supabase_url",
        "redis_url",
        "twilio_auth_token",
        "vonage_api_secret",
        "vonage_private_key",
        "vonage_signature_secret",
        "aws_secret_access_key",
        "generic_http_secret",
        "supabase_anon_key",
        "supabase_service_role_key",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_list(cls, value: str | None) -> str | None:
        parse_trusted_proxies(value)
        return value

    @field_validator("rate_limit_management", "rate_limit_webhook_failures")
    @classmethod
    def _a_rate(cls, value: str) -> str:
        parse_rate(value)
        return value

    @model_validator(mode="after")
    def _budget_below_connect_limit(self) -> GatewaySettings:
        """A turn budget near Connect's limits would let the forwarder or Connect give up
        first (the caller hears Connect's error branch, not our spoken fallback)."""
        uses_connect = self.voice_provider == "aws-connect" or bool(self.aws_connect_instance_id)
        if uses_connect and self.turn_timeout_s > CONNECT_MAX_TURN_S:
            raise ValueError(
                f"TURN_TIMEOUT_S={self.turn_timeout_s:g} is too close to Amazon Connect's limits "
                f"(forwarder 7 s, Connect 8 s); use at most {CONNECT_MAX_TURN_S:g}"
            )
        return self

    @model_validator(mode="after")
    def _production_public_url_from_configuration(self) -> GatewaySettings:
        """In production the URL signatures are checked against never comes from request
        headers (`public_urls`): a provider that needs it must have it configured."""
        if self.production:
            from realtime_gateway.public_urls import unanchored_providers

            unanchored = unanchored_providers(self)
            if unanchored:
                raise ValueError(
                    "PUBLIC_BASE_URL is required in production for "
                    f"{', '.join(unanchored)} (its signatures and callback URLs use the public "
                    "URL, which is never taken from request headers in production)"
                )
        return self

    def proxy_trust(self) -> TrustedProxies:
        """TRUSTED_PROXIES, else any peer with TRUST_PROXY=true, else nobody."""
        return parse_trusted_proxies(self.trusted_proxies, trust_any=self.trust_proxy)

    def public_url(self) -> str:
        """Base URL providers use to reach us, without a trailing slash ('' when unknown)."""
        return str(self.public_base_url).rstrip("/") if self.public_base_url else ""


def get_settings(**overrides: object) -> GatewaySettings:
    return load_settings(GatewaySettings, **overrides)
