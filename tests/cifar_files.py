"""Tiny CIFAR files in the official on-disk formats (python pickles), for tests.

``write_cifar10`` and ``write_cifar100`` write the real folder layout and pickle encodings (the
official files were written by Python 2's cPickle; see ``FORMATS``) into a temporary folder, so
tests load them through the real loaders.
"""
from __future__ import annotations

import pickle
import struct

import numpy as np

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


def write_cifar10(root, fmt="py3-protocol4", n_per_batch=N_PER_BATCH, n_test=N_TEST):
    """CIFAR-10's folder: five train batches of ``n_per_batch`` images, labels cycling 0..9."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    labels = {}
    for i in range(1, 6):
        y = [(i * n_per_batch + j) % 10 for j in range(n_per_batch)]
        labels[f"data_batch_{i}"] = y
        batch = {"batch_label": f"training batch {i} of 5", "data": _rows(n_per_batch, i), "labels": y,
                 "filenames": [f"img_{i}_{j}.png" for j in range(n_per_batch)]}
        _dump(batch, folder / f"data_batch_{i}", fmt)
    test_y = [j % 10 for j in range(n_test)]
    test = {"batch_label": "testing batch 1 of 1", "data": _rows(n_test, 99), "labels": test_y,
            "filenames": [f"test_{j}.png" for j in range(n_test)]}
    _dump(test, folder / "test_batch", fmt)
    names = [f"class{i}".encode() for i in range(10)]  # bytes, as Python 3 reads the official meta
    _dump({"label_names": names, "num_cases_per_batch": n_per_batch, "num_vis": 3072}, folder / "batches.meta", fmt)
    return folder, labels, test_y


def write_cifar100(root, n_train=20, n_test=N_TEST, fmt="py3-protocol4", fine_train=None, fine_test=None,
                   images=None):
    """CIFAR-100's folder; fine labels random (or ``fine_train`` / ``fine_test``), coarse = fine % 20.

    ``images``: optional {"train": (n, 3072), "test": (m, 3072)} uint8 rows instead of random ones.
    """
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.RandomState(5)
    fine = {"train": rng.randint(0, 100, n_train).tolist(), "test": rng.randint(0, 100, n_test).tolist()}
    if fine_train is not None:
        fine["train"], n_train = list(fine_train), len(fine_train)
    if fine_test is not None:
        fine["test"], n_test = list(fine_test), len(fine_test)
    for split, n in (("train", n_train), ("test", n_test)):
        data = _rows(n, n) if images is None else np.asarray(images[split], dtype=np.uint8)
        batch = {"filenames": [b"x.png"] * n, "batch_label": split.encode(), "data": data,
                 "fine_labels": fine[split], "coarse_labels": [f % 20 for f in fine[split]]}
        _dump(batch, folder / split, fmt)
    meta = {"fine_label_names": [f"fine{i}".encode() for i in range(100)],
            "coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}
    _dump(meta, folder / "meta", fmt)
    return folder, fine
