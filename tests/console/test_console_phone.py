"""The browser test phone: a call to a chosen agent over the generic streaming socket with a call
token minted for the signed-in operator; typed turns, the reply shown token by token as the
(slow, streaming) fake model writes it, and a barge-in: typing while the agent talks interrupts
it, and the agent's message is stored as far as it was shown."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.console.conftest import Console

pytestmark = pytest.mark.slow

FULL_REPLY = "Certainly. Our opening hours are nine to five, Monday to Friday."


def _wait_streaming(page: Any, nth: int) -> None:
    """Until the agent's `nth` reply is on screen in part, the rest still coming (aria-busy)."""
    page.wait_for_function(
        """(nth) => { const r = document.querySelectorAll('#phone-log .said.agent')[nth];
                      return r && r.getAttribute('aria-busy') === 'true'
                        && r.querySelector('.text').textContent.length > 0; }""",
        arg=nth,
        polling=20,
    )


def test_a_typed_conversation_with_a_streamed_reply_and_an_interruption(
    console: Console, screenshots: Path
) -> None:
    page, services = console.page, console.services
    agent = services.create_agent(
        f"Phone agent {uuid.uuid4().hex[:6]}", greeting="Hi, the test phone agent here."
    )
    console.sign_in("operator")
    page.get_by_role("tab", name="Test phone").click()
    phone = page.get_by_role("tabpanel", name="Test phone")
    phone.get_by_label("Agent", exact=True).select_option(agent["id"])
    phone.get_by_role("button", name="Call", exact=True).click()
    status = page.locator("#phone-status")
    status.get_by_text(re.compile(r"In call web-")).wait_for()
    call_id = re.search(r"web-[0-9a-f]+", status.inner_text()).group(0)  # type: ignore[union-attr]
    log = page.get_by_role("list", name="Conversation")
    log.get_by_text("Hi, the test phone agent here.").wait_for()

    said = page.get_by_placeholder(re.compile("Type what the caller says"))
    said.fill("What are your opening hours?")
    said.press("Enter")
    reply = log.locator(".said.agent").nth(1)
    # Tokens as they arrive: part of the reply is on screen while the rest is still coming.
    _wait_streaming(page, 1)
    partial = reply.locator(".text").inner_text()
    assert partial and partial != FULL_REPLY and FULL_REPLY.startswith(partial), partial
    reply.get_by_text(re.compile(r"first word \d+ ms · reply [\d.]+ m?s")).wait_for()
    assert reply.locator(".text").inner_text() == FULL_REPLY

    said.fill("Tell me everything about your cakes")
    said.press("Enter")
    talking = log.locator(".said.agent").nth(2)
    _wait_streaming(page, 2)
    said.type("W")  # the caller starts talking over the agent: barge-in
    talking.get_by_text("interrupted").wait_for()
    heard = talking.locator(".text").inner_text()
    assert heard and heard != FULL_REPLY, heard
    said.fill("Wait, are you open on Sundays?")
    said.press("Enter")
    log.locator(".said.agent").nth(3).get_by_text(re.compile("first word")).wait_for()
    assert talking.locator(".text").inner_text() == heard  # nothing more of it was shown
    page.screenshot(path=str(screenshots / "console-test-phone-laptop.png"), full_page=True)

    page.get_by_role("button", name="Hang up").click()
    status.get_by_text("Call ended").wait_for()
    assert phone.get_by_role("button", name="Call", exact=True).is_enabled()

    conversation = httpx.get(
        f"{services.orchestrator.url}/conversations/{call_id}",
        headers={"Authorization": f"Bearer {services.token('operator')}"},
    ).json()
    assert conversation["agent_id"] == agent["id"]
    cut = [m for m in conversation["messages"] if m["interrupted"]]
    assert len(cut) == 1 and cut[0]["content"] == heard, conversation["messages"]
