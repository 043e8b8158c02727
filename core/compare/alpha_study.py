"""The α study: how often each way of choosing α gives a retrain-like result, on a fixed grid.

A result is *retrain-like* when D_r ≥ the baseline's D_r − 1 point, |D_f − D_f(retrain)| ≤ 5 points
and |MIA − MIA(retrain)| ≤ 10 points (the MIA condition is skipped where the retrained model's
attack has no number). The grid: every class of digits and of MNIST-5k with both training
recipes, and random 1 % and 10 % of digits with two seeds and both recipes (48 cases). Compared:
the ``auto`` and ``assd`` rules (core.method.alpha), α = 3.5, the best single α chosen
leave-one-out over the other cases, and the best α per case in hindsight (the last two at λ = 1,
from a sweep). Opt-in and slow (minutes): it trains every retrained reference, once, in the cache.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from core.cache import TensorCache
from core.experiment import ExperimentConfig, choose_alpha, forget, prepare, retrain_reference, sweep

Progress = Callable[[float, str], None]
TOLERANCE = {"d_r": 1.0, "d_f": 5.0, "mia": 10.0}  # the app's colours use the same (ui.widgets)
SWEEP_ALPHAS = tuple(sorted({round(float(a), 4) for a in np.geomspace(0.5, 60, 26)} | {3.5}))
FIXED_ALPHA = 3.5
RULES = ("auto", "assd")


@dataclass(frozen=True)
class Case:
    dataset: str
    recipe: str
    forget: str

    @property
    def group(self) -> str:
        kind = "class" if self.forget.startswith("class") else "random"
        return f"{self.dataset} {kind} ({self.recipe})"

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.recipe}/{self.forget}"


def grid_cases() -> list[Case]:
    cases = [Case(ds, recipe, f"class:{c}") for ds in ("digits", "mnist5k") for recipe in ("default", "plain")
             for c in range(10)]
    n = 1347  # digits' training images: 1 % and 10 %
    cases += [Case("digits", recipe, f"random:{max(1, round(n * share))}:{seed}")
              for recipe in ("default", "plain") for share in (0.01, 0.10) for seed in (0, 1)]
    return cases


def distances(result: dict, baseline: dict, retrain: dict) -> dict:
    """How far ``result`` is from the retrained model's (D_r: only a drop below the baseline counts)."""
    mia = (abs(result["mia"] - retrain["mia"]) if result.get("mia") is not None and retrain.get("mia") is not None
           else (math.nan if retrain.get("mia") is None else math.inf))
    return {"d_r_drop": max(baseline["d_r"] - result["d_r"], 0.0), "d_f_distance": abs(result["d_f"] - retrain["d_f"]),
            "mia_distance": mia}


def retrain_like(distance: dict) -> bool:
    mia_ok = math.isnan(distance["mia_distance"]) or distance["mia_distance"] <= TOLERANCE["mia"]
    return distance["d_r_drop"] <= TOLERANCE["d_r"] and distance["d_f_distance"] <= TOLERANCE["d_f"] and mia_ok


def _scores(result) -> dict:
    return {"d_r": result.d_r, "d_f": result.d_f, "mia": result.mia}


def run_case(case: Case, cache: TensorCache) -> dict:
    prepared = prepare(ExperimentConfig(dataset=case.dataset, recipe=case.recipe, forget=case.forget), cache)
    retrain = _scores(retrain_reference(prepared, cache))
    baseline = _scores(prepared.baseline)
    table = sweep(prepared, SWEEP_ALPHAS, [1.0])
    swept = {}
    for row in table.to_dict("records"):
        scores = {"d_r": row["d_r"], "d_f": row["d_f"], "mia": None if _nan(row["mia"]) else row["mia"]}
        d = distances(scores, baseline, retrain)
        swept[float(row["alpha"])] = {**scores, **d, "like": retrain_like(d), "dampened": row["selected_fraction"]}
    rules = {}
    for rule in RULES:
        started = time.perf_counter()
        choice = choose_alpha(prepared, rule)
        seconds = time.perf_counter() - started
        outcome = forget(prepared, choice.alpha, choice.lambda_)
        scores = _scores(outcome.result)
        d = distances(scores, baseline, retrain)
        rules[rule] = {"alpha": choice.alpha, "lambda": choice.lambda_, **scores, **d, "like": retrain_like(d),
                       "dampened": outcome.report.fraction, "nothing": choice.nothing, "seconds": seconds,
                       "evaluations": choice.diagnostics.get("evaluations")}
    return {"case": case.name, "group": case.group, "baseline": baseline, "retrain": retrain, "sweep": swept,
            "rules": rules}


def _nan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def summarize(results: list[dict]) -> dict:
    """Per group and in total: retrain-like counts and mean distances of each way of choosing α."""
    alphas = sorted(results[0]["sweep"]) if results else []
    picked: dict[str, list[dict]] = {"auto": [], "assd": [], f"alpha={FIXED_ALPHA:g}": [], "best single α (LOO)": [],
                                     "best α per case (hindsight)": []}
    for i, r in enumerate(results):
        for rule in RULES:
            picked[rule].append(r["rules"][rule])
        picked[f"alpha={FIXED_ALPHA:g}"].append(r["sweep"][FIXED_ALPHA])
        others = [o for j, o in enumerate(results) if j != i]
        best = max(alphas, key=lambda a: (sum(o["sweep"][a]["like"] for o in others), -abs(math.log(a / 3.5))))
        picked["best single α (LOO)"].append({**r["sweep"][best], "alpha": best})
        like = [a for a in alphas if r["sweep"][a]["like"]]
        chosen = min(like or alphas, key=lambda a: _total(r["sweep"][a]))
        picked["best α per case (hindsight)"].append({**r["sweep"][chosen], "alpha": chosen})
    groups = sorted({r["group"] for r in results})
    table = {}
    for group in [*groups, "all"]:
        rows = [i for i, r in enumerate(results) if group == "all" or r["group"] == group]
        table[group] = {way: _stats([entries[i] for i in rows]) for way, entries in picked.items()}
    return table


def _total(entry: dict) -> float:
    mia = 0.0 if math.isnan(entry["mia_distance"]) else min(entry["mia_distance"], 100.0)
    return entry["d_r_drop"] / TOLERANCE["d_r"] + entry["d_f_distance"] / TOLERANCE["d_f"] + mia / TOLERANCE["mia"]


def _stats(entries: list[dict]) -> dict:
    def mean(key):
        values = [e[key] for e in entries if not (isinstance(e[key], float) and (math.isnan(e[key]) or math.isinf(e[key])))]
        return float(np.mean(values)) if values else None

    return {"cases": len(entries), "retrain_like": int(sum(e["like"] for e in entries)),
            "mean_d_r_drop": mean("d_r_drop"), "mean_d_f_distance": mean("d_f_distance"),
            "mean_mia_distance": mean("mia_distance"),
            "mean_dampened_percent": 100 * float(np.mean([e["dampened"] for e in entries]))}


def run_study(cache: TensorCache | None = None, progress: Progress | None = None,
              cases: list[Case] | None = None) -> dict:
    cache = cache or TensorCache()
    cases = cases or grid_cases()
    results = []
    for i, case in enumerate(cases):
        if progress:
            progress(i / len(cases), f"α study: {case.name} ({i + 1}/{len(cases)})")
        results.append(run_case(case, cache))
    return {"cases": results, "summary": summarize(results), "tolerance": TOLERANCE, "sweep_alphas": list(SWEEP_ALPHAS)}
