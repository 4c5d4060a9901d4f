"""The console page itself and the live view: served by the gateway under a strict policy, signed
in with a token, a simulated call (signed generic-http webhooks) appearing live with its
transcript filling in, screenshots at laptop and phone sizes, first paint under a second."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from realtime_gateway.console import STATIC_DIR
from tests.console.conftest import PHONE, WAIT_MS, Console, Services
from tests.gateway.conftest import new_call_id, said, started

pytestmark = pytest.mark.slow

HTML_SINKS = re.compile(r"\.(?:inner|outer)HTML\s*=|insertAdjacentHTML|document\.write|\beval\(")


class _Markup(HTMLParser):
    """Every script tag, inline handler and inline style of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.scripts.append(dict(attrs))
        self.inline += [f"{tag} {name}" for name, _ in attrs if name.startswith("on")]
        self.inline += [f"{tag} style" for name, _ in attrs if name == "style"]


def test_the_page_is_public_under_a_self_only_policy_and_its_api_is_not(
    services: Services,
) -> None:
    gw = services.gateway.url
    assert httpx.get(f"{gw}/console").headers["location"].endswith("/console/")
    page = httpx.get(f"{gw}/console/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = {d.split()[0]: d.split()[1:] for d in page.headers["content-security-policy"].split("; ")}
    assert csp["default-src"] == ["'none'"]
    for directive in ("script-src", "style-src", "connect-src", "img-src"):
        assert csp[directive] == ["'self'"], directive
    assert csp["frame-ancestors"] == ["'none'"] and csp["base-uri"] == ["'none'"]
    markup = _Markup()
    markup.feed(page.text)
    assert markup.scripts and all(s.get("src") for s in markup.scripts)  # no inline script
    assert markup.inline == []
    for path in sorted(STATIC_DIR.rglob("*.js")):
        served = httpx.get(f"{gw}/console/static/{path.relative_to(STATIC_DIR).as_posix()}")
        assert served.status_code == 200 and "javascript" in served.headers["content-type"]
        assert not re.search(r"\bhttps?://", served.text), path  # nothing fetched elsewhere
        sinks = HTML_SINKS.findall(served.text)
        assert not sinks, (path, sinks)  # text only: nothing said on a call becomes markup
    # The proxy to the orchestrator is a management route; the files' folder does not reach it.
    assert httpx.get(f"{gw}/console/api/agents").status_code == 401
    assert httpx.get(f"{gw}/console/static/../api/agents").status_code in (401, 404)
    assert httpx.get(f"{gw}/console/static/%2e%2e/api/agents").status_code in (401, 404)
    token = services.token("viewer")
    listed = httpx.get(
        f"{gw}/console/api/agents", headers={"Authorization": f"Bearer {token}"}
    ).json()
    assert "agents" in listed
    other = httpx.get(
        f"{gw}/console/api/callers/+15550001111/memory",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert other.status_code == 404 and "console reaches only" in other.json()["error"]["message"]


def test_a_simulated_call_appears_live_and_its_transcript_fills_in(
    console: Console, screenshots: Path
) -> None:
    page, services = console.page, console.services
    console.sign_in("operator")
    call_id = new_call_id()
    greeting = services.webhook(started(call_id))
    assert greeting["actions"][0]["type"] == "say"

    row = page.locator(f"#live-calls tr[data-call='{call_id}']")
    row.wait_for()
    assert row.locator("[data-label=Caller]").inner_text() == "+1555***1111"  # masked
    assert row.locator("[data-label=Provider]").inner_text() == "generic-http"
    assert row.locator("[data-label=Status]").inner_text() == "in-progress"
    detail = page.locator("#live-detail")
    detail.get_by_text(call_id).wait_for()  # the first live call opens by itself

    services.webhook(said(call_id, "1", "What are your opening hours?"))
    turn = detail.locator(".turn[data-turn='1']")
    turn.locator(".said.caller").get_by_text("What are your opening hours?").wait_for()
    turn.locator(".said.agent").get_by_text("opening hours are nine to five").wait_for()
    assert re.search(r"turn 1 timings: round trip \d", turn.locator(".timings").inner_text())
    assert re.fullmatch(r"\d+ ms|\d+\.\d\d s", row.locator(".latency").inner_text())
    duration = row.locator("[data-label=Duration]")
    first = duration.inner_text()
    page.wait_for_function(
        "([el, first]) => el.textContent !== first", arg=[duration.element_handle(), first]
    )  # the duration ticks

    page.screenshot(path=str(screenshots / "console-live-call-laptop.png"), full_page=True)
    page.set_viewport_size(PHONE)
    page.screenshot(path=str(screenshots / "console-live-call-phone.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

    row.get_by_role("button", name=f"End call {call_id}").click()
    row.wait_for(state="detached")
    page.locator("#notice").get_by_text(f"Call {call_id} ended.").wait_for()
    detail.get_by_text("status completed").wait_for()
    hangups = [r for r in services.bridge.requests if r["path"] == f"/calls/{call_id}/hangup"]
    assert hangups, services.bridge.requests


def test_first_paint_is_under_a_second_and_nothing_leaves_the_machine(
    console: Console,
) -> None:
    page = console.page
    page.goto(console.services.console)
    page.get_by_label("Access token (management JWT)").wait_for()
    paint: dict[str, Any] = page.evaluate(
        """() => Object.fromEntries(performance.getEntriesByType('paint')
                 .map((e) => [e.name, e.startTime]))"""
    )
    assert paint["first-contentful-paint"] < 1000, paint
    print(f"console first contentful paint: {paint['first-contentful-paint']:.0f} ms")
    console.sign_in("viewer")
    page.get_by_role("tab", name="Agents").click()
    page.locator("#agent-list li").first.wait_for(timeout=WAIT_MS)
    assert console.requested and not console.external_requests()
    hosts = {re.sub(r"^\w+://([^/]+)/.*$", r"\1", u) for u in console.requested}
    assert hosts == {console.services.gateway.url.split("//")[1]}, hosts


def test_the_console_works_from_the_keyboard(console: Console) -> None:
    page, services = console.page, console.services
    page.goto(services.console)
    page.keyboard.type(services.token("operator"))  # the token field has the focus
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")  # the Sign in button
    page.locator("#connection[data-state=live]").wait_for()
    live = page.get_by_role("tab", name=re.compile("Live calls"))
    live.focus()
    page.keyboard.press("ArrowRight")
    recent = page.get_by_role("tab", name="Recent calls")
    assert recent.get_attribute("aria-selected") == "true"
    assert page.evaluate("document.activeElement.id") == "tab-recent"
    assert page.get_by_role("tabpanel", name="Recent calls").is_visible()
    page.keyboard.press("End")
    assert page.evaluate("document.activeElement.id") == "tab-provider"
    page.keyboard.press("Home")
    page.keyboard.press("ArrowLeft")  # wraps around
    assert page.evaluate("document.activeElement.id") == "tab-provider"
    page.get_by_role("tab", name="Place a call").click()
    page.get_by_label("Number to call").focus()
    page.keyboard.type("12345")
    page.keyboard.press("Enter")  # submits the form
    assert page.locator("#dial-number-error").inner_text().startswith("Start with +")
