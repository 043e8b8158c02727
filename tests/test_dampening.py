"""Equation 1's edges: strict >, I_D = 0, the cap when λ > α, |θ| never grows, input untouched."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from core import dampen
from core.method.dampening import plan_dampening, ratio_histogram
from core.errors import UserError


def one_param_model(values):
    model = nn.Linear(len(values), 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([values], dtype=torch.float32))
    return model


def imp(values):
    return {"weight": torch.tensor([values], dtype=torch.float32)}


def weights(model):
    return model.weight.detach()[0].tolist()


def test_strict_greater_than():
    model = one_param_model([1.0, 1.0, 1.0])
    damped, report = dampen(model, imp([1.0, 1.0, 1.0]), imp([2.0, 2.0001, 1.9]), alpha=2.0, lambda_=1.0)
    assert report.selected == 1  # exactly 2·I_D is not selected
    assert weights(damped)[0] == 1.0 and weights(damped)[2] == 1.0
    assert weights(damped)[1] == pytest.approx(1.0 / 2.0001)


def test_zero_full_importance_zeroes_the_parameter():
    damped, report = dampen(one_param_model([3.0, -2.0]), imp([0.0, 1.0]), imp([0.5, 0.5]), alpha=1.0, lambda_=1.0)
    assert report.selected == 1
    assert weights(damped) == [0.0, -2.0]


def test_no_gradient_anywhere_is_never_selected():
    damped, report = dampen(one_param_model([3.0]), imp([0.0]), imp([0.0]), alpha=0.001, lambda_=1.0)
    assert report.selected == 0 and weights(damped) == [3.0]


def test_beta_is_capped_at_one_when_lambda_exceeds_alpha():
    # ratio 2 > α = 1 selects; β = min(λ·I_D/I_Df, 1) = min(5·0.5, 1) = 1: the weight stays
    damped, report = dampen(one_param_model([4.0, 4.0]), imp([1.0, 1.0]), imp([2.0, 20.0]), alpha=1.0, lambda_=5.0)
    assert report.selected == 2
    assert weights(damped) == [4.0, pytest.approx(4.0 * 0.25)]
    assert report.layers[0].beta_max == 1.0


def test_beta_below_lambda_over_alpha():
    damped, report = dampen(one_param_model([1.0] * 4), imp([1.0] * 4), imp([3.0, 5.0, 10.0, 100.0]), alpha=2.5, lambda_=0.5)
    assert report.selected == 4
    assert report.layers[0].beta_max < 0.5 / 2.5


@pytest.mark.parametrize("alpha,lambda_", [(1.0, 1.0), (0.7, 0.3), (3.0, 5.0), (1.5, 0.0)])
def test_plan_matches_equation_1_written_out_bit_for_bit(alpha, lambda_):
    """β computed in one buffer and the report's statistics taken without gathering equal the
    formula written out, including zeros in either map (0/0 and x/0 where nothing is selected)."""
    gen = torch.Generator().manual_seed(7)
    full = torch.rand(5, 40, generator=gen) * (torch.rand(5, 40, generator=gen) > 0.2)
    forget = torch.rand(5, 40, generator=gen) * 3 * (torch.rand(5, 40, generator=gen) > 0.2)
    full[4], forget[4] = 1.0, 0.5  # a tensor-row where nothing is selected
    plan = plan_dampening(["w"], {"w": full}, {"w": forget}, alpha, lambda_)
    selected = forget > alpha * full
    written_out = torch.where(selected, (lambda_ * full / forget).clamp(max=1.0), torch.ones_like(full))
    chosen = written_out[selected]
    assert torch.equal(plan.selected["w"], selected) and torch.equal(plan.betas["w"], written_out)
    layer = plan.report.layers[0]
    assert layer.selected == int(selected.sum()) > 0
    assert (layer.beta_min, layer.beta_max) == (float(chosen.min()), float(chosen.max()))
    assert layer.beta_mean == pytest.approx(float(chosen.double().mean()), rel=1e-12, abs=1e-12)
    counts_only = plan_dampening(["w"], {"w": full}, {"w": forget}, alpha, lambda_, beta_stats=False)
    assert torch.equal(counts_only.betas["w"], written_out) and torch.equal(counts_only.selected["w"], selected)
    bare = counts_only.report.layers[0]
    assert (bare.selected, bare.numel) == (layer.selected, layer.numel)
    assert (bare.beta_mean, bare.beta_min, bare.beta_max) == (None, None, None)


def test_a_tensor_with_nothing_selected_is_left_out_of_the_plan():
    plan = plan_dampening(["a", "b"], {"a": torch.ones(3), "b": torch.ones(3)},
                          {"a": torch.tensor([0.5, 0.0, 1.0]), "b": torch.tensor([0.0, 4.0, 1.0])}, 1.0, 1.0)
    assert plan.changed == ["b"] and plan.report.selected == 1
    assert math.isnan(plan.report.layers[0].beta_mean) and plan.report.layers[1].beta_mean == 0.25


def test_input_model_is_untouched_and_a_new_model_is_returned():
    model = one_param_model([1.0, 2.0])
    damped, _ = dampen(model, imp([0.0, 0.0]), imp([1.0, 1.0]), alpha=1.0, lambda_=1.0)
    assert damped is not model
    assert weights(model) == [1.0, 2.0] and weights(damped) == [0.0, 0.0]


@pytest.mark.parametrize("alpha,lambda_,message", [
    (0.0, 1.0, "alpha must be"), (-1.0, 1.0, "alpha must be"), (math.nan, 1.0, "alpha must be"),
    (math.inf, 1.0, "alpha must be"), (1.0, -1.0, "lambda must be"), (1.0, math.nan, "lambda must be"),
])
def test_bad_hyperparameters_are_user_errors(alpha, lambda_, message):
    with pytest.raises(UserError, match=message):
        dampen(one_param_model([1.0]), imp([1.0]), imp([2.0]), alpha, lambda_)


def test_importance_maps_for_another_model_are_refused():
    with pytest.raises(UserError, match="do not match"):
        dampen(one_param_model([1.0]), {"other": torch.ones(1)}, {"other": torch.ones(1)}, 1.0, 1.0)


@settings(max_examples=60, deadline=None)
@given(
    theta=st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=8),
    data=st.data(),
    alpha=st.floats(1e-3, 100), lambda_=st.floats(0, 100),
)
def test_abs_theta_never_grows_and_unselected_stay_bitwise(theta, data, alpha, lambda_):
    n = len(theta)
    nonneg = st.lists(st.floats(0, 1e3, allow_nan=False), min_size=n, max_size=n)
    full, forget = data.draw(nonneg), data.draw(nonneg)
    model = one_param_model(theta)
    damped, report = dampen(model, imp(full), imp(forget), alpha, lambda_)
    before, after = model.weight.detach()[0], damped.weight.detach()[0]
    assert torch.all(after.abs() <= before.abs())
    unselected = ~(torch.tensor([forget]) > alpha * torch.tensor([full]))[0]
    assert torch.equal(after[unselected], before[unselected])
    assert report.selected == int((~unselected).sum())


def test_ratio_histogram_counts_every_element():
    full = {"a": torch.tensor([1.0, 0.0, 0.0, 2.0, 1.0]), "b": torch.tensor([[1.0, 1.0]])}
    forget = {"a": torch.tensor([10.0, 1.0, 0.0, 0.0, 1.0]), "b": torch.tensor([[0.001, 100.0]])}
    hist = ratio_histogram(full, forget, bins=10, lo=-4, hi=4)
    assert hist.total == 7
    assert (hist.only_forget, hist.no_signal, hist.only_full) == (1, 1, 1)
    expected = np.zeros(10, dtype=np.int64)
    for log_ratio in (1.0, 0.0, -3.0, 2.0):  # a[0], a[4], b[0], b[1]
        expected[np.searchsorted(hist.edges, log_ratio, side="right") - 1] += 1
    assert hist.counts.tolist() == expected.tolist()
