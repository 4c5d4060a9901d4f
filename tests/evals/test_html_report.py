"""The HTML report in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright,
never a browser download): it renders on its own (no request leaves the file), lists the
failure, and the failing turn is visible with its transcript beside its expectation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.evals.conftest import EvalServices, write
from tests.evals.test_runs import WRONG

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
PASSING = """\
name: hours
agent: demo-harbourside-bakery
turns:
  - say: What are your opening hours?
    expect: {contains: 7 am to 6 pm}
"""


def test_the_html_report_renders_in_chromium_with_the_failing_turn_visible(
    eval_services: EvalServices, tmp_path: Path
) -> None:
    write(tmp_path, "wrong.yaml", WRONG)
    write(tmp_path, "hours.yaml", PASSING)
    html = tmp_path / "report.html"
    done = eval_services.cli(
        "run", tmp_path, "--no-start", "--junit", tmp_path / "j.xml", "--html", html
    )
    assert done.returncode == 1, done.stdout + done.stderr

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            requested: list[str] = []
            page.on("request", lambda request: requested.append(request.url))
            page.goto(html.as_uri())
            assert page.title() == "Agent evaluation: 1 failing of 2"
            summary = page.locator("table.summary")
            assert summary.get_by_text("FAIL").is_visible()
            assert summary.get_by_role("cell", name="wrong-greeting").is_visible()

            page.locator("ul.failures a").first.click()  # the failure list leads to the turn
            failed = page.locator(".turn.failed[data-status=fail]")
            assert failed.count() == 1
            failed.wait_for(state="visible")
            assert failed.is_visible() and failed.bounding_box() is not None
            transcript = failed.locator(".transcript").inner_text()
            expectation = failed.locator(".expectations").inner_text()
            assert "Hello, this is the Harbourside Bakery demo agent. How can I help?" in transcript
            assert "Good morning from the Harbourside Bakery demo agent" in expectation
            assert "[-Good morning from-] {+Hello, this is+}" in expectation
            # beside it: the transcript and the expectation side by side on one row
            left, right = (
                failed.locator(s).bounding_box() for s in (".transcript", ".expectations")
            )
            assert left and right and right["x"] > left["x"] + left["width"] - 1
            assert abs(right["y"] - left["y"]) < 5
            assert all(url.startswith("file://") for url in requested), requested
        finally:
            browser.close()
