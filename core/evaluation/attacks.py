"""The membership inference attack used by SSD and LFSSD (Chundawat et al.).

One feature per sample, the Shannon entropy of the softmax output. A logistic regression learns
"member" (training images) against "non-member" (test images) and is then asked about the
forget samples: the score is the share it calls "member", × 100. Lower looks unseen; the goal
is the retrained model's score, not 0.

A fit can carry no signal: when members and non-members are equally uncertain, the fitted slope
is ~0, every probability sits at 0.5 ± 0.001, and the sign of that noise alone decides between
~100 and 0 (it flips with the training seed and with the CPU's instruction set). ``no_signal``
recognises such a fit from the fit's own training data, and the attack then reports no score,
with the reason, instead of a number that measures nothing.

Which images the attack is fitted on (``ForgetSplit.attack_sets``): the papers' sets for labelled
targets (members = D_r's training images, non-members = the whole test split); for unlabelled
images, the training and test images of the classes the baseline assigns the forget images to
are left out of both sides (otherwise, after forgetting, those classes are equally uncertain on
both sides and the fit is flat).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

ATTACK_NAME = "entropy MIA (logistic regression on softmax entropy; Chundawat et al. 2023)"
# A fit whose member probability spans less than this over its own training data is flat: its
# slope is noise. Real fits on our models span 0.07–0.5; the flat ones measured 0.000–0.006.
MIN_PROBABILITY_SPREAD = 0.02
# A fit that calls (almost) all of its own training data one side has learnt nothing either: with
# balanced class weights a real fit calls a share of both sides members (0.6–0.8 measured).
MEMBER_RATE_RANGE = (0.01, 0.99)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of each row of ``probs``, with 0·log 0 = 0, as the reference does."""
    return -torch.where(probs > 0, probs * probs.log(), probs.new_zeros(())).sum(dim=-1)


@dataclass(frozen=True)
class MiaFit:
    """How the attack's logistic regression came out, measured on its own training data."""

    coefficient: float  # slope on entropy (nats⁻¹)
    intercept: float
    iterations: int  # lbfgs iterations
    probability_spread: float  # max − min predicted member probability
    member_rate: float  # share of its own training samples it calls "member"
    balanced_accuracy: float  # on its own training samples, 0.5 = chance
    members: int
    non_members: int

    def no_signal(self) -> str | None:
        """Why this fit measures nothing, or None when it carries a signal."""
        if self.members == 0 or self.non_members == 0:
            return f"nothing to fit: {self.members} member and {self.non_members} non-member images"
        if self.iterations == 0 or self.coefficient == 0.0:
            return "the fit did not move from a zero slope: members and non-members look the same"
        if self.probability_spread < MIN_PROBABILITY_SPREAD:
            return (f"flat fit: every member probability lies within {self.probability_spread:.4f} of the others "
                    f"(slope {self.coefficient:+.3g} per nat), so the sign of noise would decide the score")
        low, high = MEMBER_RATE_RANGE
        if not low <= self.member_rate <= high:
            return (f"the fit calls {self.member_rate * 100:.1f} % of its own training images members: "
                    "it separates nothing")
        return None


@dataclass(frozen=True)
class MiaResult:
    score: float | None  # % of forget samples predicted "member"; None when the fit carries no signal
    predicted_member: np.ndarray  # (K,) 0/1 per forget sample (empty when there is no score)
    reason: str | None = None  # why there is no score
    fit: MiaFit | None = None


def mia_from_probs(retain_probs: torch.Tensor, test_probs: torch.Tensor, forget_probs: torch.Tensor) -> MiaResult:
    """Fit on retain (member, 1) vs test (non-member, 0); score the forget samples.

    Binary logistic regression, balanced class weights, lbfgs, C=2: the decision boundary of the
    reference's two-class ``multi_class="multinomial"``, C=1 fit, which scikit-learn removed.
    """
    from sklearn.linear_model import LogisticRegression

    if len(forget_probs) == 0:
        return MiaResult(float("nan"), np.zeros(0, dtype=np.int64), "the forget set is empty")
    features = torch.cat([entropy(retain_probs), entropy(test_probs)]).double().numpy().reshape(-1, 1)
    members = np.concatenate([np.ones(len(retain_probs)), np.zeros(len(test_probs))])
    if len(retain_probs) == 0 or len(test_probs) == 0:
        fit = MiaFit(0.0, 0.0, 0, 0.0, 0.0, 0.5, len(retain_probs), len(test_probs))
        return MiaResult(None, np.zeros(0, dtype=np.int64), fit.no_signal(), fit)
    clf = LogisticRegression(class_weight="balanced", solver="lbfgs", C=2.0)
    clf.fit(features, members)
    fit = _describe(clf, features, members)
    reason = fit.no_signal()
    if reason is not None:
        return MiaResult(None, np.zeros(0, dtype=np.int64), reason, fit)
    predicted = clf.predict(entropy(forget_probs).double().numpy().reshape(-1, 1)).astype(np.int64)
    return MiaResult(float(predicted.mean() * 100.0), predicted, None, fit)


def _describe(clf, features: np.ndarray, members: np.ndarray) -> MiaFit:
    probability = clf.predict_proba(features)[:, list(clf.classes_).index(1.0)]
    called = probability > 0.5
    is_member = members == 1
    balanced = 0.5 * (called[is_member].mean() + (~called[~is_member]).mean())
    return MiaFit(float(clf.coef_[0, 0]), float(clf.intercept_[0]), int(np.max(clf.n_iter_)),
                  float(probability.max() - probability.min()), float(called.mean()), float(balanced),
                  int(is_member.sum()), int((~is_member).sum()))


def mia_result(retain_logits: torch.Tensor, test_logits: torch.Tensor, forget_logits: torch.Tensor) -> MiaResult:
    """The attack from a model's logits on members, non-members and forget samples."""
    soft = lambda logits: torch.softmax(logits.float(), dim=-1)  # noqa: E731
    return mia_from_probs(soft(retain_logits), soft(test_logits), soft(forget_logits))


def mia(retain_logits: torch.Tensor, test_logits: torch.Tensor, forget_logits: torch.Tensor) -> float | None:
    """The MIA score (%), or None when the fit carries no signal (``mia_result`` says why)."""
    return mia_result(retain_logits, test_logits, forget_logits).score


# --- the attacks, a family ----------------------------------------------------------------------------

from core.registry import Registry  # noqa: E402  (the family's declarations follow the entropy attack)


@dataclass(frozen=True)
class Attack:
    """A membership attack, declared once: every number it gives names it (``label``), and the
    README's method table reads what it needs."""

    name: str
    label: str
    measures: str  # one line
    needs: str  # what it takes to run, in words
    default: bool = False  # the one tables show first (the papers')


ATTACKS: Registry[Attack] = Registry("attack")
ATTACKS.register("entropy", Attack(
    "entropy", "entropy MIA (the papers')",
    "share of the forget images a logistic regression on softmax entropy (members: D_r's training images, "
    "non-members: test images) calls members; a population attack on one model",
    "one model; per slider move", default=True))
ATTACKS.register("confidence", Attack(
    "confidence", "confidence vs retrained (one pair)",
    "how well one threshold on the forget examples' logit-scaled confidence tells the dampened model from the "
    "retrained one: ε of that single pair (0 = indistinguishable)",
    "the retrained model (one); per slider move"))
ATTACKS.register("forget_score", Attack(
    "forget_score", "challenge forgetting score F (N models)",
    "NeurIPS 2023 unlearning challenge: per forget example, ε between its confidence under N unlearned and N "
    "retrained models, bucketed and averaged; the final score scales F by D_r and test accuracy against retrain",
    "N originals trained with different seeds (the method applied to each) and N retrained models"))
ATTACKS.register("relearning", Attack(
    "relearning", "relearning ratio R",
    "fine-tune on D_f: R = min(Δ_retrain / Δ_unlearned, 1), Δ = the D_f accuracy that comes back; below 1, "
    "knowledge that was only hidden returns faster",
    "labels of D_f and a few dozen fine-tuning steps per model"))
