"""Accuracies on D_r, D_f and the test split, and the MIA, for one model and one forget target.

Class and sub-class forgetting score D_r and D_f on the **test** split (the retained classes /
the forgotten (sub-)class, scored on its (super-)class label); random forgetting scores D_r on the
whole test set and D_f on the forgotten **train** samples. Train-split accuracies are reported
too, labelled as such. Accuracies are sample-weighted, in %; the paper protocol
(``batch_mean=``) instead averages per-batch accuracies as the reference code does.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from core.dataset import Dataset
from core.mia import mia
from core.splits import ForgetSplit

Progress = Callable[[float, str], None]
EVAL_BATCH_SIZE = 512


@torch.inference_mode()
def predict_logits(model: nn.Module, dataset: Dataset, images: torch.Tensor, batch_size: int = EVAL_BATCH_SIZE) -> torch.Tensor:
    """(N, classes) logits for uint8 ``images``, in eval mode, returned on the CPU."""
    model.eval()
    device = next(model.parameters()).device
    chunks = [model(dataset.normalize(images[i:i + batch_size]).to(device)).float().cpu()
              for i in range(0, len(images), batch_size)]
    return torch.cat(chunks) if chunks else torch.zeros(0, dataset.num_classes)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Sample-weighted accuracy in %, or None for an empty set."""
    if len(labels) == 0:
        return None
    return float((logits.argmax(1) == labels).double().mean() * 100.0)


def batch_mean_accuracy(logits: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float | None:
    """The reference code's accuracy: the mean of per-batch accuracies over consecutive batches of
    ``batch_size`` (not sample-weighted: a short last batch counts as much as a full one), in %."""
    if len(labels) == 0:
        return None
    correct = (logits.argmax(1) == labels).double()
    per_batch = [correct[i:i + batch_size].mean() for i in range(0, len(labels), batch_size)]
    return float(torch.stack(per_batch).mean() * 100.0)


@dataclass(frozen=True)
class EvalResult:
    d_r: float  # headline D_r accuracy (%), on the split named by d_r_split
    d_f: float | None  # headline D_f accuracy (%); None for unlabelled forget images
    test: float  # whole test split (%)
    mia: float  # % of forget samples the entropy MIA calls "member"
    retain_train: float
    forget_train: float | None
    d_r_split: str
    d_f_split: str | None
    per_class_test: tuple[float | None, ...]
    forget_probs: np.ndarray  # (K, classes) softmax on the forget set (D_f train, or the images)
    accuracy: str = "sample-weighted"  # or "batch-mean (<size>)": the paper protocol's averaging

    def headline(self) -> dict:
        """The plain numbers, for JSON and tables."""
        data = asdict(self)
        data.pop("forget_probs")
        data["per_class_test"] = list(self.per_class_test)
        return data


def evaluate(model: nn.Module, dataset: Dataset, split: ForgetSplit, progress: Progress | None = None,
             batch_mean: int | None = None) -> EvalResult:
    """Score ``model`` on ``split``'s sets and run the MIA. ``model`` is not modified.

    ``batch_mean``: average per-batch accuracies over batches of that size, as the reference code
    does (its retained test images come class by class, so they are scored in class order here);
    the per-class figures stay sample-weighted.
    """
    if progress:
        progress(0.0, "evaluating: test split")
    test_logits = predict_logits(model, dataset, dataset.test_x)
    if progress:
        progress(0.4, "evaluating: train split")
    train_logits = predict_logits(model, dataset, dataset.train_x)
    if split.labelled:
        forget_logits = train_logits[split.forget_train]
    else:
        forget_logits = predict_logits(model, dataset, split.forget_images)
    if progress:
        progress(0.9, "membership inference attack")
    test_y, train_y = dataset.test_y, dataset.train_y
    if batch_mean is None:
        score, retain_order = accuracy, split.retain_test
    else:
        score = lambda logits, labels: batch_mean_accuracy(logits, labels, batch_mean)  # noqa: E731
        retain_order = split.retain_test[torch.sort(test_y[split.retain_test], stable=True).indices]
    retain_test = score(test_logits[retain_order], test_y[retain_order])
    forget_test = score(test_logits[split.forget_test], test_y[split.forget_test])
    forget_train = score(forget_logits, train_y[split.forget_train]) if split.labelled else None
    class_wise = split.spec.kind in ("class", "subclass")
    result = EvalResult(
        d_r=retain_test,
        d_f=forget_test if class_wise else forget_train,
        test=score(test_logits, test_y),
        mia=mia(train_logits[split.retain_train], test_logits, forget_logits),
        retain_train=score(train_logits[split.retain_train], train_y[split.retain_train]),
        forget_train=forget_train,
        d_r_split="test",
        d_f_split=("test" if class_wise else "train") if split.labelled else None,
        per_class_test=tuple(accuracy(test_logits[test_y == c], test_y[test_y == c]) for c in range(dataset.num_classes)),
        forget_probs=torch.softmax(forget_logits, 1).numpy(),
        accuracy="sample-weighted" if batch_mean is None else f"batch-mean ({batch_mean})",
    )
    if progress:
        progress(1.0, "evaluation done")
    return result
