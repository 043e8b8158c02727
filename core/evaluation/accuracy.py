"""Accuracies on D_r, D_f and the test split, and the MIA, for one model and one forget target.

Class and sub-class forgetting score D_r and D_f on the **test** split (the retained classes /
the forgotten (sub-)class, scored on its (super-)class label); random forgetting scores D_r on the
whole test set and D_f on the forgotten **train** samples. Train-split accuracies are reported
too, labelled as such. Accuracies are sample-weighted, in %; the paper protocol
(``batch_mean=``) instead averages per-batch accuracies as the reference code does.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from core.data.dataset import Dataset
from core.evaluation.attacks import mia_result
from core.data.splits import ForgetSplit

Progress = Callable[[float, str], None]


@torch.inference_mode()
def predict_logits(model: nn.Module, dataset: Dataset, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """(N, classes) logits for uint8 ``images``, in eval mode, returned on the CPU.

    Convolutional models run as a channels-last copy (``core.fast.runtime``); ``model`` is untouched.
    Chunks of ``batch_size`` images (default: ``eval_chunk_size``, the size that runs fastest).
    """
    from core.fast.runtime import eval_chunk_size, layout_copy

    model.eval()
    device = next(model.parameters()).device
    batch_size = batch_size or eval_chunk_size(model, tuple(images.shape[1:]))
    run = layout_copy(model)
    channels_last = run is not model
    chunks = [run(model_input(dataset, images[i:i + batch_size], device, channels_last)).float().cpu()
              for i in range(0, len(images), batch_size)]
    return torch.cat(chunks) if chunks else torch.zeros(0, dataset.num_classes)


def model_input(dataset: Dataset, images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """uint8 images → the normalised float batch a model sees, on ``device``, in its layout."""
    from core.fast.runtime import as_layout

    return as_layout(dataset.normalize(images).to(device), channels_last)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Sample-weighted accuracy in %, or None for an empty set."""
    if len(labels) == 0:
        return None
    return float((logits.argmax(1) == labels).double().mean() * 100.0)


def per_class_accuracy(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[float | None, ...]:
    """Sample-weighted accuracy (%) of each class's images (None for a class with none)."""
    return tuple(accuracy(logits[labels == c], labels[labels == c]) for c in range(num_classes))


def batch_mean_accuracy(logits: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float | None:
    """The reference code's accuracy: the mean of per-batch accuracies over consecutive batches of
    ``batch_size`` (not sample-weighted: a short last batch counts as much as a full one), in %."""
    if len(labels) == 0:
        return None
    correct = (logits.argmax(1) == labels).double()
    per_batch = [correct[i:i + batch_size].mean() for i in range(0, len(labels), batch_size)]
    return float(torch.stack(per_batch).mean() * 100.0)


@dataclass(frozen=True)
class EvalSample:
    """How a subset evaluation was drawn, and 95 % confidence intervals of its accuracies.

    Above ``SUBSET_THRESHOLD`` evaluation images, slider moves score a fixed stratified subset:
    every forget sample (D_f's test and training images, or the unlabelled images: the rows of
    ``forget_probs`` stay those of the full evaluation), and stratified samples of the other test
    images and of the retained training images. ``intervals`` holds, per
    accuracy (``d_r``, ``d_f``, ``test``, ``retain_train``, ``forget_train``, ``per_class_test``),
    (low, high) in %: Wilson score intervals with a finite-population correction (exact, zero
    width, where a set was scored whole), the stratified ``test`` figure a normal interval. The MIA
    is refitted on the subset and has no interval.
    """

    test_scored: int
    test_total: int
    train_scored: int
    train_total: int
    seed: int
    confidence: float
    intervals: dict  # metric -> (low, high) in %, or None; "per_class_test" -> list of those


@dataclass(frozen=True)
class EvalResult:
    d_r: float  # headline D_r accuracy (%), on the split named by d_r_split
    d_f: float | None  # headline D_f accuracy (%); None for unlabelled forget images
    test: float  # whole test split (%)
    mia: float | None  # % of forget samples the entropy MIA calls "member"; None: the fit carries no signal
    retain_train: float
    forget_train: float | None
    d_r_split: str
    d_f_split: str | None
    per_class_test: tuple[float | None, ...]
    forget_probs: np.ndarray  # (K, classes) softmax on the forget set (D_f train, or the images)
    accuracy: str = "sample-weighted"  # or "batch-mean (<size>)": the paper protocol's averaging
    sample: EvalSample | None = None  # None: every image was scored (exact); else a subset, with CIs
    numerics: str = "fp32"  # or an opt-in faster arithmetic that changes the numbers, named (e.g. bf16 autocast)
    mia_note: str | None = None  # why ``mia`` is None
    mia_sets: str = ""  # which images the attack was fitted on

    @property
    def exact(self) -> bool:
        return self.sample is None

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
    forget_logits = None if split.labelled else predict_logits(model, dataset, split.forget_images)
    if progress:
        progress(0.9, "membership inference attack")
    result = score(dataset, split, test_logits, train_logits, forget_logits, batch_mean)
    if progress:
        progress(1.0, "evaluation done")
    return result


def score(dataset: Dataset, split: ForgetSplit, test_logits: torch.Tensor, train_logits: torch.Tensor,
          forget_logits: torch.Tensor | None = None, batch_mean: int | None = None) -> EvalResult:
    """Every figure of ``EvalResult`` from a model's logits on the test split, the train split and
    (unlabelled targets only) the forget images."""
    if split.labelled:
        forget_logits = train_logits[split.forget_train]
    test_y, train_y = dataset.test_y, dataset.train_y
    if batch_mean is None:
        score_fn, retain_order = accuracy, split.retain_test
    else:
        score_fn = lambda logits, labels: batch_mean_accuracy(logits, labels, batch_mean)  # noqa: E731
        retain_order = split.retain_test[torch.sort(test_y[split.retain_test], stable=True).indices]
    retain_test = score_fn(test_logits[retain_order], test_y[retain_order])
    forget_test = score_fn(test_logits[split.forget_test], test_y[split.forget_test])
    forget_train = score_fn(forget_logits, train_y[split.forget_train]) if split.labelled else None
    class_wise = split.spec.kind in ("class", "subclass")
    members, non_members = split.attack_sets(dataset)
    attack = mia_result(train_logits[members], test_logits[non_members], forget_logits)
    return EvalResult(
        d_r=retain_test,
        d_f=forget_test if class_wise else forget_train,
        test=score_fn(test_logits, test_y),
        mia=attack.score,
        retain_train=score_fn(train_logits[split.retain_train], train_y[split.retain_train]),
        forget_train=forget_train,
        d_r_split="test",
        d_f_split=("test" if class_wise else "train") if split.labelled else None,
        per_class_test=per_class_accuracy(test_logits, test_y, dataset.num_classes),
        forget_probs=torch.softmax(forget_logits, 1).numpy(),
        accuracy="sample-weighted" if batch_mean is None else f"batch-mean ({batch_mean})",
        mia_note=attack.reason,
        mia_sets=split.attack_description(dataset),
    )


# --- a fixed stratified subset for large evaluation sets --------------------------------------

SUBSET_THRESHOLD = 10_000  # evaluation images (train + test + forget images) above which slider moves subsample
SUBSET_TEST = 2_000  # test images other than D_f's, stratified by class
SUBSET_RETAIN_TRAIN = 2_000  # retained training images, stratified by class
SUBSET_SEED = 0
CONFIDENCE = 0.95
_Z = 1.959963984540054  # two-sided 95 % normal quantile


def evaluation_images(dataset: Dataset, split: ForgetSplit) -> int:
    return len(dataset.test_y) + len(dataset.train_y) + (0 if split.labelled else len(split.forget_images))


def needs_subset(dataset: Dataset, split: ForgetSplit) -> bool:
    return evaluation_images(dataset, split) > SUBSET_THRESHOLD


@dataclass(frozen=True, eq=False)
class EvalSubset:
    """A data set and split restricted to a fixed subset, and where it came from."""

    dataset: Dataset
    split: ForgetSplit
    full_dataset: Dataset
    full_split: ForgetSplit
    test_index: torch.Tensor  # indices into the full test split, sorted
    train_index: torch.Tensor  # indices into the full train split, sorted
    seed: int

    def with_intervals(self, result: EvalResult) -> EvalResult:
        """``result`` (scored on this subset) with its sampling description and intervals."""
        from dataclasses import replace

        return replace(result, test=self._stratified_test(result), sample=EvalSample(
            len(self.test_index), len(self.full_dataset.test_y), len(self.train_index), len(self.full_dataset.train_y),
            self.seed, CONFIDENCE, self._intervals(result)))

    def _population(self, metric: str) -> tuple[int, int]:
        """(scored, population) behind one accuracy figure."""
        s, f = self.split, self.full_split
        sizes = {"retain_test": (len(s.retain_test), len(f.retain_test)),
                 "forget_test": (len(s.forget_test), len(f.forget_test)),
                 "retain_train": (len(s.retain_train), len(f.retain_train)),
                 "forget_train": (len(s.forget_train), len(f.forget_train))}
        return sizes[metric]

    def _intervals(self, result: EvalResult) -> dict:
        class_wise = self.split.spec.kind in ("class", "subclass")
        d_f_set = "forget_test" if class_wise else "forget_train"
        out = {"d_r": _wilson(result.d_r, *self._population("retain_test")),
               "d_f": _wilson(result.d_f, *self._population(d_f_set)) if result.d_f is not None else None,
               "retain_train": _wilson(result.retain_train, *self._population("retain_train")),
               "forget_train": (_wilson(result.forget_train, *self._population("forget_train"))
                                if result.forget_train is not None else None),
               "test": self._stratified_interval(result),
               "mia": None}
        test_y, full_y = self.dataset.test_y, self.full_dataset.test_y
        out["per_class_test"] = [_wilson(acc, int((test_y == c).sum()), int((full_y == c).sum()))
                                 if acc is not None else None for c, acc in enumerate(result.per_class_test)]
        return out

    def _strata(self, result: EvalResult):
        full_y = self.full_dataset.test_y
        test_y = self.dataset.test_y
        for c, acc in enumerate(result.per_class_test):
            n, population = int((test_y == c).sum()), int((full_y == c).sum())
            if acc is not None and population:
                yield acc / 100.0, n, population

    def _stratified_test(self, result: EvalResult) -> float:
        """Whole-test-split accuracy, each class weighted by its share of the full test split (D_f's
        test images are all scored, so a plain mean over the subset would over-weight them)."""
        total = len(self.full_dataset.test_y)
        return float(sum(p * population for p, _, population in self._strata(result)) / total * 100.0)

    def _stratified_interval(self, result: EvalResult) -> tuple[float, float]:
        total = len(self.full_dataset.test_y)
        estimate, variance = 0.0, 0.0
        for p, n, population in self._strata(result):
            weight = population / total
            estimate += weight * p
            if n < population and n > 1:
                variance += weight ** 2 * p * (1 - p) / n * (population - n) / (population - 1)
        half = _Z * math.sqrt(variance)
        return (max(0.0, estimate - half) * 100.0, min(1.0, estimate + half) * 100.0)


def _wilson(percent: float | None, n: int, population: int) -> tuple[float, float] | None:
    """Wilson score interval (in %) of a proportion seen on n of ``population`` items, with the
    finite-population correction folded into an effective n; exact (zero width) when n covers it."""
    if percent is None or n == 0:
        return None
    p = percent / 100.0
    if n >= population:
        return (percent, percent)
    n_eff = n * (population - 1) / (population - n)
    z2 = _Z ** 2
    centre = (p + z2 / (2 * n_eff)) / (1 + z2 / n_eff)
    half = _Z * math.sqrt(p * (1 - p) / n_eff + z2 / (4 * n_eff ** 2)) / (1 + z2 / n_eff)
    return (max(0.0, centre - half) * 100.0, min(1.0, centre + half) * 100.0)


def evaluation_subset(dataset: Dataset, split: ForgetSplit, seed: int = SUBSET_SEED) -> EvalSubset:
    """The fixed subset slider moves score on large data sets (see ``EvalSample``)."""
    gen = torch.Generator().manual_seed(seed)
    forget_test = split.forget_test
    others = _without(torch.arange(len(dataset.test_y)), forget_test)
    test_index = torch.cat([forget_test, _stratified(others, dataset.test_y, SUBSET_TEST, gen)]).sort().values
    retain = _stratified(split.retain_train, dataset.train_y, SUBSET_RETAIN_TRAIN, gen)
    train_index = torch.cat([retain, split.forget_train]).unique().sort().values  # every forget sample
    sub_dataset = _restrict(dataset, test_index, train_index)
    test_pos, train_pos = _positions(test_index, len(dataset.test_y)), _positions(train_index, len(dataset.train_y))
    keep = lambda idx, pos: pos[idx][pos[idx] >= 0]  # noqa: E731  (order of the full split kept)
    from dataclasses import replace

    sub_split = replace(split, retain_train=keep(split.retain_train, train_pos), forget_train=keep(split.forget_train, train_pos),
                        retain_test=keep(split.retain_test, test_pos), forget_test=keep(split.forget_test, test_pos))
    return EvalSubset(sub_dataset, sub_split, dataset, split, test_index, train_index, seed)


def _without(indices: torch.Tensor, remove: torch.Tensor) -> torch.Tensor:
    mask = torch.ones(int(indices.max()) + 1 if len(indices) else 0, dtype=torch.bool)
    mask[remove] = False
    return indices[mask[indices]]


def _stratified(indices: torch.Tensor, labels: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """About ``size`` of ``indices``, each class in proportion (at least one per class present)."""
    if len(indices) <= size:
        return indices
    chosen = []
    classes = labels[indices]
    for c in torch.unique(classes).tolist():
        members = indices[classes == c]
        take = max(1, round(size * len(members) / len(indices)))
        chosen.append(members[torch.randperm(len(members), generator=gen)[:take]])
    return torch.cat(chosen).sort().values


def _positions(index: torch.Tensor, n: int) -> torch.Tensor:
    pos = torch.full((n,), -1, dtype=torch.int64)
    pos[index] = torch.arange(len(index))
    return pos


def _restrict(dataset: Dataset, test_index: torch.Tensor, train_index: torch.Tensor) -> Dataset:
    from dataclasses import replace

    fine = {}
    if dataset.fine_train_y is not None:
        fine = {"fine_train_y": dataset.fine_train_y[train_index], "fine_test_y": dataset.fine_test_y[test_index]}
    return replace(dataset, train_x=dataset.train_x[train_index], train_y=dataset.train_y[train_index],
                   test_x=dataset.test_x[test_index], test_y=dataset.test_y[test_index], **fine)
