"""Model-based random walks through the real app in Chromium (``tests/walk.py``): after every
step, the α and λ on the sliders, in the URL, in the captions and in the report agree with the
walk's model, the cards equal the engine's numbers for the URL's state, and only bad input errs.

A few seeds here (≥ 300 steps in all); ``python scripts/soak.py`` walks longer.
"""
from __future__ import annotations

import time

import pytest

from tests.walk import Walk, Engine

pytestmark = pytest.mark.browser

SEEDS = (11, 12, 13)
STEPS = 105  # per seed: 315 in all
SECONDS_PER_SEED = 420  # a bound, not a goal: a walk that cannot finish its steps in it fails


@pytest.fixture(scope="module")
def engine(streamlit_server):
    return Engine(streamlit_server.cache_dir)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_random_walk_keeps_every_screen_true(chromium, streamlit_server, engine, screenshot_dir, seed):
    walk = Walk(chromium, streamlit_server.url, engine, seed, screenshot_dir)
    started = time.monotonic()
    taken = walk.run(STEPS, deadline=started + SECONDS_PER_SEED)
    assert taken == STEPS, f"only {taken} of {STEPS} steps in {SECONDS_PER_SEED} s"
    kinds = {step.action.split()[0] for step in walk.log}
    assert {"nav", "alpha", "kind"} <= kinds, kinds  # the walk really went places
    assert walk.requests > 100 and walk.outside == []  # every request stayed on 127.0.0.1
    walk.check_cli(streamlit_server.cache_dir)
