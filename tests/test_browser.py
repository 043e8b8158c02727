"""The app in a real browser: a real ``streamlit run`` server driven by Debian's Chromium.

Selectors are chosen to survive a re-layout: metrics are found by their label text, the α slider by
its accessible name, charts by their library's class. Waiting is done by polling the page's state
(Streamlit's script-run state, stale elements, the metric text) with timeouts, never fixed sleeps.
Screenshots go to ``<repo>/screenshots/``.
"""
from __future__ import annotations

import re
import time

import pytest

pytestmark = pytest.mark.browser

FIRST_RENDER_TIMEOUT_MS = 90_000  # the default model trains on first run
RERUN_TIMEOUT_MS = 30_000
D_F_LABEL = re.compile(r"^\s*D_f accuracy")
ALPHA_NAME = re.compile("α")
CHARTS = ".js-plotly-plot, [data-testid='stVegaLiteChart'], [data-testid='stArrowVegaLiteChart']"
# Charts draw asynchronously after the script run ends (plotly.js / vega load lazily): every chart
# element Streamlit placed must hold a drawn plot before it is compared or photographed, and no
# lazily loaded element may still show its loading skeleton.
_CHARTS_DRAWN = """() => {
  if (document.querySelector('[data-testid="stSkeleton"]')) return false;
  const plotly = Array.from(document.querySelectorAll('[data-testid="stPlotlyChart"]'));
  const vega = Array.from(document.querySelectorAll('[data-testid="stVegaLiteChart"], [data-testid="stArrowVegaLiteChart"]'));
  const drawn = e => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
  return plotly.every(c => { const p = c.querySelector('.js-plotly-plot');
                             return p && p._fullLayout && p.querySelector('svg.main-svg') && drawn(p); })
      && vega.every(c => { const v = c.querySelector('canvas, svg'); return v && drawn(v); });
}"""

# Finished reruns are counted in window.__lfssdRuns by tests/run_counter.js, which every context
# from ``tests.conftest.app_context`` carries; this only checks that it is there.
_CHECK_RUN_COUNTER = """() => {
  if (window.__lfssdRuns === undefined) throw new Error('no rerun counter: open the page in tests.conftest.app_context');
}"""
_IDLE_AFTER = """(runsBefore) => {
  const app = document.querySelector('[data-testid="stApp"]');
  return window.__lfssdRuns > runsBefore
      && app.getAttribute('data-test-script-state') === 'notRunning'
      && document.querySelectorAll('[data-stale="true"]').length === 0;
}"""
_IDLE = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  return app && app.getAttribute('data-test-script-state') === 'notRunning'
      && document.querySelectorAll('[data-stale="true"]').length === 0;
}"""


def _page_problems(page) -> str:
    exceptions = page.get_by_test_id("stException")
    if exceptions.count():
        return "the app shows an exception:\n" + "\n".join(exceptions.all_inner_texts())
    return ""


def d_f_metric(page):
    label = page.get_by_test_id("stMetricLabel").filter(has_text=D_F_LABEL)
    return page.get_by_test_id("stMetric").filter(has=label)


def metric_text(metric) -> str:
    return metric.get_by_test_id("stMetricValue").inner_text().strip()


def percent(text: str) -> float:
    match = re.fullmatch(r"(-?\d+(?:\.\d+)?)\s*%", text)
    assert match, f"not a percentage: {text!r}"
    return float(match.group(1))


def wait_idle(page, timeout_ms: int = RERUN_TIMEOUT_MS) -> None:
    page.wait_for_function(_IDLE, timeout=timeout_ms)


def settle(page, timeout_ms: int = RERUN_TIMEOUT_MS) -> None:
    """Idle, no progress bar or skeleton, and no new rerun for a moment: a page that reruns itself
    (the Forget page trains its retrained reference after the results, then reruns) has finished."""
    from tests.walk import _WAIT_SETTLED, QUIET_MS

    page.wait_for_function(_WAIT_SETTLED, arg=[0, QUIET_MS], timeout=timeout_ms)


def run_and_wait(page, action, timeout_ms: int = RERUN_TIMEOUT_MS) -> None:
    """Do ``action`` (which must trigger a rerun) and wait until that rerun has finished."""
    page.evaluate(_CHECK_RUN_COUNTER)
    runs_before = page.evaluate("() => window.__lfssdRuns")
    action()
    page.wait_for_function(_IDLE_AFTER, arg=runs_before, timeout=timeout_ms)


def open_app(page, server):
    """Open the app and wait for its first complete render (the D_f metric, script idle)."""
    page.goto(server.url.rstrip("/") + "/forget")
    metric = d_f_metric(page)
    try:
        metric.wait_for(state="visible", timeout=FIRST_RENDER_TIMEOUT_MS)
        settle(page, FIRST_RENDER_TIMEOUT_MS)
        page.wait_for_function(_CHARTS_DRAWN, timeout=RERUN_TIMEOUT_MS)
    except Exception as exc:  # add what the page and the server said
        raise AssertionError(f"{exc}\n{_page_problems(page)}\n{server.log_tail()}") from exc
    assert not _page_problems(page), _page_problems(page)
    return metric


def slider_bounds(slider) -> tuple[float, float, float]:
    """(value, max, step) of an ``input[type=range]`` or an ARIA ``role=slider`` element."""
    def attr(*names):
        for name in names:
            value = slider.get_attribute(name)
            if value not in (None, ""):
                return float(value)
        return None
    value = attr("aria-valuenow", "value")
    if value is None:
        value = float(slider.evaluate("e => e.value"))
    return value, attr("aria-valuemax", "max"), attr("step") or 0.0


def full_screenshot(page, path) -> None:
    """The whole page: Streamlit scrolls inside its main container, so Playwright's full_page
    shot is only the viewport; grow the viewport to the content's height for the shot instead."""
    size = page.viewport_size
    height = page.evaluate("""() => Math.max(...Array.from(document.querySelectorAll(
        '[data-testid="stMain"], [data-testid="stAppViewContainer"], [data-testid="stSidebarContent"]'))
        .map(e => e.scrollHeight), document.documentElement.scrollHeight)""")
    try:
        page.set_viewport_size({"width": size["width"], "height": max(size["height"], min(height, 6000))})
        page.wait_for_function(_CHARTS_DRAWN, timeout=RERUN_TIMEOUT_MS)
        page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        page.screenshot(path=str(path))
    finally:
        page.set_viewport_size(size)


def chart_fingerprints(page) -> list:
    """Something that changes when each chart re-renders with new data: plotly's rendered SVG
    markup, or an image of the (canvas-drawn) vega chart."""
    prints = []
    for chart in page.locator(CHARTS).all():
        if chart.evaluate("e => e.classList.contains('js-plotly-plot')"):
            prints.append(chart.evaluate(
                "e => Array.from(e.querySelectorAll('svg.main-svg')).map(s => s.outerHTML).join('')"))
        else:
            chart.scroll_into_view_if_needed()
            prints.append(chart.screenshot())
    return prints


def test_opens_on_the_default_experiment(browser_page, streamlit_server, screenshot_dir):
    page = browser_page
    metric = open_app(page, streamlit_server)
    value = percent(metric_text(metric))
    assert 0.0 <= value <= 10.0, f"the default (forget class 3, α = 3.5) should forget: D_f = {value} %"
    assert page.evaluate("() => window.__lfssdRuns") >= 1  # the rerun counter saw the first run finish
    page.screenshot(path=str(screenshot_dir / "browser_default.png"))
    full_screenshot(page, screenshot_dir / "browser_default_full.png")


def test_raising_alpha_with_the_keyboard_stops_forgetting(browser_page, streamlit_server, screenshot_dir):
    page = browser_page
    metric = open_app(page, streamlit_server)
    before = metric_text(metric)
    assert percent(before) <= 10.0
    charts_before = chart_fingerprints(page)

    sliders = page.get_by_role("slider", name=ALPHA_NAME)
    assert sliders.count() == 1, f"expected one slider labelled α, found {sliders.count()}"
    slider = sliders.first
    value, maximum, step = slider_bounds(slider)
    assert maximum is not None and maximum > value

    # one step right: the slider moves by its step and the app reruns
    slider.focus()
    run_and_wait(page, lambda: page.keyboard.press("ArrowRight"))
    moved = slider_bounds(slider)[0]
    assert moved == pytest.approx(value + step) if step else moved > value

    # End: α to its maximum
    slider.focus()
    run_and_wait(page, lambda: page.keyboard.press("End"))
    assert slider_bounds(slider)[0] == pytest.approx(maximum)

    # the rerun is finished; still poll briefly in case a second run follows (e.g. a URL sync)
    deadline = time.monotonic() + RERUN_TIMEOUT_MS / 1000
    after = metric_text(metric)
    while percent(after) <= 90.0 and time.monotonic() < deadline:
        page.wait_for_timeout(200)
        after = metric_text(metric)
    wait_idle(page)
    assert not _page_problems(page), _page_problems(page)
    assert after != before
    assert percent(after) > 90.0, f"at α = {maximum:g} nothing should be forgotten: D_f went {before} → {after}"

    if charts_before:  # optional: the app need not have charts; when it does, they must follow α
        page.wait_for_function(_CHARTS_DRAWN, timeout=RERUN_TIMEOUT_MS)
        deadline = time.monotonic() + RERUN_TIMEOUT_MS / 1000
        while (charts_after := chart_fingerprints(page)) == charts_before and time.monotonic() < deadline:
            page.wait_for_timeout(200)
        # with nothing dampened, the per-tensor bars and the β histogram give way to a note saying so
        assert len(charts_after) == len(charts_before) - 2
        assert page.get_by_test_id("stAlert").filter(has_text="Nothing is dampened").count() == 1
        assert charts_after != charts_before, "no chart re-rendered after α changed"
    page.screenshot(path=str(screenshot_dir / "browser_alpha_max.png"))
    full_screenshot(page, screenshot_dir / "browser_alpha_max_full.png")


def slider_text(page, name) -> str:
    """What a slider shows as its value (``aria-valuetext``: the option label for a select slider)."""
    slider = page.get_by_role("slider", name=name)
    assert slider.count() == 1, f"expected one slider named {name.pattern}, found {slider.count()}"
    return slider.first.get_attribute("aria-valuetext") or slider.first.get_attribute("aria-valuenow")


def test_a_copied_url_reopens_the_same_view(browser_page, streamlit_server, screenshot_dir):
    page = browser_page
    streamlit_server_url = streamlit_server.url.rstrip("/")
    page.goto(f"{streamlit_server_url}/forget?target=class:5&alpha=2&lambda=0.5&method=lfssd&mode=batch")
    metric = d_f_metric(page)
    metric.wait_for(state="visible", timeout=FIRST_RENDER_TIMEOUT_MS)
    settle(page, FIRST_RENDER_TIMEOUT_MS * 2)  # class 5's retrained reference trains after the results
    assert slider_text(page, ALPHA_NAME) == "2"
    assert float(slider_text(page, re.compile("λ"))) == 0.5
    assert "class 5" in page.get_by_role("heading", name=re.compile("^Forgetting")).inner_text()
    assert not _page_problems(page), _page_problems(page)
    # moving a slider writes the new value back into the address bar
    slider = page.get_by_role("slider", name=ALPHA_NAME)
    slider.focus()
    run_and_wait(page, lambda: page.keyboard.press("ArrowRight"))
    page.wait_for_function("() => new URLSearchParams(location.search).get('alpha') === '2.25'", timeout=RERUN_TIMEOUT_MS)
    page.screenshot(path=str(screenshot_dir / "browser_url_class5.png"))


def _png_of_a_three() -> bytes:
    import io

    from PIL import Image

    from core.data.registry import load_dataset

    digits = load_dataset("digits")
    three = digits.test_x[digits.test_y == 3][0, 0].numpy()
    buffer = io.BytesIO()
    Image.fromarray(three).resize((64, 64), Image.NEAREST).save(buffer, format="PNG")  # any size: resized on upload
    return buffer.getvalue()


def test_uploading_a_png_forgets_it_without_labels(browser_page, streamlit_server, screenshot_dir):
    page = browser_page
    open_app(page, streamlit_server)
    sidebar = page.get_by_test_id("stSidebar")
    run_and_wait(page, lambda: sidebar.get_by_text("images, without labels").click())
    run_and_wait(page, lambda: sidebar.get_by_text("images I upload").click())
    assert "Upload one or more images" in page.get_by_test_id("stAlert").first.inner_text()  # a prompt, not an error
    run_and_wait(page, lambda: sidebar.locator("input[type=file]").set_input_files(
        files=[{"name": "my_three.png", "mimeType": "image/png", "buffer": _png_of_a_three()}]))
    wait_idle(page)
    heading = page.get_by_role("heading", name=re.compile("^Forgetting"))
    heading.wait_for(timeout=RERUN_TIMEOUT_MS)
    assert "1 unlabelled image(s)" in heading.inner_text()
    assert "no labels" in d_f_metric(page).get_by_test_id("stMetricLabel").inner_text()
    assert metric_text(d_f_metric(page)) == "—"
    assert page.get_by_text("my_three.png").first.is_visible()  # the gallery names the upload
    page.wait_for_function(_CHARTS_DRAWN, timeout=RERUN_TIMEOUT_MS)
    assert not _page_problems(page), _page_problems(page)
    page.screenshot(path=str(screenshot_dir / "browser_upload.png"))


PAGES = {  # URL path → a heading each page shows once it has rendered
    "": "The model, and the digit to forget",  # the lesson (the Overview) is the default: it lives at the root
    "model_data": "Data set:",
    "forget": "Forgetting",
    "sensitivity": "Sensitivity to α and λ",
    "importance": "Importance maps",
}


@pytest.mark.parametrize("path", list(PAGES))
def test_every_page_opens_without_an_error(browser_page, streamlit_server, screenshot_dir, path):
    page = browser_page
    page.goto(f"{streamlit_server.url.rstrip('/')}/{path}")
    heading = page.get_by_role("heading", name=re.compile("^" + re.escape(PAGES[path])))
    heading.first.wait_for(timeout=FIRST_RENDER_TIMEOUT_MS)
    wait_idle(page, FIRST_RENDER_TIMEOUT_MS * 2)  # the sensitivity sweeps and the retrain run here on first open
    page.wait_for_function(_CHARTS_DRAWN, timeout=RERUN_TIMEOUT_MS)
    assert not _page_problems(page), _page_problems(page)
    assert page.get_by_text("Page not found").count() == 0
    assert page.get_by_test_id("stAlert").filter(has_text=re.compile("rror")).count() == 0
    assert page.locator(".js-plotly-plot, .katex, svg[role=img]").count() > 0  # charts (the lesson's first: SVG), or equations
    page.screenshot(path=str(screenshot_dir / f"page_{path or 'overview'}.png"))
    full_screenshot(page, screenshot_dir / f"page_{path or 'overview'}_full.png")
