"""The three classroom flows in which the sliders once showed, then applied, values nobody chose
(α 0.5 and λ 0, the widgets' minimums), each as a real-browser test. The random walk in
``test_browser_walk.py`` covers them too; these name them."""
from __future__ import annotations

import re
from urllib.parse import parse_qs, urlparse

import pytest

from tests.test_browser import ALPHA_NAME, _page_problems, open_app, run_and_wait, slider_text, wait_idle
from tests.walk import good_files

pytestmark = pytest.mark.browser
LAMBDA_NAME = re.compile("^λ")


def url_params(page) -> dict:
    """The address bar's parameters. ``location.href``, not Playwright's ``page.url``: Streamlit
    writes the URL with ``history.replaceState``, which ``page.url`` only notices at the next event
    (it lagged one run behind)."""
    return {k: v[0] for k, v in parse_qs(urlparse(page.evaluate("location.href")).query).items()}


def sliders(page) -> tuple[float, float | None]:
    lam = page.get_by_role("slider", name=LAMBDA_NAME)
    return float(slider_text(page, ALPHA_NAME).split()[0]), float(slider_text(page, LAMBDA_NAME)) if lam.count() else None


def nav(page, title: str) -> None:
    run_and_wait(page, lambda: page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click())
    wait_idle(page)


def test_switching_pages_keeps_the_sliders_on_the_values_in_use(browser_page, streamlit_server):
    page = browser_page
    open_app(page, streamlit_server)
    assert sliders(page) == (3.5, 1.0)
    nav(page, "Sensitivity")
    assert sliders(page) == (3.5, 1.0), "the Sensitivity page must show the α and λ in use"
    assert "α sweep at λ = 1" in page.get_by_test_id("stMain").inner_text()
    page.get_by_role("slider", name=ALPHA_NAME).focus()
    run_and_wait(page, lambda: page.keyboard.press("ArrowRight"))
    assert sliders(page) == (4.0, 1.0) and url_params(page)["alpha"] == "4"  # one step up from 3.5, not from 0.5
    nav(page, "Forget")
    assert sliders(page) == (4.0, 1.0)
    nav(page, "Importance maps")
    assert sliders(page)[0] == 4.0 and "(α = 4)" in page.get_by_test_id("stMain").inner_text()
    assert not _page_problems(page), _page_problems(page)


def to_the_empty_uploader(page, server):
    """Open Forget and pick "images, without labels" → "images I upload"; returns the sidebar."""
    open_app(page, server)
    sidebar = page.get_by_test_id("stSidebar")
    run_and_wait(page, lambda: sidebar.get_by_text("images, without labels").click())
    run_and_wait(page, lambda: sidebar.get_by_text("images I upload").click())
    return sidebar


def pick_sample_mode(page, sidebar) -> None:
    """An unrelated click: the importance-mode radio."""
    run_and_wait(page, lambda: sidebar.get_by_test_id("stRadio").filter(has_text="Importance mode")
                 .get_by_text("sample", exact=True).click())
    wait_idle(page)


def test_uploading_after_the_empty_uploader_keeps_alpha_and_lambda(browser_page, streamlit_server):
    page = browser_page
    sidebar = to_the_empty_uploader(page, streamlit_server)
    assert page.get_by_test_id("stAlert").filter(has_text="Upload one or more images").count() == 1
    assert page.get_by_role("slider", name=ALPHA_NAME).count() == 0  # no sliders while nothing is uploaded
    run_and_wait(page, lambda: sidebar.locator("input[type=file]").set_input_files(files=good_files(5)))
    wait_idle(page)
    assert sliders(page) == (3.5, 1.0)
    assert "At α = 3.5:" in page.get_by_test_id("stMain").inner_text()
    pick_sample_mode(page, sidebar)
    params = url_params(page)
    assert (params["alpha"], params["lambda"], params["mode"]) == ("3.5", "1", "sample")
    assert sliders(page) == (3.5, 1.0)
    assert not _page_problems(page), _page_problems(page)


def test_leaving_the_empty_uploader_for_a_class_keeps_the_class_and_the_sliders(browser_page, streamlit_server):
    page = browser_page
    sidebar = to_the_empty_uploader(page, streamlit_server)
    run_and_wait(page, lambda: sidebar.get_by_text("a whole class").click())
    wait_idle(page)
    assert url_params(page)["target"] == "class:3"
    assert "class 3" in page.get_by_role("heading", name=re.compile("^Forgetting")).inner_text()
    assert sliders(page) == (3.5, 1.0)
    pick_sample_mode(page, sidebar)
    params = url_params(page)
    assert (params["target"], params["alpha"], params["lambda"]) == ("class:3", "3.5", "1")
    assert float(page.get_by_test_id("stMetric").filter(has_text="D_r accuracy")
                 .get_by_test_id("stMetricValue").inner_text().rstrip(" %")) > 90
    assert not _page_problems(page), _page_problems(page)
