"""The Compare page in a real browser: choose methods, press Run, watch the progress bar, read the
table from the DOM and check it against ``python -m core compare --json`` on the server's own cache.

Screenshots go to ``<repo>/screenshots/`` (compare_*.png).
"""
from __future__ import annotations

import re

import pytest

from tests.test_browser import (FIRST_RENDER_TIMEOUT_MS, RERUN_TIMEOUT_MS, _CHARTS_DRAWN, _IDLE_AFTER,
                                _CHECK_RUN_COUNTER, _page_problems, full_screenshot, run_and_wait, wait_idle)
from tests.test_page_compare import cli_compare, expected_cells

pytestmark = pytest.mark.browser

RUN_TIMEOUT_MS = 180_000  # a comparison of four cheap methods × 2 seeds takes seconds; a loaded machine, more
HEADING = re.compile("^Compare methods")
# {row label: {column: cell text}} and the column names, straight from the rendered HTML table
_READ_TABLE = """() => {
  const table = document.querySelector('[data-testid="stTable"] table');
  const columns = Array.from(table.querySelectorAll('thead th')).slice(1).map(th => th.innerText.trim());
  const rows = {};
  for (const tr of table.querySelectorAll('tbody tr')) {
    const cells = Array.from(tr.querySelectorAll('td')).map(td => td.innerText.trim());
    rows[tr.querySelector('th').innerText.trim()] = Object.fromEntries(columns.map((c, i) => [c, cells[i]]));
  }
  return {columns, rows};
}"""


def open_compare(page, server, query: str = "") -> None:
    page.goto(f"{server.url.rstrip('/')}/compare{query}")
    try:
        page.get_by_role("heading", name=HEADING).wait_for(timeout=FIRST_RENDER_TIMEOUT_MS)
        wait_idle(page, FIRST_RENDER_TIMEOUT_MS * 2)  # the default model trains on a fresh server
        page.wait_for_function(_CHARTS_DRAWN, timeout=RERUN_TIMEOUT_MS)  # no widget skeleton left
    except Exception as exc:
        raise AssertionError(f"{exc}\n{_page_problems(page)}\n{server.log_tail()}") from exc
    assert not _page_problems(page), _page_problems(page)


def test_run_a_comparison_and_match_the_cli(browser_page, streamlit_server, screenshot_dir):
    page = browser_page
    open_compare(page, streamlit_server)
    assert page.get_by_text("Press Run to compare").is_visible()
    for name in ("Retrain", "Teacher", "Amnesiac"):  # keep Baseline, Finetune, SSD, LFSSD: seconds, not minutes
        run_and_wait(page, lambda: page.get_by_role("button", name=f"Remove {name}", exact=True).click())
    tags = page.get_by_test_id("stMultiSelect").get_by_role("group", name="Selected values")
    assert tags.inner_text().split() == ["Baseline", "Finetune", "SSD", "LFSSD"]
    assert page.get_by_role("spinbutton", name=re.compile("Repeats")).input_value() == "2"

    # Run: a progress bar while it works, then the table
    page.evaluate(_CHECK_RUN_COUNTER)
    runs_before = page.evaluate("() => window.__lfssdRuns")
    page.get_by_role("button", name="Run", exact=True).click()
    progress = page.get_by_test_id("stProgress")
    progress.first.wait_for(timeout=RERUN_TIMEOUT_MS)
    page.screenshot(path=str(screenshot_dir / "compare_progress.png"))
    page.wait_for_function(_IDLE_AFTER, arg=runs_before, timeout=RUN_TIMEOUT_MS)
    page.wait_for_function(_CHARTS_DRAWN, timeout=RERUN_TIMEOUT_MS)
    assert not _page_problems(page), _page_problems(page)
    assert progress.count() == 0  # gone when done

    shown = page.evaluate(_READ_TABLE)
    assert shown["columns"] == ["Baseline", "Finetune", "SSD", "LFSSD"]
    cli = cli_compare(streamlit_server.stdout_path.parent / "cache", ["baseline", "finetune", "ssd", "lfssd"], 2)
    for column, rows in expected_cells(cli).items():
        for row, text in rows.items():
            assert shown["rows"][row][column] == text, (row, column, shown["rows"][row][column], text)
    assert "±" in shown["rows"]["MIA (entropy attack)"]["Finetune"]
    assert shown["rows"]["needs"]["LFSSD"] == "I_D" and shown["rows"]["needs"]["SSD"] == "labels, I_D"

    # beside the table: what the columns and rows mean, and which attack "MIA" is
    assert page.get_by_text("The columns").first.is_visible() and page.get_by_text("The rows").first.is_visible()
    assert page.get_by_text(re.compile("entropy membership-inference attack")).first.is_visible()
    assert page.locator(".js-plotly-plot").count() == 2
    page.screenshot(path=str(screenshot_dir / "compare_result.png"))
    full_screenshot(page, screenshot_dir / "compare_result_full.png")


def test_unlabelled_images_explain_what_cannot_run(browser_page, streamlit_server, screenshot_dir):
    page = browser_page
    open_compare(page, streamlit_server, "?target=images:test:3")
    tags = page.get_by_test_id("stMultiSelect").get_by_role("group", name="Selected values")
    assert tags.inner_text().split() == ["Baseline", "LFSSD"]
    why = page.get_by_test_id("stAlert").filter(has_text="Not offered for unlabelled forget images")
    assert why.count() == 1
    text = why.inner_text()
    assert "SSD needs the forget set's labels" in text and "LFSSD needs neither" in text and "Amnesiac" in text
    page.screenshot(path=str(screenshot_dir / "compare_unlabelled.png"))
