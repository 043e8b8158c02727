"""The command line end to end: real ``python -m core`` subprocesses, no mocks.

Every subprocess pays two to three seconds of interpreter and torch start-up, and this file runs
about 35 of them, so they run two at a time (this machine has two cores) on a module-wide thread
pool, submitted in dependency order: the digits model is trained once into a module-scoped cache,
one ``forget`` computes the class-3 importances, and the runs that reuse them come after. A job
waits only on jobs submitted before it, and the pool takes jobs first in, first out, so the
earliest unfinished job is always running: no deadlock. Each test waits for its own job and
checks exit status, stderr and the JSON. (Selecting a few tests with ``-k`` still runs every job.)
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from tests.same_numbers import assert_same_numbers

REPO = Path(__file__).resolve().parents[1]
WORKERS = 2
TIMEOUT_S = 300  # per subprocess; generous because the two workers share two busy cores

# The digits model (core.models.registry.small_cnn on 1×8×8 images, 10 classes): every named parameter.
SMALL_CNN_PARAMS = ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                    "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")
FORGET_CLASS_3 = ["forget", "--dataset", "digits", "--forget", "class:3", "--alpha", "3.5", "--lambda", "1", "--json"]


@dataclass(frozen=True)
class Run:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def json(self) -> dict:
        assert self.returncode == 0, f"{self.describe()}"
        try:
            return json.loads(self.stdout)
        except json.JSONDecodeError:
            pytest.fail(f"stdout is not one JSON object:\n{self.describe()}")

    def describe(self) -> str:
        return (f"python -m core {' '.join(self.args)}\nexit {self.returncode} after {self.seconds:.1f} s\n"
                f"--- stdout ---\n{self.stdout[-3000:]}\n--- stderr ---\n{self.stderr[-3000:]}")

    def assert_ok(self) -> dict:
        assert self.returncode == 0, self.describe()
        assert "Traceback" not in self.stderr, self.describe()
        return self.json


def run_cli(args: list[str], cache: Path, data_dir: Path, timeout: float = TIMEOUT_S) -> Run:
    env = dict(os.environ)
    env.update(LFSSD_CACHE_DIR=str(cache), LFSSD_DATA_DIR=str(data_dir), HF_HUB_OFFLINE="1",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # two processes at once on two cores
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "core", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return Run(tuple(args), proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - started)


class Jobs:
    """Named background jobs on one thread pool; ``after`` names jobs submitted earlier."""

    def __init__(self, workers: int):
        self.pool = ThreadPoolExecutor(max_workers=workers)
        self.futures: dict[str, Future] = {}

    def submit(self, name: str, work: Callable[[], object], after: tuple[str, ...] = ()) -> None:
        deps = [self.futures[d] for d in after]  # KeyError: a dependency must be submitted first

        def job():
            for dep in deps:
                dep.exception()  # wait; a failed dependency fails the dependent test on its own
            return work()

        self.futures[name] = self.pool.submit(job)

    def __getitem__(self, name: str):
        return self.futures[name].result()


@dataclass(frozen=True)
class Paths:
    root: Path
    cache: Path  # shared by the happy-path runs
    error_cache: Path  # for the bad-input runs: nothing may be trained or written there
    data: Path  # empty: no CIFAR files anywhere
    pngs: Path  # the digits test images of class 3, as 8×8 PNGs
    trained: Path  # train --save
    dampened: Path  # forget --save
    importance: Path  # importance --output
    marker: Path  # appears only if the malicious pickle is unpickled


# --- inputs ------------------------------------------------------------------------------------


def write_class3_pngs(folder: Path) -> int:
    """The test-split images of class 3 exactly as core.data.registry stores them (uint8, 1×8×8)."""
    from PIL import Image

    from core.data.registry import load_dataset

    digits = load_dataset("digits")
    folder.mkdir(parents=True)
    indices = (digits.test_y == 3).nonzero().flatten().tolist()
    for i in indices:
        pixels = digits.test_x[i, 0].numpy()
        assert pixels.dtype == np.uint8 and pixels.shape == (8, 8)
        Image.fromarray(pixels, mode="L").save(folder / f"test_{i:04d}.png")
    return len(indices)


class _CreatesFile:
    """A pickle whose loading creates ``path`` (standing in for any code a pickle can run)."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


# --- the jobs ----------------------------------------------------------------------------------


def bad_input_cases(r: Path, pngs: Path) -> dict[str, tuple[list[str], tuple[str, ...]]]:
    """name → (arguments, substrings the one-line message must contain); files under ``r``."""
    return {
        "alpha-zero": (["forget", "--alpha", "0", "--json"], ("alpha",)),
        "alpha-nan": (["forget", "--alpha", "nan", "--json"], ("alpha",)),
        "alpha-negative": (["forget", "--alpha", "-3", "--json"], ("alpha",)),
        "lambda-negative": (["forget", "--lambda", "-1", "--json"], ("lambda",)),
        "class-out-of-range": (["forget", "--forget", "class:42", "--json"], ("42",)),
        "class-unknown-name": (["forget", "--forget", "class:nosuch", "--json"], ("nosuch",)),
        "images-missing-path": (["forget", "--forget", "images:/no/such/path", "--json"], ("/no/such/path",)),
        "images-empty-folder": (["forget", "--forget", f"images:{r / 'empty'}", "--json"], (str(r / "empty"),)),
        "images-text-as-png": (["forget", "--forget", f"images:{r / 'text_only'}", "--json"], ("x.png",)),
        "forget-bogus": (["forget", "--forget", "bogus", "--json"], ("bogus",)),
        "random-zero": (["forget", "--forget", "random:0", "--json"], ("random",)),
        "dataset-unknown": (["forget", "--dataset", "cifar30", "--json"], ("cifar30",)),
        "model-unknown": (["forget", "--model", "nosuch", "--json"], ("nosuch",)),
        "ssd-without-labels": (["forget", "--kind", "ssd", "--forget", f"images:{pngs}", "--json"], ("SSD",)),
        "checkpoint-plain-pickle": (["forget", "--checkpoint", str(r / "weights.pt"), "--json"], ("pickle",)),
        "checkpoint-wrong-keys": (["forget", "--checkpoint", str(r / "wrong_keys.safetensors"), "--json"],
                                  ("foo.weight", "conv1.weight")),
        "checkpoint-missing": (["forget", "--checkpoint", "/no/such.safetensors", "--json"], ("/no/such.safetensors",)),
        "cifar-files-missing": (["forget", "--dataset", "cifar10", "--data-root", str(r / "no_cifar"), "--json"],
                                (str(r / "no_cifar"), "data_batch", "test_batch", "batches.meta")),
        "sweep-alpha-not-a-number": (["sweep", "--alpha", "1,x", "--json"], ("'x'",)),
        "unknown-subcommand": (["frobnicate"], ("frobnicate",)),
    }


def make_bad_inputs(p: Paths) -> None:
    (p.root / "empty").mkdir()
    (p.root / "text_only").mkdir()
    (p.root / "text_only" / "x.png").write_text("this is not an image\n")
    (p.root / "no_cifar").mkdir()
    (p.root / "weights.pt").write_bytes(pickle.dumps(_CreatesFile(p.marker)))
    save_file({"foo.weight": np.zeros((3, 3), dtype=np.float32)}, str(p.root / "wrong_keys.safetensors"))


def corrupt_importance_and_rerun(p: Paths, corrupt_cache: Path) -> dict:
    """Copy the shared cache, flip bytes in the middle of the cached I_D of class 3 (found by
    content: it equals ``importance --output``'s full.* maps), and run the first forget again."""
    corrupt_cache.mkdir()
    for sub in ("models", "importance"):
        (corrupt_cache / sub).mkdir()
        for f in (p.cache / sub).glob("*.safetensors"):
            if not f.name.startswith("."):  # skip a concurrent writer's temporary file
                shutil.copy2(f, corrupt_cache / sub / f.name)
    exported = load_file(str(p.importance))
    i_d = {k.removeprefix("full."): v for k, v in exported.items() if k.startswith("full.")}
    matches = [f for f in sorted((corrupt_cache / "importance").glob("*.safetensors")) if _same(load_file(str(f)), i_d)]
    if len(matches) != 1:
        return {"matches": matches, "run": None}
    target = matches[0]
    size = target.stat().st_size
    with target.open("r+b") as fh:
        fh.seek(size // 2)
        original = fh.read(64)
        fh.seek(size // 2)
        fh.write(bytes(b ^ 0xFF for b in original))
    run = run_cli(FORGET_CLASS_3, corrupt_cache, p.data)
    return {"matches": matches, "run": run, "target": target, "i_d": i_d}


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return set(a) == set(b) and all(a[k].shape == b[k].shape and np.array_equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> Paths:
    root = tmp_path_factory.mktemp("cli")
    p = Paths(root=root, cache=root / "cache", error_cache=root / "error_cache", data=root / "data",
              pngs=root / "class3_pngs", trained=root / "model.safetensors",
              dampened=root / "dampened.safetensors", importance=root / "importance.safetensors",
              marker=root / "PICKLE_WAS_LOADED")
    p.data.mkdir()
    return p


@pytest.fixture(scope="module")
def jobs(paths):
    p, j = paths, Jobs(WORKERS)
    try:
        _submit_all(p, j)
        yield j
    finally:
        j.pool.shutdown(wait=True, cancel_futures=True)


def _submit_all(p: Paths, j: Jobs) -> None:
    cli = lambda args, cache=p.cache: (lambda: run_cli(args, cache, p.data))  # noqa: E731

    # The digits model trains once (a few seconds) while the bad-input runs use the other core.
    j.submit("train", cli(["train", "--dataset", "digits", "--save", str(p.trained), "--json"]))
    make_bad_inputs(p)
    cases = bad_input_cases(p.root, p.pngs)
    needs_pngs = {"ssd-without-labels"}
    for name, (args, _) in cases.items():
        if name not in needs_pngs:
            j.submit(f"bad:{name}", cli(args, p.error_cache))
    png_count = write_class3_pngs(p.pngs)
    for name in needs_pngs:
        j.submit(f"bad:{name}", cli(cases[name][0], p.error_cache))

    j.submit("forget", cli(FORGET_CLASS_3), after=("train",))
    j.submit("images-folder", cli(["forget", "--forget", f"images:{p.pngs}", "--alpha", "3.5", "--json"]), after=("train",))
    j.submit("random", cli(["forget", "--forget", "random:50:1", "--json"]), after=("train",))
    j.submit("forget-again", cli(FORGET_CLASS_3), after=("forget",))
    j.submit("sweep", cli(["sweep", "--dataset", "digits", "--forget", "class:3", "--alpha", "1,3.5,5,10", "--json"]),
             after=("forget",))
    j.submit("importance", cli(["importance", "--dataset", "digits", "--forget", "class:3",
                                "--output", str(p.importance), "--json"]), after=("forget",))
    j.submit("forget-save", cli([*FORGET_CLASS_3, "--save", str(p.dampened)]), after=("forget",))
    first_png = sorted(p.pngs.glob("*.png"))[0]
    j.submit("images-glob", cli(["forget", "--forget", f"images:{p.pngs}/*.png", "--alpha", "3.5", "--json"]),
             after=("images-folder",))
    j.submit("images-file", cli(["forget", "--forget", f"images:{first_png}", "--alpha", "3.5", "--json"]),
             after=("images-folder",))
    j.submit("checkpoint", cli([*FORGET_CLASS_3, "--checkpoint", str(p.dampened)]), after=("forget-save",))
    j.submit("corrupt", lambda: corrupt_importance_and_rerun(p, p.root / "corrupt_cache"),
             after=("forget", "importance"))
    j.png_count = png_count


# --- happy paths -------------------------------------------------------------------------------


def test_train_saves_model(jobs, paths):
    out = jobs["train"].assert_ok()
    assert out["dataset"] == "digits" and out["model"] == "small_cnn"
    assert out["from_cache"] is False  # the module's cache starts empty
    assert out["test_accuracy"] >= 90
    assert out["saved"] == str(paths.trained)
    state = load_file(str(paths.trained))
    assert set(state) == set(SMALL_CNN_PARAMS)  # small_cnn has no buffers: state dict = parameters


def test_forget_class_3(jobs):
    out = jobs["forget"].assert_ok()
    base, new = out["baseline"], out["forgotten"]
    assert out["forget"] == "class:3" and out["alpha"] == 3.5 and out["lambda"] == 1.0
    assert base["d_f"] >= 90, base
    assert new["d_f"] <= 10, new
    assert abs(new["d_r"] - base["d_r"]) <= 2, (base, new)
    assert new["mia"] <= 10, new
    assert out["selected"] > 0
    assert out["parameters"] == sum(layer["numel"] for layer in out["layers"])


def test_second_identical_forget_hits_every_cache(jobs):
    first, again = jobs["forget"].assert_ok(), jobs["forget-again"].assert_ok()
    assert again["cache_hits"] == {"model": True, "importance_full": True, "importance_forget": True}
    assert again["selected"] == first["selected"]
    assert_same_numbers(again["forgotten"], first["forgotten"])


def test_sweep_over_alpha(jobs):
    out = jobs["sweep"].assert_ok()
    rows, base = out["rows"], out["baseline"]
    assert [row["alpha"] for row in rows] == [1, 3.5, 5, 10]
    assert all(row["lambda"] == 1 for row in rows)
    selected = [row["selected"] for row in rows]
    assert selected[0] > selected[1] > selected[2] >= selected[3], selected
    assert rows[0]["d_r"] < base["d_r"] - 2, (rows[0], base)  # α = 1 damages the retained classes
    assert rows[3]["selected_fraction"] <= 0.001, rows[3]
    assert abs(rows[3]["d_f"] - base["d_f"]) <= 5, (rows[3], base)  # α = 10 forgets almost nothing


def test_sweep_matches_forget(jobs):
    """The sweep's α = 3.5 row is the forget command's result (same cached importances)."""
    row = jobs["sweep"].assert_ok()["rows"][1]
    single = jobs["forget"].assert_ok()
    assert row["selected"] == single["selected"]
    assert row["d_r"] == pytest.approx(single["forgotten"]["d_r"])
    assert row["d_f"] == pytest.approx(single["forgotten"]["d_f"])


def _others_mean(per_class: list[float], skip: int) -> float:
    others = [acc for c, acc in enumerate(per_class) if c != skip]
    return sum(others) / len(others)


def test_forget_unlabelled_image_folder(jobs):
    out = jobs["images-folder"].assert_ok()
    assert out["forget_size"] == jobs.png_count == len(list(Path(out["forget"].removeprefix("images:")).glob("*.png")))
    base, new = out["baseline"]["per_class_test"], out["forgotten"]["per_class_test"]
    assert base[3] >= 90
    assert new[3] < 50, new
    assert abs(_others_mean(new, 3) - _others_mean(base, 3)) <= 3, (base, new)
    assert out["forgotten"]["d_f"] is None and out["forgotten"]["d_f_split"] is None  # no labels


def test_forget_unlabelled_images_by_glob(jobs):
    out = jobs["images-glob"].assert_ok()
    assert out["forget_size"] == jobs.png_count
    assert out["forgotten"]["per_class_test"][3] < 50


def test_forget_single_unlabelled_image(jobs):
    out = jobs["images-file"].assert_ok()
    assert out["forget_size"] == 1
    assert out["selected"] > 0


def test_forget_random_samples(jobs):
    out = jobs["random"].assert_ok()
    assert out["forget_size"] == 50
    assert out["baseline"]["d_f_split"] == "train" and out["forgotten"]["d_f_split"] == "train"
    assert out["batch_size"] == 128  # the reference's batch size for random forgetting


def test_importance_output_holds_both_maps(jobs, paths):
    out = jobs["importance"].assert_ok()
    assert out["output"] == str(paths.importance)
    assert set(out["parameters"]) == set(SMALL_CNN_PARAMS)
    maps = load_file(str(paths.importance))
    expected = {f"{prefix}.{name}" for prefix in ("full", "forget") for name in SMALL_CNN_PARAMS}
    assert set(maps) == expected
    weights = load_file(str(paths.trained))
    for key, tensor in maps.items():
        name = key.split(".", 1)[1]
        assert tensor.shape == weights[name].shape, key
        assert np.isfinite(tensor).all() and (tensor >= 0).all(), key
    assert all(maps[f"forget.{n}"].sum() > 0 for n in SMALL_CNN_PARAMS)
    assert maps["full.fc1.weight"].sum() == pytest.approx(out["parameters"]["fc1.weight"]["full_sum"], rel=1e-5)


def test_saved_forgotten_model_loads_as_checkpoint(jobs, paths):
    saved = jobs["forget-save"].assert_ok()
    assert saved["saved"] == str(paths.dampened)
    assert set(load_file(str(paths.dampened))) == set(SMALL_CNN_PARAMS)
    out = jobs["checkpoint"].assert_ok()
    assert out["cache_hits"]["model"] is False  # a user's checkpoint, not the cached model
    # The baseline of this run is the dampened model: class 3 is already forgotten.
    assert_same_numbers(out["baseline"]["per_class_test"], saved["forgotten"]["per_class_test"])
    assert out["baseline"]["d_f"] <= 10


def test_corrupt_importance_cache_is_recomputed(jobs):
    first = jobs["forget"].assert_ok()
    result = jobs["corrupt"]
    assert len(result["matches"]) == 1, f"expected one cached file equal to I_D, found {result['matches']}"
    out = result["run"].assert_ok()
    assert out["cache_hits"] == {"model": True, "importance_full": False, "importance_forget": True}
    assert out["selected"] == first["selected"]
    assert_same_numbers(out["baseline"], first["baseline"])
    assert_same_numbers(out["forgotten"], first["forgotten"])
    # The damaged entry was replaced by a sound one.
    assert _same(load_file(str(result["target"])), result["i_d"])


# --- bad input: exit 2, one line on stderr, no traceback ---------------------------------------


@pytest.mark.parametrize("case", list(bad_input_cases(Path("."), Path("."))))
def test_bad_input_is_one_line_error(jobs, paths, case):
    run = jobs[f"bad:{case}"]
    _, must_name = bad_input_cases(paths.root, paths.pngs)[case]
    assert run.returncode == 2, run.describe()
    assert "Traceback" not in run.stderr and "Traceback" not in run.stdout, run.describe()
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.describe()
    assert lines[0].startswith("error:") and lines[0][len("error:"):].strip(), run.describe()
    assert run.stdout.strip() == "", run.describe()
    for text in must_name:
        assert text in lines[0], f"{text!r} not in: {lines[0]}"
    if case == "checkpoint-plain-pickle":
        assert not paths.marker.exists(), "the pickle was unpickled"
    if case == "cifar-files-missing":
        assert run.seconds < 20, run.describe()
    assert not any(paths.error_cache.rglob("*.safetensors")), "a failed run wrote to the cache"


def test_marker_pickle_would_create_its_file(tmp_path):
    """The pickle the checkpoint test uses really runs code when unpickled (so its test means something)."""
    marker = tmp_path / "created"
    pickle.loads(pickle.dumps(_CreatesFile(marker))).close()
    assert marker.exists()
