"""The one in-memory form every data set takes: uint8 images plus integer labels.

Images stay uint8 (N, C, H, W) so CIFAR-sized sets cost 3 KB an image; ``normalize`` turns a
batch into the float tensor models see, with the data set's own mean and std.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property

import torch


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled image classification data set with a train and a test split.

    ``fine_*`` hold sub-class labels where the data set has them (CIFAR-20's 100 fine classes);
    they are what ``subclass:<name>`` forget targets select by.
    """

    name: str
    train_x: torch.Tensor  # (N, C, H, W) uint8
    train_y: torch.Tensor  # (N,) int64
    test_x: torch.Tensor  # (M, C, H, W) uint8
    test_y: torch.Tensor  # (M,) int64
    classes: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, on the 0..1 scale
    std: tuple[float, ...]
    fine_train_y: torch.Tensor | None = None
    fine_test_y: torch.Tensor | None = None
    fine_classes: tuple[str, ...] | None = None
    # Dark background, bright strokes (MNIST-style digits): uploads with a light background are
    # inverted to match.
    dark_background: bool = False
    # Digit sets: the share of the frame a digit's ink fills. A forget image is then prepared the
    # way the set's own images were made (cropped to its ink, centred, scaled to that box, ink
    # stretched to full brightness) instead of shrinking the whole picture. None: resize as is.
    digit_box: float | None = field(default=None, compare=False)
    description: str = field(default="", compare=False)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])  # (C, H, W)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @cached_property
    def fingerprint(self) -> str:
        """A content hash of images, labels and class names: part of every cache key."""
        digest = hashlib.sha256()
        for tensor in (self.train_x, self.train_y, self.test_x, self.test_y):
            digest.update(tensor.contiguous().numpy().tobytes())
        digest.update(repr((self.name, self.classes, self.mean, self.std)).encode())
        return digest.hexdigest()[:16]

    def normalize(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) uint8 → float32, scaled to 0..1 and standardised per channel."""
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x_uint8.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=x_uint8.device).view(1, -1, 1, 1)
        return (x_uint8.to(torch.float32) / 255.0 - mean) / std


def stratified_split(labels: torch.Tensor, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic stratified split of indices 0..N-1 into (train, test), each sorted.

    Every class puts round(test_fraction · its size) samples (at least one where it has two or
    more) into test, chosen by a generator seeded with ``seed``.
    """
    gen = torch.Generator().manual_seed(seed)
    train_parts, test_parts = [], []
    for cls in torch.unique(labels).tolist():
        members = torch.nonzero(labels == cls).flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        n_test = int(round(test_fraction * len(members)))
        if len(members) >= 2:
            n_test = min(max(n_test, 1), len(members) - 1)
        else:
            n_test = 0
        test_parts.append(members[:n_test])
        train_parts.append(members[n_test:])
    return torch.cat(train_parts).sort().values, torch.cat(test_parts).sort().values
