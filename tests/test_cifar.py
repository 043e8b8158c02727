"""CIFAR loaders on tiny files written in the official pickle format."""
from __future__ import annotations

import os
import pickle
import time

import numpy as np
import pytest
import torch

from core.data.cifar import CIFAR_MEAN, CIFAR_STD, can_download, load_cifar
from core.errors import DataUnavailableError, UserError

from cifar_files import FORMATS, N_PER_BATCH, N_TEST, _dump, _rows, write_cifar10, write_cifar100


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
