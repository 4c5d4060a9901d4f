"""An agent's configuration: validated at the API (422 naming the field) and read per call.

Stored as JSON on the agent row. `tools` lists built-in tool names (`transfer_call`, `end_call`,
`search_knowledge`, `remember`) and/or HTTP tools (name, description, JSON-schema parameters,
URL, method). With no built-in names listed, all four built-ins are enabled. Phone numbers
(`transfer_number`, `phone_numbers`) are accepted as providers write them and stored in E.164
(`shared.phone.to_e164`, the one normaliser). `language` must be one the voice providers can
hear and speak (`shared.languages.speakable`); it is stored as written (`fr` stays `fr`, the
gateway gives providers `fr-FR`). `voice_mode` (`relay` | `gather`, or unset for the gateway's
`TWILIO_VOICE_MODE`) is how the agent's Twilio calls talk.
"""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.languages import speakable
from shared.phone import to_e164

AGENT_TYPES = ("input", "memory", "orchestrator", "tool")
BUILTIN_TOOLS = ("transfer_call", "end_call", "search_knowledge", "remember")
_TOOL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
_HOST = re.compile(r"^(\*\.)?[A-Za-z0-9.-]{1,253}$|^\[?[0-9A-Fa-f:.]+\]?$")


def _e164(number: str) -> str:
    e164 = to_e164(number)
    if e164 is None:
        raise ValueError(f"'{number}' is not a phone number; write it in E.164, e.g. +15551234567")
    return e164


class HttpTool(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = Field(min_length=1, max_length=1000)
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    url: str = Field(max_length=2000)
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(5.0, gt=0, le=30)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _TOOL_NAME.match(value):
            raise ValueError("must be 1-64 letters, digits, '_' or '-', starting with a letter")
        if value in BUILTIN_TOOLS:
            raise ValueError(f"'{value}' is a built-in tool name")
        return value

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL with a host")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials; use headers")
        return value

    @field_validator("parameters")
    @classmethod
    def _schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("type", "object") != "object":
            raise ValueError("must be a JSON schema of type 'object'")
        props = value.get("properties", {})
        if not isinstance(props, dict):
            raise ValueError("'properties' must be an object")
        required = value.get("required", [])
        if not isinstance(required, list) or any(r not in props for r in required):
            raise ValueError("'required' must list names defined in 'properties'")
        return {"type": "object", **value}


class AgentConfiguration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=100)
    description: str | None = Field(None, max_length=500)  # for people; never read by a call
    model: str | None = Field(None, min_length=1, max_length=100)
    temperature: float = Field(0.3, ge=0.0, le=2.0)
    system_prompt: str | None = Field(None, max_length=8000)
    greeting: str | None = Field(None, max_length=1000)
    language: str = Field("en-US", min_length=1, max_length=35)  # checked by `_language`
    voice: str | None = Field(None, max_length=100)
    tools: list[str | HttpTool] = Field(default_factory=list, max_length=32)
    transfer_number: str | None = None
    phone_numbers: list[str] = Field(default_factory=list, max_length=100)
    allowed_hosts: list[str] = Field(default_factory=list, max_length=100)
    allow_private_networks: bool = False
    max_tool_rounds: int = Field(4, ge=1, le=8)
    history_turns: int | None = Field(None, ge=1, le=100)
    # How its calls talk (Twilio): `relay` streams over ConversationRelay, `gather` is webhook
    # turns; None: the gateway's default (`TWILIO_VOICE_MODE`). Sent with the greeting.
    voice_mode: Literal["relay", "gather"] | None = None

    @field_validator("tools", mode="before")
    @classmethod
    def _tools(cls, value: object) -> object:
        if isinstance(value, list):
            for item in value:
                if isinstance(item, str) and item not in BUILTIN_TOOLS:
                    raise ValueError(
                        f"unknown built-in tool '{item}' (built-ins: {', '.join(BUILTIN_TOOLS)})"
                    )
        return value

    @field_validator("language")
    @classmethod
    def _language(cls, value: str) -> str:
        if not speakable(value):
            raise ValueError(
                f"'{value}' is not a language the voice providers can speak "
                "(e.g. en-US, en-GB, fr, es-MX)"
            )
        return value

    @field_validator("transfer_number")
    @classmethod
    def _transfer(cls, value: str | None) -> str | None:
        return None if value is None else _e164(value)

    @field_validator("phone_numbers")
    @classmethod
    def _numbers(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(_e164(number) for number in value))

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        for host in value:
            if not _HOST.match(host):
                raise ValueError(f"'{host}' is not a host name or IP address")
        return [h.lower().strip("[]") for h in value]

    @model_validator(mode="after")
    def _unique_tools(self) -> AgentConfiguration:
        names = [t.name for t in self.http_tools]
        if len(names) != len(set(names)):
            raise ValueError("tools: HTTP tool names must be unique")
        return self

    @property
    def http_tools(self) -> list[HttpTool]:
        return [t for t in self.tools if isinstance(t, HttpTool)]

    @property
    def builtin_tools(self) -> list[str]:
        named = [t for t in self.tools if isinstance(t, str)]
        return list(dict.fromkeys(named)) if named else list(BUILTIN_TOOLS)


def parse_configuration(raw: dict[str, Any] | None) -> AgentConfiguration:
    """Validate, raising pydantic's `ValidationError` (the API turns it into a 422)."""
    return AgentConfiguration.model_validate(raw or {})


def load_configuration(raw: dict[str, Any] | None) -> AgentConfiguration:
    """For a stored agent: what validates is used; a bad stored field falls back to its default."""
    try:
        return parse_configuration(raw)
    except ValidationError as exc:
        bad = {str(err["loc"][0]) for err in exc.errors() if err.get("loc")}
        cleaned = {k: v for k, v in (raw or {}).items() if k not in bad}
        try:
            return parse_configuration(cleaned)
        except ValidationError:
            return AgentConfiguration()
