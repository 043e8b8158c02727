"""Where the bench's α sweep dampens when the model has learnt something real.

The bench's CIFAR-shaped sweep runs an untrained model on random pixels. The prefix cache's saving
depends on where the selected elements lie, so this script asks whether content would change that:
it trains the model on real digits (MNIST-5k, padded to 32×32 and copied into 3 channels, a
CIFAR-shaped set of the bench's size), then runs the bench's 10 α and reports per point the
elements selected, the first stage recomputed, the seconds of the move and the test accuracies.

Usage: python scripts/sweep_selection.py [--model resnet18] [--train 192] [--test 38]
                                         [--epochs 25] [--threads N] [--json FILE]
(ResNet18 at the defaults, one thread: ~6 minutes of training, ~1 minute of sweep.)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from core.cli.bench import prepared_for, sweep_alphas  # noqa: E402
from core.data.registry import load_dataset  # noqa: E402
from core.data.dataset import Dataset  # noqa: E402
from core.experiment import sweep  # noqa: E402
from core.errors import UserError  # noqa: E402
from core.models.registry import MODELS, create_model  # noqa: E402
from core.fast.runtime import configure_threads  # noqa: E402
from core.models.training import default_config, fit  # noqa: E402


def digits_as_cifar(n_train: int, n_test: int, seed: int = 0) -> Dataset:
    """``n_train``/``n_test`` MNIST-5k digits (a seeded random draw), 28×28 padded to 32×32, 3 channels."""
    mnist = load_dataset("mnist5k")
    gen = torch.Generator().manual_seed(seed)
    pick = lambda labels, n: torch.randperm(len(labels), generator=gen)[:n]  # noqa: E731
    train, test = pick(mnist.train_y, n_train), pick(mnist.test_y, n_test)
    shaped = lambda x: F.pad(x, (2, 2, 2, 2)).repeat(1, 3, 1, 1).contiguous()  # noqa: E731
    return Dataset("mnist5k as 32×32×3", shaped(mnist.train_x[train]), mnist.train_y[train],
                   shaped(mnist.test_x[test]), mnist.test_y[test], mnist.classes,
                   mnist.mean * 3, mnist.std * 3)


def sweep_selection(model_name: str, n_train: int, n_test: int, epochs: int) -> dict:
    dataset = digits_as_cifar(n_train, n_test)
    model = create_model(model_name, dataset.image_shape, dataset.num_classes, seed=0)
    started = time.perf_counter()
    if epochs:
        fit(model, dataset, default_config(model_name, epochs=epochs, batch_size=64, lr=0.05 if model_name == "resnet18" else None))
    trained_seconds = time.perf_counter() - started
    p = prepared_for(dataset, model_name, model)
    evaluation = p.evaluations.for_mode(p, "auto")
    baseline = p.baseline  # scored by prepared_for
    stages = evaluation.evaluator.base_stages
    points = []
    for alpha in sweep_alphas(p):
        started = time.perf_counter()
        row = sweep(p, [alpha], [1.0]).iloc[0]  # the bench's sweep, one point at a time
        first = evaluation.evaluator.last.first_stage
        points.append({"alpha": alpha, "selected": int(row["selected"]), "seconds": time.perf_counter() - started,
                       "first_recomputed_stage": stages[first].name if first < len(stages) else None,
                       "d_r": float(row["d_r"]), "d_f": float(row["d_f"])})
    importance = p.timings["importance_full"] + p.timings["importance_forget"]
    our_point = sum(q["seconds"] for q in points) / len(points)
    return {"model": model_name, "images": dataset.name, "train": n_train, "test": n_test, "epochs": epochs,
            "training_seconds": trained_seconds, "parameters": sum(t.numel() for t in model.parameters()),
            "baseline": {"d_r": baseline.d_r, "d_f": baseline.d_f}, "stages": [s.name for s in stages],
            "importance_seconds": importance, "points": points,
            "importance_bound": 1 + importance / our_point,
            "first_stage_recomputed_at_every_point": all(q["first_recomputed_stage"] == stages[0].name for q in points)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--train", type=int, default=192)
    parser.add_argument("--test", type=int, default=38)
    parser.add_argument("--epochs", type=int, default=25, help="0: the untrained model, as in the bench")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args()
    if min(args.train, args.test) < 1 or args.epochs < 0 or (args.threads is not None and args.threads < 1):
        parser.error("--train, --test and --threads must be ≥ 1, --epochs ≥ 0")
    if args.model not in MODELS:
        parser.error(f"unknown model '{args.model}'; choose from: {', '.join(MODELS)}")
    configure_threads(args.threads)
    try:
        report = sweep_selection(args.model, args.train, args.test, args.epochs)
    except UserError as error:
        parser.error(str(error))
    print(f"{report['model']} on {report['train']} + {report['test']} {report['images']} images, "
          f"{report['epochs']} epochs ({report['training_seconds']:.0f} s): D_r {report['baseline']['d_r']:.1f} %, "
          f"D_f {report['baseline']['d_f']:.1f} % before forgetting; I_D + I_Df {report['importance_seconds']:.1f} s")
    print(f"{'α':>6} {'selected':>11} {'of':>11}  {'first stage recomputed':<24} {'seconds':>8} {'D_r %':>6} {'D_f %':>6}")
    for q in report["points"]:
        print(f"{q['alpha']:6.3f} {q['selected']:11,} {report['parameters']:11,}  {str(q['first_recomputed_stage']):<24} "
              f"{q['seconds']:8.2f} {q['d_r']:6.1f} {q['d_f']:6.1f}")
    print(f"1 + (I_D + I_Df) ÷ our point = {report['importance_bound']:.2f}; "
          f"first stage recomputed at every point: {report['first_stage_recomputed_at_every_point']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
