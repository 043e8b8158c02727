"""``torchrun --nproc_per_node=2 -m core importance`` (gloo, two local processes) gives the
one-process importances, writes them to the cache under the same key, and the app's path
(``prepare``) then loads them without computing anything."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from core.cache import TensorCache
from core.experiment import ExperimentConfig, prepare
from core.method.importance import max_relative_difference
from core.models.registry import create_model, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
MAX_RELATIVE_DIFFERENCE = 1e-5


def run(args, tmp_path, processes: int):
    launcher = [sys.executable, "-m", "core"] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", "-m", "core"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    done = subprocess.run([*launcher, *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, done.stdout  # only the first process prints
    return json.loads(lines[0])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    checkpoint = tmp / "model.safetensors"
    save_checkpoint(create_model("small_cnn", (1, 8, 8), 10, seed=5), checkpoint)
    common = ["importance", "--dataset", "digits", "--forget", "class:3", "--checkpoint", str(checkpoint), "--json"]
    one = run([*common, "--cache-dir", str(tmp / "one"), "--output", str(tmp / "one.safetensors")], tmp, 1)
    two = run([*common, "--cache-dir", str(tmp / "two"), "--output", str(tmp / "two.safetensors")], tmp, 2)
    return tmp, checkpoint, one, two


def test_two_processes_give_the_one_process_importances(runs):
    tmp, _, one, two = runs
    assert (one["processes"], two["processes"], two["backend"]) == (1, 2, "gloo")
    assert two["cache_hits"]["importance_full"] is False  # computed, not loaded
    a, b = load_file(str(tmp / "one.safetensors")), load_file(str(tmp / "two.safetensors"))
    assert set(a) == set(b) and any(k.startswith("full.") for k in a) and any(k.startswith("forget.") for k in a)
    assert max_relative_difference(a, b) <= MAX_RELATIVE_DIFFERENCE
    assert all(b[k].abs().sum() > 0 for k in b if k.endswith("weight"))


def test_the_app_loads_importances_computed_by_torchrun(runs):
    tmp, checkpoint, _, _ = runs
    torch.set_num_threads(1)
    config = ExperimentConfig(dataset="digits", forget="class:3", checkpoint=str(checkpoint))
    prepared = prepare(config, TensorCache(tmp / "two"))
    assert prepared.cache_hits["importance_full"] and prepared.cache_hits["importance_forget"]
    written = load_file(str(tmp / "two.safetensors"))
    for name, value in prepared.imp_full.items():
        assert torch.equal(value, written[f"full.{name}"]), name
