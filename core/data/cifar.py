"""CIFAR-10, CIFAR-100 and CIFAR-20 from the official python pickles, read without trusting them.

The files are pickles, and a plain ``pickle.load`` runs whatever a tampered file asks for; they
are read with an unpickler that builds nothing but numpy arrays and plain containers. A missing
set is downloaded when the site is reachable, else the error says which files to put where.
"""
from __future__ import annotations

import importlib
import pickle
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from core.data.dataset import Dataset
from core.errors import DataUnavailableError, UserError

Progress = Callable[[float, str], None]

# The reference normalises every CIFAR variant with CIFAR-100's statistics (SPEC §4).
CIFAR_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR_STD = (0.2673, 0.2564, 0.2762)
DOWNLOAD_HOST = "www.cs.toronto.edu"
PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class _Archive:
    title: str  # "CIFAR-10"
    folder: str  # what the tarball unpacks to
    train: tuple[str, ...]
    test: str
    meta: str
    tarball: str
    url: str
    md5: str

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train, self.test, self.meta)


_CIFAR10 = _Archive("CIFAR-10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                    "test_batch", "batches.meta", "cifar-10-python.tar.gz",
                    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a")
_CIFAR100 = _Archive("CIFAR-100", "cifar-100-python", ("train",), "test", "meta", "cifar-100-python.tar.gz",
                     "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85")
_FILE_LIST = {_CIFAR10: "data_batch_1..5, test_batch, batches.meta", _CIFAR100: "train, test, meta"}
# name → (archive, label key in the batches, class-name key in the meta file)
_VARIANTS = {
    "cifar10": (_CIFAR10, "labels", "label_names"),
    "cifar100": (_CIFAR100, "fine_labels", "fine_label_names"),
    "cifar20": (_CIFAR100, "coarse_labels", "coarse_label_names"),
}


def load_cifar(name: str, root: str | Path, download: bool = True, progress: Progress | None = None) -> Dataset:
    """Load "cifar10", "cifar100" or "cifar20" from ``root`` (downloading it there if allowed).

    CIFAR-20 is CIFAR-100's images labelled with the 20 superclasses; the 100 fine labels ride
    along as ``fine_*`` for sub-class forgetting.
    """
    if name not in _VARIANTS:
        raise UserError(f"unknown CIFAR set '{name}'; choose one of: {', '.join(_VARIANTS)}")
    archive, label_key, names_key = _VARIANTS[name]
    root = Path(root).expanduser()
    _ensure_files(archive, root, download, progress)
    folder = root / archive.folder
    report = progress or (lambda fraction, message: None)
    meta = _read_pickle(folder / archive.meta)
    batches = []
    for i, file in enumerate((*archive.train, archive.test)):
        report(i / (len(archive.train) + 1), f"reading {archive.title} {file}")
        batches.append(_read_batch(folder / file))
    report(1.0, f"{archive.title} loaded")
    train, test = _concat(batches[:-1]), batches[-1]
    classes = _names(meta, names_key, folder / archive.meta)
    for split, path in ((train, folder / archive.train[0]), (test, folder / archive.test)):
        _check_labels(split, label_key, len(classes), path)
    fine = {}
    if name == "cifar20":
        fine_classes = _names(meta, "fine_label_names", folder / archive.meta)
        _check_labels(train, "fine_labels", len(fine_classes), folder / archive.train[0])
        _check_labels(test, "fine_labels", len(fine_classes), folder / archive.test)
        fine = dict(fine_train_y=_labels(train, "fine_labels"), fine_test_y=_labels(test, "fine_labels"),
                    fine_classes=fine_classes)
    return Dataset(
        name=name,
        train_x=_images(train), train_y=_labels(train, label_key),
        test_x=_images(test), test_y=_labels(test, label_key),
        classes=classes, mean=CIFAR_MEAN, std=CIFAR_STD,
        description=f"{archive.title} images, {len(classes)} classes, from {folder}",
        **fine,
    )


# --- files: present, downloaded, or a clear error -------------------------------------------


def _ensure_files(archive: _Archive, root: Path, download: bool, progress: Progress | None) -> None:
    if not _missing(archive, root):
        return
    if not download:
        raise DataUnavailableError(_unavailable(archive, root, "downloading is turned off"))
    if not can_download():
        raise DataUnavailableError(_unavailable(archive, root, f"cannot be downloaded here ({DOWNLOAD_HOST} is unreachable)"))
    if progress:
        progress(0.0, f"downloading {archive.tarball} into {root}")
    try:
        from torchvision.datasets.utils import download_and_extract_archive

        # torchvision's download (with its progress bar and md5 check), but not its CIFAR classes:
        # they would unpickle the files with plain pickle.load.
        root.mkdir(parents=True, exist_ok=True)
        download_and_extract_archive(archive.url, root, filename=archive.tarball, md5=archive.md5,
                                     remove_finished=True)
    except Exception as e:
        raise DataUnavailableError(_unavailable(archive, root, f"its download failed ({e})")) from None
    if _missing(archive, root):
        raise DataUnavailableError(_unavailable(archive, root, "the download did not contain it"))


def files_present(name: str, root: str | Path) -> bool:
    """Whether a CIFAR set's files are all in ``root`` (nothing read, nothing downloaded)."""
    if name not in _VARIANTS:
        return False
    return not _missing(_VARIANTS[name][0], Path(root))


def _missing(archive: _Archive, root: Path) -> list[str]:
    return [f for f in archive.files if not (root / archive.folder / f).is_file()]


def _unavailable(archive: _Archive, root: Path, why: str) -> str:
    missing = _missing(archive, root)
    what = "is not" if len(missing) == len(archive.files) else f"is incomplete (no {', '.join(missing)})"
    return (f"{archive.title} {what} in {root} and {why}: put {archive.folder}/ "
            f"({_FILE_LIST[archive]}) from {archive.tarball} into {root}")


def can_download() -> bool:
    """Whether the CIFAR site answers within a few seconds (a thread bounds slow DNS too)."""
    reachable = []

    def probe():
        try:
            socket.create_connection((DOWNLOAD_HOST, 443), timeout=PROBE_TIMEOUT_S).close()
            reachable.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(PROBE_TIMEOUT_S + 0.5)
    return bool(reachable)


# --- reading the pickles safely --------------------------------------------------------------


def _multiarray(attribute: str):
    try:  # numpy 2 moved numpy.core to numpy._core; importing the old name warns
        module = importlib.import_module("numpy._core.multiarray")
    except ImportError:  # numpy 1
        module = importlib.import_module("numpy.core.multiarray")
    return getattr(module, attribute)


def _frombuffer(buffer, dtype, shape, order):
    """What numpy's protocol-5 pickles call; rebuilt here so no numpy internals are needed."""
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as Python 3 uses it to write bytes at protocol 2, and nothing more."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"unexpected _codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


_CONTAINERS = {"list": list, "dict": dict, "tuple": tuple, "set": set, "frozenset": frozenset}


def _allowed_globals() -> dict[tuple[str, str], object]:
    """Every global a CIFAR pickle may name: numpy's array rebuilders and plain containers."""
    allowed = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): _multiarray("_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"): _multiarray("_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"): _frombuffer,
        ("numpy._core.numeric", "_frombuffer"): _frombuffer,
        ("_codecs", "encode"): _latin1_encode,
    }
    for module in ("builtins", "__builtin__"):  # Python 2 pickles name the old module
        allowed.update({(module, name): value for name, value in _CONTAINERS.items()})
    return allowed


class _CifarUnpickler(pickle.Unpickler):
    """Refuses every global but ``_allowed_globals``: a tampered file cannot run code."""

    def __init__(self, file, path: Path):
        super().__init__(file, encoding="latin1")  # what torchvision uses for the Python 2 files
        self.path = path
        self.allowed = _allowed_globals()

    def find_class(self, module: str, name: str):
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise UserError(f"refusing to load {self.path}: it references {module}.{name}, "
                            "which a CIFAR file never does") from None


def _read_pickle(path: Path) -> dict[str, object]:
    """One CIFAR file as a dict with str keys (the files have bytes or str keys)."""
    try:
        with open(path, "rb") as f:
            content = _CifarUnpickler(f, path).load()
    except UserError:
        raise
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    except Exception as e:  # EOFError, UnpicklingError, ValueError … from a cut or damaged file
        raise UserError(f"{path} is truncated or corrupt ({type(e).__name__}: {e}); "
                        "delete it and put a fresh copy there") from None
    if not isinstance(content, dict):
        raise UserError(f"{path} is not a CIFAR file: it holds a {type(content).__name__}, not a dict")
    return {_text(key): value for key, value in content.items()}


def _text(value) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, (bytes, bytearray)) else str(value)


def _read_batch(path: Path) -> dict[str, object]:
    batch = _read_pickle(path)
    data = batch.get("data")
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise UserError(f"{path} is not a CIFAR batch: its 'data' should be uint8 (N, 3072), found {found}")
    batch["path"] = path
    return batch


def _concat(batches: list[dict]) -> dict[str, object]:
    keys = [k for k in ("labels", "fine_labels", "coarse_labels") if all(k in b for b in batches)]
    merged = {k: [label for b in batches for label in b[k]] for k in keys}
    merged["data"] = np.concatenate([b["data"] for b in batches])
    merged["path"] = batches[0]["path"]
    return merged


def _check_labels(batch: dict, key: str, num_classes: int, path: Path) -> None:
    labels = batch.get(key)
    if labels is None or len(labels) != len(batch["data"]):
        raise UserError(f"{path} is not a CIFAR batch: it has {len(batch['data'])} images but "
                        f"{'no' if labels is None else len(labels)} '{key}'")
    values = np.asarray(labels)
    if values.size and (values.min() < 0 or values.max() >= num_classes):
        raise UserError(f"{path} has '{key}' outside 0..{num_classes - 1}")


def _names(meta: dict, key: str, path: Path) -> tuple[str, ...]:
    names = meta.get(key)
    if not isinstance(names, (list, tuple)) or not names:
        raise UserError(f"{path} is not a CIFAR meta file: it has no '{key}'")
    return tuple(_text(n) for n in names)


def _images(batch: dict) -> torch.Tensor:
    # Each row is 1024 red, then 1024 green, then 1024 blue values, each plane row-major 32×32.
    data = np.require(batch["data"], np.uint8, ["C", "W"])  # copies only a read-only buffer
    return torch.from_numpy(data.reshape(-1, 3, 32, 32))


def _labels(batch: dict, key: str) -> torch.Tensor:
    return torch.as_tensor(np.asarray(batch[key], dtype=np.int64))
