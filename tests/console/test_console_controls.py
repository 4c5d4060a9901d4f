"""What each role is offered, and the controls that act: an outbound call refused here then by
the API (each message at the field) then placed (the bridge's REST API, faked at the HTTP level,
receives the dial); a viewer's console with nothing that would fail; an admin's provider switch
refused with the API's reason; an ended call's transcript read back from Recent calls."""

from __future__ import annotations

import re

import pytest

from tests.console.conftest import Console
from tests.gateway.conftest import event, new_call_id, said, started

pytestmark = pytest.mark.slow


def test_an_outbound_call_with_an_invalid_then_a_valid_number(console: Console) -> None:
    page, services = console.page, console.services
    console.sign_in("operator")
    page.get_by_role("tab", name="Place a call").click()
    number = page.get_by_label("Number to call")
    error = page.locator("#dial-number-error")
    call = page.get_by_role("button", name="Call", exact=True)

    number.fill("0044 20 7946 0000")
    call.click()
    assert error.inner_text() == "Start with + and the country code, e.g. +14155550142."
    assert number.get_attribute("aria-invalid") == "true"
    assert page.evaluate("document.activeElement.id") == "dial-number"

    number.fill("+1 415 555 0142")  # typing clears the message; submitting shows the next one
    assert error.inner_text() == ""
    call.click()
    assert "Remove the spaces" in error.inner_text()

    dialled_before = len(services.bridge.dialled())
    number.fill("+15550000000")  # E.164 in shape, not a number: the API says so, at the field
    call.click()
    page.locator("#dial-number-error").get_by_text("is not a valid phone number").wait_for()
    assert error.inner_text() == "+15550000000 is not a valid phone number for its country code"
    assert len(services.bridge.dialled()) == dialled_before  # nothing dialled

    number.fill("+14155550142")
    call.click()
    placed = page.locator("#dial-form .form-result")
    placed.get_by_text("placed through generic-http").wait_for()
    call_id = re.search(r"Call (\S+) placed", placed.inner_text()).group(1)  # type: ignore[union-attr]
    assert error.inner_text() == "" and number.get_attribute("aria-invalid") is None
    assert services.bridge.dialled()[dialled_before:] == ["+14155550142"]
    page.get_by_role("tab", name="Live calls").click()
    row = page.locator(f"#live-calls tr[data-call='{call_id}']")
    assert row.locator("[data-label=Caller]").inner_text() != "+14155550142"  # masked
    assert row.locator("[data-label=Status]").inner_text() == "queued"


def test_a_viewer_is_offered_nothing_that_would_fail(console: Console) -> None:
    page, services = console.page, console.services
    console.sign_in("viewer")
    call_id = new_call_id()
    services.webhook(started(call_id))
    services.webhook(said(call_id, "1", "My card number is on the way"))
    row = page.locator(f"#live-calls tr[data-call='{call_id}']")
    row.wait_for()
    detail = page.locator("#live-detail")
    detail.locator(".turn[data-turn='1'] .said.agent").wait_for()
    assert "(words withheld)" in detail.locator(".turn[data-turn='1']").inner_text()
    assert "card number" not in page.content()

    tabs = {
        re.sub(r"\s+\d+$", "", t.inner_text().strip())  # "Live calls 2": the count of calls
        for t in page.get_by_role("tab").all()
        if t.is_visible()
    }
    assert tabs == {"Live calls", "Recent calls", "Agents", "Provider"}, tabs  # no dial, phone
    buttons = {b.inner_text().strip() for b in page.get_by_role("button").all() if b.is_visible()}
    assert buttons == {"Sign out", "View"}, buttons  # no End, no End call

    page.get_by_role("tab", name="Agents").click()
    page.locator("#agent-list .agent-item").first.click()
    page.locator("#agent-view dl").wait_for()
    assert page.get_by_role("button", name="New agent").is_hidden()
    assert page.locator("#agent-view").get_by_role("button").count() == 0  # no Edit
    page.get_by_role("tab", name="Provider").click()
    page.locator("#provider-list li[data-provider='generic-http']").wait_for()
    assert page.locator("#provider-form").is_hidden()


def test_an_admin_switch_to_an_unconfigured_provider_shows_the_apis_reason(
    console: Console,
) -> None:
    page = console.page
    console.sign_in("admin")
    page.get_by_role("tab", name="Provider").click()
    page.get_by_text("New calls go through generic-http.").wait_for()
    assert (
        "not_configured" in page.locator("#provider-list li[data-provider='twilio']").inner_text()
    )
    page.get_by_label("Switch new calls to").select_option("twilio")
    page.get_by_role("button", name="Switch").click()
    refused = page.locator("#provider-error")
    refused.get_by_text("cannot switch to twilio").wait_for()
    assert "TWILIO_ACCOUNT_SID" in refused.inner_text()
    page.get_by_label("Switch new calls to").select_option("generic-http")
    page.get_by_role("button", name="Switch").click()
    page.get_by_text("Switched: new calls go through generic-http.").wait_for()


def test_recent_calls_show_an_ended_calls_stored_transcript(console: Console) -> None:
    page, services = console.page, console.services
    call_id = new_call_id()
    services.webhook(started(call_id))
    services.webhook(said(call_id, "1", "Do you deliver on Sundays?"))
    services.webhook(event("call.ended", call_id, reason="hangup", duration_s=3))
    console.sign_in("operator")
    page.get_by_role("tab", name="Recent calls").click()
    row = page.locator(f"#recent-calls tr[data-call='{call_id}']")
    assert row.locator("[data-label=Status]").inner_text() == "completed"
    row.get_by_role("button", name=f"Transcript of call {call_id}").click()
    detail = page.locator("#recent-detail")
    detail.get_by_text("Do you deliver on Sundays?").wait_for()
    detail.get_by_text("opening hours are nine to five").wait_for()
    assert "Hello! Thanks for calling." in detail.inner_text()  # the greeting, as stored
    assert detail.get_by_role("button", name="End call").count() == 0
