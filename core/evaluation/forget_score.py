"""The NeurIPS 2023 Machine Unlearning Challenge's forgetting score, written anew from its
definition (the official scoring code, google-deepmind/unlearning_evaluation ``metric.py``, is what
``shared/golden/forget_score_vectors.json`` was computed with; the tests reproduce it to 1e-6).

Per forget example, the logit-scaled confidence log p_y − log Σ_{k≠y} p_k under N unlearned and N
retrained models gives two samples of N values. Many decision rules try to tell them apart — one
threshold (above it: the distribution with the larger median), and two thresholds (between them:
the narrower distribution) — and each rule with its error rates (FPR, FNR) bounds the privacy
loss: ε = max(ln(1 − δ − FPR) − ln FNR, ln(1 − δ − FNR) − ln FPR), δ = 1e-5. A rule with one error
rate 0 (but not both) is discarded as too few samples; both 0 is perfect separation, ε = ∞. The
example's ε is the largest, capped at 50; an example whose narrower sample spans < 1 % of the wider
gets 50 outright (a deterministic method on one original model: every unlearned copy alike).
ε is bucketed in steps of 0.5 worth 1, ½, ¼, … up to ⌈ln(N − 1)⌉ (0 beyond); F is the mean.

Rates are float32, as the official code computes them (means over models in float32).
"""
from __future__ import annotations

import math

import numpy as np

DELTA = 1e-5
EPSILON_CAP = 50.0
THRESHOLDS_PER_UNIT = 100
BUFFER = 2.0  # how far past a sample the two-threshold rule's thresholds reach


def logit_scaled_confidence(logits: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(p_y, log p_y − log Σ_{k≠y} p_k) per row, computed stably in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    rows = np.arange(len(p))
    right = p[rows, targets].copy()
    p[rows, targets] = 0.0
    wrong = p.sum(axis=1)
    return right, np.log(right + 1e-45) - np.log(wrong + 1e-45)


def _rates(hits_pos: np.ndarray, hits_neg: np.ndarray, n: int) -> tuple[np.ndarray, ...]:
    """(tpr, fnr, fpr, tnr) in float32 from how many models each rule calls positive."""
    tpr = (hits_pos / n).astype(np.float32)
    fpr = (hits_neg / n).astype(np.float32)
    return tpr, ((n - hits_pos) / n).astype(np.float32), fpr, ((n - hits_neg) / n).astype(np.float32)


def _one_threshold(pos: np.ndarray, neg: np.ndarray):
    both = np.concatenate([pos, neg])
    lo, hi = both.min(), both.max()
    thresholds = np.linspace(lo, hi, int(math.ceil((hi - lo) * THRESHOLDS_PER_UNIT)))
    return _rates((pos[:, None] >= thresholds).sum(0), (neg[:, None] >= thresholds).sum(0), len(pos))


def _two_thresholds(pos: np.ndarray, neg: np.ndarray):
    """Between a left and a right threshold: the narrower sample. ``pos`` becomes the narrower."""
    width = min(np.ptp(pos), np.ptp(neg))
    if np.ptp(pos) >= np.ptp(neg):
        pos, neg = neg, pos
    lo, hi = pos.min() + width - BUFFER, pos.max() + BUFFER
    right = np.linspace(lo, hi, int(math.ceil((hi - lo) * THRESHOLDS_PER_UNIT)))
    per_right = int(math.ceil(2 * BUFFER * THRESHOLDS_PER_UNIT))
    left = np.concatenate([np.linspace(r - width - BUFFER, r - width + BUFFER, per_right) for r in right])
    right = np.repeat(right, per_right)

    def inside(sample):
        return ((left[None, :] <= sample[:, None]) & (sample[:, None] <= right[None, :])).sum(0)

    return _rates(inside(pos), inside(neg), len(pos))


def example_epsilon(pos: np.ndarray, neg: np.ndarray, delta: float = DELTA) -> float:
    """ε of one example from its N confidences under each kind of model."""
    spans = sorted([np.ptp(pos), np.ptp(neg)])
    if spans[1] > 0 and spans[0] / spans[1] < 0.01:
        return EPSILON_CAP
    parts = [_two_thresholds(pos, neg), _one_threshold(pos, neg)]
    tpr, fnr, fpr, tnr = (np.concatenate([p[i] for p in parts]) for i in range(4))
    perfect = (fpr + fnr == 0) & (tpr + tnr == 2)
    usable = ~perfect & (fpr * fnr != 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        one_minus = np.float32(1 - delta)
        eps = np.fmax(np.log(one_minus - fpr) - np.log(fnr), np.log(one_minus - fnr) - np.log(fpr))  # NaN-blind
    eps = np.clip(eps, 0, None)
    values = np.concatenate([eps[usable], np.full(int(perfect.sum()), np.inf, dtype=np.float32)])
    if not len(values):
        raise ValueError("every decision rule was discarded: too few models to judge this example")
    return float(min(max(float(np.nanmax(values)), 0.0), EPSILON_CAP))


def epsilons(unlearned: np.ndarray, retrained: np.ndarray, delta: float = DELTA) -> np.ndarray:
    """ε per example from [models, examples] confidences. Per example the 'positive' sample is the
    one with the larger median."""
    unlearned, retrained = np.asarray(unlearned, np.float64), np.asarray(retrained, np.float64)
    retrain_higher = np.median(retrained, 0) > np.median(unlearned, 0)
    pos = np.where(retrain_higher, retrained, unlearned)
    neg = np.where(retrain_higher, unlearned, retrained)
    return np.array([example_epsilon(pos[:, i], neg[:, i], delta) for i in range(pos.shape[1])])


def bucket_points(num_models: int) -> list[tuple[float, float]]:
    """(bucket start, points): 1 for ε < 0.5, ½ for ε < 1, … while the bucket ends ≤ ⌈ln(N − 1)⌉."""
    top = math.ceil(math.log(num_models - 1))
    buckets, start, points = [], 0.0, 1.0
    while start + 0.5 <= top:
        buckets.append((start, points))
        start, points = start + 0.5, points / 2
    return buckets


def forget_score(unlearned: np.ndarray, retrained: np.ndarray) -> tuple[float, np.ndarray]:
    """(F, ε per example): F is the mean of each example's bucket points."""
    eps = epsilons(unlearned, retrained)
    buckets = bucket_points(np.asarray(unlearned).shape[0])
    points = [next((p for start, p in buckets if e < start + 0.5), 0.0) for e in eps]
    return float(np.mean(points)), eps


def final_score(forget: float, d_r: float, d_r_retrain: float, test: float, test_retrain: float) -> float:
    """The challenge's final score: F × (D_r accuracy / retrain's) × (test accuracy / retrain's)."""
    return forget * (d_r / d_r_retrain) * (test / test_retrain)
