"""Batches straight from in-memory tensors: no worker processes, no per-sample Python calls.

Any iterable of ``(x, y)`` batches works with ``compute_importance``; this is the one the engine
builds, because torch's DataLoader costs more than the small models' own compute here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from core.data.dataset import Dataset

NO_LABEL = -1  # label of an unlabelled forget image


@dataclass(frozen=True, eq=False)
class TensorLoader:
    """Ordered, unshuffled batches of ``dataset.normalize(x[indices])`` with their labels."""

    dataset: Dataset
    x: torch.Tensor  # (N, C, H, W) uint8
    y: torch.Tensor  # (N,) int64, NO_LABEL where unknown
    batch_size: int

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    def __len__(self) -> int:
        return (len(self.y) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(len(self)):
            yield self.batch(i)

    def batch(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``i`` (0-based): views of the stored tensors, normalised; nothing else is copied."""
        start = i * self.batch_size
        stop = start + self.batch_size
        return self.dataset.normalize(self.x[start:stop]), self.y[start:stop]

    def content_key(self) -> str:
        """A hash of the images, labels and batch size: what an importance over it depends on."""
        import hashlib

        digest = hashlib.sha256(str(self.batch_size).encode())
        digest.update(self.dataset.fingerprint.encode())
        digest.update(self.x.contiguous().numpy().tobytes())
        digest.update(self.y.contiguous().numpy().tobytes())
        return digest.hexdigest()[:24]

    @property
    def num_samples(self) -> int:
        return len(self.y)


def loader_from_indices(dataset: Dataset, split: str, indices: torch.Tensor, batch_size: int) -> TensorLoader:
    """A loader over ``dataset``'s ``split`` ("train" or "test") at ``indices``, in that order."""
    x, y = (dataset.train_x, dataset.train_y) if split == "train" else (dataset.test_x, dataset.test_y)
    return TensorLoader(dataset, x[indices], y[indices], batch_size)
