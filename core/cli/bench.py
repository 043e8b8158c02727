"""``python -m core bench``: how fast the engine is, as ratios against floors measured beside it.

Every comparison runs in this one process, its contenders interleaved (a, b, a, b, …) so a
change in the machine's load hits both alike, and the minimum of the repeats is kept; the α
sweep, too long to repeat, is timed once a side, ours split around the naive points. Absolute
seconds are reported as context only; the ratios are the results.

| ratio                           | what / against what                                                        |
|---------------------------------|----------------------------------------------------------------------------|
| importance ÷ floor              | I_D (each kind, batch mode) ÷ a plain forward+backward over the same loader |
| sample ÷ batch                  | sample-mode importance ÷ batch mode, same loader                            |
| slider ÷ floor                  | one slider move (dampen + evaluate + MIA, importances cached) ÷ one plain    |
|                                 | forward pass over the evaluation images                                     |
| sweep speed-up                  | 10-point α sweep the naive way (both importances recomputed per α, as the   |
|                                 | reference code does) ÷ ours; "cold" includes our one importance pass        |
| prefix saving (MNIST-5k, α = 5) | full evaluation forward ÷ a slider move restarting at the first dampened    |
|                                 | stage, with the share of stages and of parameters recomputed                |
| move + evidence ÷ move          | a slider move with the Evidence page's histograms ÷ the move (goal ≤ 1.2)   |
| automatic α ÷ slider move       | the ``auto`` α rule from scratch ÷ one slider move, side by side (goal ≤ 10) |
| torchrun                        | largest relative difference, 2 gloo processes against 1                     |

Workloads: the default (digits, small CNN), MNIST-5k (small CNN) for the prefix saving, and a
CIFAR-shaped one (32×32×3, 10 classes, synthetic pixels: a pass costs the same whatever the
content; what the prefix cache skips does depend on it, see ``scripts/sweep_selection.py``) with
the small CNN and ResNet18-CIFAR. Opt-in, ``cifar-scale``: ResNet18's α sweep on a CIFAR-shaped
set just large enough that slider moves score the stratified subset (~40 minutes on one core).
``tiny=True`` shrinks everything to seconds (for tests).
"""
from __future__ import annotations

import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from core.cache import TensorCache, serialize
from core.method.dampening import dampen
from core.data.dataset import Dataset
from core.errors import UserError
from core.evaluation.accuracy import evaluate, evaluation_images, predict_logits
from core.experiment import ExperimentConfig, Importances, Prepared, forget, prepare, prepared_from, sweep, timed
from core.method.importance import compute_importance, max_relative_difference, objective
from core.models.registry import MODELS, create_model, default_device
from core.fast.runtime import as_layout, configure_threads, layout_copy, synchronize
from core.data.splits import make_split

Progress = Callable[[float, str], None]
SWEEP_POINTS = 10
TARGETS = {  # name -> (comparison, goal): the goals, checked against what was measured
    "importance_over_floor": ("<=", 1.15),
    "slider_over_floor": ("<=", 1.5),
    "slider_seconds_default": ("<", 0.25),
    "sweep_speedup_cifar_small_cnn": (">=", 5.0),
    "sweep_speedup_cifar_resnet18": (">=", 5.0),
    "sample_over_batch_small_cnn": ("<=", 4.0),
    "prefix_saving_mnist5k": (">=", 5.0),
    "torchrun_max_relative_difference": ("<=", 1e-5),
    "auto_alpha_over_slider_move": ("<=", 10.0),
    "evidence_over_slider_move": ("<=", 1.2),
}


@dataclass(frozen=True)
class Workload:
    name: str
    model: str
    images: str  # where the pixels come from
    prepared: Prepared
    batches: int | None  # importance and sample-mode ratios on this many batches of D (None: all of D)
    naive_points: int  # naive sweep points actually run (the rest scaled up: every point repeats the same work)
    repeats: int
    warm_images: int | None = None  # warm-up calls on this many images (None: the measured call itself)
    sample_images: int | None = None  # sample-mode ratio on this many images of D's first batch (None: as above)


def race(contenders: dict[str, Callable[[], object]], repeats: int, warmup: bool | dict = True) -> dict[str, float]:
    """Minimum seconds of each contender over ``repeats`` interleaved runs, after one warm-up
    each (``warmup`` may instead give cheaper warm-up calls, e.g. on one batch)."""
    if warmup:
        for name, fn in contenders.items():
            (warmup[name] if isinstance(warmup, dict) else fn)()
    best = {name: math.inf for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            synchronize()
            started = time.perf_counter()
            fn()
            synchronize()  # on a GPU, a contender's queued kernels are its own time
            best[name] = min(best[name], time.perf_counter() - started)
    return best


WORKLOADS = ("digits", "mnist5k", "cifar", "cifar-scale")  # the last is opt-in: ~40 minutes
SCALE_TARGETS = {"sweep_speedup_cifar_resnet18_at_subset_scale": (">=", 5.0)}  # only when cifar-scale runs
SCALE_TRAIN, SCALE_TEST = 8_500, 1_700  # CIFAR's 5:1, 10 classes: 10,200 evaluation images, so moves subsample
OPT_IN = ("bf16", "compile")  # faster arithmetic that changes the numbers: measured only when asked


def run_bench(tiny: bool = False, threads: int | None = None, cache: TensorCache | None = None,
              workloads: tuple[str, ...] = ("digits", "mnist5k", "cifar"), distributed: bool = True,
              progress: Progress | None = None, opt_in: tuple[str, ...] = ()) -> dict:
    """Every measurement, as one JSON-ready dict (see the module doc). ``opt_in`` ("bf16",
    "compile") also times the evaluation forward with those, and how far their logits move."""
    unknown = set(workloads) - set(WORKLOADS)
    if unknown:
        raise UserError(f"unknown bench workload '{sorted(unknown)[0]}'; choose from: {', '.join(WORKLOADS)}")
    if set(opt_in) - set(OPT_IN):
        raise UserError(f"unknown opt-in '{sorted(set(opt_in) - set(OPT_IN))[0]}'; choose from: {', '.join(OPT_IN)}")
    started = time.perf_counter()
    threads = configure_threads(threads)
    cache = cache or TensorCache()
    say = progress or (lambda fraction, message: None)
    out = {"threads": threads, "torch": torch.__version__, "device": _device_name(), "tiny": tiny,
           "timing": "minimum over interleaved repeats, after one warm-up each (the α sweep: its own timing); "
                     "ratios are the results",
           "workloads": {}}
    builders = {"digits": [_digits], "cifar": [_cifar_small_cnn, _cifar_resnet18], "mnist5k": [], "cifar-scale": []}
    steps = [b for w in workloads for b in builders[w]]
    for i, build in enumerate(steps):
        workload = build(tiny, cache)
        say(i / (len(steps) + 2), f"bench: {workload.name}")
        out["workloads"][workload.name] = measure_workload(workload)
        if opt_in:
            out["workloads"][workload.name]["opt_in"] = measure_opt_in(workload.prepared, opt_in)
    if "mnist5k" in workloads:
        say(len(steps) / (len(steps) + 2), "bench: prefix caching on MNIST-5k")
        out["prefix"] = measure_prefix(_mnist5k(tiny, cache), alpha=5.0)
    if "cifar-scale" in workloads:
        say(len(steps) / (len(steps) + 2), "bench: α sweep where slider moves score the subset (long)")
        out["sweep_at_scale"] = measure_sweep_at_scale(tiny)
    if distributed:
        say((len(steps) + 1) / (len(steps) + 2), "bench: torchrun, 2 processes")
        out["distributed"] = measure_distributed(tiny)
    out["targets"] = _targets(out)
    out["seconds"] = time.perf_counter() - started
    say(1.0, "bench done")
    return out


# --- workloads ----------------------------------------------------------------------------------

def _digits(tiny: bool, cache: TensorCache) -> Workload:
    if tiny:
        prepared = _synthetic("digits-shaped (synthetic)", "small_cnn", (1, 8, 8), 120, 30)
        return Workload("digits/small_cnn", "small_cnn", "synthetic 8×8", prepared, None, 2, 1)
    prepared = prepare(ExperimentConfig(dataset="digits"), cache)
    return Workload("digits/small_cnn", "small_cnn", "scikit-learn digits (real)", prepared, None, SWEEP_POINTS, 5)


def _mnist5k(tiny: bool, cache: TensorCache) -> Prepared:
    if tiny:
        return _synthetic("mnist-shaped (synthetic)", "small_cnn", (1, 28, 28), 80, 20)
    return prepare(ExperimentConfig(dataset="mnist5k"), cache)


def _cifar_small_cnn(tiny: bool, cache: TensorCache) -> Workload:
    n_train, n_test = (80, 16) if tiny else (640, 128)
    prepared = _synthetic("cifar-shaped (synthetic)", "small_cnn", (3, 32, 32), n_train, n_test)
    return Workload("cifar/small_cnn", "small_cnn", "synthetic 32×32×3", prepared, None, 1 if tiny else 3,
                    1 if tiny else 3)


def _cifar_resnet18(tiny: bool, cache: TensorCache) -> Workload:
    shape = (3, 8, 8) if tiny else (3, 32, 32)
    n_train, n_test = (40, 8) if tiny else (192, 38)  # CIFAR's 5:1 train:test; 3 batches of D, 1 of D_f
    prepared = _synthetic("cifar-shaped (synthetic)", "resnet18", shape, n_train, n_test)
    return Workload("cifar/resnet18", "resnet18", f"synthetic {shape[1]}×{shape[2]}×3", prepared, 1, 1, 1,
                    warm_images=4, sample_images=None if tiny else 32)


def _synthetic(name: str, model_name: str, shape: tuple[int, int, int], n_train: int, n_test: int,
               classes: int = 10, seed: int = 0) -> Prepared:
    """Uniform random pixels, balanced labels, a freshly initialised model; forget class 3."""
    gen = torch.Generator().manual_seed(seed)
    pixels = lambda n: torch.randint(0, 256, (n, *shape), generator=gen, dtype=torch.uint8)  # noqa: E731
    labels = lambda n: torch.arange(n) % classes  # noqa: E731
    dataset = Dataset(name, pixels(n_train), labels(n_train), pixels(n_test), labels(n_test),
                      tuple(str(c) for c in range(classes)), (0.5,) * shape[0], (0.25,) * shape[0])
    return prepared_for(dataset, model_name, create_model(model_name, shape, classes, seed=seed))


def prepared_for(dataset: Dataset, model_name: str, model: torch.nn.Module) -> Prepared:
    """``model`` (a ``model_name``) ready to forget class 3 of ``dataset``: LFSSD importances in
    batch mode, their seconds in ``timings``, the baseline scored."""
    split = make_split(dataset, "class:3")
    model = model.to(default_device())  # where prepare() puts it
    config = ExperimentConfig(dataset=dataset.name, model=model_name, forget="class:3")
    batch = split.reference_batch_size
    per_sample = MODELS.get(model_name).per_sample
    timings = {}
    with timed(timings, "importance_full"):
        imp_full = compute_importance(model, split.full_loader(dataset, batch), "lfssd", "batch", per_sample=per_sample)
    with timed(timings, "importance_forget"):
        imp_forget = compute_importance(model, split.forget_loader(dataset, batch), "lfssd", "batch",
                                        per_sample=per_sample)
    return prepared_from(Importances(config, dataset, model, split, imp_full, imp_forget, timings, {}))


# --- measurements -------------------------------------------------------------------------------

def floor_pass(model: torch.nn.Module, loader, kind: str = "lfssd") -> None:
    """One plain forward+backward over ``loader``, the gradients thrown away (same layout as the
    importance pass: a channels-last copy for convolutional models)."""
    run = layout_copy(model)
    params = [p for p in run.parameters() if p.requires_grad]
    device = params[0].device
    for x, y in loader:
        x = as_layout(x.to(device, non_blocking=True), run is not model)
        torch.autograd.grad(objective(kind, run(x), y.to(device, non_blocking=True)), params)


def eval_floor(prepared: Prepared) -> None:
    """One plain forward pass over the evaluation images (test + train [+ forget images])."""
    ds, split = prepared.dataset, prepared.split
    predict_logits(prepared.model, ds, ds.test_x)
    predict_logits(prepared.model, ds, ds.train_x)
    if not split.labelled:
        predict_logits(prepared.model, ds, split.forget_images)


def measure_workload(w: Workload) -> dict:
    p = w.prepared
    return {"model": w.model, "images": w.images, "train": len(p.dataset.train_y), "test": len(p.dataset.test_y),
            "forget": p.split.num_forget, "batch_size": p.batch_size,
            "importance": (importance := measure_importance(w)), "sample_vs_batch": measure_sample(w),
            "slider": measure_slider(p, w.repeats), "sweep": measure_sweep(w, importance),
            "auto_alpha": measure_auto_alpha(p, w.repeats), "evidence": measure_evidence(p, w.repeats),
            "memory": _memory(p)}


def measure_evidence(p: Prepared, repeats: int) -> dict:
    """A slider move with the Evidence page's per-move histograms (confidences of the forget
    examples under the dampened, baseline and retrained models; the best threshold) against the
    move alone, side by side."""
    from core.compare.evidence import pair_evidence
    from core.data.registry import default_alpha
    from core.experiment import retrained_model

    alpha = default_alpha(p.config.dataset, p.split.spec.kind)
    retrained = retrained_model(p, TensorCache(tempfile.mkdtemp(prefix="lfssd-bench-")))
    times = race({"move": lambda: forget(p, alpha, 1.0),
                  "with_evidence": lambda: pair_evidence(p, forget(p, alpha, 1.0), retrained)}, repeats,
                 warmup=repeats > 1)
    return {"slider_seconds": times["move"], "with_evidence_seconds": times["with_evidence"],
            "ratio_to_slider_move": times["with_evidence"] / times["move"]}


def measure_auto_alpha(p: Prepared, repeats: int) -> dict:
    """The automatic α (core.method.alpha's ``auto``, from scratch: its own evaluation images and
    activation cache) against a slider move at the default α, side by side."""
    from core.data.registry import default_alpha
    from core.experiment import choose_alpha

    alpha = default_alpha(p.config.dataset, p.split.spec.kind)
    choice = choose_alpha(p, "auto")
    times = race({"auto": lambda: choose_alpha(p, "auto"), "move": lambda: forget(p, alpha, 1.0)}, repeats,
                 warmup=repeats > 1)
    return {"seconds": times["auto"], "slider_seconds": times["move"], "ratio_to_slider_move": times["auto"] / times["move"],
            "evaluations": choice.diagnostics.get("evaluations"), "alpha": choice.alpha, "lambda": choice.lambda_}


def _batches(w: Workload, count: int | None = None):
    """The loader of D, or its first ``count`` batches (then materialised: both contenders get the
    same normalised tensors), and warm-up data (the same, or a few images)."""
    p = w.prepared
    loader = p.split.full_loader(p.dataset, p.batch_size, p.config.d_order)
    data = loader if count is None else [loader.batch(i) for i in range(min(count, len(loader)))]
    x, y = loader.batch(0)
    warm = [(x[:w.warm_images], y[:w.warm_images])] if w.warm_images else [loader.batch(0)]
    return data, warm


def measure_importance(w: Workload) -> dict:
    p = w.prepared
    data, warm_data = _batches(w, w.batches)
    per_sample = MODELS.get(w.model).per_sample
    contenders, warm = {}, {}
    for kind in ("lfssd", "ssd"):
        for into, batches in ((contenders, data), (warm, warm_data)):
            into[f"floor_{kind}"] = lambda kind=kind, b=batches: floor_pass(p.model, b, kind)
            into[kind] = lambda kind=kind, b=batches: compute_importance(p.model, b, kind, "batch", per_sample=per_sample)
    times = race(contenders, max(w.repeats, 2), warmup=warm)  # at least two: one ResNet18 batch is noisy alone
    return {"batches": len(data), "images": sum(len(y) for _, y in data),
            **{kind: {"seconds": times[kind], "floor_seconds": times[f"floor_{kind}"],
                      "ratio_to_floor": times[kind] / times[f"floor_{kind}"]} for kind in ("lfssd", "ssd")}}


def measure_sample(w: Workload) -> dict:
    p = w.prepared
    data, warm_data = _batches(w, w.batches)
    if w.sample_images is not None:  # per-sample work grows with the model: a part of a batch is enough
        x, y = data[0]
        data = [(x[:w.sample_images], y[:w.sample_images])]
    per_sample = MODELS.get(w.model).per_sample
    contenders, warm = {}, {}
    for kind in ("lfssd", "ssd"):
        for into, batches in ((contenders, data), (warm, warm_data)):
            into[f"batch_{kind}"] = lambda kind=kind, b=batches: compute_importance(p.model, b, kind, "batch")
            into[f"sample_{kind}"] = lambda kind=kind, b=batches: compute_importance(p.model, b, kind, "sample",
                                                                                     per_sample=per_sample)
    times = race(contenders, w.repeats, warmup=warm)
    return {"per_sample_method": per_sample, "images": sum(len(y) for _, y in data),
            **{kind: {"sample_seconds": times[f"sample_{kind}"], "batch_seconds": times[f"batch_{kind}"],
                      "ratio_to_batch": times[f"sample_{kind}"] / times[f"batch_{kind}"]} for kind in ("lfssd", "ssd")}}


def measure_slider(p: Prepared, repeats: int, alpha: float | None = None) -> dict:
    """A slider move at the data set's default α (importances cached, activation cache warm),
    against one plain forward over the evaluation images; the move without the prefix cache (a
    dampened deep copy scored from scratch, as before) as context."""
    from core.data.registry import default_alpha

    alpha = alpha if alpha is not None else default_alpha(p.config.dataset, p.split.spec.kind)
    evaluator = p.evaluations.for_mode(p, "auto").evaluator
    cold_started = time.perf_counter()
    evaluator._slice_modes.clear()  # the first move at this α also checks its channel slice
    forget(p, alpha, 1.0)
    cold = time.perf_counter() - cold_started
    stats = evaluator.last
    times = race({"move": lambda: forget(p, alpha, 1.0), "floor": lambda: eval_floor(p),
                  "no_prefix": lambda: evaluate(dampen(p.model, p.imp_full, p.imp_forget, alpha, 1.0)[0],
                                                p.dataset, p.split)}, repeats, warmup=repeats > 1)
    return {"alpha": alpha, "seconds": times["move"], "first_move_seconds": cold, "floor_seconds": times["floor"],
            "ratio_to_floor": times["move"] / times["floor"], "without_prefix_seconds": times["no_prefix"],
            **_recomputed(p, evaluator, stats)}


def _recomputed(p: Prepared, evaluator, stats) -> dict:
    """Which share of the model a move recomputed: stages, and parameters (by element count)."""
    names = dict(p.model.named_parameters())
    total = sum(t.numel() for t in names.values())
    redone = sum(t.numel() for n, t in names.items() if evaluator.stage_of[n] >= stats.first_stage)
    out = {"stages": stats.stages, "first_recomputed_stage": stats.first_stage,
           "first_recomputed_stage_name": (evaluator.base_stages[stats.first_stage].name
                                           if stats.first_stage < stats.stages else None),
           "stages_recomputed_share": (stats.stages - stats.first_stage) / stats.stages,
           "parameters_recomputed_share": redone / total if total else 0.0}
    if stats.partial_channels is not None:
        out["first_stage_channels_recomputed"] = f"{stats.partial_channels} of {stats.stage_channels}"
        out["first_stage_filters_packed"] = stats.packed
    return out


def sweep_alphas(p: Prepared) -> list[float]:
    """The bench's 10 α: from 1 to the ratio ceiling, log-spaced."""
    return [float(a) for a in np.geomspace(1.0, max(p.alpha_ceiling, 1.5), SWEEP_POINTS)]


def _importance_pass(p: Prepared) -> Callable:
    per_sample = MODELS.get(p.config.model).per_sample
    return lambda loader: compute_importance(p.model, loader, p.config.kind, p.config.mode, per_sample=per_sample)


def naive_point(p: Prepared, alpha: float, dataset: Dataset, split) -> None:
    """One α the naive way, as the reference code does: I_D and I_Df recomputed, a deep copy of the
    model dampened, then scored on ``dataset``/``split`` (all images, or the app's subset)."""
    importances = _importance_pass(p)
    dampened = dampen(p.model, importances(p.split.full_loader(p.dataset, p.batch_size, p.config.d_order)),
                      importances(p.split.forget_loader(p.dataset, p.batch_size)), alpha, 1.0)[0]
    evaluate(dampened, dataset, split)


def measure_sweep(w: Workload, importance: dict) -> dict:
    """10 α from 1 to the ratio ceiling (log-spaced): ours on cached importances, against the
    naive way (both importances recomputed, a deep copy dampened and scored, per α). "Cold" adds
    our one-off work: I_D, I_Df and the baseline pass that fills the activation cache.

    Each side is timed once, side by side: our sweep's first half, then the naive points, then
    its second half, so a machine that speeds up or slows down during the run weighs on both."""
    p = w.prepared
    alphas = sweep_alphas(p)
    full_loader = p.split.full_loader(p.dataset, p.batch_size, p.config.d_order)
    forget_loader = p.split.forget_loader(p.dataset, p.batch_size)
    importances = _importance_pass(p)
    naive_points = [alphas[round(i * (len(alphas) - 1) / max(w.naive_points - 1, 1))] for i in range(w.naive_points)]
    once = {}
    for name, fn in (("I_D", lambda: importances(full_loader)), ("I_Df", lambda: importances(forget_loader)),
                     ("baseline_pass", lambda: prepared_from(Importances(p.config, p.dataset, p.model, p.split,
                                                                         p.imp_full, p.imp_forget, {}, {})))):
        with timed(once, name):
            fn()
    took = {}
    half = len(alphas) // 2
    with timed(took, "ours_first_half"):
        sweep(p, alphas[:half], [1.0])
    with timed(took, "naive"):
        for alpha in naive_points:
            naive_point(p, alpha, p.dataset, p.split)
    with timed(took, "ours_second_half"):
        sweep(p, alphas[half:], [1.0])
    naive_seconds = took["naive"] * len(alphas) / len(naive_points)
    ours = took["ours_first_half"] + took["ours_second_half"]
    cold = ours + sum(once.values())
    return {"alphas": alphas, "points": len(alphas), "naive_seconds": naive_seconds,
            "naive_points_run": len(naive_points),
            "naive_note": (None if len(naive_points) == len(alphas) else
                           f"{len(naive_points)} of {len(alphas)} naive points run, scaled ×{len(alphas) / len(naive_points):.3g} "
                           "(each naive point repeats the same work)"),
            "ours_seconds": ours, "ours_cold_seconds": cold, "one_off_seconds": once,
            "timing": f"one run each: our first {half} points, the naive points, our last {len(alphas) - half}",
            "speedup": naive_seconds / ours, "speedup_cold": naive_seconds / cold,
            # what caching the importances alone gives (a naive point = I_D + I_Df + a point like
            # ours); the prefix cache, making our point cheaper than a full evaluation, adds to it
            "importance_bound": 1 + (once["I_D"] + once["I_Df"]) / (ours / len(alphas)),
            "projected_cifar10": _projection(p, importance, ours / len(alphas))}


def measure_sweep_at_scale(tiny: bool) -> dict:
    """The 10-point α sweep on a CIFAR-shaped set just large enough that the app's slider moves
    score the stratified subset (``core.evaluation.accuracy.SUBSET_THRESHOLD``), against the naive way
    scoring the same subset: the same scores, so the speed-up is what cached importances buy.
    One naive point is run (each repeats the same work: I_D, I_Df, a dampened copy scored).
    ResNet18-CIFAR, ~40 minutes on one CPU core; ``tiny`` swaps in the small CNN on 8×8 images."""
    model_name, shape = ("small_cnn", (3, 8, 8)) if tiny else ("resnet18", (3, 32, 32))
    p = _synthetic("cifar-shaped (synthetic)", model_name, shape, SCALE_TRAIN, SCALE_TEST)
    evaluation = p.evaluations.for_mode(p, "auto")
    if evaluation.subset is None:
        raise RuntimeError("the scale workload no longer crosses the subset threshold")
    alphas = sweep_alphas(p)
    took = {}
    with timed(took, "naive"):
        naive_point(p, alphas[0], evaluation.dataset, evaluation.split)
    with timed(took, "fill"):
        evaluation.evaluate(None)  # the subset's baseline pass, filling its activation cache
    with timed(took, "ours"):
        sweep(p, alphas, [1.0])
    naive_seconds, fill, ours = took["naive"], took["fill"], took["ours"]
    one_off = p.timings["importance_full"] + p.timings["importance_forget"] + fill
    scored = len(evaluation.dataset.train_y) + len(evaluation.dataset.test_y)
    return {"model": model_name, "images": f"synthetic {shape[1]}×{shape[2]}×3", "train": SCALE_TRAIN,
            "test": SCALE_TEST, "forget": p.split.num_forget, "evaluation_images": evaluation_images(p.dataset, p.split),
            "subset_images": scored, "alphas": alphas, "points": len(alphas),
            "naive_point_seconds": naive_seconds, "naive_seconds": naive_seconds * len(alphas), "ours_seconds": ours,
            "one_off_seconds": {"I_D": p.timings["importance_full"], "I_Df": p.timings["importance_forget"],
                                "subset_baseline_pass": fill, "full_baseline_pass": p.timings["evaluate_baseline"]},
            "speedup": naive_seconds * len(alphas) / ours, "speedup_cold": naive_seconds * len(alphas) / (ours + one_off),
            "note": "1 of 10 naive points run, scaled ×10; both sides score the same stratified subset"}


def _projection(p: Prepared, importance: dict, our_point: float) -> dict:
    """Per-point costs scaled to CIFAR-10's sizes (50,000 train with 5,000 forgotten, 10,000 test),
    where slider moves score the stratified subset: an estimate from per-image costs, not a measurement."""
    from core.evaluation.accuracy import SUBSET_RETAIN_TRAIN, SUBSET_TEST

    n_train, n_eval = len(p.dataset.train_y), len(p.dataset.train_y) + len(p.dataset.test_y)
    per_train_image = importance["lfssd"]["seconds"] / importance["images"]  # one importance pass
    per_eval_image = our_point / n_eval  # one slider move, everything recomputed as here
    subset = SUBSET_TEST + 1_000 + SUBSET_RETAIN_TRAIN + 5_000  # with every D_f image: 1,000 test, 5,000 train
    ours = subset * per_eval_image
    naive = 55_000 * per_train_image + subset * per_eval_image
    return {"naive_point_seconds": naive, "our_point_seconds": ours, "speedup": naive / ours,
            "note": f"estimate: per-image costs measured here ({n_train} train images) scaled to CIFAR-10, "
                    f"both scoring the {subset:,}-image stratified subset"}


def measure_prefix(p: Prepared, alpha: float = 5.0, repeats: int = 3) -> dict:
    """A slider move at α against one full evaluation forward, on MNIST-5k (the issue's case)."""
    evaluator = p.evaluations.for_mode(p, "auto").evaluator
    forget(p, alpha, 1.0)
    stats = evaluator.last
    times = race({"move": lambda: forget(p, alpha, 1.0), "floor": lambda: eval_floor(p)}, repeats)
    changed = [layer.name for layer in forget(p, alpha, 1.0).report.layers if layer.selected]
    return {"dataset": p.dataset.name, "model": p.config.model, "alpha": alpha, "move_seconds": times["move"],
            "full_forward_seconds": times["floor"], "saving": times["floor"] / times["move"],
            "dampened_tensors": changed, **_recomputed(p, evaluator, stats)}


def measure_opt_in(p: Prepared, which: tuple[str, ...]) -> dict:
    """The evaluation forward in fp32 (the floor) against bf16 autocast and ``torch.compile``:
    speed ratio, largest logit change and share of changed predictions. These change the numbers:
    ``forget(..., numerics="bf16")`` is opt-in and labelled; compile is measured here only."""
    images = p.dataset.test_x
    run = layout_copy(p.model)

    def forward(model, autocast=None):
        with torch.inference_mode():
            chunks = []
            for start in range(0, len(images), 512):
                x = as_layout(p.dataset.normalize(images[start:start + 512]).to(next(model.parameters()).device),
                              run is not p.model)
                if autocast is None:
                    chunks.append(model(x).float().cpu())
                else:
                    with torch.autocast(device_type=x.device.type, dtype=autocast):
                        chunks.append(model(x).float().cpu())
            return torch.cat(chunks)

    contenders = {"fp32": lambda: forward(run)}
    if "bf16" in which:
        contenders["bf16"] = lambda: forward(run, torch.bfloat16)
    if "compile" in which:
        compiled = torch.compile(run)
        contenders["compile"] = lambda: forward(compiled)
    reference = forward(run)
    out = {"images": len(images)}
    times = race(contenders, 3)
    for name in contenders:
        if name == "fp32":
            continue
        logits = contenders[name]()
        out[name] = {"seconds": times[name], "ratio_to_fp32": times[name] / times["fp32"],
                     "max_abs_logit_change": float((logits - reference).abs().max()),
                     "changed_predictions": float((logits.argmax(1) != reference.argmax(1)).double().mean()),
                     "label": "changes numerics; opt-in"}
    return out


def measure_distributed(tiny: bool) -> dict:
    """``torch.distributed.run --nproc_per_node=2 -m core importance`` (gloo) against one process."""
    from safetensors.torch import load_file

    from core.models.registry import save_checkpoint

    with tempfile.TemporaryDirectory(prefix="lfssd-bench-") as tmp:
        tmp = Path(tmp)
        save_checkpoint(create_model("small_cnn", (1, 8, 8), 10, seed=1), tmp / "model.safetensors")
        common = ["importance", "--dataset", "digits", "--forget", "class:3", "--checkpoint", str(tmp / "model.safetensors"),
                  "--json"]
        env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
                   CUDA_VISIBLE_DEVICES="")  # both on the CPU: the sharding is compared, not devices
        timings = {}
        for name, launcher in (("one", [sys.executable, "-m", "core"]),
                               ("two", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                        "--nproc_per_node=2", "-m", "core"])):
            started = time.perf_counter()
            try:
                done = subprocess.run([*launcher, *common, "--cache-dir", str(tmp / name), "--output",
                                       str(tmp / f"{name}.st")], capture_output=True, text=True, env=env,
                                      cwd=Path(__file__).resolve().parents[2], timeout=600)
            except subprocess.TimeoutExpired:
                return {"error": f"the {name}-process run took over 600 s", "processes": 2}
            timings[name] = time.perf_counter() - started
            if done.returncode != 0:
                return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1], "processes": 2}
        one, two = load_file(str(tmp / "one.st")), load_file(str(tmp / "two.st"))
    worst = max_relative_difference(one, two)
    return {"processes": 2, "backend": "gloo", "dataset": "digits", "model": "small_cnn (random weights)",
            "max_relative_difference": worst, "seconds_one_process": timings["one"],
            "seconds_two_processes": timings["two"],
            "note": "wall times include each process's start-up; on a shared 2-core machine they say little"}


# --- summary -------------------------------------------------------------------------------------

def _memory(p: Prepared) -> dict:
    imp_bytes = sum(t.numel() * t.element_size() for m in (p.imp_full, p.imp_forget) for t in m.values())
    maps = {**{f"full.{k}": v for k, v in p.imp_full.items()}, **{f"forget.{k}": v for k, v in p.imp_forget.items()}}
    evaluator = p.evaluations.for_mode(p, "auto").evaluator
    out = {"importance_bytes": imp_bytes, "importance_file_bytes": len(serialize(maps)),
           "activation_cache_bytes": evaluator.cached_bytes(),
           "cached_boundaries": sorted(evaluator.keep), "peak_rss_bytes_so_far": _peak_rss()}
    if torch.cuda.is_available():
        out["cuda_peak_bytes_so_far"] = torch.cuda.max_memory_allocated()
    return out


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({os.cpu_count()} cores)"


def _targets(out: dict) -> list[dict]:
    w = out["workloads"]
    measured = {}
    if "digits/small_cnn" in w:
        d = w["digits/small_cnn"]
        measured["importance_over_floor"] = max(d["importance"][k]["ratio_to_floor"] for k in ("lfssd", "ssd"))
        measured["slider_over_floor"] = d["slider"]["ratio_to_floor"]
        measured["slider_seconds_default"] = d["slider"]["seconds"]
        measured["sample_over_batch_small_cnn"] = max(d["sample_vs_batch"][k]["ratio_to_batch"] for k in ("lfssd", "ssd"))
        measured["auto_alpha_over_slider_move"] = d["auto_alpha"]["ratio_to_slider_move"]
        measured["evidence_over_slider_move"] = d["evidence"]["ratio_to_slider_move"]
    for model in ("small_cnn", "resnet18"):
        if f"cifar/{model}" in w:
            measured[f"sweep_speedup_cifar_{model}"] = w[f"cifar/{model}"]["sweep"]["speedup"]
    if "prefix" in out:
        measured["prefix_saving_mnist5k"] = out["prefix"]["saving"]
    if "max_relative_difference" in out.get("distributed", {}):
        measured["torchrun_max_relative_difference"] = out["distributed"]["max_relative_difference"]
    if "sweep_at_scale" in out:
        measured["sweep_speedup_cifar_resnet18_at_subset_scale"] = out["sweep_at_scale"]["speedup"]
    rows = []
    for name, value in measured.items():
        op, goal = {**TARGETS, **SCALE_TARGETS}[name]
        met = value <= goal if op == "<=" else value < goal if op == "<" else value >= goal
        rows.append({"target": name, "measured": value, "goal": f"{op} {goal:g}", "met": bool(met)})
    return rows


def print_summary(out: dict) -> None:
    print(f"bench: {out['device']}, {out['threads']} torch thread(s), torch {out['torch']}"
          f"{' (tiny)' if out['tiny'] else ''}; {out['timing']}")
    for name, w in out["workloads"].items():
        imp, smp, sl, sw = w["importance"], w["sample_vs_batch"], w["slider"], w["sweep"]
        print(f"\n{name}  ({w['images']}: {w['train']} train, {w['test']} test, forget {w['forget']})")
        print(f"  importance ÷ floor (fwd+bwd)   lfssd {imp['lfssd']['ratio_to_floor']:.2f}  "
              f"ssd {imp['ssd']['ratio_to_floor']:.2f}   [floor {imp['lfssd']['floor_seconds']:.3f} s]")
        print(f"  sample ÷ batch ({smp['per_sample_method']})         lfssd {smp['lfssd']['ratio_to_batch']:.2f}  "
              f"ssd {smp['ssd']['ratio_to_batch']:.2f}")
        print(f"  slider move ÷ eval forward     {sl['ratio_to_floor']:.2f}   [{sl['seconds'] * 1000:.1f} ms at α={sl['alpha']:g}; "
              f"without prefix cache {sl['without_prefix_seconds'] * 1000:.1f} ms; stages recomputed "
              f"{sl['stages_recomputed_share']:.0%}]")
        au = w["auto_alpha"]
        print(f"  automatic α ÷ slider move      {au['ratio_to_slider_move']:.2f}   [{au['seconds'] * 1000:.1f} ms, "
              f"{au['evaluations']} evaluations of the forget images and a sample of D; chose α={au['alpha']:g}, "
              f"λ={au['lambda']:g}]")
        print(f"  slider move + evidence ÷ move   {w['evidence']['ratio_to_slider_move']:.2f}   (the Evidence page's "
              "per-move histograms; goal ≤ 1.2)")
        print(f"  10-point α sweep speed-up      {sw['speedup']:.1f}× (cold, incl. importances: {sw['speedup_cold']:.1f}×; "
              f"1 + importance passes ÷ our point: {sw['importance_bound']:.1f}×)"
              + (f"  [{sw['naive_note']}]" if sw["naive_note"] else ""))
        print(f"    projected at CIFAR-10 size (estimate, subset evaluation): {sw['projected_cifar10']['speedup']:.0f}×")
        for name, o in w.get("opt_in", {}).items():
            if isinstance(o, dict):
                print(f"  opt-in {name} (changes numerics) ÷ fp32 forward  {o['ratio_to_fp32']:.2f}   "
                      f"[max |Δlogit| {o['max_abs_logit_change']:.1e}, predictions changed {o['changed_predictions']:.2%}]")
        m = w["memory"]
        print(f"  importances {m['importance_bytes'] / 2**20:.2f} MiB (file {m['importance_file_bytes'] / 2**20:.2f} MiB), "
              f"activation cache {m['activation_cache_bytes'] / 2**20:.1f} MiB, peak RSS so far {m['peak_rss_bytes_so_far'] / 2**20:.0f} MiB")
    if "prefix" in out:
        p = out["prefix"]
        print(f"\nprefix caching on {p['dataset']}, α={p['alpha']:g}: a slider move is {p['saving']:.1f}× cheaper than a full "
              f"forward; stages recomputed {p['stages_recomputed_share']:.0%} (from {p['first_recomputed_stage_name']}), "
              f"parameters {p['parameters_recomputed_share']:.1%}"
              + (f", {p['first_stage_channels_recomputed']} channels of that stage"
                 + (" (filters packed into every vector lane)" if p.get("first_stage_filters_packed") else "")
                 if "first_stage_channels_recomputed" in p else ""))
    if "sweep_at_scale" in out:
        a = out["sweep_at_scale"]
        print(f"\nα sweep at subset scale, {a['model']} ({a['train']} train, {a['test']} test; moves score "
              f"{a['subset_images']} of {a['evaluation_images']} images): {a['speedup']:.1f}× the naive way "
              f"(cold, incl. importances: {a['speedup_cold']:.1f}×)  [{a['note']}]")
    if "distributed" in out:
        d = out["distributed"]
        print("\ntorchrun, 2 gloo processes vs 1: " + (f"max relative difference {d['max_relative_difference']:.1e}"
                                                       if "max_relative_difference" in d else f"failed: {d['error']}"))
    print("\ntargets:")
    for row in out["targets"]:
        print(f"  {'met ' if row['met'] else 'MISS'}  {row['target']:<34} {row['measured']:.4g} (goal {row['goal']})")
    print(f"\n{out['seconds']:.0f} s in all")
