"""The α rules (core.method.alpha): ASSD as published, and ``auto``, on real models; the CLI's
``--alpha auto|assd`` on every target kind and both methods; the Auto control in AppTest."""
from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from core.cache import TensorCache
from core.compare.alpha_study import Case, run_case
from core.experiment import ExperimentConfig, choose_alpha, prepare
from core.method.alpha import ALPHA_RULES, AlphaProblem, assd_alpha

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def _problem(ratios: np.ndarray, n_forget: int, n_full: int) -> AlphaProblem:
    full = {"w": torch.ones(len(ratios), dtype=torch.float64)}
    forget = {"w": torch.tensor(ratios, dtype=torch.float64)}
    return AlphaProblem(full, forget, n_forget, n_full, 10.0, None, (None, None), None)


def test_assd_is_the_published_percentile():
    ratios = np.linspace(0.0, 10.0, 10_001)
    choice = assd_alpha(_problem(ratios, 100, 1000))  # |D_f|/|D| = 0.1: 100 − ln(11) ≈ 97.60th percentile
    expected = float(np.percentile(ratios, 100 - math.log(1 + 100 * 0.1)))
    assert choice.alpha == pytest.approx(expected, rel=2e-3) and choice.lambda_ == 1.0
    assert choice.rule == "assd" and "97.60th percentile" in choice.reason


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return TensorCache(tmp_path_factory.mktemp("alpha_cache"))


@pytest.mark.parametrize("target", ["class:3", "random:135:0"])
def test_auto_lands_where_a_sweep_finds_the_result_retrain_like(target, cache, one_torch_thread):
    """On a real model (digits, small CNN): the α auto picks is inside the window of α a sweep finds
    retrain-like (for a class: forgotten like the retrained model; for random samples: the same
    model, nothing singled out), and the result there is retrain-like."""
    result = run_case(Case("digits", "default", target), cache)
    auto = result["rules"]["auto"]
    window = [a for a, row in result["sweep"].items() if row["like"]]
    assert window, "the sweep finds no retrain-like α: the case cannot judge the rule"
    assert auto["like"], auto
    if auto["nothing"]:  # it chose to dampen nothing: then the top of the window (no dampening) is retrain-like
        assert auto["dampened"] < 1e-3 and max(window) >= max(result["sweep"])
    else:
        assert min(window) / 1.25 <= auto["alpha"] <= max(window) * 1.25, (auto["alpha"], window)
    assert auto["evaluations"] <= 20


def test_auto_says_why_and_shows_the_curve_it_read(cache, one_torch_thread):
    prepared = prepare(ExperimentConfig(forget="class:3"), cache)
    choice = choose_alpha(prepared, "auto")
    assert not choice.nothing and choice.alpha > 1 and choice.lambda_ >= 1
    assert f"α = {choice.alpha:.3g}" in choice.reason and "forget images" in choice.reason
    alphas = [row["alpha"] for row in choice.curve if row["lambda"] == 1.0]
    assert alphas == sorted(alphas, reverse=True) and choice.alpha in alphas
    picked = next(row for row in choice.curve if row["alpha"] == choice.alpha and row["lambda"] == 1.0)
    assert picked["forget_kept"] <= 0.05 and picked["rest_kept"] >= 0.98
    report = choice.as_dict()
    assert report["rule"] == "auto" and report["curve"] and report["diagnostics"]["evaluations"] >= 1


def _cli(*argv: str) -> tuple[int, str, str]:
    from core.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exit_:
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def png_folder(tmp_path_factory):
    from PIL import Image

    from core.data.registry import load_dataset

    folder = tmp_path_factory.mktemp("pngs")
    data = load_dataset("digits")
    for i in torch.nonzero(data.test_y == 5).flatten()[:6].tolist():
        Image.fromarray(data.test_x[i, 0].numpy()).resize((32, 32)).save(folder / f"five_{i}.png")
    return folder


@pytest.mark.parametrize("rule", ["auto", "assd"])
@pytest.mark.parametrize("kind", ["lfssd", "ssd"])
@pytest.mark.parametrize("target", ["class:3", "random:20:0", "images:test:3", "PNGS"])
def test_the_cli_takes_a_rule_for_every_target_and_method(rule, kind, target, png_folder, cache, one_torch_thread):
    if target == "PNGS":
        target = f"images:{png_folder}"
    code, out, err = _cli("forget", "--forget", target, "--kind", kind, "--alpha", rule.upper(),
                          "--cache-dir", str(cache.root), "--json")
    if kind == "ssd" and target.startswith("images:"):  # SSD needs labels: refused in one line
        assert code == 2 and err.count("\n") == 1 and err.startswith("error:"), err
        return
    assert code == 0, err
    result = json.loads(out)
    assert result["alpha_rule"]["rule"] == rule
    assert result["alpha"] == result["alpha_rule"]["alpha"] and result["lambda"] == result["alpha_rule"]["lambda"]
    assert result["alpha_rule"]["reason"]


def test_bad_rule_combinations_get_one_clear_line(cache):
    code, _, err = _cli("forget", "--alpha", "auto", "--lambda", "2", "--cache-dir", str(cache.root))
    assert code == 2 and err == "error: --alpha auto chooses λ too: leave out --lambda, or give α as a number\n"
    code, _, err = _cli("forget", "--alpha", "autox", "--cache-dir", str(cache.root))
    assert code == 2 and "'autox' is neither a number nor an α rule (assd, auto)" in err and err.count("\n") == 1
    assert set(ALPHA_RULES) == {"assd", "auto"}


# --- the Auto control --------------------------------------------------------------------------------

@pytest.fixture
def app(cache_dir, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("LFSSD_CACHE_DIR", str(cache_dir))
    return AppTest.from_file(APP, default_timeout=180).switch_page("views/forget.py")


def test_the_auto_control_sets_both_sliders_and_the_url(app, cache_dir):
    app.run()
    app.toggle(key="auto_toggle").set_value(True).run()
    assert not app.exception and not app.error
    expected = choose_alpha(prepare(ExperimentConfig(), TensorCache(cache_dir)), "auto")
    assert app.select_slider(key="alpha_slider").value == expected.alpha
    assert app.slider(key="lambda_slider").value == expected.lambda_
    assert app.query_params["alpha"] in ("auto", ["auto"])
    assert any(c.value.startswith("**Auto**: α = ") for c in app.caption)
    dampened = next(m for m in app.metric if m.label == "parameters dampened")
    assert dampened.value != "0.00 %"
    app.select_slider(key="alpha_slider").set_value(10.0).run()  # a slider move hands α back to the user
    assert app.toggle(key="auto_toggle").value is False
    assert app.query_params["alpha"] in ("10", ["10"])


def test_a_link_with_alpha_auto_reopens_with_the_rule_applied(app, cache_dir):
    app.query_params["alpha"] = "Auto"
    app.run()
    assert not app.exception and not app.error and not app.warning
    expected = choose_alpha(prepare(ExperimentConfig(), TensorCache(cache_dir)), "auto")
    assert app.toggle(key="auto_toggle").value is True
    assert app.select_slider(key="alpha_slider").value == expected.alpha
    assert app.query_params["alpha"] in ("auto", ["auto"])


def test_the_apps_report_names_the_rule_and_what_it_read(cache, one_torch_thread):
    from core.experiment import forget
    from ui.downloads import report_json

    prepared = prepare(ExperimentConfig(forget="class:3"), cache)
    choice = choose_alpha(prepared, "auto")
    report = json.loads(report_json(prepared, forget(prepared, choice.alpha, choice.lambda_), None, choice))
    assert (report["alpha"], report["lambda"]) == (choice.alpha, choice.lambda_)
    assert report["alpha_rule"]["rule"] == "auto" and report["alpha_rule"]["reason"] == choice.reason
    assert report["alpha_rule"]["curve"] and report["alpha_rule"]["diagnostics"]["evaluations"] >= 1
    assert json.loads(report_json(prepared, forget(prepared, 3.5, 1.0), None))["alpha_rule"] is None
