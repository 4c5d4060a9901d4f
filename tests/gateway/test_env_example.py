"""`realtime-gateway/.env.example` documents every setting and loads as is."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from realtime_gateway.config import GatewaySettings

EXAMPLE = Path(__file__).resolve().parents[2] / "realtime-gateway" / ".env.example"


def test_every_setting_is_in_env_example() -> None:
    listed = set(re.findall(r"^#?\s?([A-Z][A-Z0-9_]+)=", EXAMPLE.read_text(), re.M))
    names = {name.upper() for name in GatewaySettings.model_fields}
    assert names - listed == set()
    assert listed - names == set()


def test_env_example_loads_as_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in GatewaySettings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.delenv("NODE_ENV", raising=False)
    settings = GatewaySettings(_env_file=str(EXAMPLE))  # type: ignore[call-arg]
    assert settings.port == 3000 and settings.voice_provider == "generic-http"
    assert settings.redis_url is None and os.fspath(settings.data_dir)
