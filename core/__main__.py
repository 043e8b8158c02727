"""Command line: ``python -m core train | forget | sweep | importance``, each with ``--json``.

Every error a user can cause prints one line to stderr and exits with status 2.
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


def _numbers(text: str) -> list[float]:
    values = [_number(part) for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError("give at least one number")
    return values


def _experiment_args(p: argparse.ArgumentParser, forget: bool = True) -> None:
    p.add_argument("--dataset", default="digits", help="digits (default), mnist5k, cifar10, cifar100, cifar20, folder")
    p.add_argument("--model", default=None, help="small_cnn, resnet18, vit, vit_b16 (default: the data set's)")
    p.add_argument("--data-root", default=None, help="folder with the CIFAR files, or the image folder for 'folder'")
    p.add_argument("--checkpoint", default=None, help="weights to forget from (safetensors, or torch.save zip)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs of the default model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=None, help="cache folder (default $LFSSD_CACHE_DIR or ~/.cache/lfssd-explorer)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    if forget:
        p.add_argument("--forget", default="class:3",
                       help="class:<id|name>, subclass:<fine class>, random:<n>[:<seed>], images:<file|folder|glob>")
        p.add_argument("--kind", default="lfssd", help="lfssd (label-free, default) or ssd")
        p.add_argument("--mode", default="batch", help="batch (reference code, default) or sample (paper's eq. 3)")
        p.add_argument("--batch-size", type=int, default=None, help="importance batch size (default: the reference's)")
        p.add_argument("--order", default="reference", help="order of D: reference (D_f last) or class-sorted")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m core", description="LFSSD Explorer: label-free unlearning from the command line")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("train", help="train (or load from cache) the default model and score it")
    _experiment_args(p, forget=False)
    p.add_argument("--save", default=None, help="also write the model to this .safetensors file")
    p = sub.add_parser("forget", help="forget a target with LFSSD/SSD and compare with the baseline")
    _experiment_args(p)
    p.add_argument("--alpha", type=_number, default=None, help="selection threshold α > 0 (default: suits the data set)")
    p.add_argument("--lambda", dest="lambda_", type=_number, default=1.0, help="dampening constant λ >= 0 (default 1)")
    p.add_argument("--save", default=None, help="write the dampened model to this .safetensors file")
    p = sub.add_parser("sweep", help="scores for a grid of α (and λ) on cached importances")
    _experiment_args(p)
    p.add_argument("--alpha", type=_numbers, default=[1, 2, 3.5, 5, 10, 25, 50], help="comma-separated α values")
    p.add_argument("--lambda", dest="lambda_", type=_numbers, default=[1.0], help="comma-separated λ values")
    p.add_argument("--csv", default=None, help="also write the table to this CSV file")
    p = sub.add_parser("importance", help="compute I_D and I_Df and optionally save both maps")
    _experiment_args(p)
    p.add_argument("--output", default=None, help="write both maps to this .safetensors file (full.*, forget.*)")
    return parser


def _config(args):
    from core.experiment import ExperimentConfig

    return ExperimentConfig(
        dataset=args.dataset, model=args.model, forget=getattr(args, "forget", "class:0"),
        kind=getattr(args, "kind", "lfssd"), mode=getattr(args, "mode", "batch"),
        batch_size=getattr(args, "batch_size", None), d_order=getattr(args, "order", "reference"),
        data_root=args.data_root, checkpoint=args.checkpoint, epochs=args.epochs, seed=args.seed)


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
    from core.data import load_dataset
    from core.evaluate import accuracy, predict_logits
    from core.experiment import baseline_model
    from core.models import save_checkpoint

    config = _config(args).resolved()
    dataset = load_dataset(config.dataset, config.data_root, _progress(args))
    started = time.perf_counter()
    model, cached = baseline_model(config, dataset, _cache(args), _progress(args))
    if args.save:
        save_checkpoint(model, args.save, {"model": config.model, "dataset": dataset.name})
    return {"dataset": dataset.name, "model": config.model, "from_cache": cached,
            "seconds": time.perf_counter() - started,
            "train_accuracy": accuracy(predict_logits(model, dataset, dataset.train_x), dataset.train_y),
            "test_accuracy": accuracy(predict_logits(model, dataset, dataset.test_x), dataset.test_y),
            "saved": args.save}


def _summary(prepared) -> dict:
    cfg = prepared.config
    return {"dataset": cfg.dataset, "model": cfg.model, "forget": prepared.split.spec.__str__(),
            "target": prepared.split.description, "forget_size": prepared.split.num_forget,
            "kind": cfg.kind, "mode": cfg.mode, "batch_size": prepared.batch_size, "d_order": cfg.d_order,
            "cache_hits": prepared.cache_hits, "timings": prepared.timings}


def cmd_forget(args) -> dict:
    from dataclasses import replace

    from core.experiment import run_forget
    from core.models import save_checkpoint

    started = time.perf_counter()
    prepared, outcome = run_forget(replace(_config(args), alpha=args.alpha, lambda_=args.lambda_), _cache(args), _progress(args))
    if args.save:
        save_checkpoint(outcome.model, args.save, {"alpha": str(outcome.report.alpha), "lambda": str(outcome.report.lambda_)})
    return {**_summary(prepared), "alpha": outcome.report.alpha, "lambda": outcome.report.lambda_,
            "baseline": prepared.baseline.headline(), "forgotten": outcome.result.headline(),
            "selected": outcome.report.selected, "selected_fraction": outcome.report.fraction,
            "parameters": outcome.report.numel, "layers": outcome.report.to_rows(),
            "forget_seconds": outcome.seconds, "total_seconds": time.perf_counter() - started, "saved": args.save}


def cmd_sweep(args) -> dict:
    from core.dampening import validate_hyperparameters
    from core.experiment import prepare, sweep

    for alpha in args.alpha:
        for lambda_ in args.lambda_:
            validate_hyperparameters(alpha, lambda_)
    prepared = prepare(_config(args), _cache(args), _progress(args))
    table = sweep(prepared, args.alpha, args.lambda_, _progress(args))
    if args.csv:
        table.to_csv(args.csv, index=False)
    return {**_summary(prepared), "baseline": prepared.baseline.headline(), "rows": _records(table)}


def cmd_importance(args) -> dict:
    from core.experiment import prepare

    prepared = prepare(_config(args), _cache(args), _progress(args))
    if args.output:
        from core.cache import atomic_path
        from safetensors.torch import save_file

        maps = {**{f"full.{k}": v for k, v in prepared.imp_full.items()},
                **{f"forget.{k}": v for k, v in prepared.imp_forget.items()}}
        meta = {"kind": prepared.config.kind, "mode": prepared.config.mode, "forget": str(prepared.split.spec),
                "dataset": prepared.config.dataset, "model": prepared.config.model, "batch_size": str(prepared.batch_size)}
        with atomic_path(Path(args.output)) as tmp:
            save_file({k: v.contiguous() for k, v in maps.items()}, str(tmp), metadata=meta)
    totals = {name: {"full_sum": float(prepared.imp_full[name].sum()), "forget_sum": float(prepared.imp_forget[name].sum()),
                     "numel": prepared.imp_full[name].numel()} for name in prepared.imp_full}
    return {**_summary(prepared), "parameters": totals, "output": args.output}


def _records(table) -> list[dict]:
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            for row in table.to_dict(orient="records")]


COMMANDS = {"train": cmd_train, "forget": cmd_forget, "sweep": cmd_sweep, "importance": cmd_importance}


def _print_human(command: str, result: dict) -> None:
    if command == "train":
        print(f"{result['model']} on {result['dataset']}: train {result['train_accuracy']:.2f} %, "
              f"test {result['test_accuracy']:.2f} % ({'cached' if result['from_cache'] else 'trained'})")
        return
    print(f"{result['kind'].upper()} ({result['mode']} mode) on {result['dataset']} / {result['model']}, "
          f"forget {result['target']} ({result['forget_size']} images)")
    if command == "forget":
        base, new = result["baseline"], result["forgotten"]
        print(f"alpha={result['alpha']:g} lambda={result['lambda']:g}: {result['selected']:,} of "
              f"{result['parameters']:,} parameter elements dampened ({result['selected_fraction'] * 100:.3f} %)")
        print(f"{'':14}{'baseline':>10}{'forgotten':>11}")
        for key, label in (("d_r", f"D_r ({base['d_r_split']})"), ("d_f", f"D_f ({base['d_f_split']})"),
                           ("test", "test"), ("mia", "MIA (entropy)")):
            print(f"{label:14}{_fmt(base[key]):>10}{_fmt(new[key]):>11}")
    elif command == "sweep":
        print(f"{'alpha':>7}{'lambda':>8}{'selected':>10}{'D_r':>8}{'D_f':>8}{'MIA':>8}")
        for row in result["rows"]:
            print(f"{row['alpha']:>7g}{row['lambda']:>8g}{row['selected']:>10,}{_fmt(row['d_r']):>8}"
                  f"{_fmt(row['d_f']):>8}{_fmt(row['mia']):>8}")
    elif command == "importance":
        print(f"{len(result['parameters'])} parameter tensors; saved to {result['output'] or '(not saved)'}")


def _fmt(value) -> str:
    return "—" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    from core.errors import UserError

    try:
        args = build_parser().parse_args(argv)
        for option in ("save", "csv", "output"):
            _check_writable(getattr(args, option, None))
        result = COMMANDS[args.command](args)
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
    return 0


def _json_default(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
