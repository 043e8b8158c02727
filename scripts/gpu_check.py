"""The engine on whatever device it picks (a GPU when there is one): one short, prepared check.

For the session that is lent a GPU (the ``device`` tool gives minutes, not hours). It checks what
CPU-only CI cannot, then runs the benchmark there:

1. prefix caching on that device: a slider move's logits against a full forward of the dampened
   copy, bit for bit, at several α (the small CNN on digits, ResNet18-CIFAR on synthetic pixels);
2. importances computed there against the same model's on the CPU (largest relative difference);
3. ``python -m core bench --json`` (digits and the CIFAR-shaped workloads), in a child process.

Usage: python scripts/gpu_check.py [--tiny] [--no-bench] [--out DIR]   (writes DIR/gpu_check.json)
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from core.cli.bench import _cifar_resnet18  # noqa: E402
from core.cache import TensorCache  # noqa: E402
from core.method.dampening import plan_dampening  # noqa: E402
from core.evaluation.accuracy import predict_logits  # noqa: E402
from core.experiment import ExperimentConfig, forget, prepare, timed  # noqa: E402
from core.method.importance import compute_importance, max_relative_difference  # noqa: E402
from core.models.registry import MODELS, default_device, model_device  # noqa: E402

ALPHAS = (1.0, 2.0, 3.5, 5.0)


def prefix_agreement(p) -> list[dict]:
    """Per α: the prefix cache's logits equal a full forward of the dampened copy (bit for bit)?"""
    evaluator = p.evaluations.for_mode(p, "full").evaluator
    names = [n for n, _ in p.model.named_parameters()]
    out = []
    for alpha in ALPHAS:
        cached = evaluator.logits(plan_dampening(names, *evaluator_maps(p), alpha, 1.0))
        damped = forget(p, alpha, 1.0).model
        full = predict_logits(damped, p.dataset, p.dataset.test_x)
        out.append({"alpha": alpha, "first_recomputed_stage": evaluator.last.first_stage,
                    "bitwise_equal": bool(torch.equal(cached["test"], full)),
                    "max_abs_difference": float((cached["test"] - full).abs().max())})
    return out


def evaluator_maps(p):
    return p.evaluations.importances_on(p, model_device(p.model))


def importance_agreement(p) -> dict:
    """I_D on the model's device against the same weights' I_D on the CPU."""
    loader = p.split.full_loader(p.dataset, p.batch_size, p.config.d_order)
    per_sample = MODELS.get(p.config.model).per_sample
    seconds = {}
    with timed(seconds, "seconds_on_device"):
        here = compute_importance(p.model, loader, "lfssd", "batch", per_sample=per_sample)
    with timed(seconds, "seconds_on_cpu"):
        cpu = compute_importance(copy.deepcopy(p.model).cpu(), loader, "lfssd", "batch", per_sample=per_sample)
    return {"max_relative_difference": max_relative_difference(cpu, here), **seconds}


def check(name: str, p) -> dict:
    return {"workload": name, "device": str(model_device(p.model)),
            "prefix": prefix_agreement(p), "importance_vs_cpu": importance_agreement(p)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="small synthetic sets only (seconds; for tests)")
    parser.add_argument("--no-bench", action="store_true", help="skip the benchmark")
    parser.add_argument("--out", default=os.environ.get("OUT", "."), help="folder for gpu_check.json")
    args = parser.parse_args()
    device = default_device()
    report = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
              "checks": []}
    if device.type == "cuda":
        report["fp32_precision"] = {"cudnn.conv": torch.backends.cudnn.conv.fp32_precision,
                                    "cuda.matmul": torch.backends.cuda.matmul.fp32_precision}
    workloads = [("resnet18, synthetic", lambda: _cifar_resnet18(args.tiny, TensorCache()).prepared)]  # the bench's
    if not args.tiny:
        workloads.insert(0, ("small_cnn, digits", lambda: prepare(ExperimentConfig(dataset="digits"))))
    for name, build in workloads:
        report["checks"].append(check(name, build()))
    if not args.no_bench:
        bench = [sys.executable, "-m", "core", "bench", "--no-distributed", "--json",
                 *(["--tiny"] if args.tiny else ["--workloads", "digits,cifar"])]
        done = subprocess.run(bench, capture_output=True, text=True, cwd=ROOT)
        report["bench"] = json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr[-2000:]}
    report["all_bitwise_equal"] = all(a["bitwise_equal"] for c in report["checks"] for a in c["prefix"])
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "gpu_check.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "bench"}, indent=1))
    if "bench" in report:
        print(json.dumps(report["bench"].get("targets", report["bench"]), indent=1))
    return 0 if report["all_bitwise_equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
