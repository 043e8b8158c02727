"""The shipped assets (``assets/``): complete, matching their hashes, rebuilt bit for bit, served to
an empty cache, and never trusted when a byte or a hash was changed.

conftest.py turns seeding off for the rest of the suite (``LFSSD_ASSETS=0``); these tests turn it
on with ``monkeypatch`` and use real files, real torch and the real command line.
"""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load

from cli_batch import REPO, cli_env
from core.assets import MANIFEST_NAME, load_manifest, manifest_bytes, parse_manifest, sha256_hex
from core.cache import TensorCache
from core.cli.assets import EXAMPLE_THREES, MAX_BYTES, RECIPES_SHIPPED, all_steps
from core.data.registry import _mnist5k_path, load_dataset
from core.data.splits import make_split
from core.experiment import ExperimentConfig, prepare, retrained_model
from core.models.registry import create_model
from core.models.training import default_config, is_trained, trained_model

ASSETS = REPO / "assets"


def _manifest():
    return parse_manifest(ASSETS, (ASSETS / MANIFEST_NAME).read_bytes())


def _entry(step: str, namespace: str = "models"):
    found = [e for e in _manifest().entries if e.step == step and e.namespace == namespace]
    assert found, f"no {namespace} entry of step {step}"
    return found[0]


@pytest.fixture
def seeding(monkeypatch):
    """Seeding on, from the repository's own assets/."""
    monkeypatch.setenv("LFSSD_ASSETS", "1")
    monkeypatch.delenv("LFSSD_ASSETS_DIR", raising=False)


@pytest.fixture
def assets_copy(tmp_path, monkeypatch):
    """Seeding on, from a copy of assets/ the test may damage."""
    copy = tmp_path / "assets"
    shutil.copytree(ASSETS, copy)
    monkeypatch.setenv("LFSSD_ASSETS", "1")
    monkeypatch.setenv("LFSSD_ASSETS_DIR", str(copy))
    return copy


def _cli(*args: str, cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", "assets", *args], cwd=REPO, env=cli_env(cache),
                          capture_output=True, text=True, timeout=300)


# --- the folder itself -----------------------------------------------------------------------

def test_every_listed_file_exists_and_matches_its_hash_and_the_folder_is_small():
    manifest = _manifest()
    assert manifest.error is None
    for e in manifest.entries:
        data = (ASSETS / e.path).read_bytes()
        assert (len(data), sha256_hex(data)) == (e.size, e.sha256), e.path
        assert e.what, e.path
    on_disk = {p.relative_to(ASSETS).as_posix() for p in ASSETS.rglob("*") if p.is_file()}
    assert on_disk - {MANIFEST_NAME} == {e.path for e in manifest.entries}  # nothing unlisted, nothing absent
    assert sum((ASSETS / p).stat().st_size for p in on_disk) <= MAX_BYTES


def test_the_manifest_is_deterministic_json_and_covers_every_step():
    manifest = _manifest()
    assert (ASSETS / MANIFEST_NAME).read_bytes() == manifest_bytes(manifest.entries)  # sorted, fixed indent, "\n"
    assert {e.step for e in manifest.entries} == {s.name for s in all_steps()}
    cache_entries = [e for e in manifest.entries if e.namespace]
    for e in cache_entries:
        assert e.path == f"cache/{e.namespace}/{e.key}.safetensors"
    assert sum(e.namespace == "models" for e in cache_entries) == len(RECIPES_SHIPPED) * 11  # baseline + 10 retrained
    assert sum(e.namespace == "importance" for e in cache_entries) == len(RECIPES_SHIPPED) * 2  # I_D, I_Df
    assert len({(e.namespace, e.key) for e in cache_entries}) == len(cache_entries)


def test_the_example_threes_are_mnist_threes_outside_both_training_sets():
    import pandas as pd

    from core.data.images import decode_image

    table = pd.read_csv(_mnist5k_path(), header=None, dtype=np.uint8).to_numpy()
    mnist_train = load_dataset("mnist5k").train_x.reshape(-1, 784).numpy()
    digits = load_dataset("digits")
    for row in EXAMPLE_THREES:
        data = (ASSETS / "examples" / "threes" / f"mnist5k-{row}.png").read_bytes()
        image = Image.open(io.BytesIO(data))
        assert (image.format, image.mode, image.size, image.info) == ("PNG", "L", (28, 28), {})
        pixels = np.array(image)
        assert table[row, 784] == 3 and np.array_equal(pixels.reshape(-1), table[row, :784])
        assert not (mnist_train == pixels.reshape(-1)).all(1).any()
        # the lesson's path: decoded into the digits set's format like an upload
        x = decode_image(data, f"mnist5k-{row}.png", digits.image_shape, digits.dark_background,
                         digit_box=digits.digit_box)
        assert x.shape == (1, 8, 8) and x.dtype == torch.uint8 and int(x.max()) > 0
    provenance = (ASSETS / "examples" / "PROVENANCE.md").read_text()
    assert "CC BY-SA 3.0" in provenance and "LeCun" in provenance and "Cortes" in provenance
    assert ", ".join(map(str, EXAMPLE_THREES)) in provenance


# --- the command -----------------------------------------------------------------------------

def test_rebuilding_the_examples_gives_the_shipped_bytes(tmp_path):
    into = tmp_path / "rebuilt"
    before = {p: p.stat().st_mtime_ns for p in ASSETS.rglob("*")}
    done = _cli("--rebuild", "--only", "examples/", "--into", str(into), cache=tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    rebuilt = parse_manifest(into, (into / MANIFEST_NAME).read_bytes())
    assert len(rebuilt.entries) == len(EXAMPLE_THREES) + 1
    for e in rebuilt.entries:
        assert (into / e.path).read_bytes() == (ASSETS / e.path).read_bytes(), e.path
    assert {p: p.stat().st_mtime_ns for p in ASSETS.rglob("*")} == before  # assets/ untouched
    shipped = {e.path: e for e in _manifest().entries}
    assert all(shipped[e.path] == e for e in rebuilt.entries)  # same hash, size, words and step

    checked = _cli("--check", "--only", "examples/", "--json", cache=tmp_path / "cache")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    result = json.loads(checked.stdout)
    assert result["ok"] and result["manifest"] == "identical"
    assert {f["status"] for f in result["files"]} == {"identical"} and len(result["files"]) == len(EXAMPLE_THREES) + 1
    assert {h["status"] for h in result["hashes"]} == {"ok"}


def test_the_listing_checks_hashes_and_a_bad_only_is_one_line(tmp_path, assets_copy):
    listed = _cli(cache=tmp_path / "cache")
    assert listed.returncode == 0 and "unlisted" not in listed.stdout and "mismatch" not in listed.stdout
    assert listed.stdout.count(" ok  ") == len(_manifest().entries)
    bad = _cli("--check", "--only", "nothing/", cache=tmp_path / "cache")
    assert bad.returncode == 2 and bad.stderr.startswith("error: --only 'nothing/' names no asset")
    assert "Traceback" not in bad.stderr

    png = assets_copy / "examples" / "threes" / f"mnist5k-{EXAMPLE_THREES[0]}.png"
    png.write_bytes(png.read_bytes()[:-1] + b"\x00")
    checked = _cli("--check", "--only", "examples/", cache=tmp_path / "cache")
    assert checked.returncode == 1
    assert f"mismatch  examples/threes/{png.name}" in checked.stdout


# --- seeding an empty cache --------------------------------------------------------------------

@pytest.mark.parametrize("recipe", RECIPES_SHIPPED)
def test_an_empty_cache_starts_from_the_shipped_baseline_and_importances(tmp_path, seeding, one_torch_thread, recipe):
    cache = TensorCache(tmp_path / "cache")
    prepared = prepare(ExperimentConfig(dataset="digits", forget="class:3", recipe=recipe), cache)
    assert prepared.cache_hits == {"model": True, "importance_full": True, "importance_forget": True}
    assert cache.warnings == []
    baseline = _entry(f"digits/small_cnn/{recipe}/baseline")
    shipped = load((ASSETS / baseline.path).read_bytes())
    state = prepared.model.state_dict()
    assert set(state) == set(shipped) and all(torch.equal(state[k].cpu(), shipped[k]) for k in shipped)
    for e in [baseline, *(e for e in _manifest().entries if e.step == baseline.step and e.namespace == "importance")]:
        assert cache.path(e.namespace, e.key).read_bytes() == (ASSETS / e.path).read_bytes()  # copied into the cache
    imp = load((ASSETS / _entry(baseline.step, "importance").path).read_bytes())
    assert any(all(torch.equal(m[k], imp[k]) for k in imp) for m in (prepared.imp_full, prepared.imp_forget))
    retrained = retrained_model(prepared, cache)
    entry = _entry(f"digits/small_cnn/{recipe}/retrained-3")
    shipped = load((ASSETS / entry.path).read_bytes())
    assert all(torch.equal(v.cpu(), shipped[k]) for k, v in retrained.state_dict().items())
    assert cache.path("models", entry.key).read_bytes() == (ASSETS / entry.path).read_bytes()


def test_every_shipped_model_is_found_by_the_key_the_app_asks_for(tmp_path, seeding):
    dataset = load_dataset("digits")
    cache = TensorCache(tmp_path / "cache")
    for recipe in RECIPES_SHIPPED:
        config = default_config("small_cnn", "digits", recipe=recipe)
        assert is_trained("small_cnn", dataset, config, cache)
        _, hit = trained_model("small_cnn", dataset, config, cache=cache)
        assert hit
        for c in range(10):
            split = make_split(dataset, f"class:{c}")
            _, hit = trained_model("small_cnn", dataset, config, indices=split.retain_train, cache=cache)
            assert hit, (recipe, c)
    assert cache.warnings == []


def test_with_seeding_off_nothing_is_served(tmp_path, monkeypatch):
    monkeypatch.setenv("LFSSD_ASSETS", "0")
    entry = _entry("digits/small_cnn/default/baseline")
    cache = TensorCache(tmp_path / "cache")
    assert cache.get("models", entry.key) is None and not cache.has("models", entry.key)
    monkeypatch.setenv("LFSSD_ASSETS", "1")
    assert TensorCache(tmp_path / "other", assets=False).get("models", entry.key) is None
    assert cache.warnings == []


def test_the_manifest_is_parsed_once(assets_copy):
    first = load_manifest()
    assert first is not None and first.folder == assets_copy
    assert load_manifest() is first


def test_an_unwritable_cache_still_gets_the_asset_in_memory(tmp_path, seeding):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    entry = _entry("digits/small_cnn/default/baseline")
    cache = TensorCache(blocker)
    tensors = cache.get("models", entry.key)
    assert tensors is not None and any("keeping results in memory" in w for w in cache.warnings)
    assert cache.get("models", entry.key) is not None


# --- never trusted when changed ----------------------------------------------------------------

def test_a_changed_byte_in_the_baseline_is_refused_and_the_model_retrained(tmp_path, assets_copy, one_torch_thread):
    entry = _entry("digits/small_cnn/default/baseline")
    tampered_path = assets_copy / entry.path
    data = bytearray(tampered_path.read_bytes())
    data[-3] ^= 0x40  # a bit of the last weight's float
    tampered_path.write_bytes(bytes(data))
    tampered = load(bytes(data))

    dataset = load_dataset("digits")
    cache = TensorCache(tmp_path / "cache")
    model, loaded = trained_model("small_cnn", dataset, default_config("small_cnn", "digits"), cache=cache)
    assert not loaded
    assert any(str(tampered_path) in w and "does not match its SHA-256" in w and "not used" in w
               for w in cache.warnings), cache.warnings
    stored = load(cache.path("models", entry.key).read_bytes())
    assert all(torch.equal(stored[k], v) for k, v in model.state_dict().items())  # the retrained model
    assert not all(torch.equal(stored[k], tampered[k]) for k in tampered)  # not the tampered one


def test_a_changed_hash_in_the_manifest_is_refused(tmp_path, assets_copy):
    entry = _entry("digits/small_cnn/default/baseline")
    manifest = (assets_copy / MANIFEST_NAME).read_text()
    other = ("0" if entry.sha256[0] != "0" else "1") + entry.sha256[1:]
    (assets_copy / MANIFEST_NAME).write_text(manifest.replace(entry.sha256, other))
    cache = TensorCache(tmp_path / "cache")
    assert cache.get("models", entry.key) is None
    assert any(str(assets_copy / entry.path) in w and "does not match its SHA-256" in w for w in cache.warnings)
    assert not cache.path("models", entry.key).exists()


def test_a_changed_file_with_a_matching_manifest_hash_still_fails_the_header_check(tmp_path, assets_copy):
    entry = _entry("digits/small_cnn/default/baseline")
    path = assets_copy / entry.path
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40
    path.write_bytes(bytes(data))
    manifest = (assets_copy / MANIFEST_NAME).read_text()
    (assets_copy / MANIFEST_NAME).write_text(manifest.replace(entry.sha256, sha256_hex(bytes(data))))
    cache = TensorCache(tmp_path / "cache")
    assert cache.get("models", entry.key) is None
    assert any("header checksum" in w for w in cache.warnings) and not cache.path("models", entry.key).exists()


def test_a_manifest_that_cannot_be_read_is_not_used(tmp_path, assets_copy):
    (assets_copy / MANIFEST_NAME).write_text("{not json")
    entry = _entry("digits/small_cnn/default/baseline")
    cache = TensorCache(tmp_path / "cache")
    assert cache.get("models", entry.key) is None
    assert any("cannot be read" in w for w in cache.warnings)


def test_the_shipped_baseline_has_the_small_cnns_parameters(tmp_path, seeding):
    entry = _entry("digits/small_cnn/default/baseline")
    tensors = TensorCache(tmp_path / "cache").get("models", entry.key)
    assert set(tensors) == set(create_model("small_cnn", (1, 8, 8), 10, seed=0).state_dict())
