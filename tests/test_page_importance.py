"""Importance maps: core/plots/importance.py on hand-made maps, then the page through AppTest."""
import math
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
import torch
from streamlit.testing.v1 import AppTest
from torch import nn

from core.plots import importance as ia
from core.cache import TensorCache
from core.errors import UserError
from core.experiment import ExperimentConfig, prepare

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PAGE = "views/importance.py"


def t(*values):
    return torch.tensor(values, dtype=torch.float32)


# --- selections and their overlap --------------------------------------------------------------

def test_overlap_counts_and_jaccard():
    full = {"w": t(1, 1, 1, 1, 1), "b": t(1, 0)}
    forget_a = {"w": t(5, 5, 1, 1, 1), "b": t(1, 1)}  # selects w0, w1 and b1 (I_D = 0 < I_Df)
    forget_b = {"w": t(5, 1, 5, 1, 1), "b": t(1, 0)}  # selects w0, w2; b1 has no signal
    table = ia.overlap_table(ia.selection_masks(full, forget_a, 2.0), ia.selection_masks(full, forget_b, 2.0))
    assert table.to_dict("records") == [
        {"layer": "w", "numel": 5, "both": 1, "only_a": 1, "only_b": 1},
        {"layer": "b", "numel": 2, "both": 0, "only_a": 1, "only_b": 0}]
    assert ia.jaccard(table) == pytest.approx(1 / 4)
    assert ia.overlap_summary(table, "A", "B") == (
        "A selects 3 elements and B 2: 1 by both, 2 by A only, 1 by B only (Jaccard 0.250).")


def test_selection_is_strict_and_nothing_selected_gives_nan_jaccard():
    full, forget = {"w": t(1, 1)}, {"w": t(2, 2.001)}
    assert ia.selection_masks(full, forget, 2.0)["w"].tolist() == [False, True]
    table = ia.overlap_table(ia.selection_masks(full, forget, 10.0), ia.selection_masks(full, forget, 10.0))
    assert math.isnan(ia.jaccard(table))
    assert "Neither" in ia.overlap_summary(table, "A", "B")
    assert "nothing selected" in ia.overlap_figure(table, "A", "B").layout.annotations[0].text


def test_overlap_refuses_different_parameters_and_bad_alpha():
    with pytest.raises(ValueError):
        ia.overlap_table({"a": torch.ones(2, dtype=torch.bool)}, {"b": torch.ones(2, dtype=torch.bool)})
    with pytest.raises(UserError, match="alpha"):
        ia.selection_masks({"w": t(1)}, {"w": t(1)}, -1.0)


def test_overlap_figure_stacks_shares_input_at_top():
    table = ia.overlap_table({"first": torch.tensor([True, True, False, False]), "last": torch.tensor([True, False])},
                             {"first": torch.tensor([True, False, True, False]), "last": torch.tensor([False, False])})
    fig = ia.overlap_figure(table, "LFSSD", "SSD")
    assert fig.layout.barmode == "stack" and [tr.name for tr in fig.data] == ["both", "only LFSSD", "only SSD"]
    assert list(fig.data[0].x) == [25.0, 0.0] and list(fig.data[1].x) == [25.0, 50.0]
    assert list(fig.layout.yaxis.categoryarray) == ["first", "last"] and fig.layout.yaxis.autorange == "reversed"


# --- the α line and the scatter -----------------------------------------------------------------

def test_alpha_line_is_log_alpha_above_the_diagonal():
    assert ia.alpha_line(10.0, np.array([-3.0, 2.0])).tolist() == [-2.0, 3.0]
    assert ia.alpha_line(3.5, np.array([0.0]))[0] == pytest.approx(math.log10(3.5))
    with pytest.raises(UserError):
        ia.alpha_line(0.0, np.array([0.0]))


def test_scatter_figure_draws_the_line_and_shades_the_selected_side():
    full = {"a": t(1, 10, 100), "b": t(0.1, 1)}
    sample = ia.scatter_sample(full, {"a": t(1, 100, 10), "b": t(1, 1)}, n=100)
    fig = ia.scatter_figure(sample, 5.0)
    line = fig.data[-1]
    assert [tr.name for tr in fig.data[:-1]] == ["a", "b"]
    assert np.allclose(np.asarray(line.y) - np.asarray(line.x), math.log10(5.0))
    assert fig.layout.shapes[0].fillcolor == ia.SELECTED and "selected" in fig.layout.annotations[0].text
    # the shaded polygon starts on the line: its first two corners are the line's end points
    corners = [tuple(map(float, p.split(","))) for p in fig.layout.shapes[0].path[2:].split(" Z")[0].split(" L ")]
    assert corners[:2] == list(zip(map(float, line.x), map(float, line.y)))


def test_zero_importances_are_counted_not_plotted():
    full = {"w": t(0, 0, 0, 1, 1, 2), "b": t(0, 3)}
    forget = {"w": t(0, 1, 2, 0, 1, 2), "b": t(0, 3)}
    sample = ia.scatter_sample(full, forget, n=1000)
    assert sample.sampled == 8
    assert (sample.only_forget, sample.only_full, sample.no_signal) == (2, 1, 2)
    assert sample.left_off == 5 and len(sample.points) == 3
    table = ia.distribution_table(full, forget)
    assert table.set_index(["layer", "importance"])["zeros"].to_dict() == {
        ("w", "I_D"): 3, ("w", "I_Df"): 2, ("b", "I_D"): 1, ("b", "I_Df"): 1}


def test_sampling_is_seeded_stratified_and_deterministic():
    gen = torch.Generator().manual_seed(0)
    full = {"big": torch.rand(20000, generator=gen), "bias": torch.rand(8, generator=gen)}
    forget = {name: v * 2 for name, v in full.items()}
    first, again = ia.scatter_sample(full, forget, n=500, seed=1), ia.scatter_sample(full, forget, n=500, seed=1)
    assert first.points.equals(again.points)
    assert not first.points.equals(ia.scatter_sample(full, forget, n=500, seed=2).points)
    assert first.points.layer.value_counts().to_dict() == {"big": 500, "bias": 8}  # small tensors kept whole
    assert ia.stratified_quotas([1000, 3000, 5], 400, floor=20) == [100, 300, 5]
    index = ia.sample_indices(10**6, 50, seed=0, stream=3)
    assert len(set(index.tolist())) == 50 and (np.diff(index) > 0).all()
    assert ia.sample_indices(5, 50, seed=0, stream=0).tolist() == [0, 1, 2, 3, 4]


def test_distribution_quantiles_and_figure_order():
    full = {"conv": torch.logspace(-3, 1, 101), "fc": torch.full((10,), 100.0)}
    table = ia.distribution_table(full, full, per_tensor=1000)
    row = table[(table.layer == "conv") & (table.importance == "I_D")].iloc[0]
    assert row.q50 == pytest.approx(-1.0) and row.q25 == pytest.approx(-2.0)
    fig = ia.distribution_figure(table)
    assert [tr.name for tr in fig.data] == ["log10 I_D", "log10 I_Df"]
    assert list(fig.layout.yaxis.categoryarray) == ["conv", "fc"]


def test_spearman_and_model_order():
    a = torch.tensor([[1.0, 5.0], [3.0, 2.0]])
    assert ia.spearman(a, a.exp()) == pytest.approx(1.0)
    assert ia.spearman(a, -a) == pytest.approx(-1.0)
    assert math.isnan(ia.spearman(torch.zeros(4), torch.arange(4.0)))
    assert ia.rank_table({"w": a}, {"w": a * 3}, {"w": a}, {"w": -a}).iloc[0].tolist() == ["w", 1.0, -1.0]

    class Prep:  # what in_model_order needs of a Prepared: the model and both maps
        model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
        imp_full = {name: torch.zeros(1) for name in sorted(["0.weight", "0.bias", "1.weight", "1.bias"])}
        imp_forget = dict(imp_full)
    full, forget = ia.in_model_order(Prep)
    assert list(full) == list(forget) == ["0.weight", "0.bias", "1.weight", "1.bias"]


def test_display_table_names_columns_for_people():
    table = ia.overlap_table({"w": torch.tensor([True, False])}, {"w": torch.tensor([True, True])})
    ranks = ia.rank_table({"w": t(1, 2)}, {"w": t(1, 3)}, {"w": t(1, 2)}, {"w": t(2, 1)})
    shown = ia.display_table(table, "batch", "sample", ranks)
    assert list(shown.columns) == ["layer", "elements", "both", "only batch", "only sample",
                                   "Spearman ρ of I_D", "Spearman ρ of I_Df"]
    assert shown.iloc[0].tolist() == ["w", 2, 1, 0, 1, pytest.approx(1.0), pytest.approx(-1.0)]


# --- the page -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def direct(cache_dir):
    """The default view's four experiments, prepared through core; this fills the disk cache the page
    then loads from, so page and test see the same model. One torch thread while training: on two
    busy cores, spinning intra-op threads made the first training several times slower."""
    cache, threads = TensorCache(cache_dir), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        prepared = {(kind, mode): prepare(ExperimentConfig(kind=kind, mode=mode), cache)
                    for kind in ("lfssd", "ssd") for mode in ("batch", "sample")}
    finally:
        torch.set_num_threads(threads)
    # experiments another module left in the process-wide caches came from another cache dir (and,
    # with another thread count, slightly different weights): the page must load ours
    st.cache_resource.clear()
    st.cache_data.clear()
    return prepared


@pytest.fixture
def app(cache_dir, direct, monkeypatch):
    monkeypatch.setenv("LFSSD_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return AppTest.from_file(APP, default_timeout=300)


def expected(direct, a, b, alpha):
    table = ia.overlap_table(ia.selection_masks(*ia.in_model_order(direct[a]), alpha),
                             ia.selection_masks(*ia.in_model_order(direct[b]), alpha))
    return table, f"{ia.jaccard(table):.3f}"


def metric(at, label_start):
    return next(m for m in at.metric if m.label.startswith(label_start))


def shown(at, label_a, label_b, direct, a, b, alpha):
    table, jaccard = expected(direct, a, b, alpha)
    assert metric(at, f"Jaccard index, {label_a} vs {label_b}").value == jaccard
    assert ia.overlap_summary(table, label_a, label_b) in [md.value for md in at.markdown]
    return table, jaccard


def test_default_view_shows_the_overlaps_core_computes(app, direct):
    app.switch_page(PAGE).run()
    assert not app.exception and not app.error
    assert len(app.get("plotly_chart")) == 4
    methods, j_methods = shown(app, "LFSSD", "SSD", direct, ("lfssd", "batch"), ("ssd", "batch"), 3.5)
    modes, _ = shown(app, "batch", "sample", direct, ("lfssd", "batch"), ("lfssd", "sample"), 3.5)
    assert methods.both.sum() > 0 and j_methods != "1.000"  # the default view has something to tell
    per_tensor = next(df.value for df in app.dataframe if "only sample" in df.value.columns)
    assert per_tensor["both"].tolist() == modes.both.tolist()
    assert per_tensor["layer"].tolist() == [n for n, _ in direct["lfssd", "batch"].model.named_parameters()]
    assert per_tensor["Spearman ρ of I_D"].between(-1, 1).all()


def test_changing_alpha_changes_the_overlaps(app, direct):
    app.switch_page(PAGE).run()
    before = metric(app, "Jaccard index, LFSSD vs SSD").value
    app.session_state["alpha"] = 2.0
    app.run()
    assert not app.exception and not app.error
    _, after = shown(app, "LFSSD", "SSD", direct, ("lfssd", "batch"), ("ssd", "batch"), 2.0)
    shown(app, "batch", "sample", direct, ("lfssd", "batch"), ("lfssd", "sample"), 2.0)
    assert after != before


def test_unlabelled_target_explains_why_ssd_is_missing(app):
    app.query_params["target"] = "images:test:3"
    app.switch_page(PAGE).run()
    assert not app.exception and not app.error
    assert any("SSD needs labels" in info.value for info in app.info)
    assert not [m for m in app.metric if "SSD" in m.label]
    assert metric(app, "Jaccard index, batch vs sample").value != "—"


def test_a_user_error_is_shown_not_raised(app, monkeypatch):
    from ui import compute

    def refuse(*args):
        raise UserError("unknown dataset 'cifar30'; choose one of: digits, mnist5k")
    monkeypatch.setattr(compute, "prepared", refuse)
    app.switch_page(PAGE).run()
    assert not app.exception
    assert app.error[0].value == "unknown dataset 'cifar30'; choose one of: digits, mnist5k"
