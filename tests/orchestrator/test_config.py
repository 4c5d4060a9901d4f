"""Orchestrator settings: every variable documented in `.env.example`, which loads as is."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrator.config import OrchestratorSettings
from shared.config import ConfigError, load_settings

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / "orchestrator" / ".env.example"


def example_names() -> set[str]:
    names = set()
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=", line)
        if match:
            names.add(match[1])
    return names


def test_env_example_lists_every_setting() -> None:
    fields = {name.upper() for name in OrchestratorSettings.model_fields}
    assert fields - example_names() == set(), "add these to orchestrator/.env.example"
    assert example_names() - fields == set(), "these are not orchestrator settings"


def test_env_example_loads_as_is_with_blank_values_meaning_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in example_names() | {"NODE_ENV"}:
        monkeypatch.delenv(name, raising=False)
    settings = OrchestratorSettings(_env_file=ENV_EXAMPLE)  # type: ignore[call-arg]
    assert settings.database_url is None and settings.openai_api_key is None
    assert settings.port == 8000 and settings.app_env == "development"


def test_a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_POOL_MAX", "many")
    with pytest.raises(ConfigError, match="DB_POOL_MAX"):
        load_settings(OrchestratorSettings, _env_file=None)
