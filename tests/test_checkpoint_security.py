"""Checkpoints are read as safetensors or with ``torch.load(weights_only=True)``, never unpickled.

Every hostile file here would create a marker file if it were unpickled (checked first, on a
copy, so the tests mean something); each is refused by every loader (``read_state_dict``,
``load_checkpoint``, the app's ``load_uploaded_checkpoint``, and ``python -m core --checkpoint`` in
a real subprocess) and the marker never appears. Checkpoints that are safe but wrong (another
architecture, other shapes, NaN, integers, truncated) are refused with the keys named.
"""
from __future__ import annotations

import io
import os
import pickle
import struct
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from cli_batch import run_many
from core.data.registry import load_dataset
from core.errors import CheckpointError, UserError
from core.evaluation.report import load_uploaded_checkpoint
from core.models.registry import create_model, load_checkpoint, read_state_dict, save_checkpoint, weights_hash


class CreatesFile:
    """Unpickling this calls ``open(path, "w")``: the pickle names only ``builtins.open``, so it
    works in any process (standing in for any code a pickle can run)."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def _torch_zip(obj, **kwargs) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, **kwargs)
    return buffer.getvalue()


class ExecsCode:
    """Unpickling this runs Python source through ``builtins.exec``."""

    def __init__(self, source: str):
        self.source = source

    def __reduce__(self):
        return exec, (self.source,)


def _hand_made_zip(marker: Path) -> bytes:
    """A zip laid out like torch.save's (archive/data.pkl, archive/version, archive/byteorder)
    whose data.pkl calls ``builtins.exec`` on code that creates the marker."""
    payload = pickle.dumps(ExecsCode(f"open({str(marker)!r}, 'w').close()"), protocol=2)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr("archive/version", "3\n")
        archive.writestr("archive/byteorder", "little")
    return buffer.getvalue()


# name → (file name, bytes from a marker path, a plain loader that *would* run it, message part)
HOSTILE = {
    "pickle": ("weights.pt", lambda m: pickle.dumps({"conv1.weight": CreatesFile(m)}),
               lambda data: pickle.loads(data), "plain pickle"),
    "pickle-protocol-0": ("weights.pt", lambda m: pickle.dumps(CreatesFile(m), protocol=0),
                          lambda data: pickle.loads(data), "neither safetensors nor a torch.save file"),
    "pickle-named-safetensors": ("weights.safetensors", lambda m: pickle.dumps(CreatesFile(m)),
                                 lambda data: pickle.loads(data), "plain pickle"),
    "legacy-torch-save": ("weights.pt", lambda m: _torch_zip({"w": CreatesFile(m)}, _use_new_zipfile_serialization=False),
                          lambda data: torch.load(io.BytesIO(data), weights_only=False), "plain pickle"),
    "torch-zip": ("weights.pt", lambda m: _torch_zip({"conv1.weight": CreatesFile(m)}),
                  lambda data: torch.load(io.BytesIO(data), weights_only=False), "weights_only"),
    "torch-zip-nested": ("weights.pt", lambda m: _torch_zip({"state_dict": {"conv1.weight": torch.zeros(1)},
                                                              "extra": [CreatesFile(m)]}),
                         lambda data: torch.load(io.BytesIO(data), weights_only=False), "weights_only"),
    "hand-made-zip": ("weights.pt", _hand_made_zip,
                      lambda data: torch.load(io.BytesIO(data), weights_only=False), "weights_only"),
}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """name → (checkpoint path, marker path): every file written, no marker yet."""
    root = tmp_path_factory.mktemp("hostile_checkpoints")
    files = {}
    for name, (filename, make, _, _) in HOSTILE.items():
        folder = root / name
        folder.mkdir()
        marker = folder / "CODE_RAN"
        (folder / filename).write_bytes(make(marker))
        files[name] = (folder / filename, marker)
    return files


@pytest.mark.parametrize("name", list(HOSTILE))
def test_the_hostile_file_really_runs_code_when_unpickled(name, tmp_path):
    filename, make, plain_load, _ = HOSTILE[name]
    marker = tmp_path / "CODE_RAN"
    try:
        result = plain_load(make(marker))
    except Exception:  # noqa: BLE001 - some loaders fail *after* running the code
        result = None
    assert marker.exists(), f"{name}: unpickling did not run the payload; the test would prove nothing"
    if hasattr(result, "close"):
        result.close()


@pytest.mark.parametrize("name", list(HOSTILE))
def test_core_loaders_refuse_without_running_code(name, hostile, digits):
    path, marker = hostile[name]
    part = HOSTILE[name][3]
    with pytest.raises(CheckpointError, match=part):
        read_state_dict(path)
    with pytest.raises(CheckpointError, match=part):
        load_checkpoint(path, create_model("small_cnn", (1, 8, 8), 10))
    with pytest.raises(CheckpointError, match=part) as caught:
        load_uploaded_checkpoint(path.read_bytes(), path.name, "small_cnn", digits)
    assert path.name in str(caught.value)
    assert not marker.exists()


def test_cli_checkpoint_refuses_every_hostile_file(hostile, tmp_path):
    names = list(HOSTILE)
    runs = run_many([["forget", "--dataset", "digits", "--checkpoint", str(hostile[n][0]), "--json"] for n in names],
                    tmp_path / "batch", tmp_path / "cache")
    for name, run in zip(names, runs, strict=True):
        lines = run.stderr.splitlines()
        assert run.returncode == 2, run.describe()
        assert len(lines) == 1 and lines[0].startswith("error: ") and HOSTILE[name][3] in lines[0], run.describe()
        assert run.stdout == "", run.describe()
        assert not hostile[name][1].exists(), f"{name}: the CLI ran the pickle"
    assert not any((tmp_path / "cache").rglob("*.safetensors")), "a refused checkpoint left cache files"


# --- safe files that do not fit -----------------------------------------------------------------------


def test_another_architecture_names_missing_and_unexpected_keys(tmp_path):
    path = tmp_path / "resnet.safetensors"
    save_checkpoint(create_model("resnet18", (1, 8, 8), 10), path)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path, create_model("small_cnn", (1, 8, 8), 10))
    message = str(caught.value)
    assert message.startswith("resnet.safetensors does not fit this model (missing: conv1.bias, conv2.weight")
    assert "unexpected: bn1.bias, bn1.num_batches_tracked, bn1.running_mean, bn1.running_var and 117 more" in message
    assert "wrong shape: conv1.weight (64, 1, 3, 3)≠(32, 1, 3, 3)" in message
    assert "\n" not in message


def test_other_image_size_names_the_mis_shaped_key(tmp_path):
    path = tmp_path / "mnist.safetensors"
    save_checkpoint(create_model("small_cnn", (1, 28, 28), 10), path)
    with pytest.raises(CheckpointError, match=r"wrong shape: fc1\.weight \(128, 3136\)≠\(128, 256\)\)$"):
        load_checkpoint(path, create_model("small_cnn", (1, 8, 8), 10))


def test_nan_and_integer_weights_are_named(tmp_path):
    state = {k: v.clone() for k, v in create_model("small_cnn", (1, 8, 8), 10).state_dict().items()}
    state["fc2.bias"][3] = float("nan")
    state["conv1.bias"][0] = float("inf")
    state["fc1.bias"] = state["fc1.bias"].to(torch.int64)
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(tmp_path / "bad.safetensors", create_model("small_cnn", (1, 8, 8), 10))
    message = str(caught.value)
    assert "not floating point: fc1.bias int64" in message
    assert "NaN or infinite values: conv1.bias, fc2.bias" in message


def test_module_prefix_and_wrapped_state_dicts_load(tmp_path):
    source = create_model("small_cnn", (1, 8, 8), 10, seed=9)
    wrapped = {"model_state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}, "epoch": 3}
    (tmp_path / "ddp.pt").write_bytes(_torch_zip(wrapped))
    loaded = load_checkpoint(tmp_path / "ddp.pt", create_model("small_cnn", (1, 8, 8), 10))
    assert weights_hash(loaded) == weights_hash(source)


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.99])
@pytest.mark.parametrize("kind", ["safetensors", "pt"])
def test_truncated_checkpoints_are_refused(tmp_path, cut, kind):
    source = create_model("small_cnn", (1, 8, 8), 10)
    if kind == "safetensors":
        save_checkpoint(source, tmp_path / "full")
        data = (tmp_path / "full").read_bytes()
    else:
        data = _torch_zip(source.state_dict())
    path = tmp_path / f"cut.{kind}"
    path.write_bytes(data[: max(int(len(data) * cut), 9)])
    with pytest.raises(CheckpointError, match=r"^cut\." + kind):
        load_checkpoint(path, create_model("small_cnn", (1, 8, 8), 10))


def test_safetensors_header_claiming_exabytes_is_refused_fast(tmp_path):
    path = tmp_path / "huge_header.safetensors"
    path.write_bytes(struct.pack("<Q", 2**60) + b'{"a": 1}')
    started = time.perf_counter()
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        read_state_dict(path)
    assert time.perf_counter() - started < 1


def test_folders_and_pipes_are_not_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match=r"is a folder, not a checkpoint file$"):
        read_state_dict(tmp_path)
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.pt")
        with pytest.raises(CheckpointError, match=r"pipe\.pt is not a regular file$"):
            read_state_dict(tmp_path / "pipe.pt")  # must not block waiting for a writer


def test_upload_names_are_only_shown_never_used_as_paths(digits, tmp_path, monkeypatch):
    source = create_model("small_cnn", digits.image_shape, digits.num_classes, seed=5)
    save_checkpoint(source, tmp_path / "w.safetensors")
    data = (tmp_path / "w.safetensors").read_bytes()
    monkeypatch.chdir(tmp_path)
    for name in ("../../escape.safetensors", "/etc/passwd.safetensors", "a\x00b.safetensors",
                 "C:\\Users\\me\\model.safetensors", "x" * 500 + ".safetensors"):
        model = load_uploaded_checkpoint(data, name, "small_cnn", digits)
        assert weights_hash(model) == weights_hash(source)
    with pytest.raises(CheckpointError) as caught:
        load_uploaded_checkpoint(b"garbage, but long enough", "../../" + "y" * 300 + "\x00.pt", "small_cnn", digits)
    message = str(caught.value)
    assert "/" not in message.split(" ")[0] and "\x00" not in message and len(message) < 200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]  # nothing written anywhere here


def test_upload_type_and_size_are_checked_before_reading(digits):
    with pytest.raises(UserError, match=r"^notes\.txt: choose a \.safetensors or \.pt file, got '\.txt'$"):
        load_uploaded_checkpoint(b"\x80" * 100, "notes.txt", "small_cnn", digits)
    with pytest.raises(UserError, match=r"^big\.pt is 2 MB; the limit is 1 MB$"):
        load_uploaded_checkpoint(b"\x80" * (2 * 2**20), "big.pt", "small_cnn", digits, max_mb=1)


def test_numpy_object_array_is_refused(tmp_path, digits):
    buffer = io.BytesIO()
    np.save(buffer, np.array([CreatesFile(tmp_path / "CODE_RAN")], dtype=object), allow_pickle=True)
    (tmp_path / "w.pt").write_bytes(buffer.getvalue())
    with pytest.raises(CheckpointError, match="neither safetensors nor a torch.save file"):
        load_checkpoint(tmp_path / "w.pt", create_model("small_cnn", (1, 8, 8), 10))
    assert not (tmp_path / "CODE_RAN").exists()
