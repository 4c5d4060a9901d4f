"""Agents in the console: created and edited through the form (prompt, greeting, language, voice
mode, tools, transfer number), each refusal shown at the field the orchestrator's message names,
and what was saved read back from the API."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.console.conftest import Console

pytestmark = pytest.mark.slow


def test_an_agent_created_and_edited_with_validation_errors_at_their_fields(
    console: Console,
) -> None:
    page, services = console.page, console.services
    console.sign_in("operator")
    page.get_by_role("tab", name="Agents").click()
    page.get_by_role("button", name="New agent").click()
    name = f"Console agent {uuid.uuid4().hex[:6]}"
    page.get_by_label("Name").fill(name)
    page.get_by_label("System prompt").fill("You answer questions about the bakery, briefly.")
    page.get_by_label("Greeting").fill("Hello, bakery here.")
    page.get_by_label("Language").fill("klingon")
    page.get_by_label("Voice mode").select_option("relay")
    page.get_by_label("transfer_call").check()
    page.get_by_label("search_knowledge").check()
    page.get_by_label("Transfer number").fill("+15550100199")
    page.get_by_role("button", name="Create agent").click()

    language_error = page.locator("#agent-language-error")
    language_error.get_by_text("is not a language the voice providers can speak").wait_for()
    assert language_error.inner_text().startswith("'klingon' is not a language")
    assert page.get_by_label("Language").get_attribute("aria-invalid") == "true"
    assert page.locator("#agent-form .form-error").inner_text() == ""  # at the field, not above
    assert page.locator("#agent-transfer-error").inner_text() == ""

    page.get_by_label("Language").fill("en-GB")
    page.get_by_role("button", name="Create agent").click()
    view = page.locator("#agent-view")
    view.get_by_role("heading", name=name).wait_for()
    agent_id = page.locator("#agent-list .agent-item", has_text=name).get_attribute("data-agent")
    assert agent_id and "en-GB" in view.inner_text() and "relay" in view.inner_text()

    view.get_by_role("button", name="Edit").click()
    assert page.get_by_label("Greeting").input_value() == "Hello, bakery here."
    assert page.get_by_label("transfer_call").is_checked()
    page.get_by_label("Greeting").fill("Good morning, bakery here.")
    page.get_by_label("Transfer number").fill("12345")
    page.get_by_role("button", name="Save changes").click()
    transfer_error = page.locator("#agent-transfer-error")
    transfer_error.get_by_text("is not a phone number").wait_for()
    assert page.get_by_label("Transfer number").get_attribute("aria-invalid") == "true"

    page.get_by_label("Transfer number").fill("+15550100198")
    page.get_by_label("HTTP tools (JSON list)").fill("[{not json")
    page.get_by_role("button", name="Save changes").click()
    tools_error = page.locator("#agent-tools-error")
    tools_error.get_by_text("not valid JSON").wait_for()
    assert transfer_error.inner_text() == ""  # the earlier message is gone

    page.get_by_label("HTTP tools (JSON list)").fill("")
    page.get_by_role("button", name="Save changes").click()
    view.get_by_text("Good morning, bakery here.").wait_for()

    stored = httpx.get(
        f"{services.orchestrator.url}/agents/{agent_id}",
        headers={"Authorization": f"Bearer {services.token('viewer')}"},
    ).json()
    config = stored["configuration"]
    assert stored["name"] == name
    assert config["greeting"] == "Good morning, bakery here."
    assert config["language"] == "en-GB" and config["voice_mode"] == "relay"
    assert config["transfer_number"] == "+15550100198"
    assert config["tools"] == ["transfer_call", "search_knowledge"]
    assert config["system_prompt"] == "You answer questions about the bakery, briefly."
    # the new agent is offered where agents are chosen
    page.get_by_role("tab", name="Test phone").click()
    assert page.locator(f"#phone-agent option[value='{agent_id}']").count() == 1
