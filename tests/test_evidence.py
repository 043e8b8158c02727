"""Membership evidence (core.compare.evidence, views/evidence.py) on a real model: the one-pair ε
follows α, the challenge's score over N seed-varied models, the relearning probe, the CLI, and the
Evidence page in AppTest."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from core.cache import TensorCache
from core.compare.evidence import forget_score_over_models, pair_evidence, relearning_evidence
from core.evaluation.attacks import ATTACKS
from core.evaluation.evidence import LABEL_FREE, best_threshold
from core.experiment import ExperimentConfig, forget, prepare, retrained_model

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return TensorCache(tmp_path_factory.mktemp("evidence_cache"))


@pytest.fixture(scope="module")
def prepared(cache, one_torch_thread):
    return prepare(ExperimentConfig(forget="class:3"), cache)


def test_every_attack_is_declared_with_what_it_needs():
    assert ATTACKS.names() == ["entropy", "confidence", "forget_score", "relearning"]
    assert [n for n in ATTACKS if ATTACKS.get(n).default] == ["entropy"]
    for name in ATTACKS:
        attack = ATTACKS.get(name)
        assert attack.label and attack.measures and attack.needs


def test_best_threshold_separates_what_differs_and_not_what_does_not():
    rng = np.random.default_rng(0)
    same = best_threshold(rng.normal(0, 1, 300), rng.normal(0, 1, 300))
    apart = best_threshold(rng.normal(5, 1, 300), rng.normal(0, 1, 300))
    assert same.epsilon < 1.0 < apart.epsilon and 1.0 < apart.threshold < 4.0 and apart.above == "a"


def test_the_one_pair_epsilon_follows_alpha(prepared, cache):
    """Dampened at a working α, the forget examples look closer to the retrained model's than the
    untouched baseline's do; at an α that selects nothing they look exactly like the baseline's."""
    retrained = retrained_model(prepared, cache)
    working = pair_evidence(prepared, forget(prepared, 3.5, 1.0), retrained)
    nothing = pair_evidence(prepared, forget(prepared, 1000.0, 1.0), retrained)
    assert working.separation.epsilon < working.baseline_separation.epsilon
    assert nothing.separation.epsilon == pytest.approx(nothing.baseline_separation.epsilon)
    np.testing.assert_array_equal(nothing.dampened, nothing.baseline)
    assert working.recognised.mean() < 0.2 < nothing.recognised.mean()
    assert len(working.dampened) == len(working.retrained) == prepared.split.num_forget


def test_unlabelled_images_use_the_top_class_and_say_so(cache, one_torch_thread):
    unlabelled = prepare(ExperimentConfig(forget="images:test:3"), cache)
    pair = pair_evidence(unlabelled, forget(unlabelled, 3.5, 1.0), None)
    assert pair.statistic == LABEL_FREE and pair.retrained is None and pair.separation is None
    with pytest.raises(Exception, match="unlabelled images have"):
        relearning_evidence(unlabelled, 3.5, 1.0, cache)


def test_the_score_over_models_orders_what_it_should(cache, one_torch_thread):
    """N = 4 originals (seeds 0–3) and 4 retrained models: the untouched originals are told apart
    from the retrained models (F ≈ 0), a second set of retrained models is not (F > 0)."""
    config = ExperimentConfig(forget="class:3")
    untouched = forget_score_over_models(config, "baseline", models=4, cache=cache, workers=2)
    second = forget_score_over_models(config, "retrain", models=4, cache=cache, workers=2)
    dampened = forget_score_over_models(config, "lfssd", 3.5, 1.0, models=4, cache=cache, workers=2)
    assert untouched.forget_score < second.forget_score and untouched.forget_score <= 0.05
    assert 0 <= dampened.forget_score <= 1 and len(dampened.epsilons) == 137
    assert dampened.final_score == pytest.approx(dampened.forget_score * dampened.d_r / dampened.d_r_retrain
                                                 * dampened.test / dampened.test_retrain)
    with pytest.raises(Exception, match="at least 3 models"):
        forget_score_over_models(config, "lfssd", models=2, cache=cache)


def test_relearning_is_faster_for_a_model_only_dampened(prepared, cache):
    result = relearning_evidence(prepared, 3.5, 1.0, cache)
    dampened, retrained = result["curves"]["dampened"], result["curves"]["retrained"]
    assert dampened.accuracy[0] <= 10 and retrained.accuracy[0] <= 10  # both start forgotten
    assert dampened.gain > retrained.gain, (
        f"the dampened model relearnt no faster: {dampened.accuracy} against the retrained {retrained.accuracy}")
    assert result["ratio"] == pytest.approx(retrained.gain / dampened.gain) and result["ratio"] < 1


def test_a_model_that_never_forgot_gets_no_relearning_ratio(prepared, cache):
    """The untouched baseline gains ~nothing when fine-tuned on D_f (it still knows it): R = 1 would
    read as success, so there is no R, and the reason says why."""
    from core.compare.evidence import AgainstRetrained
    from core.evaluation.evidence import relearn_no_signal, relearn_ratio

    against = AgainstRetrained(prepared, retrained_model(prepared, cache))
    baseline = against.curve(prepared.model)
    assert baseline.accuracy[0] > 90 and relearn_ratio(baseline, against.reference_curve) is None
    assert relearn_no_signal(baseline, against.reference_curve).startswith("D_f is not forgotten")
    epsilon, ratio = against.measure(prepared.model)
    assert epsilon == 50 and ratio is None  # the original is told apart from the retrained model perfectly
    dampened = forget(prepared, 3.5, 1.0).model
    epsilon, ratio = against.measure(dampened)  # what Compare shows for LFSSD: the Evidence page's numbers
    live = relearning_evidence(prepared, 3.5, 1.0, cache)
    assert ratio == pytest.approx(live["ratio"]) and 0 < epsilon < 50


def test_the_cli_prints_the_views_numbers(prepared, cache):
    from core.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["evidence", "--forget", "class:3", "--alpha", "3.5", "--models", "3", "--workers", "2",
                     "--relearn-steps", "10", "--cache-dir", str(cache.root), "--json"])
    assert code == 0, err.getvalue()
    result = json.loads(out.getvalue())
    pair = pair_evidence(prepared, forget(prepared, 3.5, 1.0, evaluation="full"), retrained_model(prepared, cache))
    assert result["confidence"]["epsilon"] == pytest.approx(pair.separation.epsilon)
    assert result["entropy"]["dampened"] == forget(prepared, 3.5, 1.0).result.mia
    assert result["forget_score"]["lfssd"]["models"] == 3 and result["relearning"]["ratio"] is not None
    assert set(result["attacks"]) == set(ATTACKS)


# --- the page ------------------------------------------------------------------------------------------

@pytest.fixture
def page(cache_dir, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("LFSSD_CACHE_DIR", str(cache_dir))
    return AppTest.from_file(APP, default_timeout=300).switch_page("views/evidence.py")


def _metric(at, start: str) -> str:
    return next(m.value for m in at.metric if m.label.startswith(start))


def test_the_evidence_page_follows_alpha_and_caches_its_score(page):
    page.run()
    assert not page.exception and not page.error
    eps_before, hist_before = _metric(page, "ε, dampened vs retrained"), page.get("plotly_chart")[0].proto.spec
    page.select_slider(key="alpha_slider").set_value(10.0).run()
    assert _metric(page, "ε, dampened vs retrained") != eps_before
    assert page.get("plotly_chart")[0].proto.spec != hist_before  # the histograms moved with α
    page.number_input(key="ev_models").set_value(3).run()
    page.button(key="ev_score").click().run()
    assert not page.exception, page.exception
    first = _metric(page, "forgetting score F")
    assert any(c.value.startswith("Computed in") for c in page.caption)
    page.button(key="ev_score").click().run()
    assert _metric(page, "forgetting score F") == first
    assert any(c.value.startswith("Served from the cache") for c in page.caption)
