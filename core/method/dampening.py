"""Equation 1 of the paper, applied to a copy of the model, with a report of what it selected.

For every element i:  if I_Df,i > α·I_D,i (strict), θ_i ← θ_i · min(λ·I_D,i / I_Df,i, 1).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from core.errors import UserError

Importance = dict[str, torch.Tensor]


def check_alpha(value, name: str = "alpha") -> float:
    """α as a float: the one place it is checked (the engine, the CLI, the methods' parameters and
    the app's URL all call this), with one message naming ``name``."""
    return _number(value, name, "a finite number > 0", lambda v: v > 0)


def check_lambda(value, name: str = "lambda") -> float:
    """λ as a float, checked like α (λ = 0 zeroes every selected element)."""
    return _number(value, name, "a finite number >= 0", lambda v: v >= 0)


def _number(value, name: str, rule: str, ok) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or not ok(number):
        shown = value if isinstance(value, (int, float)) and not isinstance(value, bool) else repr(value)
        raise UserError(f"{name} must be {rule}, got {shown}")
    return number


def validate_hyperparameters(alpha: float, lambda_: float) -> None:
    """α must be a finite number > 0; λ a finite number >= 0."""
    check_alpha(alpha)
    check_lambda(lambda_)


@dataclass(frozen=True)
class LayerReport:
    name: str
    numel: int
    selected: int
    # β over the selected elements: nan when none is selected, None when not asked for (a sweep
    # needs only the counts, and these cost more than the selection itself)
    beta_mean: float | None
    beta_min: float | None
    beta_max: float | None

    @property
    def fraction(self) -> float:
        return self.selected / self.numel if self.numel else 0.0


@dataclass(frozen=True)
class DampeningReport:
    alpha: float
    lambda_: float
    layers: tuple[LayerReport, ...]

    @property
    def selected(self) -> int:
        return sum(layer.selected for layer in self.layers)

    @property
    def numel(self) -> int:
        return sum(layer.numel for layer in self.layers)

    @property
    def fraction(self) -> float:
        return self.selected / self.numel if self.numel else 0.0

    def to_rows(self) -> list[dict]:
        return [{"layer": l.name, "numel": l.numel, "selected": l.selected, "fraction": l.fraction,
                 "beta_mean": l.beta_mean, "beta_min": l.beta_min, "beta_max": l.beta_max} for l in self.layers]


def selected_mask(imp_full: torch.Tensor, imp_forget: torch.Tensor, alpha: float) -> torch.Tensor:
    """Equation 1's selection for one tensor: I_Df > α·I_D, strictly."""
    return imp_forget > alpha * imp_full


def selection(imp_full: torch.Tensor, imp_forget: torch.Tensor, alpha: float, lambda_: float):
    """(selected mask, β) for one tensor; β is exactly 1 where not selected."""
    selected = selected_mask(imp_full, imp_forget, alpha)
    return selected, _beta(imp_full, imp_forget, selected, lambda_)


def _beta(imp_full: torch.Tensor, imp_forget: torch.Tensor, selected: torch.Tensor, lambda_: float) -> torch.Tensor:
    """min(λ·I_D / I_Df, 1) where selected, 1 elsewhere (where I_Df may be 0), computed in one
    buffer: the same products and quotients as written out, so the same values bit for bit."""
    return (lambda_ * imp_full).div_(imp_forget).clamp_(max=1.0).masked_fill_(~selected, 1.0)


@dataclass(frozen=True, eq=False)
class DampeningPlan:
    """What (α, λ) does to each parameter tensor: the report, and β for every tensor holding at
    least one selected element (tensors left out stay exactly as they are)."""

    report: DampeningReport
    betas: dict[str, torch.Tensor]  # name -> β (1 where not selected), only for changed tensors
    selected: dict[str, torch.Tensor]  # name -> bool mask, same keys

    @property
    def changed(self) -> list[str]:
        return list(self.betas)


def plan_dampening(names, imp_full: Importance, imp_forget: Importance, alpha: float,
                   lambda_: float, beta_stats: bool = True) -> DampeningPlan:
    """Equation 1 for the parameter tensors ``names`` (in model order); nothing is modified.
    The importances may live on any device; β comes back on theirs. ``beta_stats=False`` leaves
    the report's β mean, min and max as None (counts only)."""
    validate_hyperparameters(alpha, lambda_)
    layers, betas, masks = [], {}, {}
    for name in names:
        full, forget = imp_full[name], imp_forget[name]
        selected = selected_mask(full, forget, alpha)
        count = int(selected.count_nonzero())
        if not count:  # β would be 1 everywhere: not computed
            layers.append(LayerReport(name, selected.numel(), 0, math.nan, math.nan, math.nan))
            continue
        betas[name], masks[name] = _beta(full, forget, selected, lambda_), selected
        layers.append(_layer_report(name, selected, betas[name], count) if beta_stats
                      else LayerReport(name, selected.numel(), count, None, None, None))
    return DampeningPlan(DampeningReport(float(alpha), float(lambda_), tuple(layers)), betas, masks)


def dampened_value(param: torch.Tensor, beta: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """θ·β, the one product every path uses (so a copy and a reused buffer agree bit for bit)."""
    return torch.mul(param, beta.to(device=param.device, dtype=param.dtype), out=out)


def dampen(model: nn.Module, imp_full: Importance, imp_forget: Importance, alpha: float,
           lambda_: float, plan: DampeningPlan | None = None) -> tuple[nn.Module, DampeningReport]:
    """Return (a dampened copy of ``model``, a report). ``model`` itself is never modified.
    ``plan``: one already made for these maps and (α, λ), so it is not computed twice."""
    validate_hyperparameters(alpha, lambda_)
    _check_keys(model, imp_full, imp_forget)
    names = [name for name, _ in model.named_parameters()]
    plan = plan or plan_dampening(names, imp_full, imp_forget, alpha, lambda_)
    damped = copy.deepcopy(model)
    params = dict(damped.named_parameters())
    with torch.no_grad():
        for name, beta in plan.betas.items():
            dampened_value(params[name], beta, out=params[name])
    return damped, plan.report


def selected_betas(imp_full: Importance, imp_forget: Importance, alpha: float, lambda_: float) -> np.ndarray:
    """β of every selected element (for a histogram), as one flat array."""
    validate_hyperparameters(alpha, lambda_)
    parts = []
    for name in imp_full:
        selected, beta = selection(imp_full[name], imp_forget[name], alpha, lambda_)
        parts.append(beta[selected].flatten())
    return torch.cat(parts).cpu().numpy() if parts else np.zeros(0, dtype=np.float32)


def _check_keys(model: nn.Module, *maps: Importance) -> None:
    expected = {name for name, _ in model.named_parameters()}
    for imp in maps:
        missing = expected - set(imp)
        if missing:
            raise UserError(f"the importance maps do not match this model (missing {', '.join(sorted(missing)[:4])})")


def _layer_report(name: str, selected: torch.Tensor, beta: torch.Tensor, count: int) -> LayerReport:
    """Mean, min and max of β over the ``count`` (≥ 1) selected elements, without gathering them
    (a boolean gather costs more than everything else in a plan): β is 1 elsewhere and never
    above 1, so its smallest value is the selection's, and its sum over the selection is its
    whole sum (in float64) less one per element left out."""
    total = float(beta.sum(dtype=torch.float64)) - (beta.numel() - count)
    top = float(beta.where(selected, 0.0).max())  # β ≥ 0
    return LayerReport(name, selected.numel(), count, total / count, float(beta.min()), top)


@dataclass(frozen=True)
class RatioHistogram:
    """Counts of log10(I_Df / I_D) over every element, in fixed bins.

    ``only_forget``: I_D = 0 < I_Df (ratio +∞, selected at any α); ``no_signal``: both zero
    (never selected). ``selected_at(α)`` counts the elements with ratio > α from the bins.
    """

    edges: np.ndarray  # (B+1,) log10 ratio
    counts: np.ndarray  # (B,)
    only_forget: int
    no_signal: int
    only_full: int  # I_Df = 0 < I_D (ratio 0, never selected)

    @property
    def total(self) -> int:
        return int(self.counts.sum()) + self.only_forget + self.no_signal + self.only_full


def ratio_histogram(imp_full: Importance, imp_forget: Importance, bins: int = 120,
                    lo: float = -6.0, hi: float = 4.0) -> RatioHistogram:
    """Histogram of log10(I_Df/I_D) over every parameter element, clipped into [lo, hi]."""
    counts = torch.zeros(bins, dtype=torch.int64)
    only_forget = no_signal = only_full = 0
    for name in imp_full:
        full, forget = imp_full[name].flatten().double(), imp_forget[name].flatten().double()
        both = (full > 0) & (forget > 0)
        only_forget += int(((full == 0) & (forget > 0)).sum())
        no_signal += int(((full == 0) & (forget == 0)).sum())
        only_full += int(((full > 0) & (forget == 0)).sum())
        log_ratio = torch.log10(forget[both] / full[both]).clamp(lo, hi - 1e-9)
        counts += torch.histc(log_ratio, bins=bins, min=lo, max=hi).to(torch.int64).cpu()
    return RatioHistogram(np.linspace(lo, hi, bins + 1), counts.numpy(), only_forget, no_signal, only_full)
