"""Evidence that D_f is forgotten, beyond the papers' population attack: the forget examples'
confidence under the dampened model against the retrained model (with the ε that best separates
that one pair), and how fast D_f comes back when the model is fine-tuned on it (relearning).

Confidence is the logit-scaled confidence of the challenge and of LiRA, log p_y − log Σ_{k≠y} p_k.
Unlabelled images have no y: they use the top class instead (log p_max − log(1 − p_max)), and every
screen says so. The one-pair ε (the Machine Unlearning Comparator's view) treats the forget examples
as the two samples: how well can one threshold tell the dampened model's confidences from the
retrained model's? ε = 0: not at all.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.evaluation.forget_score import DELTA, logit_scaled_confidence

LABEL_FREE = "top-class confidence log p_max − log(1 − p_max) (no labels: the images have none)"
LABELLED = "logit-scaled confidence log p_y − log Σ_{k≠y} p_k"


def confidences(logits: torch.Tensor, labels: torch.Tensor | None) -> np.ndarray:
    """Logit-scaled confidence per row (of the label, or of the top class when there is none)."""
    z = logits.double().numpy()
    targets = z.argmax(1) if labels is None else labels.numpy()
    return logit_scaled_confidence(z, targets)[1]


@dataclass(frozen=True)
class Separation:
    """The single threshold that best tells two samples apart, and its ε."""

    epsilon: float  # 0: no threshold tells them apart; capped at 50
    threshold: float
    above: str  # which sample lies mostly above the threshold ("a" or "b")
    fpr: float
    fnr: float


def best_threshold(a: np.ndarray, b: np.ndarray, delta: float = DELTA, cap: float = 50.0) -> Separation:
    """The threshold with the largest ε = max(ln(1 − δ − FPR) − ln FNR, ln(1 − δ − FNR) − ln FPR),
    sample ``a`` the positive when its median is the larger. A threshold with one error rate 0 (not
    both) counts as too few samples and is skipped, as in the challenge's scoring."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not len(a) or not len(b):
        return Separation(0.0, math.nan, "a", math.nan, math.nan)
    pos, neg, above = (a, b, "a") if np.median(a) >= np.median(b) else (b, a, "b")
    values = np.unique(np.concatenate([pos, neg]))
    thresholds = np.concatenate([values, [values[-1] + 1.0]])
    tpr = (pos[:, None] >= thresholds).mean(0)
    fpr = (neg[:, None] >= thresholds).mean(0)
    fnr = 1 - tpr
    with np.errstate(divide="ignore", invalid="ignore"):
        eps = np.fmax(np.log(1 - delta - fpr) - np.log(fnr), np.log(1 - delta - fnr) - np.log(fpr))
    perfect = (fpr == 0) & (fnr == 0)
    eps = np.where(perfect, np.inf, np.where(fpr * fnr == 0, np.nan, np.clip(eps, 0, None)))
    if np.all(np.isnan(eps)):
        return Separation(0.0, float(np.median(np.concatenate([a, b]))), above, math.nan, math.nan)
    best = int(np.nanargmax(eps))
    return Separation(float(min(eps[best], cap)), float(thresholds[best]), above, float(fpr[best]), float(fnr[best]))


# --- relearning ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RelearnCurve:
    steps: tuple[int, ...]
    accuracy: tuple[float, ...]  # % of the D_f evaluation images right after each number of steps

    @property
    def gain(self) -> float:
        """How much and how fast D_f accuracy came back: the mean, over the recorded steps after the
        start, of the accuracy gained since the start (points). Fine-tuning on D_f alone ends at
        ~100 % for any model, so the end point says nothing; the speed does."""
        return float(np.mean([a - self.accuracy[0] for a in self.accuracy[1:]])) if len(self.accuracy) > 1 else 0.0


def relearn(model: nn.Module, dataset, train_indices: torch.Tensor, eval_images: torch.Tensor,
            eval_labels: torch.Tensor, steps: int = 30, lr: float = 1e-4, batch_size: int = 32, seed: int = 0,
            every: int = 5) -> RelearnCurve:
    """Fine-tune a copy of ``model`` on D_f (``train_indices`` of the training set, with their labels)
    with SGD and record its accuracy on ``eval_images`` every ``every`` steps. The model itself is
    never modified."""
    from core.evaluation.accuracy import accuracy, predict_logits

    student = copy.deepcopy(model).train()
    optimizer = torch.optim.SGD(student.parameters(), lr=lr, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    recorded_steps, scores = [0], [accuracy(predict_logits(student.eval(), dataset, eval_images), eval_labels)]
    for step in range(1, steps + 1):
        student.train()
        pick = train_indices[torch.randint(len(train_indices), (min(batch_size, len(train_indices)),), generator=gen)]
        x = dataset.normalize(dataset.train_x[pick]).to(next(student.parameters()).device)
        loss = F.cross_entropy(student(x), dataset.train_y[pick].to(x.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % every == 0 or step == steps:
            recorded_steps.append(step)
            scores.append(accuracy(predict_logits(student.eval(), dataset, eval_images), eval_labels))
    return RelearnCurve(tuple(recorded_steps), tuple(float(s) for s in scores))


def relearn_no_signal(unlearned: RelearnCurve, retrained: RelearnCurve) -> str | None:
    """Why R would measure nothing here, or None. A model that did not forget D_f has nothing to
    relearn: its gain is ~0 whatever it knows, and R = 1 would read as success."""
    start, reference = unlearned.accuracy[0], retrained.accuracy[0]
    if start > reference + (100.0 - reference) / 2:
        return (f"D_f is not forgotten: {start:.0f} % right before fine-tuning (the retrained model: "
                f"{reference:.0f} %), so there is nothing to relearn")
    return None


def relearn_ratio(unlearned: RelearnCurve, retrained: RelearnCurve) -> float | None:
    """R = min(Δ_retrain / Δ_unlearned, 1): 1 when the unlearned model relearns no faster than one
    that never saw D_f (or gains nothing); below 1 when knowledge that was only hidden comes back
    faster. None when the unlearned model never forgot D_f (``relearn_no_signal``)."""
    if relearn_no_signal(unlearned, retrained):
        return None
    if unlearned.gain <= 1e-9:
        return 1.0
    return float(min(max(retrained.gain, 0.0) / unlearned.gain, 1.0))
