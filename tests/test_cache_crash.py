"""The importance cache survives a writer killed mid-write, damaged files and unwritable folders.

- A real subprocess computing the digits importances is stopped *inside* the write of I_D (the
  cache's ``on_write`` callback pauses it after the first 64 KiB chunk, so the kill is not a race)
  and killed with SIGKILL; the later ``python -m core forget`` must not use what it left, must
  recompute and succeed, with the numbers of an undisturbed computation.
- Damaged entries (flipped bytes, truncation, a missing or wrong checksum) are detected, deleted
  and recomputed.
- A read-only, full or impossible cache folder degrades to memory with a warning, in-process and
  through the CLI.
"""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from cli_batch import REPO, Batch, cli_env
from core.cache import STALE_TMP_SECONDS, TensorCache, tensors_digest
from core.experiment import ExperimentConfig, forget, prepare
from core.method.importance import cached_importance, compute_importance
from tests.same_numbers import assert_same_numbers

FORGET = ["forget", "--dataset", "digits", "--forget", "class:3", "--alpha", "3.5", "--epochs", "2", "--json"]
CONFIG = ExperimentConfig(dataset="digits", forget="class:3", epochs=2)  # what FORGET prepares
WAIT_S = 300  # for a subprocess on a busy two-core machine

_PAUSE_INSIDE_IMPORTANCE_WRITE = r"""
import json, os, sys, time
import torch
torch.set_num_threads(1)
from pathlib import Path
from core.cache import TensorCache
from core.experiment import ExperimentConfig, prepare

cache_dir, ready = Path(sys.argv[1]), Path(sys.argv[2])

def pause_inside_write(tmp, written, total):
    # after a chunk of an importance file, with more to come: tell the test, then wait to be killed
    if tmp.parent.name == "importance" and written < total:
        info = {"tmp": str(tmp), "written": written, "total": total, "on_disk": tmp.stat().st_size}
        ready.with_suffix(".part").write_text(json.dumps(info))
        os.replace(ready.with_suffix(".part"), ready)
        time.sleep(3600)

prepare(ExperimentConfig(dataset="digits", forget="class:3", epochs=2), TensorCache(cache_dir, on_write=pause_inside_write))
print("finished without pausing")
"""


def _popen(args: list[str], cache: Path, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=REPO, env=cli_env(cache), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL, **kwargs)


def _finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()  # only our own child, by its handle
            proc.wait()
    return proc.returncode, out, err


def _entries(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors")) if folder.is_dir() else []


def read_only_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create files in: chmod 555 (ignored by root, so for root a path
    under /proc, where nobody can create anything)."""
    if os.geteuid() != 0:
        folder = tmp_path / "read_only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    return Path("/proc/lfssd-read-only-cache")


def _limit_file_size(max_bytes: int):
    """preexec_fn: files this process writes may not grow past ``max_bytes`` (a full disk, for it)."""
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    return limit


@pytest.fixture(scope="module")
def degraded_started(tmp_path_factory):
    """Two `python -m core forget` command lines in one process whose files may not grow past
    64 KiB (a full disk for it), started before the kill test so that they overlap it: one with a
    read-only cache folder, one with a writable folder on that "full disk"."""
    root = tmp_path_factory.mktemp("degraded")
    folders = {"read-only": read_only_folder(root), "full": root / "full_cache"}
    batch = Batch([[*FORGET, "--cache-dir", str(folders[kind])] for kind in folders], root / "batch",
                  root / "unused", preexec_fn=_limit_file_size(64 * 1024))
    yield batch, folders
    if batch.proc.poll() is None:
        batch.proc.kill()
        batch.proc.wait()


@pytest.fixture(scope="module")
def degraded_cli(degraded_started):
    batch, folders = degraded_started
    return dict(zip(folders, zip(batch.results(WAIT_S), folders.values())))


# --- SIGKILL in the middle of the write ------------------------------------------------------------


@pytest.fixture(scope="module")
def killed_then_rerun(tmp_path_factory, degraded_started):
    root = tmp_path_factory.mktemp("killed")
    cache, ready = root / "cache", root / "paused.json"
    writer = _popen(["-c", _PAUSE_INSIDE_IMPORTANCE_WRITE, str(cache), str(ready)], cache)
    try:
        deadline = time.monotonic() + WAIT_S
        while not ready.exists():
            if writer.poll() is not None:
                pytest.fail(f"the writer exited ({writer.returncode}) before pausing:\n{writer.communicate()}")
            if time.monotonic() > deadline:
                pytest.fail("the writer never reached the importance write")
            time.sleep(0.05)
        paused = json.loads(ready.read_text())
        tmp = Path(paused["tmp"])
        state_at_kill = {"tmp_exists": tmp.exists(), "tmp_size": tmp.stat().st_size if tmp.exists() else None,
                         "entries": [p.name for p in _entries(cache / "importance")]}
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    after_kill = {"returncode": writer.returncode, "tmp_exists": tmp.exists(),
                  "entries": [p.name for p in _entries(cache / "importance")]}
    rerun = _finish(_popen(["-m", "core", *FORGET], cache))
    return paused, state_at_kill, after_kill, rerun, cache


def test_the_kill_lands_inside_the_write(killed_then_rerun):
    paused, at_kill, after, _, _ = killed_then_rerun
    assert 0 < paused["written"] < paused["total"]  # part of the file written, the rest not yet
    assert at_kill["tmp_exists"] and at_kill["tmp_size"] == paused["written"] == paused["on_disk"]
    assert at_kill["entries"] == []  # nothing under an entry's name while the write is under way
    assert after["returncode"] == -signal.SIGKILL
    assert after["tmp_exists"] and after["entries"] == []  # the half file is left, but only as .tmp


def test_the_later_run_recomputes_and_succeeds(killed_then_rerun):
    _, _, _, (code, out, err), cache = killed_then_rerun
    assert code == 0, err
    assert "Traceback" not in err
    result = json.loads(out)
    assert result["cache_hits"] == {"model": True, "importance_full": False, "importance_forget": False}
    assert result["warnings"] == []  # the leftover temporary file is not an entry: nothing to discard
    assert len(_entries(cache / "importance")) == 2  # I_D and I_Df, both written whole


def test_what_the_later_run_cached_equals_a_fresh_computation(killed_then_rerun):
    _, _, _, (code, out, err), cache = killed_then_rerun
    assert code == 0, err
    torch.set_num_threads(1)
    store = TensorCache(cache)
    prepared = prepare(CONFIG, store)
    assert prepared.cache_hits == {"model": True, "importance_full": True, "importance_forget": True}
    assert store.warnings == []
    fresh = compute_importance(prepared.model, prepared.split.full_loader(prepared.dataset, prepared.batch_size,
                                                                          CONFIG.d_order))
    assert set(fresh) == set(prepared.imp_full)
    for name in fresh:
        assert torch.equal(fresh[name], prepared.imp_full[name]), name
    cli = json.loads(out)
    outcome = forget(prepared, cli["alpha"], cli["lambda"])
    assert outcome.report.selected == cli["selected"]
    assert_same_numbers(outcome.result.headline(), cli["forgotten"])


def test_flipped_bytes_in_the_cached_importance_are_detected_and_recomputed(killed_then_rerun):
    _, _, _, (code, _, err), cache = killed_then_rerun
    assert code == 0, err
    torch.set_num_threads(1)
    before = prepare(CONFIG, TensorCache(cache))
    i_d = next(p for p in _entries(cache / "importance")
               if load_file(str(p)).keys() == before.imp_full.keys()
               and all(torch.equal(t, before.imp_full[k]) for k, t in load_file(str(p)).items()))
    raw = bytearray(i_d.read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 16] = bytes(b ^ 0x5A for b in raw[middle:middle + 16])
    i_d.write_bytes(bytes(raw))
    store = TensorCache(cache)
    after = prepare(CONFIG, store)
    assert after.cache_hits == {"model": True, "importance_full": False, "importance_forget": True}
    assert any("corrupt" in w and i_d.name in w for w in store.warnings), store.warnings
    for name in before.imp_full:
        assert torch.equal(before.imp_full[name], after.imp_full[name])
    assert TensorCache(cache).get("importance", i_d.stem) is not None  # written back whole


# --- damaged entries, one by one ----------------------------------------------------------------------


def _tiny_setup():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 3)).eval()
    x, y = torch.randn(12, 1, 8, 8), torch.randint(0, 3, (12,))

    class Loader(list):
        def content_key(self):
            return "tiny-12"

    return model, Loader([(x[i:i + 4], y[i:i + 4]) for i in range(0, 12, 4)])


def _flip(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0xFF
    return bytes(out)


def _rewrite_with(path: Path, change) -> None:
    """Re-save the entry's tensors with ``change(tensors, metadata)`` applied (a well-formed file)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        metadata, tensors = dict(fh.metadata()), {k: fh.get_tensor(k) for k in fh.keys()}
    change(tensors, metadata)
    save_file(tensors, str(path), metadata=metadata)


DAMAGE = {
    "flipped byte in the data": lambda p: p.write_bytes(_flip(p.read_bytes(), -5)),
    "flipped byte in the header": lambda p: p.write_bytes(_flip(p.read_bytes(), 20)),
    "flipped byte in the header length": lambda p: p.write_bytes(_flip(p.read_bytes(), 1)),
    "cut in half": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "cut after the header": lambda p: p.write_bytes(p.read_bytes()[: 8 + int.from_bytes(p.read_bytes()[:8], "little")]),
    "zero bytes": lambda p: p.write_bytes(b""),
    "text": lambda p: p.write_text("not a cache entry\n"),
    "checksum removed": lambda p: _rewrite_with(p, lambda t, m: m.pop("sha256")),
    "tensor changed, old checksum kept": lambda p: _rewrite_with(p, lambda t, m: t[sorted(t)[0]].mul_(2)),
    "other format version": lambda p: _rewrite_with(p, lambda t, m: m.update(format="0")),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_entry_is_discarded_and_recomputed(tmp_path, damage):
    model, loader = _tiny_setup()
    first, hit = cached_importance(model, loader, "lfssd", "batch", TensorCache(tmp_path), "m")
    assert hit is False
    [entry] = _entries(tmp_path / "importance")
    DAMAGE[damage](entry)
    store = TensorCache(tmp_path)
    again, hit = cached_importance(model, loader, "lfssd", "batch", store, "m")
    assert hit is False
    assert store.warnings == [f"discarded a corrupt cache entry (importance/{entry.name}); recomputing it"]
    for name in first:
        assert torch.equal(first[name], again[name])
    third, hit = cached_importance(model, loader, "lfssd", "batch", TensorCache(tmp_path), "m")
    assert hit is True  # the recomputed entry was written back whole


def test_temporary_files_are_never_read_and_stale_ones_are_removed(tmp_path):
    store = TensorCache(tmp_path)
    tensors = {"w": torch.arange(10.0)}
    folder = tmp_path / "ns"
    folder.mkdir()
    fresh, stale = folder / ".k.safetensors.live.tmp", folder / ".k.safetensors.dead.tmp"
    save_file(tensors, str(fresh), metadata={"sha256": tensors_digest(tensors), "format": "1"})  # a whole file, even
    stale.write_bytes(b"half a fi")
    os.utime(stale, (time.time() - STALE_TMP_SECONDS - 60,) * 2)
    assert store.get("ns", "k") is None  # only the entry's own name counts
    store.put("ns", "k", tensors)
    assert fresh.exists() and not stale.exists()  # a live writer's file is left alone
    assert torch.equal(TensorCache(tmp_path).get("ns", "k")["w"], tensors["w"])


# --- folders that cannot be written ------------------------------------------------------------------


def _assert_memory_fallback(store: TensorCache, root_text: str) -> None:
    source = {"w": torch.arange(6.0).reshape(2, 3)}
    store.put("ns", "k", source)
    source["w"].zero_()  # the caller's tensor changes later: the cached copy must not
    got = store.get("ns", "k")
    assert torch.equal(got["w"], torch.arange(6.0).reshape(2, 3))
    assert len(store.warnings) == 1 and store.warnings[0].startswith(f"cannot write to the cache folder {root_text}")
    assert store.warnings[0].endswith("keeping results in memory for this run only")
    store.put("ns", "k2", source)
    assert len(store.warnings) == 1  # one warning, not one per write


def test_read_only_folder_degrades_to_memory(tmp_path):
    folder = read_only_folder(tmp_path)
    _assert_memory_fallback(TensorCache(folder), str(folder))


def test_a_file_where_the_folder_should_be_degrades_to_memory(tmp_path):
    (tmp_path / "cache").write_text("a file, not a folder")
    _assert_memory_fallback(TensorCache(tmp_path / "cache"), str(tmp_path / "cache"))


_FULL_DISK = r"""
import json, resource, sys, torch
from pathlib import Path
from core.cache import TensorCache
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
store = TensorCache(sys.argv[1])
small, big = {"w": torch.arange(100.0)}, {"w": torch.arange(100_000.0)}  # 400 B and 400 kB
store.put("ns", "small", small)
store.put("ns", "big", big)
print(json.dumps({"warnings": store.warnings,
                  "files": sorted(p.name for p in Path(sys.argv[1], "ns").iterdir()),
                  "small_back": torch.equal(TensorCache(sys.argv[1]).get("ns", "small")["w"], small["w"]),
                  "big_back": torch.equal(store.get("ns", "big")["w"], big["w"])}))
"""


def test_a_full_disk_degrades_to_memory_and_leaves_no_partial_file(tmp_path):
    proc = subprocess.run([sys.executable, "-c", _FULL_DISK, str(tmp_path)], cwd=REPO, capture_output=True,
                          text=True, timeout=WAIT_S, env=cli_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["files"] == ["small.safetensors"]  # the big write failed and its temporary file is gone
    assert out["small_back"] and out["big_back"]
    assert len(out["warnings"]) == 1 and "File too large" in out["warnings"][0]


@pytest.mark.parametrize("kind", ["read-only", "full"])
def test_the_cli_runs_on_with_an_unwritable_cache_and_says_so(degraded_cli, kind):
    run, folder = degraded_cli[kind]
    assert run.returncode == 0, run.describe()
    assert "Traceback" not in run.stderr
    result = json.loads(run.stdout)
    assert result["forget_size"] > 0 and result["baseline"]["test"] > 50 and result["parameters"] > 0
    assert len(result["warnings"]) == 1, result["warnings"]
    assert result["warnings"][0].startswith(f"cannot write to the cache folder {folder} ")
    assert run.stderr.splitlines() == [f"warning: {result['warnings'][0]}"]  # shown to the user, once
    if kind == "full":
        assert "File too large" in result["warnings"][0]
        assert [p for p in folder.rglob("*") if p.is_file()] == []  # no partial entry, no temporary file
