"""The Compare page through AppTest, checked against ``python -m core compare --json`` run as a real
subprocess on the same cache (same model, same seeds), and its pure helpers (core/plots/compare.py)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.plots import compare as cp
from core.compare.run import available_methods, summarize
from core.compare.methods import DEFAULT_COMPARISON, METHODS

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app.py")
METHODS_RUN = ["baseline", "finetune", "ssd", "lfssd"]  # cheap ones (retrain trains a model per run)
SCORES = ("d_r", "d_f", "test", "mia")
EVIDENCE = ("epsilon", "relearn_r")  # against the retrained reference, per run


def cli_compare(cache_dir, methods, repeats: int = 2, *extra: str) -> dict:
    """``python -m core compare`` as a user types it (α, λ for SSD/LFSSD as the app's sidebar has them)."""
    env = dict(os.environ, LFSSD_CACHE_DIR=str(cache_dir), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    alphas = {"ssd": 10, "lfssd": 3.5}  # each method's own default α, as the page uses them
    settings = [arg for m in ("ssd", "lfssd") if m in methods
                for arg in ("--set", f"{m}.alpha={alphas[m]:g}", "--set", f"{m}.lambda=1")]
    proc = subprocess.run([sys.executable, "-m", "core", "compare", "--dataset", "digits", "--forget", "class:3",
                           "--methods", ",".join(methods), "--repeats", str(repeats), *settings, *extra, "--json"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def expected_cells(cli: dict) -> dict[str, dict[str, str]]:
    """The paper table's score cells, formatted from the CLI's summary: {column: {row: text}}."""
    cells = {}
    for row in cli["summary"]:
        spread = METHODS.get(row["method"]).stochastic and row["runs"] > 1
        cells[cp.short_label(row["method"])] = {
            label: cp.mean_std(_nan(row[f"{stat}_mean"]), _nan(row[f"{stat}_std"]), spread)
            for stat, label in {**cp.SCORE_ROWS, **cp.EVIDENCE_ROWS}.items()}
    return cells


def _nan(value):
    return math.nan if value is None else value


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """See conftest: one torch thread keeps these page tests fast on a loaded 2-core machine."""


@pytest.fixture(scope="module")
def cli(cache_dir):
    return cli_compare(cache_dir, METHODS_RUN, 2)


@pytest.fixture
def page(cache_dir, monkeypatch):
    monkeypatch.setenv("LFSSD_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at = AppTest.from_file(APP, default_timeout=300)
    at.switch_page("views/compare.py")
    return at.run()


def frame(at: AppTest, column: str) -> pd.DataFrame:
    """The shown dataframe that has ``column`` (AppTest does not expose a dataframe's key)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def run_comparison(at: AppTest, methods, repeats: int = 2) -> AppTest:
    at.multiselect(key="cmp_methods").set_value(list(methods))
    at.number_input(key="cmp_repeats").set_value(repeats)
    at.button(key="cmp_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def test_opens_without_running_and_explains_what_each_method_needs(page):
    assert not page.exception and not page.error
    assert page.subheader[0].value.startswith("Compare methods — forgetting class 3")
    assert page.multiselect(key="cmp_methods").value == list(DEFAULT_COMPARISON)  # every method can run here
    assert page.number_input(key="cmp_repeats").value == 2 and page.toggle(key="cmp_paper").value is False
    assert any("Press **Run**" in i.value for i in page.info)
    assert not page.table and not page.get("plotly_chart")  # nothing computed before Run
    needs = frame(page, "here").set_index("method")
    assert list(needs.index) == [cp.short_label(m) for m in METHODS.names()]
    assert (needs["here"] == "runs").all() and needs.loc["LFSSD", "labels"] == False  # noqa: E712
    assert needs.loc["SSD", "labels"] and needs.loc["Amnesiac", "D_r"] and needs.loc["Retrain", "training"]


def test_table_equals_the_cli_for_the_same_seeds(page, cli):
    at = run_comparison(page, ["lfssd", "ssd", "baseline", "finetune"])  # any click order: the paper's column order
    table = at.table[0].value
    assert list(table.columns) == ["Baseline", "Finetune", "SSD", "LFSSD"]
    assert list(table.index) == [*cp.SCORE_ROWS.values(), *cp.EVIDENCE_ROWS.values(), *cp.DISTANCE_ROWS.values(),
                                 *cp.TIME_ROWS.values(), "needs"]
    for column, rows in expected_cells(cli).items():
        for row, text in rows.items():
            assert table.loc[row, column] == text, (row, column)
    assert "±" in table.loc["MIA (entropy attack)", "Finetune"] and "±" not in table.loc["D_r accuracy (%)", "SSD"]
    assert table.loc["needs", "LFSSD"] == "I_D" and table.loc["needs", "SSD"] == "labels, I_D"
    assert table.loc["needs", "Finetune"] == "labels, D_r, training" and table.loc["needs", "Baseline"] == "nothing"
    assert (table.loc["|D_f − D_f(retrain)|"] == "—").all()  # no retrain in this run
    # the field's attacks, against the retrained reference: the untouched model is told apart from it
    # perfectly and never forgot (no R, with the reason in the legend); LFSSD forgot, less separable
    assert table.loc["ε vs retrained (one pair)", "Baseline"] == "50.00"
    assert table.loc["relearning R", "Baseline"] == "—" and table.loc["relearning R", "LFSSD"] != "—"
    assert float(table.loc["ε vs retrained (one pair)", "LFSSD"]) < 50
    # every number, not just the two decimals shown: equal to the CLI's
    shown = frame(at, "d_r_mean").set_index("method")
    assert list(shown.index) == ["baseline", "finetune", "ssd", "lfssd"]
    for row in cli["summary"]:
        for stat in SCORES + EVIDENCE + ("retain_train", "forget_train"):
            for part in ("mean", "std"):
                assert shown.loc[row["method"], f"{stat}_{part}"] == pytest.approx(_nan(row[f"{stat}_{part}"]),
                                                                                 abs=1e-9, nan_ok=True)
    runs = frame(at, "repeat")
    cli_runs = pd.DataFrame(cli["runs"])
    assert len(runs) == len(cli_runs) == 8 and runs["seed"].tolist() == [0, 1] * 4
    merged = runs.merge(cli_runs, on=["method", "seed"], suffixes=("", "_cli"))
    for stat in SCORES + EVIDENCE:
        assert np.allclose(merged[stat].astype(float), merged[f"{stat}_cli"].astype(float), atol=1e-9, equal_nan=True)

    # the explanations sit beside the table: what each column (method) is, what each row means, which attack
    legend = "\n".join(m.value for m in at.markdown)
    assert "**The columns**" in legend and "**The rows**" in legend
    assert "**Finetune** (±)" in legend and "**LFSSD** —" in legend
    assert "entropy membership-inference attack** of Chundawat et al." in legend and "logistic regression" in legend
    summary = next(c.value for c in at.caption if c.value.startswith("2 runs per method"))
    assert "seeds 0–1" in summary and "app protocol, sample-weighted accuracy" in summary
    assert "MIA = the entropy attack" in summary and "Add Retrain" in summary
    assert len(at.get("plotly_chart")) == 2
    assert [b.proto.label for b in at.get("download_button")] == ["Download every run (CSV)",
                                                                  "Download the comparison (JSON)"]


def test_the_challenge_score_for_every_method_runs_on_a_button_and_equals_the_cli(page, cache_dir):
    at = run_comparison(page, ["baseline", "finetune", "lfssd"], 1)
    assert "challenge F (N models)" not in at.table[0].value.index  # nothing scored before the button
    at.number_input(key="cmp_models").set_value(3).run()
    at.button(key="cmp_score").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    table = at.table[0].value
    cli = cli_compare(cache_dir, ["baseline", "finetune", "lfssd"], 1, "--models", "3")
    for method, score in cli["forget_scores"].items():
        assert score["models"] == 3
        column = cp.short_label(method)
        assert table.loc["challenge F (N models)", column] == f"{score['forget_score']:.3f}"
        assert table.loc["challenge final score", column] == f"{score['final_score']:.3f}"
    assert table.loc["challenge F (N models)", "Baseline"] == "0.000"  # the untouched originals: always told apart
    assert any("N = 3" in c.value for c in at.caption)
    assert any(c.value == "Computed now: Baseline, Finetune, LFSSD" for c in at.caption)
    at.button(key="cmp_score").click().run()  # the second press: every method from the cache, same table
    assert at.table[0].value.equals(table)
    assert any(c.value == "Every method served from the cache" for c in at.caption)


def test_results_stay_for_their_settings_and_nothing_runs_without_run(page):
    at = run_comparison(page, ["baseline", "lfssd"], 1)
    assert list(at.table[0].value.columns) == ["Baseline", "LFSSD"]
    at.number_input(key="cmp_repeats").set_value(2).run()  # new settings: no table until Run
    assert not at.table and any("Press **Run**" in i.value for i in at.info)
    at.number_input(key="cmp_repeats").set_value(1).run()  # back: the cached result shows again
    assert list(at.table[0].value.columns) == ["Baseline", "LFSSD"] and not at.exception


def test_unlabelled_images_offer_only_what_can_run_and_say_why(cache_dir, monkeypatch):
    monkeypatch.setenv("LFSSD_CACHE_DIR", str(cache_dir))
    at = AppTest.from_file(APP, default_timeout=300)
    at.query_params["target"] = "images:test:3"  # class 3's test images, labels hidden
    at.query_params["method"] = "ssd"  # the sidebar's method does not matter here
    at.switch_page("views/compare.py").run()
    assert not at.exception and not at.error
    assert "unlabelled image(s)" in at.subheader[0].value
    assert at.multiselect(key="cmp_methods").options == ["Baseline", "LFSSD"]
    why = next(i.value for i in at.info if i.value.startswith("Not offered"))
    assert "**SSD** needs the forget set's labels" in why
    assert "**Amnesiac** need the forget set's labels and the retain set D_r" in why
    assert "**Retrain**" in why and "**Teacher** needs the retain set D_r" in why and "**LFSSD** needs neither" in why
    needs = frame(at, "here").set_index("method")
    assert needs.loc["LFSSD", "here"] == "runs" and needs.loc["SSD", "here"].startswith("can't: SSD needs")
    at = run_comparison(at, ["lfssd"], 1)
    table = at.table[0].value
    assert list(table.columns) == ["LFSSD"] and table.loc["D_f accuracy (%)", "LFSSD"] == "—"
    # The attack leaves the class the baseline gives these images out of both of its sides (else the
    # fit goes flat after forgetting and its sign is noise); the page says so, and the cell is the
    # CLI's number for the same target, or "—" with the reason when the fit still carried no signal.
    summary = next(c.value for c in at.caption if c.value.startswith("1 run per method"))
    assert "both without class 3 ('3'), which the baseline assigns the forget images to" in summary
    cli = cli_compare(cache_dir, ["lfssd"], 1, "--forget", "images:test:3")
    note = cli["runs"][0]["mia_note"]
    expected = expected_cells(cli)["LFSSD"]["MIA (entropy attack)"]
    assert table.loc["MIA (entropy attack)", "LFSSD"] == expected
    assert (expected == "—") == (note is not None)
    if note is not None:
        assert f"MIA gives no number for LFSSD (1 run(s)): {note}" in summary


def test_user_errors_are_messages(page):
    page.multiselect(key="cmp_methods").set_value([])
    page.button(key="cmp_run").click().run()
    assert not page.exception
    assert page.error[0].value == "choose at least one method to compare"
    page.session_state["target"] = "images:upload"  # the sidebar's upload, with nothing uploaded yet
    page.session_state["t_kind"], page.session_state["t_source"] = "images", "upload"
    page.run()
    assert not page.exception and not page.error and "Upload one or more images" in page.info[0].value


def test_paper_protocol_runs_in_batch_mode_with_batch_mean_accuracy(page, cache_dir):
    page.session_state["mode"] = "sample"  # the sidebar says sample; the paper protocol needs batch
    page.toggle(key="cmp_paper").set_value(True).run()
    assert not page.exception and not page.error
    assert any("batch-mode importance" in c.value for c in page.caption)
    at = run_comparison(page, ["baseline", "lfssd"], 1)
    summary = next(c.value for c in at.caption if c.value.startswith("1 run per method"))
    assert "paper protocol, batch-mean (64) accuracy" in summary
    cli = cli_compare(cache_dir, ["baseline", "lfssd"], 1, "--protocol", "paper")
    for column, rows in expected_cells(cli).items():
        for row, text in rows.items():
            assert at.table[0].value.loc[row, column] == text, (row, column)


# --- core/plots/compare.py ----------------------------------------------------------------------------

def fake_runs() -> pd.DataFrame:
    rows = []
    for method, d_r, d_f, mia, wall in (("baseline", 99.0, 98.0, 76.0, 0.001), ("retrain", 99.4, 0.0, 2.0, 8.0),
                                        ("lfssd", 99.2, 0.0, 0.0, 0.03)):
        for seed, jitter in enumerate((0.0, 1.0) if method == "retrain" else (0.0, 0.0)):
            rows.append({"method": method, "label": METHODS.get(method).label, "repeat": seed, "seed": seed,
                         "d_r": d_r + jitter, "d_f": d_f, "test": 98.0, "mia": mia + jitter, "retain_train": 99.0,
                         "forget_train": d_f, "wall_s": wall, "wall_incl_id_s": wall + (0.2 if method == "lfssd" else 0),
                         "d_r_split": "test", "d_f_split": "test", "accuracy": "sample-weighted"})
    return pd.DataFrame(rows)


def test_paper_table_formats_means_spreads_distances_and_needs():
    table = cp.paper_table(summarize(fake_runs()))
    assert list(table.columns) == ["Baseline", "Retrain", "LFSSD"]
    assert table.loc["D_r accuracy (%)", "Retrain"] == "99.90 ± 0.50"  # stochastic: mean ± population std
    assert table.loc["D_r accuracy (%)", "LFSSD"] == "99.20"  # deterministic: the value alone
    assert table.loc["|D_f − D_f(retrain)|", "Baseline"] == "98.00"
    assert table.loc["|MIA − MIA(retrain)|", "LFSSD"] == "2.50" and table.loc["|MIA − MIA(retrain)|", "Retrain"] == "0.00"
    assert table.loc["wall time (s)", "LFSSD"] == "0.030" and table.loc["wall time incl. I_D (s)", "LFSSD"] == "0.230"
    assert table.loc["wall time (s)", "Retrain"] == "8.00"
    assert table.loc["needs", "Retrain"] == "labels, D_r, training" and table.loc["needs", "Baseline"] == "nothing"
    no_retrain = cp.paper_table(summarize(fake_runs().query("method != 'retrain'")))
    assert (no_retrain.loc["|D_f − D_f(retrain)|"] == "—").all()


def test_mean_std_and_missing_values():
    assert cp.mean_std(1.234, 0.5, True) == "1.23 ± 0.50" and cp.mean_std(1.234, 0.5, False) == "1.23"
    assert cp.mean_std(math.nan, math.nan, True) == "—" and cp.mean_std(None, None, False) == "—"


def test_every_row_and_every_method_is_explained():
    explained = " ".join(row for row, _ in cp.ROW_MEANINGS)
    for label in [*cp.SCORE_ROWS.values(), *cp.DISTANCE_ROWS.values(), "wall time (s)", cp.NEEDS_ROW]:
        assert label in explained, label
    methods = [METHODS.get(n) for n in METHODS.names()]  # each declares its own column, colour and marker
    for attribute in ("column", "color", "symbol"):
        values = [getattr(m, attribute) for m in methods]
        assert len(set(values)) == len(values), (attribute, values)
    legend = cp.method_legend(METHODS.names())
    assert all(line.startswith(f"**{cp.short_label(m)}**") for line, m in zip(legend, METHODS.names()))
    assert ("(±)" in legend[METHODS.names().index("retrain")]) and "(±)" not in legend[METHODS.names().index("lfssd")]


def test_blocked_message_groups_by_what_is_missing():
    assert cp.blocked_message(available_methods(labelled=True)) is None
    text = cp.blocked_message(available_methods(labelled=False))
    assert "**SSD** needs the forget set's labels" in text and "**LFSSD** needs neither" in text
    assert "**Teacher** needs the retain set D_r" in text and "Baseline" not in text


def test_bars_figure_has_error_bars_and_the_retrain_line():
    summary = summarize(fake_runs())
    fig = cp.bars_figure(summary)
    assert len(fig.data) == 4 and [a.text for a in fig.layout.annotations][:4] == [
        "D_r accuracy (%)", "D_f accuracy (%)", "MIA (entropy attack)", "wall time incl. I_D (s)"]
    d_r = fig.data[0]
    assert list(d_r.y) == ["LFSSD", "Retrain", "Baseline"]  # first method at the top
    assert list(d_r.error_x.array) == [0.0, 0.5, 0.0]
    assert fig.layout.xaxis4.type == "log"
    assert sorted(s.x0 for s in fig.layout.shapes) == pytest.approx([0.0, 2.5, 99.9])  # retrain's D_r, D_f, MIA
    unlabelled = summary.assign(d_f_mean=np.nan, d_f_std=np.nan)
    assert any("no labels" in a.text for a in cp.bars_figure(unlabelled).layout.annotations)


def test_scatter_marks_the_retrained_model():
    fig = cp.scatter_figure(summarize(fake_runs()), fake_runs())
    means = [t for t in fig.data if t.name]
    assert [t.name for t in means] == ["Baseline", "Retrain", "LFSSD"]
    star = means[1]
    assert star.marker.symbol == "star" and star.x[0] == pytest.approx(2.5) and star.y[0] == pytest.approx(99.9)
    assert [s.line.dash for s in fig.layout.shapes] == ["dot", "dot"]  # cross-hairs through the star
    assert fig.layout.xaxis.title.text.startswith("MIA") and fig.layout.yaxis.title.text.startswith("D_r")
    head = fake_runs().replace({"method": {"retrain": "retrain_head"}})  # the reference code's retrain stands in
    stand_in = cp.scatter_figure(summarize(head, "retrain_head"), head, "retrain_head")
    assert [t.marker.symbol for t in stand_in.data if t.name] == ["square", "star", "circle"]
    assert len(cp.bars_figure(summarize(head, "retrain_head"), "retrain_head").layout.shapes) == 3


def test_comparison_record_is_json_with_nulls_for_nan():
    from core.compare.run import Comparison

    runs = fake_runs().query("method != 'retrain'")
    comparison = Comparison(runs, summarize(runs), {"lfssd": 0.2}, {"lfssd": {"alpha": 3.5, "lambda": 1.0}})
    record = json.loads(cp.comparison_json(comparison, dataset="digits"))
    assert record["dataset"] == "digits" and record["protocol"] == "app" and record["seeds"] == [0]
    assert record["summary"][0]["d_f_to_retrain"] is None and len(record["runs"]) == 4
