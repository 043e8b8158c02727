"""The Auto control in a real browser: it sets both sliders and the URL to the α rule's choice, says
why, and a copied link with alpha=auto reopens with the rule applied."""
from __future__ import annotations

import pytest

from core.cache import TensorCache
from core.experiment import ExperimentConfig, choose_alpha, prepare
from tests.test_browser import _page_problems, open_app, run_and_wait, settle
from tests.test_browser_flows import sliders, url_params

pytestmark = pytest.mark.browser


def test_auto_sets_the_sliders_and_the_url_and_a_copied_link_keeps_it(browser_page, chromium, streamlit_server):
    from tests.conftest import app_context

    page = browser_page
    open_app(page, streamlit_server)
    expected = choose_alpha(prepare(ExperimentConfig(), TensorCache(streamlit_server.cache_dir)), "auto")
    toggle = page.get_by_test_id("stCheckbox").filter(has_text="Auto α")
    run_and_wait(page, lambda: toggle.click())
    settle(page)
    assert sliders(page) == (expected.alpha, expected.lambda_)
    assert url_params(page)["alpha"] == "auto"
    main = page.get_by_test_id("stMain").inner_text()
    assert f"Auto: α = {expected.alpha:.3g}" in main and f"α = {expected.alpha:g} (auto)" in main
    assert not _page_problems(page), _page_problems(page)
    link = page.evaluate("location.href")
    context = app_context(chromium)
    try:
        other = context.new_page()
        other.goto(link)
        settle(other, 180_000)
        assert sliders(other) == (expected.alpha, expected.lambda_)
        assert other.get_by_test_id("stCheckbox").filter(has_text="Auto α").locator("input").is_checked()
        assert url_params(other)["alpha"] == "auto"
    finally:
        context.close()
