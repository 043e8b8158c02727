"""Membership evidence for an experiment: the papers' entropy attack is one number; these say more.

- Per slider move (``pair_evidence``): the forget examples' confidence under the dampened model,
  the retrained model and the untouched baseline, test images (non-members) for scale, and the
  threshold that best tells the dampened model from the retrained one, with its ε.
- On request (``forget_score_over_models``): the NeurIPS 2023 challenge's forgetting score F and
  final score, over N originals trained with different seeds (each unlearned by the method) against
  N retrained models. A deterministic method on *one* original would give N identical copies and
  ε = 50 everywhere (F = 0) by construction, which is why the originals differ. Work runs in
  parallel processes; every trained model is cached, so later α/λ moves only dampen and score.
- On request (``relearning_evidence``): fine-tune the dampened, the retrained and the baseline model
  on D_f; R = min(Δ_retrain / Δ_dampened, 1).
"""
from __future__ import annotations

import os
import time
import weakref
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import Callable

import multiprocessing as mp
import numpy as np
import torch

from core.cache import TensorCache
from core.errors import UserError
from core.evaluation.accuracy import evaluate, predict_logits
from core.evaluation.evidence import (LABEL_FREE, LABELLED, RelearnCurve, Separation, best_threshold, confidences,
                                      relearn, relearn_ratio)
from core.evaluation.forget_score import final_score, forget_score
from core.experiment import ExperimentConfig, ForgetOutcome, Prepared, forget, prepare, retrained_model

Progress = Callable[[float, str], None]


@dataclass(frozen=True, eq=False)
class PairEvidence:
    statistic: str  # which confidence (labelled, or the top class for unlabelled images)
    dampened: np.ndarray  # per forget example
    baseline: np.ndarray
    retrained: np.ndarray | None  # None: no retrained model (unlabelled images)
    test: np.ndarray  # non-members, under the dampened model
    separation: Separation | None  # dampened vs retrained
    baseline_separation: Separation | None  # the untouched model vs retrained, for scale
    recognised: np.ndarray  # per forget example: the dampened model still gives its label (or the baseline's class)


def pair_evidence(prepared: Prepared, outcome: ForgetOutcome, retrained: torch.nn.Module | None) -> PairEvidence:
    """From the logits a slider move already computed (no extra pass over the dampened model)."""
    scored = outcome.scored
    labels = scored.forget_labels()
    base = prepared.evaluations.for_mode(prepared, "full" if outcome.result.sample is None else "subset")
    base_scored = replace(scored, logits=base.evaluator.logits(None))  # cached: no pass, no scoring
    damp_forget, base_forget = scored.forget_logits(), base_scored.forget_logits()
    test_labels = scored.dataset.test_y if labels is not None else None
    dampened = confidences(damp_forget, labels)
    baseline = confidences(base_forget, labels)
    truth = labels.numpy() if labels is not None else base_forget.argmax(1).numpy()
    recognised = damp_forget.argmax(1).numpy() == truth
    test = confidences(scored.logits["test"], test_labels)
    retrained_conf = separation = base_separation = None
    if retrained is not None and labels is not None:
        retrained_conf = _retrained_confidences(retrained, scored, labels)
        separation = best_threshold(dampened, retrained_conf)
        base_separation = best_threshold(baseline, retrained_conf)
    return PairEvidence(LABELLED if labels is not None else LABEL_FREE, dampened, baseline, retrained_conf, test,
                        separation, base_separation, recognised)


_RETRAINED_CONFIDENCES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _retrained_confidences(retrained: torch.nn.Module, scored, labels: torch.Tensor) -> np.ndarray:
    """The retrained model's confidences on the forget examples: the same at every α, so kept with
    the model (a slider move then only reads the dampened model's, already computed)."""
    memo = _RETRAINED_CONFIDENCES.setdefault(retrained, {})
    key = (id(scored.dataset), len(scored.split.forget_train), tuple(scored.split.forget_train[:4].tolist()))
    if key not in memo:
        images = scored.dataset.train_x[scored.split.forget_train]
        memo[key] = confidences(predict_logits(retrained, scored.dataset, images).cpu(), labels)
    return memo[key]


# --- the challenge's score over N models ---------------------------------------------------------------

@dataclass(frozen=True)
class ScoreOverModels:
    method: str
    alpha: float | None
    lambda_: float | None
    models: int
    forget_score: float  # F
    final_score: float
    epsilons: tuple[float, ...]  # per forget example
    d_r: float  # mean over the N unlearned models (%)
    test: float
    d_r_retrain: float  # mean over the N retrained models
    test_retrain: float
    seconds: float

    def as_dict(self) -> dict:
        data = dict(self.__dict__)
        data["epsilons"] = list(self.epsilons)
        data["lambda"] = data.pop("lambda_")
        return data


def _unlearned(prepared: Prepared, method: str, alpha: float, lambda_: float, seed: int, models: int,
               cache: TensorCache, params: dict | None = None):
    """(model, its scores) of ``method`` applied to this original. "retrain" is a *second* set of
    retrained models (seeds N…2N−1): the best any method can do at this N."""
    if method == prepared.config.kind:
        outcome = forget(prepared, alpha, lambda_, evaluation="full")
        return outcome.model, outcome.result
    if method == "baseline":
        return prepared.model, prepared.baseline
    if method == "retrain":
        model = retrained_model(prepared, cache, seed=seed + models)
        return model, evaluate(model, prepared.dataset, prepared.split)
    from core.compare.methods import METHODS, UnlearnTask, run_method

    params = {"alpha": alpha, "lambda": lambda_} if METHODS.get(method).importance_kind else (params or None)
    run = run_method(method, UnlearnTask.from_prepared(prepared), seed=seed, params=params)
    return run.model, evaluate(run.model, prepared.dataset, prepared.split)


def forget_confidences(prepared: Prepared, model: torch.nn.Module) -> np.ndarray:
    """``model``'s logit-scaled confidence on each forget (training) example, with its label."""
    forget_train = prepared.split.forget_train
    logits = predict_logits(model, prepared.dataset, prepared.dataset.train_x[forget_train]).cpu()
    return confidences(logits, prepared.dataset.train_y[forget_train])


def seed_outputs(config: ExperimentConfig, seed: int, method: str, alpha: float, lambda_: float, models: int,
                 cache_dir: str, params: dict | None = None) -> dict:
    """One original (seed ``seed``): the forget examples' confidences under its unlearned version and
    under the retrained model of the same seed, with both models' D_r and test accuracy. Runs in a
    worker process; everything it trains is cached."""
    torch.set_num_threads(1)
    cache = TensorCache(cache_dir)
    prepared = prepare(replace(config, seed=seed), cache)
    if not prepared.split.labelled:
        raise UserError("the challenge's score needs D_f's labels and a retrained model; unlabelled images have neither")
    model, result = _unlearned(prepared, method, alpha, lambda_, seed, models, cache, params)
    retrained = retrained_model(prepared, cache)
    retrained_result = evaluate(retrained, prepared.dataset, prepared.split)
    return {"seed": seed, "unlearned": forget_confidences(prepared, model),
            "retrained": forget_confidences(prepared, retrained),
            "d_r": result.d_r, "test": result.test, "d_r_retrain": retrained_result.d_r,
            "test_retrain": retrained_result.test}


def forget_score_over_models(config: ExperimentConfig, method: str = "lfssd", alpha: float = 3.5,
                             lambda_: float = 1.0, models: int = 32, cache: TensorCache | None = None,
                             progress: Progress | None = None, cancelled: Callable[[], bool] | None = None,
                             workers: int | None = None, params: dict | None = None) -> ScoreOverModels:
    """F and the final score of ``method`` over ``models`` originals (seeds 0…N−1) and as many
    retrained models. Parallel processes (``workers``, default: one per core, at most 4).
    ``params``: the method's own parameters (e.g. finetune's epochs), for the methods that are
    not dampening (theirs are ``alpha`` and ``lambda_``)."""
    if models < 3:
        raise UserError(f"the score needs at least 3 models (its top bucket is ⌈ln(N − 1)⌉), got {models}")
    cache = cache or TensorCache()
    started = time.perf_counter()
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    results: dict[int, dict] = {}
    config = replace(config, kind=method if method in ("lfssd", "ssd") else config.kind)

    def note(done: int) -> None:
        if progress:
            progress(done / models, f"{method}: {done} of {models} originals and retrained models")

    note(0)
    if workers == 1:
        for seed in range(models):
            if cancelled and cancelled():
                raise UserError("cancelled")
            results[seed] = seed_outputs(config, seed, method, alpha, lambda_, models, str(cache.root), params)
            note(len(results))
    else:
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            pending = {pool.submit(seed_outputs, config, seed, method, alpha, lambda_, models, str(cache.root), params)
                       for seed in range(models)}
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in done:
                    out = future.result()
                    results[out["seed"]] = out
                note(len(results))
                if cancelled and cancelled():
                    for future in pending:
                        future.cancel()
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise UserError("cancelled")
    rows = [results[s] for s in range(models)]
    unlearned = np.stack([r["unlearned"] for r in rows])
    retrained = np.stack([r["retrained"] for r in rows])
    score, eps = forget_score(unlearned, retrained)
    mean = lambda key: float(np.mean([r[key] for r in rows]))  # noqa: E731
    final = final_score(score, mean("d_r"), mean("d_r_retrain"), mean("test"), mean("test_retrain"))
    dampens = method in ("lfssd", "ssd")
    return ScoreOverModels(method, alpha if dampens else None, lambda_ if dampens else None, models, score, final,
                           tuple(float(e) for e in eps), mean("d_r"), mean("test"), mean("d_r_retrain"),
                           mean("test_retrain"), time.perf_counter() - started)


# --- relearning ------------------------------------------------------------------------------------------

def relearn_target(prepared: Prepared) -> tuple[torch.Tensor, torch.Tensor]:
    """The images (and labels) D_f's relearned accuracy is measured on: where its accuracy is (class
    targets: the class's test images; random samples: the forgotten training images)."""
    split, data = prepared.split, prepared.dataset
    if not split.labelled:
        raise UserError("relearning fine-tunes on D_f with its labels; unlabelled images have none")
    if split.spec.kind in ("class", "subclass"):
        on_test = _class_test_images(prepared)
        return data.test_x[on_test], data.test_y[on_test]
    return data.train_x[split.forget_train], data.train_y[split.forget_train]


def relearning_evidence(prepared: Prepared, alpha: float, lambda_: float, cache: TensorCache | None = None,
                        steps: int = 30, lr: float = 1e-4) -> dict:
    """D_f accuracy against fine-tuning steps on D_f for the dampened, retrained and baseline models,
    and R for the dampened one."""
    images, labels = relearn_target(prepared)
    models = {"dampened": forget(prepared, alpha, lambda_).model, "retrained": retrained_model(prepared, cache),
              "baseline": prepared.model}
    curves = {name: relearn(model, prepared.dataset, prepared.split.forget_train, images, labels, steps=steps, lr=lr)
              for name, model in models.items()}
    return {"curves": curves, "ratio": relearn_ratio(curves["dampened"], curves["retrained"]),
            "steps": steps, "lr": lr}


class AgainstRetrained:
    """Any unlearned model measured against one retrained reference, as Compare does for every
    method's runs: the one-pair ε of the forget examples' confidences, and the relearning ratio R.
    The reference's confidences and relearning curve are computed once."""

    def __init__(self, prepared: Prepared, retrained: torch.nn.Module, steps: int = 30, lr: float = 1e-4):
        self.prepared, self.steps, self.lr = prepared, steps, lr
        self.relearn_images, self.relearn_labels = relearn_target(prepared)
        self.reference = forget_confidences(prepared, retrained)
        self.reference_curve = self.curve(retrained)

    def curve(self, model: torch.nn.Module) -> RelearnCurve:
        return relearn(model, self.prepared.dataset, self.prepared.split.forget_train, self.relearn_images,
                       self.relearn_labels, steps=self.steps, lr=self.lr)

    def measure(self, model: torch.nn.Module) -> tuple[float, float | None]:
        """(ε of this model against the reference, R)."""
        epsilon = best_threshold(forget_confidences(self.prepared, model), self.reference).epsilon
        return epsilon, relearn_ratio(self.curve(model), self.reference_curve)


def score_methods(config: ExperimentConfig, methods, models: int, params: dict | None = None,
                  cache: TensorCache | None = None, progress: Progress | None = None,
                  cancelled: Callable[[], bool] | None = None, workers: int | None = None) -> dict:
    """The challenge's score of each method over ``models`` originals (a dampening method at its
    ``params[method]["alpha"]`` and ``["lambda"]``, as Compare resolved them): {method:
    ScoreOverModels}. The originals and retrained models are shared by every method, so only the
    first method trains them."""
    out = {}
    for i, method in enumerate(methods):
        own = (params or {}).get(method, {})
        sub = None if progress is None else (
            lambda f, m, i=i: progress((i + f) / len(methods), f"method {i + 1} of {len(methods)} · {m}"))
        out[method] = forget_score_over_models(config, method, own.get("alpha", 1.0), own.get("lambda", 1.0), models,
                                               cache, sub, cancelled, workers, dict(own))
    return out


def _class_test_images(prepared: Prepared) -> torch.Tensor:
    split, data = prepared.split, prepared.dataset
    forgotten = set(data.train_y[split.forget_train].unique().tolist())
    if split.spec.kind == "subclass":
        fine = set(data.fine_train_y[split.forget_train].unique().tolist())
        return torch.nonzero(torch.tensor([int(v) in fine for v in data.fine_test_y.tolist()])).flatten()
    return torch.nonzero(torch.tensor([int(v) in forgotten for v in data.test_y.tolist()])).flatten()


def curve_dict(curve: RelearnCurve) -> dict:
    return {"steps": list(curve.steps), "accuracy": list(curve.accuracy), "gain": curve.gain}

