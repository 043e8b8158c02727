"""``python -m core compare`` and ``python -m core reproduce`` end to end, on real models.

One real subprocess (the compare command as a user types it); the rest call ``core.__main__.main``
in this process with the same cache, which saves two to three seconds of start-up each. The
paper's tables run on tiny CIFAR files written in the official pickle format.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.__main__ import main
from core.compare.paper import paper_results

from cifar_files import write_cifar10, write_cifar100

REPO = Path(__file__).resolve().parents[1]
COMPARE = ["compare", "--dataset", "digits", "--forget", "class:3", "--methods", "baseline,retrain,ssd,lfssd",
           "--repeats", "2", "--set", "retrain.epochs=2", "--set", "lfssd.alpha=3.5"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    # one folder for this run's digits models, shared with test_methods.py: trained once
    folder = tmp_path_factory.getbasetemp() / "digits-cache"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def compare_run(cache_dir):
    env = dict(os.environ, LFSSD_CACHE_DIR=str(cache_dir), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "core", *COMPARE, "--json"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    return proc, time.perf_counter() - started


def test_compare_json(compare_run):
    proc, seconds = compare_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    out = json.loads(proc.stdout)
    assert out["methods"] == ["baseline", "retrain", "ssd", "lfssd"] and out["repeats"] == 2
    assert out["seeds"] == [0, 1] and out["protocol"] == "app" and out["threads"] == 1
    assert out["params"]["retrain"] == {"epochs": 2} and out["params"]["lfssd"] == {"alpha": 3.5, "lambda": 1.0}
    assert len(out["runs"]) == 8 and set(out["importance_seconds"]) == {"ssd", "lfssd"}
    summary = {row["method"]: row for row in out["summary"]}
    assert list(summary) == out["methods"]
    for row in summary.values():
        for key in ("d_r_mean", "d_f_mean", "test_mean", "mia_mean", "wall_s_mean", "wall_incl_id_s_mean",
                    "d_f_to_retrain", "mia_to_retrain", "wall_vs_retrain"):
            assert isinstance(row[key], float), (row["method"], key)
    assert summary["lfssd"]["d_f_mean"] <= 10 and summary["baseline"]["d_f_mean"] > 80
    assert summary["lfssd"]["wall_incl_id_s_mean"] > summary["lfssd"]["wall_s_mean"]
    assert out["baseline"]["d_f"] == summary["baseline"]["d_f_mean"]
    assert out["warnings"] == []


def test_compare_human(compare_run, cache_dir, capsys):
    assert compare_run[0].returncode == 0  # the model is cached by now
    args = ["compare", "--dataset", "digits", "--forget", "class:3", "--methods", "baseline,lfssd"]
    assert main([*args, "--cache-dir", str(cache_dir)]) == 0
    out = capsys.readouterr().out
    assert "forget class 3 ('3')" in out and "protocol app (sample-weighted accuracy)" in out
    assert "LFSSD (label-free)" in out and "baseline (no unlearning)" in out
    assert "I_D pass, computed once and reused: lfssd" in out


@pytest.mark.parametrize("args, message", [
    (["compare", "--methods", "lfssd,sdd"], "unknown method 'sdd'; choose one of: baseline"),
    (["compare", "--set", "lfssd.beta=2"], "lfssd has no parameter 'beta'"),
    (["compare", "--set", "alpha=2"], "bad --set 'alpha=2'; use METHOD.PARAM=VALUE"),
    (["compare", "--repeats", "0"], "--repeats must be >= 1, got 0"),
    (["compare", "--protocol", "pape"], "unknown protocol 'pape'; choose one of: app, paper"),
    (["compare", "--forget", "images:nowhere/", "--methods", "lfssd,ssd,amnesiac"],
     "unlabelled forget images come without labels or a retain set: ssd needs the forget set's labels; "
     "amnesiac needs the forget set's labels and the retain set D_r; lfssd needs neither (leave them out"),
    (["compare", "--models", "2"], "--models must be 0 (off) or ≥ 3"),
    (["compare", "--forget", "images:test:3", "--methods", "lfssd", "--models", "3"],
     "--models: the challenge's score needs D_f's labels and retrained models"),
    (["reproduce", "table9"], "unknown paper table 'table9'; choose one of: table1, table2, table3"),
    (["reproduce", "table3"], "Table 3 needs the PINS face set"),
    (["reproduce", "table4", "--rows", "lamp,lampp"], "table4 has no row 'lampp'; its rows: baby, lamp"),
])
def test_user_errors_are_one_line(args, message, tmp_path, capsys):
    assert main([*args, "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1 and "Traceback" not in err


# --- the paper's tables on tiny CIFAR files ------------------------------------------------------

TINY_FINE = (2, 40, 51, 69, 71, 0, 20, 60)  # baby, lamp, mushroom, rocket, sea and lamp's CIFAR-20 siblings (id % 20)


def _tiny_cifar100(per_class: int, seed: int):
    """Each fine class a colour (the same in train and test) plus noise drawn from ``seed``, so a
    small model learns them in a few epochs."""
    palette = np.random.RandomState(0)
    colours = {fine: palette.randint(30, 226, 3) for fine in TINY_FINE}
    rng = np.random.RandomState(seed)
    labels = [fine for fine in TINY_FINE for _ in range(per_class)]
    planes = np.stack([np.repeat(colours[f][:, None], 1024, 1) for f in labels]).astype(np.int16)
    noisy = np.clip(planes + rng.randint(-25, 26, planes.shape), 0, 255).astype(np.uint8)
    return labels, noisy.reshape(len(labels), 3072)


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    train_y, train_x = _tiny_cifar100(12, 1)
    test_y, test_x = _tiny_cifar100(4, 2)
    write_cifar100(root, fine_train=train_y, fine_test=test_y, images={"train": train_x, "test": test_x})
    write_cifar10(root, n_per_batch=20, n_test=30)  # 100 train images: enough for random:83
    return root


def test_reproduce_table4_json(cifar_root, cache_dir, capsys):
    args = ["reproduce", "table4", "--data-root", str(cifar_root), "--rows", "lamp", "--model", "small_cnn",
            "--epochs", "10", "--methods", "baseline,retrain_head,ssd,lfssd", "--cache-dir", str(cache_dir), "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["table"] == "table4" and out["rows"] == ["lamp"] and out["paper_model"] == "ResNet18"
    assert out["caption"].startswith("Table 4: Class unlearning on Cifar100")
    assert any("small_cnn" in note for note in out["notes"]) and any("retrain_head" in n for n in out["notes"])
    comparison = out["comparisons"]["lamp"]
    assert comparison["protocol"] == "paper" and comparison["accuracy"] == "batch-mean (64)"
    assert comparison["params"]["lfssd"]["alpha"] == 10.0 and comparison["params"]["ssd"]["alpha"] == 10.0
    assert comparison["reference"] == "retrain_head"
    paper = paper_results("table4").set_index(["model", "row", "method", "metric"])["mean"]
    cells = {(r["method"], r["metric"]): r for r in out["side_by_side"]}
    assert set(cells) == {(m, k) for m in ("baseline", "retrain_head", "ssd", "lfssd") for k in ("d_r", "d_f", "mia")}
    for (method, metric), cell in cells.items():
        theirs = paper[("ResNet18", "lamp", "retrain" if method == "retrain_head" else method, metric)]
        assert cell["paper_mean"] == theirs and cell["paper_method"] in ("baseline", "retrain", "ssd", "lfssd")
        if cell["ours_mean"] is None:  # only an attack whose fit carried no signal has no number, and says why
            notes = [r["mia_note"] for r in comparison["runs"] if r["method"] == method]
            assert metric == "mia" and notes and all(notes), (method, metric, notes)
            assert cell["difference"] is None
        else:
            assert 0 <= cell["ours_mean"] <= 100
            assert cell["difference"] == pytest.approx(cell["ours_mean"] - theirs)
    assert cells[("lfssd", "d_r")]["paper_mean"] == 76.36
    assert cells[("baseline", "d_r")]["ours_mean"] > 60  # the colours are learnable: a real baseline


def test_reproduce_table7_human(cifar_root, cache_dir, capsys):
    args = ["reproduce", "table7", "--data-root", str(cifar_root), "--model", "small_cnn", "--epochs", "2",
            "--methods", "baseline,lfssd", "--cache-dir", str(cache_dir)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Table 7: Random sample unlearning on Cifar10" in out
    lfssd = next(line for line in out.splitlines() if line.startswith("random_83") and " lfssd " in line)
    assert "/ 89.82" in lfssd and "/ 94.94" in lfssd and "/ 73.86" in lfssd  # the paper's RN LFSSD row
