"""CIFAR loaders on tiny files written in the official pickle format."""
from __future__ import annotations

import os
import pickle
import struct
import time

import numpy as np
import pytest
import torch

from core.cifar import CIFAR_MEAN, CIFAR_STD, can_download, load_cifar
from core.errors import DataUnavailableError, UserError

N_PER_BATCH, N_TEST = 4, 10  # 5 CIFAR-10 batches → 20 train images


def _rows(n: int, seed: int) -> np.ndarray:
    """(n, 3072) uint8 rows with three known pixels, one in each colour plane."""
    data = np.random.RandomState(seed).randint(0, 256, size=(n, 3072)).astype(np.uint8)
    data[0, 0 * 1024 + 5 * 32 + 7] = 200  # red, row 5, column 7
    data[0, 1 * 1024 + 31 * 32 + 0] = 77  # green, row 31, column 0
    data[1, 2 * 1024 + 0 * 32 + 31] = 13  # blue, row 0, column 31
    return data


def _py2_str(text: bytes) -> bytes:  # a Python 2 str: SHORT_BINSTRING or BINSTRING
    return (b"U" + bytes([len(text)]) + text) if len(text) < 256 else (b"T" + struct.pack("<i", len(text)) + text)


def _py2_int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def _py2_value(value) -> bytes:
    """Opcodes cPickle (protocol 2) and numpy 1 wrote for the official files' values."""
    if isinstance(value, np.ndarray):  # _reconstruct(ndarray, (0,), 'b') + (version, shape, dtype, fortran, data)
        shape = b"(" + b"".join(_py2_int(d) for d in value.shape) + b"t"
        dtype = (b"cnumpy\ndtype\n" + _py2_str(b"u1") + _py2_int(0) + _py2_int(1) + b"\x87R"
                 + b"(" + _py2_int(3) + _py2_str(b"|") + b"NNN" + _py2_int(-1) + _py2_int(-1) + _py2_int(0) + b"tb")
        return (b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n" + _py2_int(0) + b"\x85"
                + _py2_str(b"b") + b"\x87R(" + _py2_int(1) + shape + dtype + b"\x89"
                + _py2_str(np.ascontiguousarray(value, np.uint8).tobytes()) + b"tb")
    if isinstance(value, list):
        return b"](" + b"".join(_py2_value(v) for v in value) + b"e"
    if isinstance(value, int):
        return _py2_int(value)
    return _py2_str(value if isinstance(value, bytes) else value.encode())


def _py2_pickle(d: dict) -> bytes:
    """A dict pickled as Python 2 did it: keys and strings are py2 str, which latin1 makes str."""
    items = b"".join(_py2_str(k.encode()) + _py2_value(v) for k, v in d.items())
    return b"\x80\x02}(" + items + b"u."


# how a file is written → (pickle protocol or "py2", bytes keys?)
FORMATS = {"py2-official": ("py2", False), "py3-protocol4": (4, True), "py3-str-keys": (4, False),
           "py3-protocol2": (2, True), "py3-protocol5": (5, True)}


def _dump(obj: dict, path, fmt="py3-protocol4"):
    """Write ``obj`` (str keys) the way format ``fmt`` does."""
    protocol, bytes_keys = FORMATS[fmt]
    if protocol == "py2":
        path.write_bytes(_py2_pickle(obj))
        return
    obj = {(k.encode() if bytes_keys and isinstance(k, str) else k): v for k, v in obj.items()}
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


def write_cifar10(root, fmt="py3-protocol4"):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    labels = {}
    for i in range(1, 6):
        y = [(i * N_PER_BATCH + j) % 10 for j in range(N_PER_BATCH)]
        labels[f"data_batch_{i}"] = y
        batch = {"batch_label": f"training batch {i} of 5", "data": _rows(N_PER_BATCH, i), "labels": y,
                 "filenames": [f"img_{i}_{j}.png" for j in range(N_PER_BATCH)]}
        _dump(batch, folder / f"data_batch_{i}", fmt)
    test_y = [j % 10 for j in range(N_TEST)]
    test = {"batch_label": "testing batch 1 of 1", "data": _rows(N_TEST, 99), "labels": test_y,
            "filenames": [f"test_{j}.png" for j in range(N_TEST)]}
    _dump(test, folder / "test_batch", fmt)
    names = [f"class{i}".encode() for i in range(10)]  # bytes, as Python 3 reads the official meta
    _dump({"label_names": names, "num_cases_per_batch": N_PER_BATCH, "num_vis": 3072}, folder / "batches.meta", fmt)
    return folder, labels, test_y


def write_cifar100(root, n_train=20, n_test=N_TEST, fmt="py3-protocol4"):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.RandomState(5)
    fine = {"train": rng.randint(0, 100, n_train).tolist(), "test": rng.randint(0, 100, n_test).tolist()}
    for split, n in (("train", n_train), ("test", n_test)):
        batch = {"filenames": [b"x.png"] * n, "batch_label": split.encode(), "data": _rows(n, n),
                 "fine_labels": fine[split], "coarse_labels": [f % 20 for f in fine[split]]}
        _dump(batch, folder / split, fmt)
    meta = {"fine_label_names": [f"fine{i}".encode() for i in range(100)],
            "coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}
    _dump(meta, folder / "meta", fmt)
    return folder, fine


@pytest.mark.parametrize("fmt", FORMATS)
def test_cifar10_round_trip(tmp_path, fmt):
    _, labels, test_y = write_cifar10(tmp_path, fmt)
    calls = []
    ds = load_cifar("cifar10", tmp_path, download=False, progress=lambda f, m: calls.append((f, m)))
    assert ds.name == "cifar10"
    assert ds.train_x.shape == (20, 3, 32, 32) and ds.train_x.dtype == torch.uint8
    assert ds.test_x.shape == (N_TEST, 3, 32, 32)
    assert ds.classes == tuple(f"class{i}" for i in range(10))
    assert ds.train_y.dtype == torch.int64
    assert ds.train_y.tolist() == [y for i in range(1, 6) for y in labels[f"data_batch_{i}"]]
    assert ds.test_y.tolist() == test_y
    first = ds.train_x[0]  # first image of data_batch_1
    assert first[0, 5, 7] == 200 and first[1, 31, 0] == 77 and ds.train_x[1, 2, 0, 31] == 13
    assert ds.test_x[0, 0, 5, 7] == 200
    expected = torch.from_numpy(_rows(N_PER_BATCH, 2)).view(-1, 3, 32, 32)
    assert torch.equal(ds.train_x[N_PER_BATCH:2 * N_PER_BATCH], expected)  # data_batch_2, plane by plane
    assert ds.mean == CIFAR_MEAN and ds.std == CIFAR_STD
    assert ds.fine_train_y is None and ds.fine_classes is None
    assert calls and calls[-1][0] == 1.0 and [f for f, _ in calls] == sorted(f for f, _ in calls)


@pytest.mark.parametrize("fmt", ["py2-official", "py3-protocol4"])
def test_cifar100_and_cifar20(tmp_path, fmt):
    _, fine = write_cifar100(tmp_path, fmt=fmt)
    c100 = load_cifar("cifar100", tmp_path, download=False)
    assert c100.classes == tuple(f"fine{i}" for i in range(100))
    assert c100.train_y.tolist() == fine["train"] and c100.test_y.tolist() == fine["test"]
    assert c100.train_x.shape == (20, 3, 32, 32) and c100.train_x[0, 0, 5, 7] == 200
    assert c100.fine_train_y is None and c100.fine_test_y is None and c100.fine_classes is None

    c20 = load_cifar("cifar20", tmp_path, download=False)
    assert c20.name == "cifar20" and c20.num_classes == 20
    assert c20.classes == tuple(f"coarse{i}" for i in range(20))
    assert c20.train_y.tolist() == [f % 20 for f in fine["train"]]
    assert c20.test_y.tolist() == [f % 20 for f in fine["test"]]
    assert c20.fine_train_y.tolist() == fine["train"] and c20.fine_test_y.tolist() == fine["test"]
    assert c20.fine_classes == c100.classes
    assert torch.equal(c20.train_x, c100.train_x)
    assert c20.mean == c100.mean == CIFAR_MEAN and c20.std == CIFAR_STD


def test_unknown_name(tmp_path):
    with pytest.raises(UserError, match="unknown CIFAR set 'cifar30'; choose one of: cifar10, cifar100, cifar20"):
        load_cifar("cifar30", tmp_path)


@pytest.mark.parametrize("name, folder", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python"),
                                          ("cifar20", "cifar-100-python")])
def test_missing_files_offline(tmp_path, name, folder):
    with pytest.raises(DataUnavailableError) as info:
        load_cifar(name, tmp_path / "data", download=False)
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "data") in message and f"{folder}/" in message
    assert ".tar.gz" in message


def test_missing_files_download_fails_fast(tmp_path):
    if can_download():
        pytest.skip("the CIFAR site is reachable here; this test covers the offline path")
    start = time.monotonic()
    with pytest.raises(DataUnavailableError, match="cannot be downloaded here") as info:
        load_cifar("cifar10", tmp_path, download=True)
    assert time.monotonic() - start < 10
    assert "data_batch_1..5, test_batch, batches.meta" in str(info.value) and str(tmp_path) in str(info.value)


def test_incomplete_folder_names_missing_file(tmp_path):
    folder, _, _ = write_cifar10(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataUnavailableError, match="incomplete .*data_batch_3"):
        load_cifar("cifar10", tmp_path, download=False)


def test_truncated_file(tmp_path):
    folder, _, _ = write_cifar10(tmp_path)
    blob = (folder / "data_batch_2").read_bytes()
    (folder / "data_batch_2").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(UserError, match="data_batch_2 is truncated or corrupt") as info:
        load_cifar("cifar10", tmp_path, download=False)
    assert "\n" not in str(info.value)


def test_wrong_shape_is_refused(tmp_path):
    folder, _, _ = write_cifar10(tmp_path)
    _dump({"data": np.zeros((4, 100), np.uint8), "labels": [0] * 4}, folder / "test_batch")
    with pytest.raises(UserError, match=r"test_batch is not a CIFAR batch: .*\(4, 100\)"):
        load_cifar("cifar10", tmp_path, download=False)


class _Payload:
    """A pickle that, when plainly unpickled, calls ``func(*args)``."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _evil(payload: str, marker):
    return {"os.system": _Payload(os.system, (f"touch {marker}",)),
            "builtins.open": _Payload(open, (str(marker), "w")),
            "numpy.save": _Payload(np.save, (str(marker), np.zeros(1)))}[payload]


@pytest.mark.parametrize("payload", ["os.system", "builtins.open", "numpy.save"])
def test_malicious_pickle_is_refused(tmp_path, payload):
    control = tmp_path / "control.npy"  # the payload is live: a plain pickle.load runs it
    made = pickle.loads(pickle.dumps({b"data": _evil(payload, control)}))[b"data"]
    if hasattr(made, "close"):
        made.close()  # the file builtins.open returned
    assert control.exists()

    folder, _, _ = write_cifar10(tmp_path / "data")
    marker = tmp_path / "pwned.npy"
    _dump({"data": _evil(payload, marker), "labels": [0] * 4}, folder / "data_batch_1")
    with pytest.raises(UserError, match="refusing to load .*data_batch_1: it references .*, which a CIFAR file never does"):
        load_cifar("cifar10", tmp_path / "data", download=False)
    assert not marker.exists()
