"""A folder with one subfolder of images per class (e.g. faces, PINS) as a ``Dataset``.

Either ``root/<class>/…`` (split here, stratified and seeded) or ``root/train/<class>/…`` and
``root/test/<class>/…`` (the user's own split, kept as given).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from core.data.dataset import Dataset, stratified_split
from core.errors import UserError
from core.data.images import list_image_files, read_image_file

Progress = Callable[[float, str], None]


def load_image_folder(root, image_size: int = 32, channels: int | None = None, test_fraction: float = 0.2,
                      seed: int = 0, progress: Progress | None = None) -> Dataset:
    """Load class subfolders of images, resized to ``image_size``², as a labelled data set.

    ``channels`` None picks 1 when every image is grey (R = G = B), else 3.
    """
    root = Path(root).expanduser()
    _check_arguments(root, image_size, channels, test_fraction)
    report = progress or (lambda fraction, message: None)
    if _has_own_split(root):
        classes = _class_folders(root / "train")
        train_files, train_y = _files_by_class(root / "train", classes, must_have_images=True)
        test_classes = _class_folders(root / "test", minimum=1)
        extra = sorted(set(test_classes) - set(classes))
        if extra:
            raise UserError(f"{root / 'test'} has class folder '{extra[0]}' that {root / 'train'} lacks")
        test_files, test_y = _files_by_class(root / "test", classes, must_have_images=False)
        x = _decode_all(train_files + test_files, image_size, report)
        x = _pick_channels(x, channels)
        train_x, test_x = x[: len(train_files)], x[len(train_files):]
    else:
        classes = _class_folders(root)
        files, y = _files_by_class(root, classes, must_have_images=True)
        x = _pick_channels(_decode_all(files, image_size, report), channels)
        train_idx, test_idx = stratified_split(y, test_fraction, seed)
        train_x, train_y, test_x, test_y = x[train_idx], y[train_idx], x[test_idx], y[test_idx]
    mean, std = _channel_stats(train_x)
    return Dataset(
        name="folder",
        train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
        classes=tuple(classes), mean=mean, std=std,
        description=f"{len(train_x) + len(test_x):,} images in {len(classes)} classes from {root}",
    )


def _check_arguments(root: Path, image_size: int, channels: int | None, test_fraction: float) -> None:
    if not root.is_dir():
        raise UserError(f"no such folder: {root}" if not root.exists() else f"{root} is a file, not a folder of class folders")
    if not isinstance(image_size, int) or image_size < 1:
        raise UserError(f"image_size must be a whole number >= 1, got {image_size!r}")
    if channels not in (None, 1, 3):
        raise UserError(f"channels must be 1, 3 or None (detect), got {channels!r}")
    if not 0.0 < test_fraction < 1.0:
        raise UserError(f"test_fraction must be between 0 and 1, got {test_fraction}")


def _subfolders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _has_own_split(root: Path) -> bool:
    """``train/`` and ``test/`` that both hold class folders, rather than classes named so."""
    return all((root / s).is_dir() and _subfolders(root / s) for s in ("train", "test"))


def _class_folders(folder: Path, minimum: int = 2) -> list[str]:
    classes = _subfolders(folder)
    if len(classes) < minimum:
        found = f"found {len(classes)}" + (f" ({classes[0]})" if classes else "")
        raise UserError(f"{folder} needs at least {minimum} class subfolders of images, {found}")
    return classes


def _files_by_class(folder: Path, classes: list[str], must_have_images: bool) -> tuple[list[Path], torch.Tensor]:
    files, labels = [], []
    for label, name in enumerate(classes):
        found = list_image_files(folder / name) if (folder / name).is_dir() else []
        if not found and must_have_images:
            raise UserError(f"class '{name}' has no images in {folder / name}")
        files += found
        labels += [label] * len(found)
    return files, torch.tensor(labels, dtype=torch.int64)


def _decode_all(files: list[Path], image_size: int, report: Progress) -> torch.Tensor:
    """(N, 3, S, S) uint8; decoded as colour so grey can be told from content afterwards."""
    images = []
    for i, path in enumerate(files):
        if i % 64 == 0:
            report(i / max(len(files), 1), f"reading images {i:,}/{len(files):,}")
        images.append(read_image_file(path, (3, image_size, image_size), dark_background=False))  # names path
    report(1.0, f"read {len(files):,} images")
    if not images:
        return torch.zeros((0, 3, image_size, image_size), dtype=torch.uint8)
    return torch.stack(images)


def _pick_channels(x: torch.Tensor, channels: int | None) -> torch.Tensor:
    """Keep colour, or one plane when asked or when every image is grey (R = G = B)."""
    grey = bool((x[:, 0] == x[:, 1]).all() and (x[:, 1] == x[:, 2]).all())
    if channels == 3 or (channels is None and not grey):
        return x
    if grey:
        return x[:, :1].clone()
    # Pillow's luma ("L"): (19595 R + 38470 G + 7471 B + 2¹⁵) >> 16
    weights = torch.tensor([19595, 38470, 7471], dtype=torch.int64).view(1, 3, 1, 1)
    return ((x.to(torch.int64) * weights).sum(1, keepdim=True) + 32768).div(65536, rounding_mode="floor").to(torch.uint8)


def _channel_stats(train_x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std on the 0..1 scale, over the train split."""
    # numpy's single-threaded pairwise sums: the same statistics (and cache keys) whatever torch's thread count
    scaled = train_x.numpy().astype(np.float64).swapaxes(0, 1).reshape(train_x.shape[1], -1) / 255.0  # (C, N·H·W)
    return tuple(scaled.mean(1).tolist()), tuple(scaled.std(1, ddof=1).tolist())
