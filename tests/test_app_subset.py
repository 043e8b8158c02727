"""Large data sets in the app: slider moves score a fixed stratified subset with 95 % intervals,
deltas compare with the baseline on the same subset, and "Full evaluation" scores every image.

The embedded sets are below ``core.evaluation.accuracy.SUBSET_THRESHOLD``, so these tests lower the threshold
and the subset sizes (the real code paths, on the real digits model) instead of building a CIFAR-size
data set. A cache folder of their own keeps the shared experiment of the other app tests untouched.
"""
import importlib
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.cache import TensorCache
from core.experiment import ExperimentConfig, baseline_for, forget, prepare

APP = str(Path(__file__).resolve().parents[1] / "app.py")
FORGET = "views/forget.py"  # the Forget page (the root URL opens the Overview)
EVALUATE = importlib.import_module("core.evaluation.accuracy")  # the module: ``core.evaluation.accuracy`` is also a function's name


@pytest.fixture
def small_subset(cache_dir, tmp_path, monkeypatch):
    """Digits (1,797 evaluation images) counts as large; the subset holds 200 test and 400 retained
    training images besides every forget sample. Returns the app's cache folder."""
    monkeypatch.setattr(EVALUATE, "SUBSET_THRESHOLD", 1_000)
    monkeypatch.setattr(EVALUATE, "SUBSET_TEST", 200)
    monkeypatch.setattr(EVALUATE, "SUBSET_RETAIN_TRAIN", 400)
    own = tmp_path / "cache"
    shutil.copytree(cache_dir, own)  # the trained models and importances, read back from disk
    monkeypatch.setenv("LFSSD_CACHE_DIR", str(own))
    return own


def metric(at, label_start):
    return next(m for m in at.metric if m.label.startswith(label_start))


def shown(at, label_start) -> float:
    return float(metric(at, label_start).value.rstrip(" %"))


def delta(at, label_start) -> float:
    """A card's delta: "±0.0" (or none, on a gray card) below 0.05 points."""
    return float((metric(at, label_start).delta or "0").replace("±", ""))


def core_scores(cache: Path, evaluation: str):
    prep = prepare(ExperimentConfig(dataset="digits", forget="class:3"), TensorCache(cache))
    result = forget(prep, 3.5, 1.0, evaluation=evaluation).result
    return result, baseline_for(prep, result)


def test_forget_page_shows_subset_scores_with_intervals_then_full_ones(small_subset):
    at = AppTest.from_file(APP, default_timeout=300).switch_page(FORGET).run()
    assert not at.exception and not at.error
    subset, subset_base = core_scores(small_subset, "subset")
    assert subset.sample is not None and subset.sample.test_scored < subset.sample.test_total
    note = next(c.value for c in at.caption if "fixed stratified subset" in c.value)
    assert f"{subset.sample.test_scored:,} of {subset.sample.test_total:,} test images" in note
    assert "D_f exact" in note  # every forget test image is in the subset
    low, high = subset.sample.intervals["d_r"]
    assert low < subset.d_r <= high and f"D_r {low:.1f}–{high:.1f} %" in note
    assert "MIA: attack refit on the subset; no interval" in note
    assert shown(at, "D_r accuracy") == pytest.approx(subset.d_r, abs=0.05)
    assert shown(at, "test accuracy") == pytest.approx(subset.test, abs=0.05)
    for label, field in (("D_r accuracy", "d_r"), ("D_f accuracy", "d_f"), ("test accuracy", "test")):
        assert delta(at, label) == pytest.approx(getattr(subset, field) - getattr(subset_base, field), abs=0.051)

    at.button(key="fg_full_eval").click().run()
    assert not at.exception and not at.error
    full, full_base = core_scores(small_subset, "full")
    assert full.sample is None and full_base is not subset_base
    assert shown(at, "D_r accuracy") == pytest.approx(full.d_r, abs=0.05)
    assert shown(at, "test accuracy") == pytest.approx(full.test, abs=0.05)
    assert shown(at, "MIA") == pytest.approx(full.mia, abs=0.05)
    assert delta(at, "test accuracy") == pytest.approx(full.test - full_base.test, abs=0.051)
    assert any("every image scored" in c.value for c in at.caption)
    at.run()  # the full scores stay while the sliders stay put, without the button
    assert shown(at, "D_r accuracy") == pytest.approx(full.d_r, abs=0.05)
    assert any("every image scored" in c.value for c in at.caption)
    assert not any(b.key == "fg_full_eval" for b in at.button)

    at.select_slider(key="alpha_slider").set_value(5.0).run()
    assert not at.exception
    assert any("fixed stratified subset" in c.value for c in at.caption)
    assert any(b.key == "fg_full_eval" for b in at.button)


def test_sensitivity_page_says_its_sweep_is_estimated_on_the_subset(small_subset):
    at = AppTest.from_file(APP, default_timeout=300)
    at.switch_page("views/sensitivity.py").run()
    assert not at.exception and not at.error
    assert any("Estimated on the subset" in c.value for c in at.caption)
