"""The Forget page's selection histogram and the ratio ceiling it marks, on real importances."""
import math

import pytest
import torch

from core.method.dampening import dampen, ratio_histogram
from core.experiment import ExperimentConfig, prepare
from core.plots.forget import ratio_histogram_figure


@pytest.fixture(scope="module")
def prep(cache_dir):
    from core.cache import TensorCache

    return prepare(ExperimentConfig(), TensorCache(cache_dir))


def test_the_ceiling_is_batches_of_d_over_batches_of_d_f_and_bounds_the_ratio(prep):
    n_d, n_f = len(prep.dataset.train_y), prep.split.num_forget
    assert prep.alpha_ceiling == math.ceil(n_d / 64) / math.ceil(n_f / 64)
    ratios = torch.cat([(prep.imp_forget[k] / prep.imp_full[k])[prep.imp_full[k] > 0].flatten()
                        for k in prep.imp_full])
    assert ratios.max() < prep.alpha_ceiling  # on the default: no element reaches it …
    _, report = dampen(prep.model, prep.imp_full, prep.imp_forget, prep.alpha_ceiling, 1.0)
    assert report.selected == sum(int(((prep.imp_full[k] == 0) & (prep.imp_forget[k] > 0)).sum())
                                  for k in prep.imp_full)  # … so α there selects only the I_D = 0 elements


def test_ssd_gets_its_own_ceiling_the_largest_ratio_it_measured(cache_dir):
    """SSD's ratios are of squared gradients and pass |D|/|D_f|: its ceiling is the largest ratio
    measured, so α just above it selects only the I_D = 0 elements, and SSD's default α (10, its
    paper's) lies below it and dampens."""
    from core.cache import TensorCache
    from core.compare.methods import default_method_alpha

    ssd = prepare(ExperimentConfig(kind="ssd"), TensorCache(cache_dir))
    ratios = torch.cat([(ssd.imp_forget[k] / ssd.imp_full[k])[ssd.imp_full[k] > 0].flatten() for k in ssd.imp_full])
    assert ssd.alpha_ceiling == pytest.approx(float(ratios.max()))
    lfssd_bound = math.ceil(len(ssd.dataset.train_y) / 64) / math.ceil(ssd.split.num_forget / 64)
    assert "squared gradients" in ssd.ceiling_note and "|D|/|D_f|" in prepare(
        ExperimentConfig(), TensorCache(cache_dir)).ceiling_note
    only_forget = sum(int(((ssd.imp_full[k] == 0) & (ssd.imp_forget[k] > 0)).sum()) for k in ssd.imp_full)
    _, past = dampen(ssd.model, ssd.imp_full, ssd.imp_forget, ssd.alpha_ceiling * 1.0001, 1.0)
    assert past.selected == only_forget
    alpha = default_method_alpha("ssd", "digits", "class")
    _, report = dampen(ssd.model, ssd.imp_full, ssd.imp_forget, alpha, 1.0)
    assert alpha < ssd.alpha_ceiling and report.selected > only_forget
    if ssd.alpha_ceiling > lfssd_bound:  # what the old, shared ceiling got wrong: SSD selects past it
        _, beyond = dampen(ssd.model, ssd.imp_full, ssd.imp_forget, lfssd_bound * 1.01, 1.0)
        assert beyond.selected > only_forget


def test_histogram_splits_kept_and_dampened_at_alpha_and_labels_both_lines(prep):
    hist = ratio_histogram(prep.imp_full, prep.imp_forget)
    fig = ratio_histogram_figure(hist, 3.5, prep.alpha_ceiling)
    kept, dampened = fig.data
    assert max(kept.x) < math.log10(3.5) < min(dampened.x)
    _, report = dampen(prep.model, prep.imp_full, prep.imp_forget, 3.5, 1.0)
    in_bars = int(sum(c for c in dampened.y if c == c))  # NaN marks empty bins
    assert abs(in_bars + hist.only_forget - report.selected) <= int(max(hist.counts))  # up to one straddling bin
    lines = sorted(shape.x0 for shape in fig.layout.shapes if shape.type == "line")
    assert lines == pytest.approx(sorted([math.log10(3.5), math.log10(prep.alpha_ceiling)]))
    labels = {a.text: a.xanchor for a in fig.layout.annotations}
    assert labels == {"α = 3.5": "right", f"ceiling ≈ {prep.alpha_ceiling:.3g}": "left"}
    past = ratio_histogram_figure(hist, 10.0, prep.alpha_ceiling)  # α past the ceiling: the labels swap sides
    assert {a.text: a.xanchor for a in past.layout.annotations}["α = 10"] == "left"


def test_the_downloads_hold_the_dampened_model_and_the_shown_numbers(prep):
    import json

    from core.experiment import forget
    from core.models.registry import create_model, load_state, state_dict_from_bytes, weights_hash
    from ui.downloads import model_bytes, report_json

    outcome = forget(prep, 3.5, 1.0)
    fresh = create_model("small_cnn", prep.dataset.image_shape, prep.dataset.num_classes, seed=123)
    loaded = load_state(fresh, state_dict_from_bytes(model_bytes(outcome.model), "dampened.safetensors"), "x")
    assert weights_hash(loaded) == weights_hash(outcome.model) != weights_hash(prep.model)
    report = json.loads(report_json(prep, outcome, None))
    assert report["alpha"] == 3.5 and report["selected"] == outcome.report.selected
    assert report["forgotten"]["d_f"] == pytest.approx(outcome.result.d_f)
