"""Two browser sessions against one real server at the same time: each sees only its own view.

Both pages get their key presses before either rerun is awaited, so the server runs the two
sessions' scripts concurrently on the shared (cached) baseline model.
"""
from __future__ import annotations

import re

import pytest

from tests.conftest import app_context
from tests.test_browser import (ALPHA_NAME, FIRST_RENDER_TIMEOUT_MS, RERUN_TIMEOUT_MS, _CHECK_RUN_COUNTER,
                                _IDLE_AFTER, _page_problems, d_f_metric, metric_text, settle, slider_text)

pytestmark = pytest.mark.browser


def _open(chromium, url: str):
    context = app_context(chromium)
    page = context.new_page()
    page.goto(url)
    d_f_metric(page).wait_for(state="visible", timeout=FIRST_RENDER_TIMEOUT_MS)
    settle(page, FIRST_RENDER_TIMEOUT_MS * 2)  # a retrained reference may train after the results
    return context, page


def _press_both(pages, key: str) -> None:
    """Press ``key`` on each page's α slider, then wait for every page's rerun to finish."""
    counts = []
    for page in pages:
        page.evaluate(_CHECK_RUN_COUNTER)
        counts.append(page.evaluate("() => window.__lfssdRuns"))
        page.get_by_role("slider", name=ALPHA_NAME).focus()
        page.keyboard.press(key)
    for page, runs_before in zip(pages, counts):
        page.wait_for_function(_IDLE_AFTER, arg=runs_before, timeout=RERUN_TIMEOUT_MS)


def test_two_sessions_at_once_each_see_their_own_target_and_alpha(chromium, streamlit_server, screenshot_dir,
                                                                  cache_dir):
    from core.cache import TensorCache
    from core.experiment import ExperimentConfig, forget, prepare

    base = streamlit_server.url.rstrip("/")
    first_context, first = _open(chromium, f"{base}/forget?target=class:3&alpha=3.5")
    second_context, second = _open(chromium, f"{base}/forget?target=class:5&alpha=1.5")
    try:
        for _ in range(2):
            _press_both([first, second], "ArrowRight")  # 3.5 → 4 → 4.5 and 1.5 → 1.75 → 2
        for page, target, alpha in ((first, "class:3", 4.5), (second, "class:5", 2.0)):
            assert not _page_problems(page), _page_problems(page)
            assert slider_text(page, ALPHA_NAME) == f"{alpha:g}"
            heading = page.get_by_role("heading", name=re.compile("^Forgetting")).inner_text()
            assert f"class {target[-1]}" in heading
            page.wait_for_function(f"() => new URLSearchParams(location.search).get('alpha') === '{alpha:g}'",
                                   timeout=RERUN_TIMEOUT_MS)
            expected = forget(prepare(ExperimentConfig(forget=target), TensorCache(cache_dir)), alpha, 1.0).result
            assert metric_text(d_f_metric(page)) == f"{expected.d_f:.1f} %"
        first.screenshot(path=str(screenshot_dir / "sessions_first.png"))
        second.screenshot(path=str(screenshot_dir / "sessions_second.png"))
    finally:
        first_context.close()
        second_context.close()
