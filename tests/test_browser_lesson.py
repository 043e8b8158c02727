"""The lesson in a real Chromium: every step with Next and Back, each step's URL reopened in a new
session, a prediction made and revealed (steps 2 and 3), presenter mode at a projector's 1920×1080 and
1280×720; screenshots of every step at 1280×800 and 1920×1080 in screenshots/lesson/."""
from __future__ import annotations

import re

import pytest

from tests.conftest import RUN_COUNTER_JS
from tests.test_browser import _page_problems, settle
from tests.test_browser_flows import url_params
from ui import lesson

pytestmark = pytest.mark.browser
FIRST_MS = 240_000


def _context(chromium, width: int, height: int):
    context = chromium.new_context(viewport={"width": width, "height": height})
    context.add_init_script(RUN_COUNTER_JS)
    return context


def _heading(page, number: int):
    return page.get_by_role("heading", name=lesson.STEPS[number - 1].title, exact=True)


def _bottom(page, locator) -> float:
    locator.wait_for(state="visible")
    box = locator.bounding_box()
    return box["y"] + box["height"]


def _click_and_settle(page, locator) -> None:
    locator.click()
    settle(page, FIRST_MS)


def test_every_step_next_back_predict_reveal_and_screenshots(chromium, streamlit_server, screenshot_dir):
    shots = screenshot_dir / "lesson"
    shots.mkdir(exist_ok=True)
    for width, height in ((1280, 800), (1920, 1080)):
        context = _context(chromium, width, height)
        try:
            page = context.new_page()
            page.goto(streamlit_server.url)
            settle(page, FIRST_MS)
            for number in range(1, lesson.LAST + 1):
                _heading(page, number).wait_for(timeout=FIRST_MS)
                assert page.get_by_text(f"Step {number} of {lesson.LAST}").count() == 1
                assert url_params(page).get("step") == str(number), (number, width, url_params(page))
                assert not _page_problems(page), (number, _page_problems(page))
                assert page.get_by_test_id("stAlert").filter(has_text=re.compile("rror")).count() == 0, number
                nxt = page.get_by_role("button", name="Next →")
                if number == 1:  # an inline SVG: it opens the lesson before plotly has loaded
                    page.locator('svg[aria-label="test accuracy per digit"]').wait_for(timeout=FIRST_MS)
                elif number not in (3, lesson.LAST):  # step 3's chart waits for the reveal; the last step has links
                    page.get_by_test_id("stPlotlyChart").first.wait_for(timeout=FIRST_MS)
                settle(page, FIRST_MS)
                # one screen: the step's chart and its Next button above the fold
                assert _bottom(page, nxt) <= height, (number, width, _bottom(page, nxt))
                page.screenshot(path=str(shots / f"step{number}_{width}x{height}.png"))
                if width == 1280 and number == 2:  # guess a layer, then reveal the per-layer bars
                    page.get_by_test_id("stMain").get_by_text("conv1", exact=True).click()
                    settle(page)
                    _click_and_settle(page, page.get_by_role("button", name="Reveal"))
                    page.screenshot(path=str(shots / "step2_revealed_1280x800.png"))
                    page.get_by_text(re.compile("has the largest share")).first.wait_for(timeout=30_000)
                    assert page.get_by_text(re.compile("You guessed conv1")).count() == 1
                    page.screenshot(path=str(shots / "step2_revealed_1280x800.png"))
                if width == 1280 and number == 3:  # move a guess, then reveal: the curve and the score
                    slider = page.get_by_role("slider").first
                    slider.focus()
                    page.keyboard.press("ArrowRight")
                    settle(page)
                    _click_and_settle(page, page.get_by_role("button", name="Reveal"))
                    page.get_by_text(re.compile(r"Your guesses were off by \d+ points")).first.wait_for(timeout=30_000)
                    assert page.get_by_test_id("stPlotlyChart").count() == 1
                    page.screenshot(path=str(shots / "step3_revealed_1280x800.png"))
                if number < lesson.LAST:
                    _click_and_settle(page, nxt)
            _click_and_settle(page, page.get_by_role("button", name="← Back"))
            _heading(page, lesson.LAST - 1).wait_for()
            assert url_params(page)["step"] == str(lesson.LAST - 1)
        finally:
            context.close()


def test_each_steps_url_reopens_it_in_a_new_session(chromium, streamlit_server):
    for number in range(1, lesson.LAST + 1):
        context = _context(chromium, 1280, 800)
        try:
            page = context.new_page()
            page.goto(f"{streamlit_server.url.rstrip('/')}/?step={number}")
            settle(page, FIRST_MS)
            _heading(page, number).wait_for(timeout=FIRST_MS)
            params = url_params(page)
            assert params["step"] == str(number)
            if number == 6:
                assert params["target"] == "images:examples"
            if number == 7:
                assert params["recipe"] == "plain"
            assert not _page_problems(page), (number, _page_problems(page))
        finally:
            context.close()


@pytest.mark.parametrize("width,height", [(1920, 1080), (1280, 720)])
def test_presenter_mode_for_a_projector(chromium, streamlit_server, screenshot_dir, width, height):
    context = _context(chromium, width, height)
    try:
        page = context.new_page()
        page.goto(f"{streamlit_server.url.rstrip('/')}/?step=5&present=1")
        settle(page, FIRST_MS)
        _heading(page, 5).wait_for(timeout=FIRST_MS)
        assert not page.get_by_test_id("stSidebar").is_visible()
        assert not page.get_by_test_id("stHeader").is_visible()
        size = float(page.evaluate("() => parseFloat(getComputedStyle(document.documentElement).fontSize)"))
        assert size >= (20 if width >= 1920 else 15), size  # larger type on the projector
        nxt = page.get_by_role("button", name="Next →")
        assert _bottom(page, nxt) <= height, _bottom(page, nxt)
        page.screenshot(path=str(screenshot_dir / "lesson" / f"present_step5_{width}x{height}.png"))
        _click_and_settle(page, nxt)
        _heading(page, 6).wait_for()
        assert url_params(page)["present"] == "1" and url_params(page)["step"] == "6"
        assert not page.get_by_test_id("stSidebar").is_visible()
    finally:
        context.close()
