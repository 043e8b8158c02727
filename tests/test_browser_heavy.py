"""A heavy model in a real browser: its expected time first, then training only on a click, and a
Cancel that stops it and keeps nothing."""
from __future__ import annotations

import pytest

from tests.test_browser import FIRST_RENDER_TIMEOUT_MS, RERUN_TIMEOUT_MS, _page_problems, settle

pytestmark = pytest.mark.browser


def test_a_heavy_model_trains_only_on_a_click_and_cancel_stops_it(browser_page, streamlit_server):
    from core.data.registry import load_dataset
    from core.models.training import default_config, is_trained

    page = browser_page
    page.goto(f"{streamlit_server.url.rstrip('/')}/forget?model=resnet18")
    prompt = page.get_by_test_id("stAlert").filter(has_text="is not trained on digits yet")
    prompt.wait_for(timeout=FIRST_RENDER_TIMEOUT_MS)
    settle(page)
    assert "estimated from one timed training batch" in prompt.inner_text()
    page.get_by_role("button", name="Train it").click()
    bar = page.get_by_test_id("stProgress")
    bar.first.wait_for(timeout=RERUN_TIMEOUT_MS)  # training has started
    page.get_by_role("button", name="Cancel training").click()
    prompt.wait_for(timeout=RERUN_TIMEOUT_MS * 2)  # stopped at the end of an epoch: the choice again
    settle(page, RERUN_TIMEOUT_MS * 2)
    assert not _page_problems(page), _page_problems(page)
    assert page.get_by_test_id("stMetric").count() == 0
    data = load_dataset("digits")
    from core.cache import TensorCache

    assert not is_trained("resnet18", data, default_config("resnet18", "digits"), TensorCache(streamlit_server.cache_dir))
