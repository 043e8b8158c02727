"""Command line: ``python -m core train | forget | sweep | importance | compare | reproduce | alpha-study | bench
| assets``, each with ``--json``. ``importance`` also runs under ``torchrun`` (see ``core.fast.distributed``).

Every error a user can cause prints one line to stderr and exits with status 2; ``assets --check``
exits with status 1 when the shipped assets differ from a rebuild or from their hashes.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path


class CliError(Exception):
    """A usage error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        raise CliError(message)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None


def _alpha(text: str):
    """A number, or the name of an α rule (core.method.alpha); any case."""
    from core.method.alpha import ALPHA_RULES

    if text.strip().lower() in ALPHA_RULES:
        return text.strip().lower()
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is neither a number nor an α rule "
                                         f"({', '.join(ALPHA_RULES)})") from None


def _numbers(text: str) -> list[float]:
    values = [_number(part) for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError("give at least one number")
    return values


def _names(registry, default: str | None = None, describe=None) -> str:
    """A registry's members for a --help line: read from the declarations, never listed by hand."""
    return ("; " if describe else ", ").join(
        f"{name}{' (default)' if name == default else ''}" + (f": {describe(registry.get(name))}" if describe else "")
        for name in registry)


def _experiment_args(p: argparse.ArgumentParser, forget: bool = True, kind: bool = True) -> None:
    from core.compare.methods import METHODS
    from core.data.registry import DATASETS
    from core.models.recipes import RECIPES
    from core.models.registry import MODELS

    p.add_argument("--dataset", default="digits", help=_names(DATASETS, "digits"))
    p.add_argument("--model", default=None, help=f"{_names(MODELS)} (default: the data set's)")
    p.add_argument("--recipe", default="default",
                   help="how the model (and its retrained reference) is trained: "
                        + _names(RECIPES, "default", lambda r: r.help))
    p.add_argument("--data-root", default=None, help="folder with the CIFAR files, or the image folder for 'folder'")
    p.add_argument("--checkpoint", default=None, help="weights to forget from (safetensors, or torch.save zip)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs of the default model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=None, help="cache folder (default $LFSSD_CACHE_DIR or ~/.cache/lfssd-explorer)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    if forget:
        p.add_argument("--forget", default="class:3",
                       help="class:<id|name>, subclass:<fine class>, random:<n>[:<seed>], images:<file|folder|glob>, "
                            "images:test:<class> (a class's test images, labels hidden)")
        if kind:
            dampening = [n for n in METHODS if METHODS.get(n).importance_kind]
            p.add_argument("--kind", default="lfssd", help=", ".join(
                f"{n}{' (default)' if n == 'lfssd' else ''}: {METHODS.get(n).label}" for n in dampening))
        p.add_argument("--mode", default="batch", help="batch (reference code, default) or sample (paper's eq. 3)")
        p.add_argument("--batch-size", type=int, default=None, help="importance batch size (default: the reference's)")
        p.add_argument("--order", default="reference", help="order of D: reference (D_f last) or class-sorted")


def build_parser() -> argparse.ArgumentParser:
    from core.compare.paper import PRESETS
    from core.compare.protocol import PROTOCOLS
    from core.method.alpha import ALPHA_RULES

    parser = _Parser(prog="python -m core", description="LFSSD Explorer: label-free unlearning from the command line")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("train", help="train (or load from cache) the default model and score it")
    _experiment_args(p, forget=False)
    p.add_argument("--save", default=None, help="also write the model to this .safetensors file")
    p = sub.add_parser("forget", help="forget a target with LFSSD/SSD and compare with the baseline")
    _experiment_args(p)
    p.add_argument("--alpha", type=_alpha, default=None,
                   help="selection threshold α > 0 (default: suits the data set), or a rule that chooses it: "
                        + _names(ALPHA_RULES, describe=lambda r: r.help))
    p.add_argument("--lambda", dest="lambda_", type=_number, default=None,
                   help="dampening constant λ >= 0 (default 1; with an α rule: the rule's)")
    p.add_argument("--save", default=None, help="write the dampened model to this .safetensors file")
    p = sub.add_parser("sweep", help="scores for a grid of α (and λ) on cached importances")
    _experiment_args(p)
    p.add_argument("--alpha", type=_numbers, default=[1, 2, 3.5, 5, 10, 25, 50], help="comma-separated α values")
    p.add_argument("--lambda", dest="lambda_", type=_numbers, default=[1.0], help="comma-separated λ values")
    p.add_argument("--csv", default=None, help="also write the table to this CSV file")
    p = sub.add_parser("importance", help="compute I_D and I_Df and optionally save both maps")
    _experiment_args(p)
    p.add_argument("--output", default=None, help="write both maps to this .safetensors file (full.*, forget.*)")
    p = sub.add_parser("compare", help="unlearning methods side by side on one target (methods × repeats)")
    _experiment_args(p, kind=False)
    _method_args(p, default_methods=",".join(_default_methods()))
    p.add_argument("--protocol", default="app", help=_names(PROTOCOLS, "app", lambda p: p.description))
    p.add_argument("--skip-unavailable", action="store_true",
                   help="leave out methods that cannot run on the target (e.g. SSD on unlabelled images) "
                        "instead of failing")
    p.add_argument("--csv", default=None, help="also write the per-run table to this CSV file")
    p.add_argument("--no-evidence", action="store_true",
                   help="leave out the one-pair ε and relearning R against the retrained reference (they need it "
                        "trained: seconds on the digit sets, long on CIFAR)")
    p.add_argument("--models", type=int, default=0,
                   help="also score every method with the unlearning challenge's F over this many originals (trained "
                        "with seeds 0…N−1) and as many retrained models; ≥ 3, 32 in the challenge (default: off)")
    p.add_argument("--workers", type=int, default=None, help="processes for --models (default: one per core, ≤ 4)")
    p = sub.add_parser("reproduce",
                       help="run one of the paper's tables (paper protocol) and print the paper's figures beside ours")
    p.add_argument("table", help=", ".join(n for n in PRESETS if PRESETS.get(n).not_runnable is None))
    p.add_argument("--data-root", default=None,
                   help="folder with cifar-10-batches-py/ or cifar-100-python/ (default $LFSSD_DATA_DIR)")
    p.add_argument("--model", default=None,
                   help="resnet18 (default) or vit_b16 (the paper's two); any registered model runs")
    p.add_argument("--checkpoint", default=None, help="the trained model to forget from (default: train it here)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs of the model trained here")
    p.add_argument("--rows", default=None, help="comma-separated rows of the table (default: all), e.g. lamp,rocket")
    _method_args(p, default_methods=None, repeats=1)
    p.add_argument("--cache-dir", default=None, help="cache folder (default $LFSSD_CACHE_DIR or ~/.cache/lfssd-explorer)")
    p.add_argument("--csv", default=None, help="also write the side-by-side table to this CSV file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p = sub.add_parser("evidence", help="is it really forgotten? every membership attack on one target at (α, λ): "
                                        "the papers' entropy MIA, confidence against the retrained model, the "
                                        "unlearning challenge's score over N models, relearning")
    _experiment_args(p)
    p.add_argument("--alpha", type=_number, default=None, help="α (default: suits the data set)")
    p.add_argument("--lambda", dest="lambda_", type=_number, default=None, help="λ (default 1)")
    p.add_argument("--models", type=int, default=32,
                   help="N for the challenge's score: N originals (seeds 0…N−1) and N retrained models (0: skip it)")
    p.add_argument("--methods", default=None,
                   help="methods scored over the N models, comma-separated (default: --kind); 'retrain' is a "
                        "second set of retrained models, 'baseline' the originals untouched")
    p.add_argument("--workers", type=int, default=None, help="processes for the N models (default: one per core)")
    p.add_argument("--relearn-steps", type=int, default=30, help="fine-tuning steps of the relearning probe (0: skip)")
    p = sub.add_parser("alpha-study", help="how often each way of choosing α is retrain-like, on a fixed grid of "
                                           "48 cases (opt-in, minutes: trains every retrained reference once)")
    p.add_argument("--cases", default=None, help="only the cases whose name contains one of these (comma-separated), "
                                                 "e.g. digits/default/class")
    p.add_argument("--cache-dir", default=None, help="cache folder (default $LFSSD_CACHE_DIR or ~/.cache/lfssd-explorer)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p = sub.add_parser("bench", help="speed as ratios against floors measured beside them (digits, MNIST-5k, CIFAR-shaped)")
    p.add_argument("--workloads", default="digits,mnist5k,cifar",
                   help="comma-separated: digits, mnist5k, cifar; cifar-scale (opt-in, ~40 min: the ResNet18 "
                        "α sweep where slider moves score the subset)")
    p.add_argument("--tiny", action="store_true", help="tiny synthetic workloads: every figure in seconds (for tests)")
    p.add_argument("--no-distributed", dest="distributed", action="store_false",
                   help="skip the 2-process torchrun comparison")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: one per core beyond the first)")
    p.add_argument("--opt-in", default="", help="also time speed-ups that change the numbers: bf16, compile (comma-separated)")
    p.add_argument("--cache-dir", default=None, help="cache folder (default $LFSSD_CACHE_DIR or ~/.cache/lfssd-explorer)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p = sub.add_parser("assets", help="the shipped assets (assets/: models, importances, example images): list them "
                                      "with their hash check, --rebuild them, or --check a rebuild against them")
    p.add_argument("--rebuild", action="store_true",
                   help="rebuild every asset deterministically (fresh cache, CPU, one thread) into the assets folder "
                        "and rewrite its manifest")
    p.add_argument("--check", action="store_true",
                   help="rebuild into a temporary folder and compare with the shipped files, and check every shipped "
                        "file's hash (exit status 1 when anything differs)")
    p.add_argument("--only", default=None, metavar="NAME",
                   help="only the assets whose manifest path or step is NAME or starts with it, e.g. examples/")
    p.add_argument("--into", default=None, metavar="DIR",
                   help="with --rebuild: write there instead of the assets folder; with --check: keep the rebuilt "
                        "files there")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _default_methods() -> tuple[str, ...]:
    from core.compare.methods import DEFAULT_COMPARISON

    return DEFAULT_COMPARISON


def _method_args(p: argparse.ArgumentParser, default_methods: str | None, repeats: int = 1) -> None:
    from core.compare.methods import METHODS

    p.add_argument("--methods", default=default_methods,
                   help=f"comma-separated: {', '.join(METHODS)}, or all"
                        + (f" (default {default_methods})" if default_methods else " (default: the table's)"))
    p.add_argument("--repeats", type=int, default=repeats, help="runs per method, with seeds 0..N-1")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="METHOD.PARAM=VALUE",
                   help="a method's parameter, e.g. lfssd.alpha=5 or finetune.epochs=2 (repeatable)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads while timing (default: 1 for the small CNN, which two threads "
                        "slow down on a busy 2-core machine)")


def _config(args):
    from core.experiment import ExperimentConfig

    return ExperimentConfig(
        dataset=args.dataset, model=args.model, forget=getattr(args, "forget", "class:0"),
        kind=getattr(args, "kind", None) or "lfssd", mode=getattr(args, "mode", "batch"),
        batch_size=getattr(args, "batch_size", None), d_order=getattr(args, "order", "reference"),
        data_root=args.data_root, checkpoint=args.checkpoint, epochs=args.epochs, seed=args.seed,
        recipe=getattr(args, "recipe", "default"))


def _cache(args):
    from core.cache import TensorCache

    cache = TensorCache(args.cache_dir)
    _CACHES.append(cache)
    return cache


_CACHES: list = []  # caches used by this run, whose warnings are shown at the end


def _progress(args):
    if args.json or not sys.stderr.isatty():
        return None

    def show(fraction: float, message: str) -> None:
        bar = "#" * int(fraction * 30)
        sys.stderr.write(f"\r[{bar:<30}] {fraction * 100:5.1f}% {message[:70]:<70}")
        if fraction >= 1.0:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def _check_writable(path: str | None) -> None:
    """Fail before the work, not after it, when an output file cannot be written."""
    if path is None:
        return
    folder = Path(path).resolve().parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise CliError(f"cannot write {path}: {folder} is not a writable folder")


def cmd_train(args) -> dict:
    from core.data.registry import load_dataset
    from core.evaluation.accuracy import accuracy, predict_logits
    from core.experiment import baseline_model
    from core.models.registry import default_device, save_checkpoint

    config = _config(args).resolved()
    dataset = load_dataset(config.dataset, config.data_root, _progress(args))
    started = time.perf_counter()
    model, cached = baseline_model(config, dataset, _cache(args), _progress(args))
    model = model.to(default_device())
    if args.save:
        save_checkpoint(model, args.save, {"model": config.model, "dataset": dataset.name})
    return {"dataset": dataset.name, "model": config.model, "recipe": config.recipe, "from_cache": cached,
            "seconds": time.perf_counter() - started,
            "train_accuracy": accuracy(predict_logits(model, dataset, dataset.train_x), dataset.train_y),
            "test_accuracy": accuracy(predict_logits(model, dataset, dataset.test_x), dataset.test_y),
            "saved": args.save}


def _summary(prepared) -> dict:
    cfg = prepared.config
    return {"dataset": cfg.dataset, "model": cfg.model, "recipe": cfg.recipe, "forget": prepared.split.spec.__str__(),
            "target": prepared.split.description, "forget_size": prepared.split.num_forget,
            "kind": cfg.kind, "mode": cfg.mode, "batch_size": prepared.batch_size, "d_order": cfg.d_order,
            "cache_hits": prepared.cache_hits, "timings": prepared.timings}


def cmd_forget(args) -> dict:
    from dataclasses import replace

    from core.experiment import choose_alpha, forget, prepare, run_forget
    from core.models.registry import save_checkpoint

    started = time.perf_counter()
    choice = None
    if isinstance(args.alpha, str):  # a rule chooses α (and λ)
        if args.lambda_ is not None:
            raise CliError(f"--alpha {args.alpha} chooses λ too: leave out --lambda, or give α as a number")
        prepared = prepare(_config(args), _cache(args), _progress(args))
        choice = choose_alpha(prepared, args.alpha)
        outcome = forget(prepared, choice.alpha, choice.lambda_)
    else:
        lambda_ = 1.0 if args.lambda_ is None else args.lambda_
        prepared, outcome = run_forget(replace(_config(args), alpha=args.alpha, lambda_=lambda_), _cache(args),
                                       _progress(args))
    if args.save:
        save_checkpoint(outcome.model, args.save, {"alpha": str(outcome.report.alpha), "lambda": str(outcome.report.lambda_)})
    return {**_summary(prepared), "alpha": outcome.report.alpha, "lambda": outcome.report.lambda_,
            "alpha_rule": choice.as_dict() if choice else None,
            "baseline": prepared.baseline.headline(), "forgotten": outcome.result.headline(),
            "selected": outcome.report.selected, "selected_fraction": outcome.report.fraction,
            "parameters": outcome.report.numel, "layers": outcome.report.to_rows(),
            "forget_seconds": outcome.seconds, "total_seconds": time.perf_counter() - started, "saved": args.save}


def cmd_evidence(args) -> dict:
    """Every attack of core.evaluation.attacks on one experiment at (α, λ)."""
    from dataclasses import replace

    from core.compare.evidence import curve_dict, forget_score_over_models, pair_evidence, relearning_evidence
    from core.compare.methods import METHODS
    from core.data.registry import default_alpha
    from core.data.splits import ForgetSpec
    from core.evaluation.attacks import ATTACKS
    from core.experiment import forget, prepare, retrained_model

    config = _config(args).resolved()
    alpha = args.alpha if args.alpha is not None else default_alpha(config.dataset, ForgetSpec.parse(config.forget).kind)
    lambda_ = 1.0 if args.lambda_ is None else args.lambda_
    methods = [m.strip().lower() for m in (args.methods or config.kind).split(",") if m.strip()]
    for method in methods:
        METHODS.get(method)
    cache = _cache(args)
    prepared = prepare(config, cache, _progress(args))
    outcome = forget(prepared, alpha, lambda_, evaluation="full")
    retrained = retrained_model(prepared, cache) if prepared.split.labelled else None
    pair = pair_evidence(prepared, outcome, retrained)
    out = {**_summary(prepared), "alpha": alpha, "lambda": lambda_,
           "attacks": {name: ATTACKS.get(name).label for name in ATTACKS},
           "entropy": {"baseline": prepared.baseline.mia, "dampened": outcome.result.mia,
                       "retrained": evaluate_retrained(prepared, retrained), "sets": outcome.result.mia_sets},
           "confidence": {"statistic": pair.statistic,
                          "median": {"dampened": _median(pair.dampened), "baseline": _median(pair.baseline),
                                     "retrained": _median(pair.retrained), "test": _median(pair.test)},
                          "epsilon": pair.separation.epsilon if pair.separation else None,
                          "threshold": pair.separation.threshold if pair.separation else None,
                          "baseline_epsilon": pair.baseline_separation.epsilon if pair.baseline_separation else None,
                          "recognised": float(pair.recognised.mean())},
           "forget_score": {}, "relearning": None}
    if args.models:
        kind = ForgetSpec.parse(config.forget).kind
        for method in methods:  # each dampening method at the α given for --kind, or else at its own default
            own = alpha if method == config.kind or not METHODS.get(method).alpha_rule else \
                METHODS.get(method).default_alpha(config.dataset, kind, config.model)
            out["forget_score"][method] = forget_score_over_models(
                replace(config, kind=method if method in ("lfssd", "ssd") else config.kind), method, own, lambda_,
                args.models, cache, _progress(args), workers=args.workers).as_dict()
    if prepared.split.labelled and args.relearn_steps:
        r = relearning_evidence(prepared, alpha, lambda_, cache, steps=args.relearn_steps)
        out["relearning"] = {"ratio": r["ratio"], "lr": r["lr"],
                             "curves": {k: curve_dict(v) for k, v in r["curves"].items()}}
    return out


def _median(values) -> float | None:
    import numpy as np

    return None if values is None or not len(values) else float(np.median(values))


def evaluate_retrained(prepared, retrained):
    from core.evaluation.accuracy import evaluate

    return None if retrained is None else evaluate(retrained, prepared.dataset, prepared.split).mia


def cmd_alpha_study(args) -> dict:
    from core.compare.alpha_study import grid_cases, run_study

    cases = grid_cases()
    if args.cases:
        cases = [c for c in cases if any(part in c.name for part in args.cases.split(","))]
        if not cases:
            raise CliError(f"--cases {args.cases!r} matches none of the study's cases")
    return run_study(_cache(args), _progress(args), cases)


def cmd_sweep(args) -> dict:
    from core.method.dampening import validate_hyperparameters
    from core.experiment import prepare, sweep

    for alpha in args.alpha:
        for lambda_ in args.lambda_:
            validate_hyperparameters(alpha, lambda_)
    prepared = prepare(_config(args), _cache(args), _progress(args))
    table = sweep(prepared, args.alpha, args.lambda_, _progress(args))
    if args.csv:
        table.to_csv(args.csv, index=False)
    return {**_summary(prepared), "baseline": prepared.baseline.headline(), "rows": _records(table)}


def cmd_importance(args) -> dict | None:
    """I_D and I_Df. Under ``torchrun --nproc_per_node=K`` each process takes every K-th batch and
    the sums are all-reduced; only the first process writes the cache, the output and the JSON."""
    from core.cache import save_tensors
    from core.fast.distributed import from_environment
    from core.experiment import load_importances

    group = from_environment()
    first = group is None or group.rank == 0
    try:
        parts = load_importances(_config(args), _cache(args), _progress(args) if first else None, group=group)
    finally:
        if group is not None:
            group.close()
    if not first:
        return None
    if args.output:
        maps = {**{f"full.{k}": v for k, v in parts.imp_full.items()},
                **{f"forget.{k}": v for k, v in parts.imp_forget.items()}}
        meta = {"kind": parts.config.kind, "mode": parts.config.mode, "forget": str(parts.split.spec),
                "dataset": parts.config.dataset, "model": parts.config.model, "batch_size": str(parts.batch_size),
                "processes": str(group.world if group else 1)}
        save_tensors(args.output, maps, meta)
    totals = {name: {"full_sum": float(parts.imp_full[name].sum()), "forget_sum": float(parts.imp_forget[name].sum()),
                     "numel": parts.imp_full[name].numel()} for name in parts.imp_full}
    return {**_summary(parts), "parameters": totals, "output": args.output,
            "processes": group.world if group else 1, "backend": group.backend if group else None}


def _records(table) -> list[dict]:
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            for row in table.to_dict(orient="records")]


def _settings(items: list[str]) -> dict[str, dict[str, str]]:
    """["lfssd.alpha=5", …] → {"lfssd": {"alpha": "5"}, …} (values are checked by the method)."""
    from core.compare.methods import METHODS

    params: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, name = key.strip().partition(".")
        if not sep or not dot or not method or not name or not value.strip():
            raise CliError(f"bad --set '{item}'; use METHOD.PARAM=VALUE, e.g. lfssd.alpha=5")
        METHODS.get(method)
        params.setdefault(method, {})[name.strip()] = value.strip()
    return params


def _threads(args, model_name: str | None) -> int | None:
    if args.threads is not None:
        if args.threads < 1:
            raise CliError(f"--threads must be >= 1, got {args.threads}")
        return args.threads
    return 1 if model_name == "small_cnn" else None


def _check_repeats(args) -> None:
    if args.repeats < 1:
        raise CliError(f"--repeats must be >= 1, got {args.repeats}")


def cmd_compare(args) -> dict:
    from core.compare.evidence import score_methods
    from core.compare.run import check_params, compare, parse_methods, torch_threads, unlabelled_refusal, with_forget_scores
    from core.errors import UserError
    from core.experiment import prepare, retrained_model
    from core.plots.compare import comparison_record
    from core.compare.protocol import protocol_config
    from core.data.splits import ForgetSpec

    _check_repeats(args)
    if args.models and args.models < 3:
        raise CliError(f"--models must be 0 (off) or ≥ 3 (the score's top bucket is ⌈ln(N − 1)⌉), got {args.models}")
    methods = parse_methods(args.methods)
    params = check_params(methods, _settings(args.settings))
    config = protocol_config(_config(args).resolved(), args.protocol)
    if ForgetSpec.parse(config.forget).kind == "images" and not args.skip_unavailable:  # fail before the work
        refusal = unlabelled_refusal(methods)
        if refusal:
            raise UserError(f"{refusal} (leave them out, or pass --skip-unavailable)")
    started = time.perf_counter()
    with torch_threads(_threads(args, config.model)):
        prepared = prepare(config, _cache(args), _progress(args))
        if args.models and not prepared.split.labelled:  # before the comparison's work
            raise UserError("--models: the challenge's score needs D_f's labels and retrained models; "
                            "unlabelled images have neither")
        evidence = prepared.split.labelled and not args.no_evidence
        comparison = compare(prepared, methods, args.repeats, params, args.protocol, _progress(args),
                             skip_unavailable=args.skip_unavailable, evidence=evidence,
                             retrained=retrained_model(prepared, _cache(args)) if evidence else None)
        if args.models:
            ran = list(comparison.summary["method"])
            scores = score_methods(config, ran, args.models, comparison.params, _cache(args), _progress(args),
                                   workers=args.workers)
            comparison = with_forget_scores(comparison, scores)
    if args.csv:
        comparison.runs.to_csv(args.csv, index=False)
    return {**_summary(prepared), "methods": methods, "repeats": args.repeats, "threads": _threads(args, config.model),
            "baseline": prepared.baseline.headline(), **comparison_record(comparison),
            "total_seconds": time.perf_counter() - started}


def cmd_reproduce(args) -> dict:
    from core.compare.run import parse_methods, torch_threads
    from core.compare.paper import reproduce
    from core.plots.compare import comparison_record

    _check_repeats(args)
    methods = parse_methods(args.methods) if args.methods else None
    rows = [r.strip() for r in args.rows.split(",") if r.strip()] if args.rows else None
    with torch_threads(_threads(args, args.model)):
        result = reproduce(args.table, args.data_root, args.model, rows, methods, args.repeats, args.checkpoint,
                           args.epochs, _settings(args.settings), _cache(args), _progress(args))
    if args.csv:
        result.side_by_side.to_csv(args.csv, index=False)
    return {"table": result.table, "caption": result.caption, "model": result.model, "paper_model": result.paper_model,
            "protocol": "paper", "repeats": args.repeats, "rows": list(result.comparisons),
            "notes": list(result.notes), "side_by_side": _records(result.side_by_side),
            "comparisons": {row: comparison_record(c) for row, c in result.comparisons.items()},
            "total_seconds": result.seconds}


def cmd_bench(args) -> dict:
    from core.cli.bench import run_bench

    if args.threads is not None and args.threads < 1:
        raise CliError(f"--threads must be >= 1, got {args.threads}")
    workloads = tuple(w.strip() for w in args.workloads.split(",") if w.strip())
    opt_in = tuple(o.strip() for o in args.opt_in.split(",") if o.strip())
    return run_bench(tiny=args.tiny, threads=args.threads, cache=_cache(args), workloads=workloads,
                     distributed=args.distributed, progress=_progress(args), opt_in=opt_in)


def cmd_assets(args) -> dict:
    """The assets folder ($LFSSD_ASSETS_DIR, else <repo>/assets): see ``core.cli.assets``."""
    from core.cli.assets import run_assets

    return run_assets(args.rebuild, args.check, args.only, args.into, quiet=args.json)


COMMANDS = {"assets": cmd_assets, "evidence": cmd_evidence, "alpha-study": cmd_alpha_study, "bench": cmd_bench, "train": cmd_train, "forget": cmd_forget, "sweep": cmd_sweep, "importance": cmd_importance,
            "compare": cmd_compare, "reproduce": cmd_reproduce}


def _print_human(command: str, result: dict) -> None:
    if command == "reproduce":
        _print_reproduce(result)
        return
    if command == "assets":
        from core.cli.assets import print_result

        print_result(result)
        return
    if command == "bench":
        from core.cli.bench import print_summary

        print_summary(result)
        return
    if command == "compare":
        print(f"compare on {result['dataset']} / {result['model']}, forget {result['target']} "
              f"({result['forget_size']} images); importance in {result['mode']} mode")
        _print_compare(result)
        return
    if command == "train":
        print(f"{result['model']} on {result['dataset']}: train {result['train_accuracy']:.2f} %, "
              f"test {result['test_accuracy']:.2f} % ({'cached' if result['from_cache'] else 'trained'})")
        return
    print(f"{result['kind'].upper()} ({result['mode']} mode) on {result['dataset']} / {result['model']}, "
          f"forget {result['target']} ({result['forget_size']} images)")
    if command == "alpha-study":
        _print_alpha_study(result)
    if command == "evidence":
        _print_evidence(result)
    if command == "forget":
        base, new = result["baseline"], result["forgotten"]
        if result.get("alpha_rule"):
            print(f"α rule {result['alpha_rule']['rule']}: {result['alpha_rule']['reason']}")
        print(f"alpha={result['alpha']:g} lambda={result['lambda']:g}: {result['selected']:,} of "
              f"{result['parameters']:,} parameter elements dampened ({result['selected_fraction'] * 100:.3f} %)")
        print(f"{'':14}{'baseline':>10}{'forgotten':>11}")
        for key, label in (("d_r", f"D_r ({base['d_r_split']})"), ("d_f", f"D_f ({base['d_f_split']})"),
                           ("test", "test"), ("mia", "MIA (entropy)")):
            print(f"{label:14}{_fmt(base[key]):>10}{_fmt(new[key]):>11}")
        print(f"MIA: {new['mia_sets']}")
        for which, res in (("baseline", base), ("forgotten", new)):
            if res["mia"] is None:
                print(f"MIA ({which}): no number, {res['mia_note']}")
    elif command == "sweep":
        print(f"{'alpha':>7}{'lambda':>8}{'selected':>10}{'D_r':>8}{'D_f':>8}{'MIA':>8}")
        for row in result["rows"]:
            print(f"{row['alpha']:>7g}{row['lambda']:>8g}{row['selected']:>10,}{_fmt(row['d_r']):>8}"
                  f"{_fmt(row['d_f']):>8}{_fmt(row['mia']):>8}")
    elif command == "importance":
        print(f"{len(result['parameters'])} parameter tensors; saved to {result['output'] or '(not saved)'}")


def _print_evidence(r: dict) -> None:
    e, c = r["entropy"], r["confidence"]
    print(f"α={r['alpha']:g} λ={r['lambda']:g}, {r['target']}")
    print(f"entropy MIA (the papers'): baseline {_fmt(e['baseline'])}, dampened {_fmt(e['dampened'])}, "
          f"retrained {_fmt(e['retrained'])}")
    print(f"confidence ({c['statistic']}): median dampened {_fmt(c['median']['dampened'])}, retrained "
          f"{_fmt(c['median']['retrained'])}, baseline {_fmt(c['median']['baseline'])}; one-pair ε dampened vs "
          f"retrained {_fmt(c['epsilon'])} (baseline vs retrained {_fmt(c['baseline_epsilon'])})")
    for method, s in r["forget_score"].items():
        print(f"challenge score, {method}, N={s['models']}: F {s['forget_score']:.4f}, final {s['final_score']:.4f} "
              f"({s['seconds']:.0f} s)")
    if r["relearning"]:
        print(f"relearning ratio R {_fmt(r['relearning']['ratio'])}: " + ", ".join(
            f"{k} {' → '.join(f'{a:.0f}' for a in v['accuracy'])}" for k, v in r["relearning"]["curves"].items()))


def _print_alpha_study(result: dict) -> None:
    ways = list(next(iter(result["summary"].values())))
    print(f"{'group':28}" + "".join(f"{w[:22]:>24}" for w in ways))
    for group, stats in result["summary"].items():
        print(f"{group:28}" + "".join(f"{stats[w]['retrain_like']:>4}/{stats[w]['cases']:<3}"
                                      f"({stats[w]['mean_dampened_percent']:5.2f} %)".rjust(24) for w in ways))


def _pm(mean, std) -> str:
    return "—" if mean is None else f"{mean:6.2f} ± {std:5.2f}"


def _print_compare(result: dict) -> None:
    seeds = result["seeds"]
    runs = f"1 run (seed {seeds[0]})" if len(seeds) == 1 else f"{len(seeds)} runs each (seeds {seeds[0]}–{seeds[-1]})"
    print(f"{runs}, protocol {result['protocol']} ({result['accuracy']} accuracy), MIA = entropy attack")
    base = result["baseline"]
    d_f = f"D_f ({base['d_f_split']})" if base["d_f_split"] else "D_f"
    width = max(len(row["label"]) for row in result["summary"]) + 2
    header = (f"{'method':<{width}}{'D_r (' + str(base['d_r_split']) + ')':>16}{d_f:>16}"
              f"{'test':>16}{'MIA':>16}{'wall s':>10}{'incl. I_D':>11}{'|ΔD_f|':>8}{'|ΔMIA|':>8}{'ε pair':>8}{'R':>6}")
    scored = bool(result.get("forget_scores"))
    print(header + (f"{'F':>7}{'final':>7}" if scored else ""))
    for row in result["summary"]:
        print(f"{row['label']:<{width}}{_pm(row['d_r_mean'], row['d_r_std']):>16}{_pm(row['d_f_mean'], row['d_f_std']):>16}"
              f"{_pm(row['test_mean'], row['test_std']):>16}{_pm(row['mia_mean'], row['mia_std']):>16}"
              f"{row['wall_s_mean']:>10.3f}{row['wall_incl_id_s_mean']:>11.3f}"
              f"{_fmt(row['d_f_to_retrain']):>8}{_fmt(row['mia_to_retrain']):>8}"
              f"{_fmt(row.get('epsilon_mean')):>8}{_fmt(row.get('relearn_r_mean')):>6}"
              + (f"{_fmt(row.get('forget_score'), 3):>7}{_fmt(row.get('final_score'), 3):>7}" if scored else ""))
    if result["importance_seconds"]:
        passes = ", ".join(f"{k} {v:.2f} s" for k, v in result["importance_seconds"].items())
        print(f"I_D pass, computed once and reused: {passes}; 'incl. I_D' adds it. "
              f"|Δ| = distance to {result['reference']}'s mean.")
    print("MIA: the papers' entropy attack; ε pair: one threshold on the forget examples' logit-scaled confidence, "
          "this model against the seed-0 retrained model (0 = indistinguishable); R: relearning ratio "
          "(— = D_f was never forgotten)" + ("; F, final: the unlearning challenge's score over "
                                             f"{next(iter(result['forget_scores'].values()))['models']} models"
                                             if scored else ""))
    for name, reason in result["skipped"].items():
        print(f"skipped {name}: {reason}")


def _print_reproduce(result: dict) -> None:
    print(result["caption"])
    print(f"ours: {result['model']} beside the paper's {result['paper_model']} column; paper protocol; "
          f"{result['repeats']} repeat(s); 'ours / paper', mean over repeats")
    for note in result["notes"]:
        print(f"note: {note}")
    cells: dict = {}
    for r in result["side_by_side"]:
        cells.setdefault((r["row"], r["method"]), {})[r["metric"]] = (r["ours_mean"], r["paper_mean"])
    print(f"{'row':<24}{'method':<14}{'D_r':>18}{'D_f':>18}{'MIA':>18}")
    for (row, method), metrics in cells.items():
        shown = [f"{_fmt(metrics[m][0])} / {_fmt(metrics[m][1])}" for m in ("d_r", "d_f", "mia")]
        print(f"{row:<24}{method:<14}" + "".join(f"{s:>18}" for s in shown))


def _fmt(value, digits: int = 2) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    from core.errors import UserError

    _CACHES.clear()  # this run's caches only (main may run many times in one interpreter)
    try:
        args = build_parser().parse_args(argv)
        from core.fast.runtime import configure_threads

        configure_threads()  # one per core beyond the first, unless told (LFSSD_THREADS, OMP_NUM_THREADS)
        for option in ("save", "csv", "output"):
            _check_writable(getattr(args, option, None))
        result = COMMANDS[args.command](args)
        if result is None:  # a torchrun process other than the first: it has nothing to say
            return 0
    except (CliError, UserError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # an output path that cannot be written
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"error: cannot write{where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    warnings = [w for cache in _CACHES for w in cache.warnings]
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        result["warnings"] = warnings
        print(json.dumps(result, default=_json_default))
    else:
        _print_human(args.command, result)
    return int(result.get("exit_status", 0))


def _json_default(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
