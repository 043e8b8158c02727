"""Methods side by side: a list of methods × repeats on one prepared experiment → tidy tables.

Every run starts from the same baseline model and the same split, so the numbers differ only by
method (and seed). Repeat ``r`` uses seed ``r``. Wall time is the method's own work at forget
time; evaluation is not counted. SSD and LFSSD reuse an I_D computed once (the paper: "can be
saved and reused"), so their time is shown twice: without the I_D pass (``wall_s``) and with it
(``wall_incl_id_s``); for every other method the two are equal.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from core.errors import UserError
from core.evaluation.accuracy import evaluate
from core.compare.methods import DEFAULT_COMPARISON, METHODS, UnlearnTask, compute_full_importance, run_method
from core.models.registry import model_device

Progress = Callable[[float, str], None]

METRICS = ("d_r", "d_f", "test", "mia")
RUN_COLUMNS = ("method", "label", "repeat", "seed", "d_r", "d_f", "test", "mia", "retain_train", "forget_train",
               "wall_s", "wall_incl_id_s", "d_r_split", "d_f_split", "accuracy", "mia_note", "epsilon", "relearn_r")
SUMMARY_STATS = ("d_r", "d_f", "test", "mia", "retain_train", "forget_train", "wall_s", "wall_incl_id_s", "epsilon",
                 "relearn_r")


@dataclass(frozen=True, eq=False)
class Comparison:
    """``runs``: one row per (method, repeat), columns ``RUN_COLUMNS``. ``summary``: one row per
    method: ``runs``, ``<stat>_mean`` / ``<stat>_std`` (population std over the repeats, 0 for one
    run) for each of ``SUMMARY_STATS``, and the distance to the retrained model: ``d_f_to_retrain``
    = |D_f − D_f(retrain)|, ``mia_to_retrain`` = |MIA − MIA(retrain)| (means; NaN without a
    retrain row; ``retrain_head`` stands in when only it ran), ``wall_vs_retrain`` and
    ``wall_incl_id_vs_retrain`` (time ratios to retrain's wall time). Per run, against the retrained
    reference (the seed-0 retrained model the Forget page shows; NaN without labels): ``epsilon``, the
    one-pair ε of the forget examples' confidences, and ``relearn_r``, the relearning ratio R.
    ``forget_scores``: the challenge's score over N models per method, when it was asked for
    (``with_forget_scores``)."""

    runs: pd.DataFrame
    summary: pd.DataFrame
    importance_seconds: dict[str, float]  # the one-off I_D pass per importance kind
    params: dict[str, dict[str, Any]]  # resolved parameters per method
    skipped: dict[str, str] = field(default_factory=dict)  # method → why it cannot run here
    protocol: str = "app"
    accuracy: str = "sample-weighted"
    seeds: tuple[int, ...] = (0,)
    reference: str = "retrain"  # the method the distances are measured to (retrain_head when retrain is absent)
    forget_scores: dict = field(default_factory=dict)  # method -> core.compare.evidence.ScoreOverModels


def available_methods(split=None, labelled: bool | None = None) -> dict[str, str | None]:
    """Every registered method → None when it can run on ``split`` (or on a labelled / unlabelled
    target, without a split), else the reason it cannot."""
    labelled = split.labelled if split is not None else (True if labelled is None else labelled)
    return {name: None if labelled else METHODS.get(name).unlabelled_reason() for name in METHODS}


SHORT_NEEDS = {"labels": "the forget set's labels", "retain_set": "the retain set D_r"}


def unlabelled_refusal(methods: Sequence[str]) -> str | None:
    """One message naming every method in ``methods`` that cannot run on unlabelled forget images
    and what each lacks, or None when all can."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for name in methods:
        method = METHODS.get(name)
        if method.missing_without_labels():
            groups.setdefault(method.missing_without_labels(), []).append(method.name)
    if not groups:
        return None
    parts = [f"{', '.join(names)} need{'s' if len(names) == 1 else ''} {' and '.join(SHORT_NEEDS[k] for k in missing)}"
             for missing, names in groups.items()]
    return f"unlabelled forget images come without labels or a retain set: {'; '.join(parts)}; lfssd needs neither"


def parse_methods(text: str | Sequence[str]) -> list[str]:
    """"a,b,c" (or a list) → registered names in the given order, duplicates dropped; "all" = every one."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n and n.strip()]
    if names == ["all"]:
        return METHODS.names()
    if not names:
        raise UserError(f"give at least one method; choose from: {', '.join(METHODS.names())}")
    for name in names:
        METHODS.get(name)
    return list(dict.fromkeys(names))


def check_params(methods: Sequence[str], params: Mapping[str, Mapping[str, Any]] | None) -> dict:
    """Per-method overrides checked against the methods compared (before any work is done)."""
    params = dict(params or {})
    for name in params:
        if name not in methods:
            raise UserError(f"parameters given for '{name}', which is not among the methods compared ({', '.join(methods)})")
        METHODS.get(name).check_params(params[name])
    return params


def compare(prepared, methods: Sequence[str] = DEFAULT_COMPARISON, repeats: int = 1,
            params: Mapping[str, Mapping[str, Any]] | None = None, protocol: str = "app",
            progress: Progress | None = None, skip_unavailable: bool = False,
            retrained: torch.nn.Module | None = None, evidence: bool = True) -> Comparison:
    """Run ``methods`` × ``repeats`` (seeds 0..repeats-1) on a ``core.experiment.Prepared``.

    ``params``: per-method overrides, e.g. ``{"lfssd": {"alpha": 5}, "finetune": {"epochs": 2}}``.
    ``protocol``: "app" (sample-weighted accuracy) or "paper" (the reference's choices; the
    experiment must have been prepared with ``core.compare.protocol.protocol_config``). A method that cannot
    run on the target (say SSD on unlabelled images) raises ``UserError``, or with
    ``skip_unavailable`` is left out and listed in ``skipped`` with the reason. ``evidence``: measure
    every run against the retrained reference (``retrained``; default: the cached one, trained if
    missing) with the one-pair ε and relearning R.
    """
    from core.compare.protocol import eval_batch_mean

    methods = parse_methods(methods)
    if not isinstance(repeats, int) or repeats < 1:
        raise UserError(f"repeats must be a whole number >= 1, got {repeats}")
    batch_mean = eval_batch_mean(prepared, protocol)
    params = check_params(methods, params)
    skipped = {name: reason for name in methods if (reason := METHODS.get(name).unavailable_reason(prepared.split))}
    if skipped and not skip_unavailable:
        raise UserError(unlabelled_refusal(list(skipped)))
    methods = [name for name in methods if name not in skipped]
    if not methods:
        raise UserError("none of the methods can run on this target")
    task = UnlearnTask.from_prepared(prepared)
    resolved = {name: METHODS.get(name).resolve_params(task, params.get(name)) for name in methods}

    kinds = [k for k in dict.fromkeys(METHODS.get(n).importance_kind for n in methods) if k]
    n_steps = len(kinds) + len(methods) * repeats
    importance, importance_seconds = {}, {}
    for i, kind in enumerate(kinds):
        _report(progress, i / n_steps, f"I_D ({kind}): one pass over D, computed once")
        importance[kind], importance_seconds[kind] = _full_importance(prepared, task, kind)
    task = UnlearnTask.from_prepared(prepared, importance)
    against = None
    if evidence and prepared.split.labelled:
        from core.compare.evidence import AgainstRetrained
        from core.experiment import retrained_model

        _report(progress, len(kinds) / n_steps, "the retrained reference: its confidences and relearning curve")
        against = AgainstRetrained(prepared, retrained if retrained is not None else retrained_model(prepared))

    rows, step = [], len(kinds)
    for name in methods:
        method = METHODS.get(name)
        for repeat in range(repeats):
            _report(progress, step / n_steps, f"{method.label}: run {repeat + 1}/{repeats}")
            sub = None if progress is None else (lambda f, m, s=step: _report(progress, (s + f) / n_steps, m))
            run = run_method(name, task, seed=repeat, params=resolved[name], progress=sub)
            model = run.model.to(model_device(prepared.model))  # trained ones come back on the CPU
            result = evaluate(model, prepared.dataset, prepared.split, batch_mean=batch_mean)
            extra = importance_seconds.get(method.importance_kind, 0.0)
            epsilon, ratio = against.measure(model) if against is not None else (np.nan, np.nan)
            rows.append({"method": name, "label": method.label, "repeat": repeat, "seed": repeat,
                         "d_r": result.d_r, "d_f": result.d_f, "test": result.test, "mia": result.mia,
                         "retain_train": result.retain_train, "forget_train": result.forget_train,
                         "wall_s": run.seconds, "wall_incl_id_s": run.seconds + extra,
                         "d_r_split": result.d_r_split, "d_f_split": result.d_f_split, "accuracy": result.accuracy,
                         "mia_note": result.mia_note, "epsilon": epsilon,
                         "relearn_r": np.nan if ratio is None else ratio})
            step += 1
    _report(progress, 1.0, "comparison done")
    runs = pd.DataFrame(rows, columns=list(RUN_COLUMNS))
    for column in SUMMARY_STATS:
        runs[column] = runs[column].astype(float)
    reference = "retrain" if "retrain" in methods or "retrain_head" not in methods else "retrain_head"
    return Comparison(runs, summarize(runs, reference), importance_seconds, resolved, skipped, protocol,
                      rows[0]["accuracy"], tuple(range(repeats)), reference)


def with_forget_scores(comparison: Comparison, scores: Mapping[str, Any]) -> Comparison:
    """The comparison with the challenge's score over N models (``core.compare.evidence.score_methods``)
    as summary columns ``forget_score`` and ``final_score`` (NaN for a method not scored)."""
    from dataclasses import replace

    summary = comparison.summary.copy()
    summary["forget_score"] = [scores[m].forget_score if m in scores else np.nan for m in summary["method"]]
    summary["final_score"] = [scores[m].final_score if m in scores else np.nan for m in summary["method"]]
    return replace(comparison, summary=summary, forget_scores=dict(scores))


def summarize(runs: pd.DataFrame, reference: str = "retrain") -> pd.DataFrame:
    """One row per method (in first-seen order) from a runs table; see ``Comparison``."""
    rows = []
    for name, group in runs.groupby("method", sort=False):
        row = {"method": name, "label": group["label"].iloc[0], "runs": len(group),
               "needs": ", ".join(sorted(METHODS.get(name).needs)) if name in METHODS else ""}
        for stat in (s for s in SUMMARY_STATS if s in group):  # a runs table without the evidence columns: older CSVs
            values = group[stat].astype(float)
            row[f"{stat}_mean"] = float(values.mean()) if values.notna().any() else np.nan
            row[f"{stat}_std"] = float(values.std(ddof=0)) if values.notna().any() else np.nan
        rows.append(row)
    summary = pd.DataFrame(rows)
    ref = summary[summary["method"] == reference]
    ref = ref.iloc[0] if len(ref) else None
    for metric in ("d_f", "mia"):
        summary[f"{metric}_to_retrain"] = ((summary[f"{metric}_mean"] - ref[f"{metric}_mean"]).abs()
                                           if ref is not None else np.nan)
    for stat in ("wall_s", "wall_incl_id_s"):
        name = "wall_vs_retrain" if stat == "wall_s" else "wall_incl_id_vs_retrain"
        summary[name] = summary[f"{stat}_mean"] / ref["wall_s_mean"] if ref is not None else np.nan
    return summary


def _full_importance(prepared, task: UnlearnTask, kind: str):
    """(I_D, seconds of computing it). Reuses the prepared I_D when ``prepare`` just computed it
    (its time is real); otherwise computes it now, timed, so the 'included' figure is honest even
    when the disk cache held it."""
    computed_now = prepared.cache_hits.get("importance_full") is False
    if kind == prepared.config.kind and computed_now and "importance_full" in prepared.timings:
        return prepared.imp_full, prepared.timings["importance_full"]
    started = time.perf_counter()
    imp = compute_full_importance(task, kind)
    return imp, time.perf_counter() - started


def _report(progress: Progress | None, fraction: float, message: str) -> None:
    if progress:
        progress(min(max(fraction, 0.0), 1.0), message)


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run a block with ``count`` torch intra-op threads (None: leave as is), restored after.

    On a busy 2-core machine, two spinning threads made the small CNN's training ~9× slower
    (retrain on digits: 59 s against 6.8 s with one thread), so comparisons time with one.
    """
    if count is None:
        yield
        return
    if count < 1:
        raise UserError(f"threads must be >= 1, got {count}")
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
