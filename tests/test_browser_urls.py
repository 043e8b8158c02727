"""Links in a real browser: the root opens the Overview, a URL copied on any page reopens that page
with its whole state, bad values warn (naming what was used instead), and the card colours say how
close D_f and the MIA are to the retrained model."""
from __future__ import annotations

import re

import pytest

from tests.test_browser import FIRST_RENDER_TIMEOUT_MS, RERUN_TIMEOUT_MS, _page_problems, settle, wait_idle
from tests.test_browser_flows import url_params
from tests.walk import _SNAPSHOT

pytestmark = pytest.mark.browser

STATE = {"dataset": "digits", "model": "small_cnn", "target": "class:5", "alpha": "2.5", "lambda": "0.8",
         "method": "ssd", "mode": "batch"}
HEADINGS = {"": "The model, and the digit to forget", "forget": "Forgetting", "sensitivity": "Sensitivity to α and λ",
            "importance": "Importance maps", "compare": "Compare methods", "model_data": "Data set:"}


def open_settled(page, url: str) -> dict:
    page.goto(url)
    settle(page, FIRST_RENDER_TIMEOUT_MS * 2)
    return page.evaluate(_SNAPSHOT)


def test_the_root_url_opens_the_lesson(browser_page, streamlit_server):
    snap = open_settled(browser_page, streamlit_server.url)
    assert browser_page.get_by_role("heading", name="The model, and the digit to forget").count() == 1
    assert "Step 1 of 8" in snap["main"] and "forget the 3s" in snap["main"] and not snap["notFound"]
    assert url_params(browser_page)["step"] == "1"
    assert not _page_problems(browser_page), _page_problems(browser_page)


@pytest.mark.parametrize("path", list(HEADINGS))
def test_a_url_copied_on_any_page_reopens_that_page_and_state(chromium, streamlit_server, path):
    from tests.conftest import app_context

    query = "&".join(f"{k}={v}" for k, v in STATE.items())
    for _ in range(2):  # the link as typed, then the link the app wrote back, in a new session each
        context = app_context(chromium)
        try:
            page = context.new_page()
            snap = open_settled(page, f"{streamlit_server.url.rstrip('/')}/{path}?{query}")
            assert not snap["notFound"], path
            assert page.get_by_role("heading", name=re.compile("^" + re.escape(HEADINGS[path]))).count() >= 1
            lesson = {"step": "1"} if path == "" else {}  # the lesson adds its step to the state
            assert url_params(page) == {**STATE, **lesson} and page.url.split("?")[0].rstrip("/").endswith(path)
            if path in ("forget", "sensitivity", "importance"):
                assert snap["sliders"]["alpha"].split()[0] == "2.5"
            if path in ("forget", "sensitivity"):
                assert float(snap["sliders"]["lambda"]) == 0.8
            assert ("forget the 5s" if path == "" else "class 5") in snap["main"] or path in ("model_data",)
            assert not [a for a in snap["alerts"] if a["kind"] in ("error", "warning")], snap["alerts"]
            query = page.evaluate("location.href").split("?", 1)[1]
        finally:
            context.close()


def test_bad_url_values_warn_and_method_names_ignore_case(browser_page, streamlit_server):
    page = browser_page
    snap = open_settled(page, f"{streamlit_server.url.rstrip('/')}/forget?method=SSD&mode=zzz&alpha=1e-9"
                              "&lambda=1e6&target=random:99999")
    warnings = [a["text"] for a in snap["alerts"] if a["kind"] == "warning"]
    for expected in ("mode='zzz': not one of batch, sample; using batch", "alpha='1e-9': outside 0.1–1000; using 0.1",
                     "lambda='1e6': outside 0–10; using 10", "'random:99999': random:99999 must pick 1–1000 images"):
        assert any(expected in w for w in warnings), (expected, warnings)
    assert not any("method" in w for w in warnings)
    params = url_params(page)
    assert (params["method"], params["mode"], params["alpha"], params["lambda"], params["target"]) == \
        ("ssd", "batch", "0.1", "10", "class:3")
    assert "SSD" in page.get_by_role("heading", name=re.compile("^Forgetting")).inner_text()
    assert not [a for a in snap["alerts"] if a["kind"] == "error"] and not snap["exceptions"]


_DELTA_COLOURS = """() => Object.fromEntries(Array.from(document.querySelectorAll('[data-testid="stMain"] [data-testid="stMetric"]'))
  .map(m => [m.querySelector('[data-testid="stMetricLabel"]').innerText.trim(),
             (() => { const d = m.querySelector('[data-testid="stMetricDelta"]');
                      return d ? getComputedStyle(d).color : null; })()]))"""


def _hue(css: str) -> str:
    r, g, b = (int(v) for v in re.findall(r"\d+", css)[:3])
    if max(r, g, b) - min(r, g, b) < 30:
        return "gray"
    if g > r and g > b:
        return "green"
    return "orange" if g > 0.45 * r else "red"


def test_card_colours_follow_the_distance_to_the_retrained_model(browser_page, streamlit_server):
    from core.cache import TensorCache
    from core.experiment import ExperimentConfig, forget, prepare, retrain_reference
    from ui.widgets import judge

    page = browser_page
    cache = TensorCache(streamlit_server.cache_dir)
    for alpha in ("3.5", "100"):
        open_settled(page, f"{streamlit_server.url.rstrip('/')}/forget?target=class:3&alpha={alpha}")
        page.wait_for_function("() => document.body.innerText.includes('retrain ')", timeout=RERUN_TIMEOUT_MS * 4)
        wait_idle(page)
        colours = page.evaluate(_DELTA_COLOURS)
        prep = prepare(ExperimentConfig(forget="class:3"), cache)
        new, retrain = forget(prep, float(alpha), 1.0).result, retrain_reference(prep, cache)
        for label, field in (("D_f accuracy", "d_f"), ("MIA", "mia")):
            shown = next(c for name, c in colours.items() if name.startswith(label))
            expected = judge(field, getattr(new, field), getattr(retrain, field))[0]
            assert _hue(shown) == expected, (alpha, label, shown, expected)
        d_f = next(c for name, c in colours.items() if name.startswith("D_f"))
        assert _hue(d_f) == ("green" if alpha == "3.5" else "red")


# What the Forget page must show without scrolling at 1280×800 (only the gallery, the lower charts
# and the downloads may lie below the fold), for a target that dampens something and one that does not.
_BELOW_FOLD = """(fold) => {
  const main = document.querySelector('[data-testid="stMain"]');
  const below = [];
  const check = (what, el) => { if (!el) { below.push(what + ': missing'); return; }
    const r = el.getBoundingClientRect(); if (r.bottom > fold || r.height === 0) below.push(`${what}: bottom ${Math.round(r.bottom)}`); };
  main.querySelectorAll('[data-testid="stMetric"]').forEach((m, i) => check('card ' + i, m));
  main.querySelectorAll('[data-testid="stSlider"]').forEach((m, i) => check('slider ' + i, m));
  const charts = Array.from(main.querySelectorAll('[data-testid="stPlotlyChart"]'));
  const infos = Array.from(main.querySelectorAll('[data-testid="stAlert"]'));
  return {below, charts: charts.map(c => Math.round(c.getBoundingClientRect().bottom)),
          infos: infos.map(c => Math.round(c.getBoundingClientRect().bottom))};
}"""


@pytest.mark.parametrize("query, charts_above", [("", 3), ("target=random:20", 1)])
def test_the_forget_page_fits_one_screen_at_1280x800(browser_page, streamlit_server, screenshot_dir, query,
                                                     charts_above):
    """Cards, sliders, the selection histogram and what it dampened (the per-tensor bars and the β
    histogram, or the note saying nothing is dampened) are all above the fold."""
    page = browser_page
    assert page.viewport_size == {"width": 1280, "height": 800}
    open_settled(page, f"{streamlit_server.url.rstrip('/')}/forget?{query}")
    from tests.test_browser import _CHARTS_DRAWN

    page.wait_for_function(_CHARTS_DRAWN, timeout=RERUN_TIMEOUT_MS)
    layout = page.evaluate(_BELOW_FOLD, 800)
    page.screenshot(path=str(screenshot_dir / f"forget_fold_{query.replace(':', '_').replace('=', '_') or 'default'}.png"))
    assert not layout["below"], layout
    assert sum(bottom <= 800 for bottom in layout["charts"]) >= charts_above, layout
    if charts_above == 1:  # nothing dampened: the note saying so, and what to try, is on screen
        assert layout["infos"] and min(layout["infos"]) <= 800, layout
        assert page.get_by_test_id("stAlert").filter(has_text="Nothing is dampened").count() == 1


def test_no_select_box_label_is_cut(browser_page, streamlit_server):
    """The sidebar's select boxes show their whole chosen label at 1280 px (no ellipsis)."""
    page = browser_page
    open_settled(page, f"{streamlit_server.url.rstrip('/')}/forget")
    labels = page.evaluate("""() => Array.from(document.querySelectorAll(
            '[data-testid="stSidebar"] [data-testid="stSelectbox"] input[role="combobox"]'))
        .map(e => ({label: e.getAttribute('aria-label'), text: e.value, cut: e.scrollWidth > e.clientWidth + 1}))""")
    assert len(labels) >= 3, labels  # data set, model, class: the check sees the labels it judges
    assert not [label for label in labels if label["cut"]], labels
