"""The membership inference attack used by SSD and LFSSD (Chundawat et al.).

One feature per sample, the Shannon entropy of the softmax output. A logistic regression learns
"member" (retain-train samples) against "non-member" (the test split) and is then asked about
the forget samples: the score is the share it calls "member", × 100. Lower looks unseen; the
goal is the retrained model's score, not 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

ATTACK_NAME = "entropy MIA (logistic regression on softmax entropy; Chundawat et al. 2023)"


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of each row of ``probs``, with 0·log 0 = 0, as the reference does."""
    return -torch.where(probs > 0, probs * probs.log(), probs.new_zeros(())).sum(dim=-1)


@dataclass(frozen=True)
class MiaResult:
    score: float  # % of forget samples predicted "member"
    predicted_member: np.ndarray  # (K,) 0/1 per forget sample


def mia_from_probs(retain_probs: torch.Tensor, test_probs: torch.Tensor, forget_probs: torch.Tensor) -> MiaResult:
    """Fit on retain (member, 1) vs test (non-member, 0); score the forget samples.

    Binary logistic regression, balanced class weights, lbfgs, C=2: the decision boundary of the
    reference's two-class ``multi_class="multinomial"``, C=1 fit, which scikit-learn removed.
    """
    from sklearn.linear_model import LogisticRegression

    if len(forget_probs) == 0:
        return MiaResult(float("nan"), np.zeros(0, dtype=np.int64))
    features = torch.cat([entropy(retain_probs), entropy(test_probs)]).double().numpy().reshape(-1, 1)
    members = np.concatenate([np.ones(len(retain_probs)), np.zeros(len(test_probs))])
    clf = LogisticRegression(class_weight="balanced", solver="lbfgs", C=2.0)
    clf.fit(features, members)
    predicted = clf.predict(entropy(forget_probs).double().numpy().reshape(-1, 1)).astype(np.int64)
    return MiaResult(float(predicted.mean() * 100.0), predicted)


def mia(retain_logits: torch.Tensor, test_logits: torch.Tensor, forget_logits: torch.Tensor) -> float:
    """The MIA score (%) from a model's logits on retain-train, test and forget samples."""
    soft = lambda logits: torch.softmax(logits.float(), dim=-1)  # noqa: E731
    return mia_from_probs(soft(retain_logits), soft(test_logits), soft(forget_logits)).score
