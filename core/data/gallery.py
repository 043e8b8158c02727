"""The evidence people believe most: forget images with their top predictions, before and after."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.data.dataset import Dataset
from core.data.splits import ForgetSplit


@dataclass(frozen=True)
class GalleryItem:
    image: np.ndarray  # (H·s, W·s, C) uint8, upscaled for display
    name: str
    before: list[tuple[str, float]]  # top predictions: (class name, probability)
    after: list[tuple[str, float]]


def forget_images(dataset: Dataset, split: ForgetSplit) -> tuple[torch.Tensor, list[str]]:
    """The forget set's images (uint8 N×C×H×W) and names, in the order of EvalResult.forget_probs."""
    if split.forget_images is not None:
        return split.forget_images, list(split.forget_names)
    return dataset.train_x[split.forget_train], [f"train #{int(i)}" for i in split.forget_train]


def upscale(image_chw: torch.Tensor, target: int = 112) -> np.ndarray:
    """Nearest-neighbour upscale so 8×8 digits are visible; returns H×W×C uint8."""
    factor = max(1, target // max(image_chw.shape[1:]))
    hwc = image_chw.permute(1, 2, 0).numpy()
    hwc = np.repeat(np.repeat(hwc, factor, axis=0), factor, axis=1)
    return hwc[:, :, 0] if hwc.shape[2] == 1 else hwc


def top_k(probs: np.ndarray, classes: tuple[str, ...], k: int = 3) -> list[tuple[str, float]]:
    order = np.argsort(-probs)[:k]
    return [(classes[i], float(probs[i])) for i in order]


def gallery(dataset: Dataset, split: ForgetSplit, probs_before: np.ndarray, probs_after: np.ndarray,
            limit: int = 8) -> list[GalleryItem]:
    images, names = forget_images(dataset, split)
    return [GalleryItem(upscale(images[i]), names[i], top_k(probs_before[i], dataset.classes),
                        top_k(probs_after[i], dataset.classes)) for i in range(min(limit, len(images)))]


def prediction_shares(probs: np.ndarray, num_classes: int) -> np.ndarray:
    """Share (%) of the forget samples whose top prediction is each class."""
    if len(probs) == 0:
        return np.zeros(num_classes)
    return np.bincount(probs.argmax(1), minlength=num_classes) / len(probs) * 100.0
