"""One forgetting experiment end to end: data → baseline model → I_D and I_Df → dampen → scores.

The CLI and the app both go through here, so they print and show the same numbers.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Callable, Sequence

import torch
from torch import nn

from core.cache import TensorCache

if TYPE_CHECKING:  # pandas is imported where a table is made: it cost 0.4 s of the app's cold start
    import pandas as pd
from core.method.dampening import DampeningReport, _check_keys, dampen, plan_dampening, validate_hyperparameters
from core.data.registry import DATASETS, default_alpha, load_dataset
from core.data.dataset import Dataset
from core.errors import UserError
from core.evaluation.accuracy import EvalResult, EvalSubset, evaluate, evaluation_subset, needs_subset, predict_logits, score
from core.method.importance import Importance, cached_importance, validate
from core.models.registry import MODELS, create_model, default_device, load_checkpoint, model_device, weights_hash
from core.fast.runtime import synchronize
from core.data.splits import D_ORDERS, ForgetSpec, ForgetSplit, images_split, make_split, with_attack_exclusion
from core.models.recipes import RECIPES
from core.models.training import default_config, trained_model

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class ExperimentConfig:
    dataset: str = "digits"
    model: str | None = None  # None: the data set's default model
    forget: str = "class:3"
    kind: str = "lfssd"
    mode: str = "batch"
    alpha: float | None = None  # None: default_alpha
    lambda_: float = 1.0
    batch_size: int | None = None  # None: the reference's batch size for the target kind
    d_order: str = "reference"
    data_root: str | None = None
    checkpoint: str | None = None
    epochs: int | None = None
    seed: int = 0
    recipe: str = "default"  # how the baseline (and so its retrained reference) is trained: core.models.recipes

    def train_config(self, dataset_name: str):
        """The training configuration of this experiment's model (and of its retrained reference)."""
        return default_config(self.model, dataset_name, recipe=self.recipe, epochs=self.epochs, seed=self.seed)

    def resolved(self) -> "ExperimentConfig":
        model = self.model or DATASETS.get(self.dataset).default_model
        MODELS.get(model)
        RECIPES.get(self.recipe)
        validate(self.kind, self.mode)
        if self.d_order not in D_ORDERS:
            raise UserError(f"unknown D order '{self.d_order}'; choose one of: {', '.join(D_ORDERS)}")
        if self.batch_size is not None and self.batch_size < 1:
            raise UserError(f"batch size must be >= 1, got {self.batch_size}")
        if self.epochs is not None and self.epochs < 1:
            raise UserError(f"epochs must be >= 1, got {self.epochs}")
        return replace(self, model=model)


@dataclass(frozen=True, eq=False)
class Prepared:
    """What every α and λ shares: data, the baseline model, the target and both importances."""

    config: ExperimentConfig
    dataset: Dataset
    model: nn.Module
    split: ForgetSplit
    imp_full: Importance
    imp_forget: Importance
    baseline: EvalResult
    timings: dict[str, float] = field(default_factory=dict)
    cache_hits: dict[str, bool] = field(default_factory=dict)
    # cached activations and reusable model copies for slider moves (core.evaluation.prefix), made on first use
    evaluations: "_Evaluations" = field(init=False, repr=False, compare=False, default_factory=lambda: _Evaluations())

    @property
    def batch_size(self) -> int:
        return self.config.batch_size or self.split.reference_batch_size

    @property
    def alpha_ceiling(self) -> float:
        """Roughly the largest I_Df/I_D an element can reach (SPEC §2), so α above it selects next
        to nothing: for LFSSD, batches of D over batches of D_f in batch mode, |D|/|D_f| per sample.
        SSD's ratios are of squared gradients and are not capped so (on digits, class 3, α = 25,
        three times that bound, still selects 149 elements): for SSD, the largest ratio measured."""
        if self.config.kind == "ssd":
            return self.largest_ratio
        n_full, n_forget = len(self.dataset.train_y), self.split.num_forget
        if self.config.mode == "batch":
            return math.ceil(n_full / self.batch_size) / math.ceil(n_forget / self.batch_size)
        return n_full / n_forget

    @property
    def ceiling_note(self) -> str:
        """What ``alpha_ceiling`` is, in words."""
        if self.config.kind == "ssd":
            return ("the largest I_Df/I_D measured here: SSD's ratios are of squared gradients, not capped by "
                    "|D|/|D_f|, so α above it selects only elements with I_D = 0")
        return ("|D|/|D_f|, counted in batches in batch mode: I_Df/I_D rarely exceeds it, so α above it dampens "
                "next to nothing")

    @cached_property
    def largest_ratio(self) -> float:
        """The largest finite I_Df/I_D over every element (1.0 when no element has I_D > 0)."""
        largest = 0.0
        for name, full in self.imp_full.items():
            forget, seen = self.imp_forget[name], full > 0
            if seen.any():
                largest = max(largest, float((forget[seen] / full[seen]).max()))
        return largest or 1.0


def baseline_model(config: ExperimentConfig, dataset: Dataset, cache: TensorCache,
                   progress: Progress | None = None) -> tuple[nn.Module, bool]:
    """The model to forget from: a user's checkpoint, or the default one trained and cached."""
    if config.checkpoint:
        model = create_model(config.model, dataset.image_shape, dataset.num_classes, seed=config.seed)
        return load_checkpoint(config.checkpoint, model), False
    return trained_model(config.model, dataset, config.train_config(dataset.name), cache=cache, progress=progress)


@dataclass(frozen=True, eq=False)
class FirstLook:
    """The baseline's test accuracy, overall and per class, and the forget split: what a first
    screen shows about a model before any forgetting (no importances, no attack)."""

    dataset: Dataset
    split: ForgetSplit
    test: float
    per_class_test: tuple[float | None, ...]


def first_look(config: ExperimentConfig, cache: TensorCache | None = None,
               progress: Progress | None = None) -> FirstLook:
    """``prepare``'s data, target and model without I_D, I_Df or the attack: on a cold start the
    lesson's first step shows in a fraction of the time (the attack alone imports scikit-learn).
    The figures are ``prepare(config).baseline``'s (the same model scored the same way)."""
    from core.evaluation.accuracy import accuracy, per_class_accuracy

    config = config.resolved()
    dataset = load_dataset(config.dataset, config.data_root)
    split = make_split(dataset, config.forget)
    model, _ = baseline_model(config, dataset, cache or TensorCache(), progress)
    logits = predict_logits(model.to(default_device()), dataset, dataset.test_x)
    return FirstLook(dataset, split, accuracy(logits, dataset.test_y),
                     per_class_accuracy(logits, dataset.test_y, dataset.num_classes))


@dataclass(frozen=True, eq=False)
class Importances:
    """Data, target, model and both importances: ``prepare`` without the baseline's scores."""

    config: ExperimentConfig
    dataset: Dataset
    model: nn.Module
    split: ForgetSplit
    imp_full: Importance
    imp_forget: Importance
    timings: dict[str, float]
    cache_hits: dict[str, bool]

    @property
    def batch_size(self) -> int:
        return self.config.batch_size or self.split.reference_batch_size


def load_importances(config: ExperimentConfig, cache: TensorCache | None = None, progress: Progress | None = None,
                     forget_images: torch.Tensor | None = None, forget_names: Sequence[str] = (),
                     group=None, _stage_weights=None) -> Importances:
    """Load data and model, resolve the target and compute (or load) I_D and I_Df.

    The model goes to the GPU when there is one (importances are cached as CPU tensors either
    way). ``group`` (``core.fast.distributed.Group``): this process is one of several that each take a
    share of the batches; every process returns the importances over all of them.
    """
    config = config.resolved()
    cache = cache or TensorCache()
    stage = _Stages(progress, _stage_weights or (("data", 0.05), ("model", 0.5), ("I_D", 0.35), ("I_Df", 0.1)))
    timings, hits = {}, {}
    with timed(timings, "data"):
        dataset = load_dataset(config.dataset, config.data_root, stage.next("data"))
        split = (make_split(dataset, config.forget) if forget_images is None
                 else images_split(dataset, forget_images, forget_names))
        if split.num_forget == 0:
            raise UserError(f"the forget set of '{config.forget}' is empty")
        if config.kind == "ssd" and not split.labelled:
            raise UserError("SSD needs labels, and the forget images have none; use LFSSD (label-free)")
    with timed(timings, "model"):
        if group is None:
            model, hits["model"] = baseline_model(config, dataset, cache, stage.next("model"))
            model = model.to(default_device())
        else:
            model, hits["model"] = group.same_model(lambda: baseline_model(config, dataset, cache, stage.next("model")))
    if not split.labelled:  # the attack's sets depend on what the baseline makes of the images
        split = with_attack_exclusion(split, predict_logits(model, dataset, split.forget_images).argmax(1))
    batch_size = config.batch_size or split.reference_batch_size
    per_sample = MODELS.get(config.model).per_sample
    model_key = weights_hash(model)
    with timed(timings, "importance_full"):
        imp_full, hits["importance_full"] = cached_importance(
            model, split.full_loader(dataset, batch_size, config.d_order), config.kind, config.mode, cache,
            model_key, stage.next("I_D"), per_sample, group=group)
    with timed(timings, "importance_forget"):
        imp_forget, hits["importance_forget"] = cached_importance(
            model, split.forget_loader(dataset, batch_size), config.kind, config.mode, cache,
            model_key, stage.next("I_Df"), per_sample, group=group)
    return Importances(config, dataset, model, split, imp_full, imp_forget, timings, hits)


def prepare(config: ExperimentConfig, cache: TensorCache | None = None, progress: Progress | None = None,
            forget_images: torch.Tensor | None = None, forget_names: Sequence[str] = ()) -> Prepared:
    """Load data and model, resolve the target, compute (or load) I_D and I_Df, score the baseline.

    ``forget_images`` (uint8, in the data set's format) replaces ``config.forget`` with an
    unlabelled target: how the app passes uploads, which have no path to name. The baseline's
    evaluation pass also fills the activation cache later slider moves restart from.
    """
    weights = (("data", 0.05), ("model", 0.45), ("I_D", 0.3), ("I_Df", 0.1), ("baseline", 0.1))
    parts = load_importances(config, cache, progress, forget_images, forget_names, _stage_weights=weights)
    if progress:
        progress(0.9, "evaluating the baseline")
    prepared = prepared_from(parts)
    if progress:
        progress(1.0, "ready")
    return prepared


def prepared_from(parts: Importances) -> Prepared:
    """Score the baseline of ``parts`` (filling the activation cache) and make it a ``Prepared``:
    how ``prepare`` ends, and how a caller with its own data, model and importances starts."""
    evaluations = _Evaluations()
    with timed(parts.timings, "evaluate_baseline"):
        baseline = evaluations.full(parts).evaluate(None)
    prepared = Prepared(parts.config, parts.dataset, parts.model, parts.split, parts.imp_full, parts.imp_forget,
                        baseline, parts.timings, parts.cache_hits)
    prepared.evaluations.adopt(evaluations)
    return prepared


def retrained_model(prepared: Prepared, cache: TensorCache | None = None, progress: Progress | None = None,
                    seed: int | None = None) -> nn.Module:
    """The same model trained from scratch on D_r only, with the experiment's recipe (seed: the
    experiment's, or ``seed``). Trained once and cached on disk like the baseline; unlabelled image
    targets have no known D_r and are refused."""
    if not prepared.split.labelled:
        raise UserError("a retrained reference needs to know D_f inside the training set; unlabelled images have none")
    config = prepared.config if seed is None else replace(prepared.config, seed=seed)
    model, _ = trained_model(config.model, prepared.dataset, config.train_config(prepared.dataset.name),
                             indices=prepared.split.retain_train, cache=cache or TensorCache(), progress=progress)
    return model.to(model_device(prepared.model))


def retrain_reference(prepared: Prepared, cache: TensorCache | None = None,
                      progress: Progress | None = None) -> EvalResult:
    """Scores of the honest reference: the same model trained from scratch on D_r only (see
    ``retrained_model``)."""
    return evaluate(retrained_model(prepared, cache, progress), prepared.dataset, prepared.split)


@dataclass(frozen=True, eq=False)
class Scored:
    """The images a result was scored on (all, or a large data set's fixed subset) and their logits."""

    dataset: Dataset
    split: ForgetSplit
    logits: dict  # {"test", "train"[, "forget" for unlabelled images]} -> (N, classes)

    def forget_logits(self) -> torch.Tensor:
        return self.logits["forget"] if not self.split.labelled else self.logits["train"][self.split.forget_train]

    def forget_labels(self) -> torch.Tensor | None:
        return None if not self.split.labelled else self.dataset.train_y[self.split.forget_train]


@dataclass(frozen=True, eq=False)
class ForgetOutcome:
    report: DampeningReport
    result: EvalResult
    seconds: float
    build_model: Callable[[], nn.Module] = field(repr=False)
    scored: "Scored | None" = field(default=None, repr=False)  # the logits the scores came from

    @cached_property
    def model(self) -> nn.Module:
        """The dampened copy (made on first use: a slider move itself never needs one)."""
        return self.build_model()


EVALUATIONS = ("auto", "full", "subset")
# Opt-in arithmetic that changes the numbers (labelled in EvalResult.numerics); "fp32" is exact.
NUMERICS = {"fp32": None, "bf16": torch.bfloat16}


def forget(prepared: Prepared, alpha: float, lambda_: float, progress: Progress | None = None,
           evaluation: str = "auto", numerics: str = "fp32") -> ForgetOutcome:
    """Dampen the baseline at (α, λ) and score it; the baseline stays untouched.

    Only the stages from the first one holding a dampened element are recomputed (``core.evaluation.prefix``),
    with the same numbers as scoring a dampened copy from scratch. ``evaluation``: "full" scores
    every image; "subset" a fixed stratified subset with 95 % intervals (``EvalResult.sample``);
    "auto" (the default) the subset only above ``core.evaluation.accuracy.SUBSET_THRESHOLD`` evaluation images.
    ``numerics="bf16"`` (opt-in) evaluates under bfloat16 autocast: faster on GPUs, approximate,
    and labelled so in ``EvalResult.numerics``.
    """
    started = time.perf_counter()
    plan = _plan(prepared, alpha, lambda_)
    if progress:
        progress(0.0, f"evaluating α={alpha:g}, λ={lambda_:g}")
    evaluation_ = prepared.evaluations.for_mode(prepared, evaluation, numerics)
    result, logits = evaluation_.evaluate_with_logits(plan)
    if progress:
        progress(1.0, "evaluation done")
    build = lambda: dampen(prepared.model, prepared.imp_full, prepared.imp_forget, alpha, lambda_, plan)[0]  # noqa: E731
    return ForgetOutcome(plan.report, result, time.perf_counter() - started, build,
                         Scored(evaluation_.dataset, evaluation_.split, logits))


def baseline_for(prepared: Prepared, result: EvalResult) -> EvalResult:
    """The baseline scored on the same images as ``result``: ``prepared.baseline`` after a full
    evaluation, the baseline on the same fixed subset (with its intervals) after a subset one."""
    if result.sample is None:
        return prepared.baseline
    return prepared.evaluations.for_mode(prepared, "subset").evaluate(None)


def _plan(prepared: Prepared, alpha: float, lambda_: float, beta_stats: bool = True):
    validate_hyperparameters(alpha, lambda_)
    _check_keys(prepared.model, prepared.imp_full, prepared.imp_forget)
    names = [name for name, _ in prepared.model.named_parameters()]
    imp_full, imp_forget = prepared.evaluations.importances_on(prepared, model_device(prepared.model))
    return plan_dampening(names, imp_full, imp_forget, alpha, lambda_, beta_stats)


class _Evaluation:
    """One fixed set of evaluation images (all, or a subset) with its prefix cache."""

    def __init__(self, parts, subset: EvalSubset | None, numerics: str = "fp32"):
        from core.evaluation.prefix import PrefixEvaluator

        self.subset, self.numerics = subset, numerics
        self.dataset = subset.dataset if subset else parts.dataset
        self.split = subset.split if subset else parts.split
        sets = {"test": self.dataset.test_x, "train": self.dataset.train_x}
        if not self.split.labelled:
            sets["forget"] = self.split.forget_images
        info = MODELS.get(parts.config.model) if parts.config.model in MODELS else None
        self.evaluator = PrefixEvaluator(parts.model, info.stages_of if info else None, self.dataset, sets,
                                         autocast=NUMERICS[numerics])

    def evaluate(self, plan) -> EvalResult:
        return self.evaluate_with_logits(plan)[0]

    def evaluate_with_logits(self, plan) -> tuple[EvalResult, dict]:
        """The scores and the logits they came from ({"test", "train", and "forget" for images})."""
        logits = self.evaluator.logits(plan)
        return self._scored(logits), logits

    def _scored(self, logits: dict) -> EvalResult:
        result = score(self.dataset, self.split, logits["test"], logits["train"], logits.get("forget"))
        if self.numerics != "fp32":
            result = replace(result, numerics=f"{self.numerics} autocast (opt-in; approximate)")
        return self.subset.with_intervals(result) if self.subset else result


class _Evaluations:
    """The evaluations of one prepared experiment (all images; on large data sets a fixed subset;
    opt-in numerics), made on first use and shared by every thread that moves a slider on it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._made: dict[tuple[bool, str], _Evaluation] = {}
        self._subset: EvalSubset | None = None
        self._device_maps: tuple[Importance, Importance] | None = None

    def adopt(self, other: "_Evaluations") -> None:
        self._made, self._subset = dict(other._made), other._subset
        self._device_maps = other._device_maps

    def get(self, parts, subset: bool, numerics: str = "fp32") -> _Evaluation:
        with self._lock:
            key = (subset, numerics)
            if key not in self._made:
                if subset and self._subset is None:
                    self._subset = evaluation_subset(parts.dataset, parts.split)
                self._made[key] = _Evaluation(parts, self._subset if subset else None, numerics)
            return self._made[key]

    def full(self, parts) -> _Evaluation:
        return self.get(parts, False)

    def importances_on(self, parts, device: torch.device) -> tuple[Importance, Importance]:
        """I_D and I_Df on the model's device (a GPU copy made once), so a slider move selects
        there; on the CPU, the maps themselves."""
        if device.type == "cpu":
            return parts.imp_full, parts.imp_forget
        with self._lock:
            if self._device_maps is None:
                move = lambda imp: {k: v.to(device) for k, v in imp.items()}  # noqa: E731
                self._device_maps = (move(parts.imp_full), move(parts.imp_forget))
            return self._device_maps

    def for_mode(self, prepared: Prepared, evaluation: str, numerics: str = "fp32") -> _Evaluation:
        if evaluation not in EVALUATIONS:
            raise UserError(f"unknown evaluation '{evaluation}'; choose one of: {', '.join(EVALUATIONS)}")
        if numerics not in NUMERICS:
            raise UserError(f"unknown numerics '{numerics}'; choose one of: {', '.join(NUMERICS)}")
        subset = evaluation == "subset" or (evaluation == "auto" and needs_subset(prepared.dataset, prepared.split))
        return self.get(prepared, subset, numerics)


def run_forget(config: ExperimentConfig, cache: TensorCache | None = None,
               progress: Progress | None = None) -> tuple[Prepared, ForgetOutcome]:
    config = config.resolved()
    alpha = config.alpha if config.alpha is not None else default_alpha(config.dataset, ForgetSpec.parse(config.forget).kind)
    validate_hyperparameters(alpha, config.lambda_)
    prepared = prepare(replace(config, alpha=alpha), cache, progress)
    return prepared, forget(prepared, alpha, config.lambda_)


def sweep(prepared: Prepared, alphas: Sequence[float], lambdas: Sequence[float],
          progress: Progress | None = None) -> pd.DataFrame:
    """One row per (α, λ): selected elements and every score, on the cached importances."""
    for alpha in alphas:
        for lambda_ in lambdas:
            validate_hyperparameters(alpha, lambda_)
    grid = [(a, lam) for a in alphas for lam in lambdas]
    rows = []
    evaluation = prepared.evaluations.for_mode(prepared, "auto")
    for i, (alpha, lambda_) in enumerate(grid):
        # counts only (no β statistics), one reused model copy, no deep copy per point
        plan = _plan(prepared, alpha, lambda_, beta_stats=False)
        result = evaluation.evaluate(plan)
        rows.append({"alpha": alpha, "lambda": lambda_, "selected": plan.report.selected,
                     "selected_fraction": plan.report.fraction, **_scores(result)})
        if progress:
            progress((i + 1) / len(grid), f"sweep: α={alpha:g}, λ={lambda_:g} ({i + 1}/{len(grid)})")
    import pandas as pd

    return pd.DataFrame(rows)


def _scores(result: EvalResult) -> dict:
    return {"d_r": result.d_r, "d_f": result.d_f, "test": result.test, "mia": result.mia,
            "retain_train": result.retain_train, "forget_train": result.forget_train}


class _Stages:
    """Maps each stage's own 0..1 progress onto its share of one overall bar."""

    def __init__(self, progress: Progress | None, weights):
        self.progress, self.weights, self.done = progress, dict(weights), 0.0

    def next(self, name: str) -> Progress | None:
        if self.progress is None:
            return None
        start, width = self.done, self.weights[name]
        self.done += width
        return lambda fraction, message: self.progress(min(start + width * fraction, 1.0), message)


class timed:
    """``with timed(timings, name):`` records the block's wall time in ``timings[name]``."""

    def __init__(self, timings: dict, name: str):
        self.timings, self.name = timings, name

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        synchronize()  # a GPU's queued kernels are part of the block
        self.timings[self.name] = time.perf_counter() - self.start


# --- choosing α by a rule (core.method.alpha) ------------------------------------------------------

ALPHA_SAMPLE = 512  # images of D whose outputs a rule may read (a fixed, seeded sample)


class _RuleOutputs:
    """The dampened model's softmax on the forget images and on a fixed sample of D, evaluated from
    the first dampened stage on (``core.evaluation.prefix``): what an α rule may read, no labels."""

    def __init__(self, prepared: Prepared):
        from core.evaluation.prefix import PrefixEvaluator

        data, split = prepared.dataset, prepared.split
        forget = split.forget_images if not split.labelled else data.train_x[split.forget_train]
        sample = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(0))[:ALPHA_SAMPLE]
        info = MODELS.get(prepared.config.model) if prepared.config.model in MODELS else None
        self.prepared = prepared
        self.evaluator = PrefixEvaluator(prepared.model, info.stages_of if info else None, data,
                                         {"forget": forget, "sample": data.train_x[sample]})
        self.moves = 0

    def __call__(self, alpha: float, lambda_: float):
        self.moves += 1
        logits = self.evaluator.logits(_plan(self.prepared, alpha, lambda_, beta_stats=False))
        return torch.softmax(logits["forget"], 1).numpy(), torch.softmax(logits["sample"], 1).numpy()

    def baseline(self):
        logits = self.evaluator.logits(None)
        return torch.softmax(logits["forget"], 1).numpy(), torch.softmax(logits["sample"], 1).numpy()


def alpha_problem(prepared: Prepared):
    """What an α rule may read about ``prepared``: importances, sizes, and the outputs of the model
    dampened at any (α, λ) on the forget images and a sample of D."""
    from core.method.alpha import AlphaProblem

    outputs = _RuleOutputs(prepared)
    names = [name for name, _ in prepared.model.named_parameters()]
    imp_full, imp_forget = prepared.evaluations.importances_on(prepared, model_device(prepared.model))

    def selected(alpha: float) -> int:
        return plan_dampening(names, imp_full, imp_forget, alpha, 1.0, False).report.selected

    return AlphaProblem(prepared.imp_full, prepared.imp_forget, prepared.split.num_forget,
                        len(prepared.dataset.train_y), prepared.alpha_ceiling, outputs, outputs.baseline(), selected)


def choose_alpha(prepared: Prepared, rule: str):
    """``core.method.alpha.AlphaChoice`` of the α rule ``rule`` (e.g. "auto", "assd") on ``prepared``."""
    from core.method.alpha import ALPHA_RULES

    problem = alpha_problem(prepared)
    choice = ALPHA_RULES.get(rule).choose(problem)
    return replace(choice, diagnostics={**choice.diagnostics, "evaluations": problem.outputs.moves})
