"""``python -m core bench --json`` on its tiny workloads: every ratio is there, computed from real
runs (no timing is asserted: a shared machine's speed is not a test result)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.cli.bench import SCALE_TARGETS, TARGETS
from core.evaluation.accuracy import SUBSET_THRESHOLD

REPO = Path(__file__).resolve().parents[1]


def bench(*args, cwd=REPO):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "core", "bench", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    done = bench("--json", "--tiny", "--cache-dir", str(tmp_path_factory.mktemp("cache")))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_every_workload_has_every_ratio(report):
    assert report["tiny"] and report["threads"] == 1
    assert set(report["workloads"]) == {"digits/small_cnn", "cifar/small_cnn", "cifar/resnet18"}
    for name, w in report["workloads"].items():
        for kind in ("lfssd", "ssd"):
            assert positive(w["importance"][kind]["ratio_to_floor"]), name
            assert positive(w["importance"][kind]["floor_seconds"]), name
            assert positive(w["sample_vs_batch"][kind]["ratio_to_batch"]), name
        assert w["sample_vs_batch"]["per_sample_method"] == "hooks"
        slider = w["slider"]
        assert positive(slider["ratio_to_floor"]) and positive(slider["without_prefix_seconds"])
        assert 0 < slider["stages_recomputed_share"] <= 1 and 0 <= slider["parameters_recomputed_share"] <= 1
        sweep = w["sweep"]
        assert sweep["points"] == 10 and len(sweep["alphas"]) == 10 and sweep["alphas"][0] == 1.0
        assert positive(sweep["speedup"]) and positive(sweep["speedup_cold"])
        assert sweep["importance_bound"] > 1
        assert positive(sweep["projected_cifar10"]["speedup"])
        assert 1 <= sweep["naive_points_run"] <= 10
        auto = w["auto_alpha"]  # the automatic α, timed side by side with a slider move
        assert positive(auto["ratio_to_slider_move"]) and positive(auto["slider_seconds"])
        assert auto["ratio_to_slider_move"] == pytest.approx(auto["seconds"] / auto["slider_seconds"])
        assert auto["evaluations"] >= 1 and positive(auto["alpha"])
        evidence = w["evidence"]  # the Evidence page's per-move work, timed beside the move alone
        assert positive(evidence["ratio_to_slider_move"])
        assert evidence["ratio_to_slider_move"] == pytest.approx(evidence["with_evidence_seconds"] / evidence["slider_seconds"])
        memory = w["memory"]
        assert memory["importance_bytes"] > 0 and memory["importance_file_bytes"] >= memory["importance_bytes"]
        assert memory["activation_cache_bytes"] > 0 and memory["peak_rss_bytes_so_far"] > 0
    cifar = report["workloads"]["cifar/resnet18"]
    assert cifar["importance"]["images"] <= cifar["train"]  # a slice of D for the costliest model


def test_sweep_at_subset_scale_is_opt_in_and_scores_the_subset(report, tmp_path):
    assert "sweep_at_scale" not in report  # not in a default run: ~40 minutes at full size
    done = bench("--json", "--tiny", "--workloads", "cifar-scale", "--no-distributed", "--cache-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    scale = out["sweep_at_scale"]
    assert scale["evaluation_images"] > SUBSET_THRESHOLD > scale["subset_images"] > scale["forget"]
    assert scale["points"] == 10 and scale["alphas"][0] == 1.0 and scale["alphas"][-1] > 5  # CIFAR's |D|/|D_f|
    assert positive(scale["naive_point_seconds"]) and positive(scale["ours_seconds"])
    assert 0 < scale["speedup_cold"] < scale["speedup"]
    assert [row["target"] for row in out["targets"]] == list(SCALE_TARGETS)


def test_prefix_and_torchrun_sections(report):
    prefix = report["prefix"]
    assert prefix["alpha"] == 5.0 and positive(prefix["saving"])
    assert 0 < prefix["stages_recomputed_share"] <= 1
    assert report["distributed"]["processes"] == 2
    assert report["distributed"]["max_relative_difference"] <= 1e-5  # a correctness figure, not a timing


def test_targets_are_all_reported(report):
    assert {row["target"] for row in report["targets"]} == set(TARGETS)
    assert all(isinstance(row["met"], bool) and math.isfinite(row["measured"]) for row in report["targets"])


def test_bad_options_are_one_line_errors():
    for args, message in ((("--workloads", "nope"), "unknown bench workload 'nope'"),
                          (("--threads", "0"), "--threads must be >= 1")):
        done = bench(*args)
        assert done.returncode == 2
        assert done.stderr.strip().splitlines() == [f"error: {done.stderr.strip().removeprefix('error: ')}"]
        assert message in done.stderr


def test_the_prepared_gpu_check_runs_on_this_device(tmp_path):
    """scripts/gpu_check.py (for a session lent a GPU) runs on whatever device is here: a slider
    move's logits equal the full forward's bit for bit, and I_D equals the CPU's."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", LFSSD_CACHE_DIR=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--tiny", "--no-bench",
                           "--out", str(tmp_path)], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    (check,) = report["checks"]
    assert [row["alpha"] for row in check["prefix"]] == [1.0, 2.0, 3.5, 5.0]
    assert report["all_bitwise_equal"] and all(row["max_abs_difference"] == 0.0 for row in check["prefix"])
    assert check["importance_vs_cpu"]["max_relative_difference"] <= 1e-6


def test_sweep_selection_trains_on_real_digits_and_reports_each_alpha(tmp_path):
    """scripts/sweep_selection.py: a model trained on MNIST-5k digits shaped 32×32×3, then the
    bench's 10 α, each with its selection and the first stage a move recomputes."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "sweep_selection.py"), "--model", "small_cnn",
                           "--train", "200", "--test", "40", "--epochs", "3", "--json", str(tmp_path / "s.json")],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "s.json").read_text())
    assert report["baseline"]["d_r"] > 40  # learnt the digits (chance: 10 %)
    alphas = [q["alpha"] for q in report["points"]]
    assert len(alphas) == 10 and alphas[0] == 1.0 and alphas == sorted(alphas)
    selected = [q["selected"] for q in report["points"]]
    assert selected == sorted(selected, reverse=True) and 0 < selected[-1] < selected[0] < report["parameters"]
    assert {q["first_recomputed_stage"] for q in report["points"]} <= set(report["stages"])
    assert report["importance_bound"] > 1
    table = done.stdout.splitlines()
    assert len(table) == 1 + 1 + 10 + 1 and f"{selected[0]:,}" in table[2]


def test_sweep_selection_bad_options_are_one_line_errors():
    for args, message in ((("--train", "0"), "--train, --test and --threads must be ≥ 1"),
                          (("--model", "nope"), "unknown model 'nope'"),
                          (("--train", "5", "--test", "5", "--epochs", "0", "--model", "small_cnn"),
                           "class 3 ('3') has no training images in mnist5k as 32×32×3")):
        done = subprocess.run([sys.executable, str(REPO / "scripts" / "sweep_selection.py"), *args],
                              capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"), timeout=300)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert message in done.stderr.strip().splitlines()[-1]
