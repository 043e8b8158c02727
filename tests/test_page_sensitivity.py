"""The Sensitivity page through AppTest (values shown, not just no exception), and its pure helpers."""
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.plots import sensitivity as sp
from core.errors import UserError

APP = str(Path(__file__).resolve().parents[1] / "app.py")
DIGITS_DEFAULT_ALPHAS = [1, 1.5, 2, 2.5, 3, 3.5, 4, 5, 7, 10, 25, 50]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """See conftest: one torch thread keeps these page tests fast on a loaded 2-core machine."""


@pytest.fixture
def page(cache_dir, monkeypatch):
    monkeypatch.setenv("LFSSD_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at = AppTest.from_file(APP, default_timeout=300)
    at.switch_page("views/sensitivity.py")
    return at.run()


def sweep_table(at) -> pd.DataFrame:
    return next(d.value for d in at.dataframe if "selected_fraction" in d.value.columns)


def test_default_sweep_shows_the_grid_and_the_plateau(page):
    assert not page.exception and not page.error
    table = sweep_table(page)
    assert table["alpha"].tolist() == DIGITS_DEFAULT_ALPHAS
    assert (table["lambda"] == 1.0).all()
    selected = table["selected"].tolist()
    assert all(a >= b for a, b in zip(selected, selected[1:])) and selected[0] > 0 and selected[-1] == 0
    assert table.set_index("alpha").loc[3.5, "d_f"] <= 5.0 and table.set_index("alpha").loc[50, "d_f"] > 90
    text = page.success[0].value
    low, high = map(float, re.search(r"α from ([\d.]+) to ([\d.]+)", text).groups())
    assert low <= 3.5 <= high and high < 7
    assert "retrained" in text and "baseline" in text
    assert page.text_input(key="sens_lambdas").value == "0, 0.1, 0.25, 0.5, 1, 2, 5"
    assert page.get("download_button")[0].proto.label == "Download the α sweep (CSV)"
    assert len(page.get("plotly_chart")) == 3  # α sweep, λ sweep, heatmap


def test_editing_the_alpha_grid_reruns_the_sweep(page):
    page.text_input(key="sens_alphas").input("1,3.5,10").run()
    assert not page.exception and not page.error
    table = sweep_table(page)
    assert table["alpha"].tolist() == [1.0, 3.5, 10.0]
    assert table["selected"].is_monotonic_decreasing


def test_unlabelled_images_have_no_retrain_no_d_f_and_their_own_grid(cache_dir, monkeypatch):
    monkeypatch.setenv("LFSSD_CACHE_DIR", str(cache_dir))
    at = AppTest.from_file(APP, default_timeout=300)
    at.query_params["target"] = "images:test:3"  # the test images of class 3, labels hidden
    at.switch_page("views/sensitivity.py").run()
    assert not at.exception and not at.error
    assert "No retrained reference" in at.caption[0].value
    assert "no labels" in at.warning[0].value
    alphas = sweep_table(at)["alpha"].tolist()
    assert set(sp.PAPER_ALPHAS) <= set(alphas) and 15 in alphas  # |D|/|D_f| ≈ 30 here, so finer points up to 20
    assert at.selectbox(key="sens_heat_metric").options == ["D_r accuracy (%)", "MIA (entropy attack)"]


def test_a_bad_grid_is_an_error_message(page):
    page.text_input(key="sens_alphas").input("1,x").run()
    assert not page.exception
    assert "'x' in the α grid is not a number" in page.error[0].value
    assert not any("selected_fraction" in d.value.columns for d in page.dataframe)
    assert len(page.get("plotly_chart")) == 2  # the λ sweep and the heatmap still show


def test_table2_preset_shows_the_papers_numbers_beside_ours(page):
    page.session_state["lambda"] = 0.5  # the sidebar's λ (AppTest drops the sidebar's elements after switch_page)
    page.run()
    assert (sweep_table(page)["lambda"] == 0.5).all()
    page.button(key="sens_table2_button").click().run()
    assert not page.exception and not page.error
    assert page.text_input(key="sens_alphas").value == "1, 5, 10, 25, 50"
    assert page.session_state["lambda"] == 1.0
    assert sweep_table(page)["alpha"].tolist() == [1, 5, 10, 25, 50]
    paper = next(d.value for d in page.dataframe if "paper D_r" in d.value.columns)
    assert paper["paper D_r"].tolist() == [16.87, 74.72, 75.67, 76.10, 76.32]
    assert paper["paper D_f"].tolist() == [0, 0, 0, 0, 71.88]
    assert paper["paper MIA"].tolist() == [26.6, 0, 0, 0, 29.4]
    assert paper["ours D_r"].notna().all() and paper.loc[4, "ours D_f"] > 90  # α = 50 forgets nothing here
    assert any("CIFAR-100" in c.value and "digits" in c.value for c in page.caption)


# --- core/plots/sensitivity.py ------------------------------------------------------------------------

def test_default_alphas_suit_the_data_set():
    assert list(sp.default_alphas(22 / 3)) == DIGITS_DEFAULT_ALPHAS  # digits class 3, batch mode: 22 / 3 batches
    wide = sp.default_alphas(97.75)  # CIFAR-100, one class: 782 / 8 batches
    assert set(sp.PAPER_ALPHAS) <= set(wide) and {15, 35, 75} <= set(wide) and 100 not in wide
    assert sp.heatmap_alphas(22 / 3) == (1.0, 1.5, 2.0, 3.5, 5.0, 7.5)


@pytest.mark.parametrize("text, message", [("1,x", "'x' in the α grid is not a number"), ("", "empty"),
                                           ("1, 0", "> 0"), ("1, -2", "> 0"), ("nan", "finite")])
def test_parse_grid_rejects_bad_input(text, message):
    with pytest.raises(UserError, match=re.escape(message)):
        sp.parse_grid(text, "α")


def test_parse_grid_sorts_dedupes_and_allows_zero_lambda():
    assert sp.parse_grid(" 10, 1;3.5,1, ") == (1.0, 3.5, 10.0)
    assert sp.parse_grid("0, 0.5", "λ", allow_zero=True) == (0.0, 0.5)
    with pytest.raises(UserError, match="at most"):
        sp.parse_grid(",".join(str(i) for i in range(1, 50)))


def sweep_rows(alphas, d_r, d_f, lambda_=1.0):
    return pd.DataFrame({"alpha": alphas, "lambda": lambda_, "selected": range(len(alphas), 0, -1),
                         "selected_fraction": 0.01, "d_r": d_r, "d_f": d_f, "test": 90.0, "mia": 0.0,
                         "retain_train": 99.0, "forget_train": 0.0})


def test_plateau_is_the_widest_run_meeting_both_rules():
    table = sweep_rows([1, 2, 3, 4, 5, 7, 10], d_r=[80, 98, 99, 99, 99, 99, 99], d_f=[0, 0, 3, 4.9, 20, 97, 98])
    found = sp.plateau(table.sample(frac=1, random_state=0), baseline_d_r=99.0, retrain_d_f=0.0)  # order-free
    assert (found.low, found.high, found.points) == (2, 4, 3)
    assert found.contains(3.5) and not found.contains(5)
    assert (found.d_f_limit, found.d_r_limit) == (5.0, 97.0)
    # two runs: the wider one wins
    split = sweep_rows([1, 2, 3, 4, 5], d_r=[99, 90, 99, 99, 99], d_f=[0, 0, 0, 0, 50])
    assert (sp.plateau(split, 99.0, 0.0).low, sp.plateau(split, 99.0, 0.0).high) == (3, 4)


def test_plateau_without_retrain_uses_ten_percent_and_none_without_labels():
    table = sweep_rows([1, 2, 3], d_r=[99, 99, 99], d_f=[9.5, 12, 50])
    assert sp.plateau(table, 99.0, None) == sp.Plateau(1, 1, 1, 10.0, 97.0)
    assert "α = 1 (1 grid point)" in sp.plateau_sentence(sp.plateau(table, 99.0, None), None, 99.0)
    assert sp.plateau(sweep_rows([1, 2], [99, 99], [None, None]), 99.0, None) is None
    assert sp.plateau(sweep_rows([1, 2], [50, 50], [0, 0]), 99.0, 0.0) is None
    assert sp.plateau_sentence(None, 0.0, 99.0).startswith("No plateau on this grid")
    assert "no labels" in sp.plateau_sentence(None, None, 99.0, labelled=False)


def test_plateau_needs_something_dampened():
    """Random forgetting: D_f of the retrained model is near the baseline's, so only selection tells."""
    table = sweep_rows([1, 2, 5, 10], d_r=[98, 99, 99, 99], d_f=[97, 100, 100, 100]).assign(selected=[50, 3, 0, 0])
    assert (sp.plateau(table, 99.0, 96.0).low, sp.plateau(table, 99.0, 96.0).high) == (1, 2)


def test_table2_comparison_lines_up_alphas_and_leaves_gaps():
    ours = pd.concat([sweep_rows([1, 5, 50], [50, 98, 99], [0, 0, 97]), sweep_rows([5], [1], [1], lambda_=0.5)])
    table = sp.table2_comparison(ours)
    assert table["α"].tolist() == [1, 5, 10, 25, 50]
    assert table["ours D_r"].tolist()[:2] == [50, 98] and math.isnan(table.loc[2, "ours D_r"])
    assert table.loc[4, ["paper D_r", "paper D_f", "paper MIA"]].tolist() == [76.32, 71.88, 29.4]


def test_alpha_sweep_figure_has_log_alpha_reference_lines_and_plateau():
    table = sweep_rows([1, 2, 3, 4, 5, 7], d_r=[80, 98, 99, 99, 99, 99], d_f=[0, 0, 3, 4, 20, 97])
    base, retrain = SimpleNamespace(d_r=99.0, d_f=97.0, mia=75.0), SimpleNamespace(d_r=99.5, d_f=0.0, mia=2.0)
    found = sp.plateau(table, base.d_r, retrain.d_f)
    fig = sp.alpha_sweep_figure(table, base, retrain, found)
    assert fig.layout.xaxis.type == "log" and fig.layout.xaxis4.type == "log"
    dashed = [t for t in fig.data if t.line.dash == "dash"]
    assert sorted({t.y[0] for t in dashed}) == [0.0, 2.0, 75.0, 97.0, 99.0, 99.5]  # 3 metrics × 2 references
    assert len(fig.layout.shapes) == 4  # the plateau shaded in every panel
    assert all(shape.x0 < 2 < 4 < shape.x1 < 5 for shape in fig.layout.shapes)
    assert not sp.alpha_sweep_figure(table, base).layout.shapes  # no plateau given, none drawn


def test_lambda_and_heatmap_figures():
    table = pd.concat([sweep_rows([1, 2, 3], [99] * 3, [0, 10, 90], lambda_=lam) for lam in (0.0, 1.0)])
    heat = sp.heatmap_figure(table, "d_f")
    assert list(heat.data[0].x) == ["1", "2", "3"] and list(heat.data[0].y) == ["0", "1"]
    assert heat.data[0].z.tolist() == [[0, 10, 90], [0, 10, 90]]
    with pytest.raises(UserError, match="unknown metric"):
        sp.heatmap_figure(table, "loss")
    lam = sp.lambda_sweep_figure(sweep_rows([3.5] * 3, [99] * 3, [0, 5, 80]).assign(**{"lambda": [0, 1, 5]}),
                                 SimpleNamespace(d_r=99, d_f=97, mia=75), SimpleNamespace(d_r=99, d_f=0, mia=2))
    assert list(lam.data[0].x) == ["0", "1", "5"] and lam.layout.xaxis.type == "category"
