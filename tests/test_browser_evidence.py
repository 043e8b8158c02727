"""The Evidence page in a real browser: the one-pair ε moves with α, the score over N models runs
with a progress bar and a second press is served from the cache."""
from __future__ import annotations

import re

import pytest

from tests.test_browser import (ALPHA_NAME, FIRST_RENDER_TIMEOUT_MS, _page_problems, run_and_wait, settle,
                                wait_idle)

pytestmark = pytest.mark.browser
EPSILON = re.compile(r"^\s*ε, dampened vs retrained")


def epsilon(page) -> str:
    label = page.get_by_test_id("stMetricLabel").filter(has_text=EPSILON)
    return page.get_by_test_id("stMetric").filter(has=label).get_by_test_id("stMetricValue").inner_text().strip()


def test_the_evidence_page(browser_page, streamlit_server, screenshot_dir):
    page = browser_page
    page.goto(streamlit_server.url.rstrip("/") + "/evidence")
    page.get_by_test_id("stMetricLabel").filter(has_text=EPSILON).first.wait_for(timeout=FIRST_RENDER_TIMEOUT_MS * 2)
    settle(page, FIRST_RENDER_TIMEOUT_MS * 2)
    before = epsilon(page)
    slider = page.get_by_role("slider", name=ALPHA_NAME)
    slider.focus()
    run_and_wait(page, lambda: page.keyboard.press("End"))  # α to its top: nothing dampened
    settle(page)
    assert epsilon(page) != before
    models = page.get_by_test_id("stNumberInput").filter(has_text="N models").locator("input")
    models.fill("3")
    run_and_wait(page, lambda: models.press("Enter"))
    wait_idle(page)
    button = page.get_by_role("button", name=re.compile("^Score LFSSD"))
    button.click()
    page.get_by_test_id("stProgress").first.wait_for(timeout=60_000)  # the progress bar while it trains
    page.get_by_text(re.compile("^Computed in")).wait_for(timeout=300_000)
    wait_idle(page)
    first = page.get_by_test_id("stMetric").filter(has_text="forgetting score F").get_by_test_id("stMetricValue").inner_text()
    run_and_wait(page, lambda: page.get_by_role("button", name=re.compile("^Score LFSSD")).click())
    page.get_by_text(re.compile("^Served from the cache")).wait_for(timeout=60_000)
    again = page.get_by_test_id("stMetric").filter(has_text="forgetting score F").get_by_test_id("stMetricValue").inner_text()
    assert again == first
    assert not _page_problems(page), _page_problems(page)
    page.screenshot(path=str(screenshot_dir / "page_evidence.png"), full_page=True)
