"""Choosing α (and λ) without labels and without retraining: the α rules, a family.

A rule reads only what needs no label and no retrained model: the importances I_D and I_Df, the
sizes |D_f| and |D|, and the outputs of the model, dampened at candidate (α, λ), on the forget
images and on a fixed sample of D (``AlphaProblem.outputs``; the caller evaluates them, cheaply,
from the first dampened stage on). So every rule works on uploaded images too.

- ``assd``: Schoepf et al. 2024 (arXiv 2402.10098), the published tuning-free rule: α is the
  (100 − ln(1 + 100·|D_f|/|D|))-th percentile of I_Df/I_D over the elements with I_D > 0; λ = 1.
- ``auto``: ours; see ``auto_alpha``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from core.registry import Registry

Importance = dict  # name -> tensor (core.method.importance.Importance)
Outputs = Callable[[float, float], "tuple[np.ndarray, np.ndarray]"]  # (α, λ) -> (forget probs, D-sample probs)


@dataclass(frozen=True, eq=False)
class AlphaProblem:
    imp_full: Importance
    imp_forget: Importance
    n_forget: int
    n_full: int
    ceiling: float  # where I_Df/I_D runs out (≈ |D|/|D_f|): α above it dampens next to nothing
    outputs: Outputs  # softmax of the dampened model on (the forget images, the D sample)
    baseline: tuple[np.ndarray, np.ndarray]  # the same for the untouched model
    selected: Callable[[float], int]  # how many elements α selects


@dataclass(frozen=True)
class AlphaChoice:
    rule: str
    alpha: float
    lambda_: float
    reason: str  # one sentence, for the app and the CLI
    nothing: bool = False  # the rule chose to dampen (almost) nothing
    curve: tuple[dict, ...] = ()  # what the rule measured as α varied (for plots and the JSON report)
    diagnostics: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"rule": self.rule, "alpha": self.alpha, "lambda": self.lambda_, "reason": self.reason,
                "dampens_nothing": self.nothing, "curve": list(self.curve), "diagnostics": self.diagnostics}


@dataclass(frozen=True)
class AlphaRule:
    name: str
    label: str
    help: str
    choose: Callable[[AlphaProblem], AlphaChoice]


ALPHA_RULES: Registry[AlphaRule] = Registry("α rule")


def _round(alpha: float) -> float:
    """Three significant digits: what the slider, the URL and the CLI show is the α applied."""
    return float(f"{alpha:.3g}")


def finite_ratios(imp_full: Importance, imp_forget: Importance) -> np.ndarray:
    """I_Df/I_D of every element with I_D > 0, as one float64 array."""
    parts = []
    for name, full in imp_full.items():
        seen = full > 0
        parts.append((imp_forget[name][seen].double() / full[seen].double()).flatten())
    return torch.cat(parts).cpu().numpy() if parts else np.zeros(0)


def assd_alpha(problem: AlphaProblem) -> AlphaChoice:
    ratios = finite_ratios(problem.imp_full, problem.imp_forget)
    share = problem.n_forget / max(problem.n_full, 1)
    percentile = 100 - math.log(1 + 100 * share)
    alpha = float(np.percentile(ratios, percentile)) if len(ratios) else problem.ceiling
    alpha = _round(max(alpha, 1e-6))
    return AlphaChoice("assd", alpha, 1.0,
                       f"ASSD: the {percentile:.2f}th percentile of I_Df/I_D (|D_f|/|D| = {share:.3g}), λ = 1",
                       diagnostics={"percentile": percentile, "forget_share": share})


ALPHA_RULES.register("assd", AlphaRule(
    "assd", "ASSD (Schoepf et al. 2024)",
    "the (100 − ln(1 + 100·|D_f|/|D|))-th percentile of I_Df/I_D; λ = 1", assd_alpha))


# --- auto: the least dampening that makes the model let go of the forget images ----------------------
#
# What a retrained model does on D_f, seen without labels: it answers the forget images as it
# answers images it never saw. For a class, that means other classes (its predictions leave the
# baseline's); for random samples drawn from D, much as before (nothing distinguishes them from
# the rest of D). So the rule looks, as α falls, for the point where the forget images' answers
# leave the baseline's while the rest of D keeps its answers, and dampens no more than that:
#
# 1. "The rest of D": the sample of D, less the images the baseline assigns to a class that is
#    over-represented among the forget images (at least 3× its share of D). For a class target
#    that removes the class's own images; for random samples, nothing.
# 2. Scan α from the ceiling down (λ = 1): the forget images' agreement with the baseline's
#    answers, and the rest of D's.
# 3. The largest α at which at most KEEP_FORGET of the forget answers remain, with at least
#    KEEP_REST of the rest's, is the forgetting point. None: dampening cannot tell the forget
#    images from the rest of D, and the rule dampens nothing and says so.
# 4. λ: the largest λ (of LAMBDAS) that forgets as much as λ = 1 did: the mildest dampening that
#    forgets, which keeps the forget outputs as confident as the data allow (a model far less sure
#    of D_f than a retrained one is itself a trace: over-forgetting).

KEEP_FORGET = 0.05  # at most this share of the forget images may keep the baseline's answer
KEEP_REST = 0.98  # at least this share of the rest of D must keep it
OVER_REPRESENTED = 3.0
LAMBDAS = (1.0, 1.25, 1.5, 2.0, 3.0)
LAMBDA_SLACK = 0.01  # a milder λ may let at most this many more forget images keep their answer
STEPS = 14  # α values scanned (log-spaced)


def _rest_of_d(base_forget: np.ndarray, base_sample: np.ndarray) -> np.ndarray:
    """Mask of the sample images whose baseline class is not over-represented among the forget images."""
    classes = base_sample.shape[1]
    forget_share = np.bincount(base_forget.argmax(1), minlength=classes) / max(len(base_forget), 1)
    sample_share = np.bincount(base_sample.argmax(1), minlength=classes) / max(len(base_sample), 1)
    crowded = forget_share >= OVER_REPRESENTED * np.maximum(sample_share, 1.0 / len(base_sample))
    return ~crowded[base_sample.argmax(1)]


def auto_alpha(problem: AlphaProblem) -> AlphaChoice:
    base_forget, base_sample = problem.baseline
    rest = _rest_of_d(base_forget, base_sample)
    forget_answers, rest_answers = base_forget.argmax(1), base_sample.argmax(1)[rest]
    top = max(problem.ceiling, 1.0) * 1.2

    def measure(alpha: float, lambda_: float) -> dict:
        if problem.selected(alpha) == 0:
            return {"alpha": alpha, "lambda": lambda_, "forget_kept": 1.0, "rest_kept": 1.0, "selected": 0}
        forget, sample = problem.outputs(alpha, lambda_)
        return {"alpha": alpha, "lambda": lambda_, "selected": problem.selected(alpha),
                "forget_kept": float((forget.argmax(1) == forget_answers).mean()),
                "rest_kept": float((sample[rest].argmax(1) == rest_answers).mean()) if rest.any() else 1.0,
                "forget_confidence": float(forget.max(1).mean())}

    curve = []
    point = None
    for alpha in np.geomspace(top, 0.5, STEPS):
        row = measure(_round(float(alpha)), 1.0)
        curve.append(row)
        if row["rest_kept"] < KEEP_REST:
            break  # lower α only harms the rest of D more
        if row["forget_kept"] <= KEEP_FORGET:
            point = row
            break
    ratios = finite_ratios(problem.imp_full, problem.imp_forget)
    nothing_alpha = _round(max(top, float(ratios.max()) if len(ratios) else top) * 1.1)  # above every ratio
    if point is None:
        last = curve[-1]
        if last["rest_kept"] < KEEP_REST:
            why = (f"the rest of D loses its answers first (at α = {last['alpha']:.3g} only {last['rest_kept']:.1%} "
                   f"of it kept them while {last['forget_kept']:.0%} of the forget answers stayed): no α forgets "
                   "these images without harming the rest")
        else:
            why = (f"even at α = {last['alpha']:.3g}, {last['forget_kept']:.0%} of the forget answers stayed: the "
                   "forget images look like the rest of D, as random samples do")
        return AlphaChoice("auto", nothing_alpha, 1.0, f"dampens nothing: {why}", nothing=True, curve=tuple(curve),
                           diagnostics={"rest_images": int(rest.sum())})
    alpha, lambda_ = point["alpha"], 1.0
    for candidate in LAMBDAS[1:]:  # milder, as long as it forgets as much as λ = 1 did
        row = measure(alpha, candidate)
        curve.append(row)
        if row["forget_kept"] <= point["forget_kept"] + LAMBDA_SLACK and row["rest_kept"] >= KEEP_REST:
            lambda_ = candidate
        else:
            break
    return AlphaChoice(
        "auto", alpha, lambda_,
        f"α = {alpha:.3g}: the largest α at which at most {KEEP_FORGET:.0%} of the forget images keep the "
        f"baseline's answer ({point['forget_kept']:.0%}) while {point['rest_kept']:.1%} of the rest of D keep "
        f"theirs; λ = {lambda_:g}, the mildest dampening that forgets as much",
        curve=tuple(curve), diagnostics={"rest_images": int(rest.sum()), "forget_kept": point["forget_kept"],
                                         "rest_kept": point["rest_kept"]})


ALPHA_RULES.register("auto", AlphaRule(
    "auto", "Auto (label-free)",
    "the least dampening at which the forget images' answers leave the baseline's while the rest of D keeps "
    "its own; chooses λ too", auto_alpha))
