"""Forget targets → the sets the method and the evaluation use: D (in the reference order), D_f,
D_r and the test-split counterparts.

Spec strings: ``class:<id or name>``, ``subclass:<fine class name or id>`` (CIFAR-20),
``random:<n>[:<seed>]`` and ``images:<file, folder or glob>`` or ``images:test:<class>`` (unlabelled;
the latter is a class's test images with the labels hidden from the method).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from core.data.dataset import Dataset
from core.errors import UserError
from core.data.loader import NO_LABEL, TensorLoader, loader_from_indices

TARGET_KINDS = ("class", "subclass", "random", "images")
# Batch sizes of the reference code: 64 for (sub-)class forgetting, 128 for random samples.
REFERENCE_BATCH_SIZE = {"class": 64, "subclass": 64, "random": 128, "images": 64}
D_ORDERS = ("reference", "class-sorted")


@dataclass(frozen=True)
class ForgetSpec:
    kind: str
    value: str

    @classmethod
    def parse(cls, text: str) -> "ForgetSpec":
        kind, sep, value = str(text).partition(":")
        kind = kind.strip().lower()
        if not sep or kind not in TARGET_KINDS or not value.strip():
            raise UserError(
                f"bad forget target '{text}'; use class:<id or name>, subclass:<fine class>, "
                "random:<n>[:<seed>], images:<file, folder or glob> or images:test:<class>")
        return cls(kind, value.strip())

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


@dataclass(frozen=True, eq=False)
class ForgetSplit:
    """Index sets into the data set's splits. ``forget_images`` holds unlabelled images when the
    target is ``images:``; then the forget set is not part of the train split we know of."""

    spec: ForgetSpec
    description: str
    retain_train: torch.Tensor  # train indices of D_r
    forget_train: torch.Tensor  # train indices of D_f (empty for images)
    retain_test: torch.Tensor  # test indices scored as "D_r" (the retained classes, or all)
    forget_test: torch.Tensor  # test indices scored as "D_f" (the forgotten (sub)class; else empty)
    forget_class: int | None = None
    forget_images: torch.Tensor | None = None  # (K, C, H, W) uint8, unlabelled
    forget_names: tuple[str, ...] = field(default=())
    # unlabelled targets: classes whose images the membership attack leaves out of both sides (the
    # classes the baseline assigns the forget images to; see ``attack_sets``)
    attack_excluded: tuple[int, ...] = ()

    @property
    def labelled(self) -> bool:
        return self.forget_images is None

    @property
    def reference_batch_size(self) -> int:
        return REFERENCE_BATCH_SIZE[self.spec.kind]

    @property
    def num_forget(self) -> int:
        return len(self.forget_images) if self.forget_images is not None else len(self.forget_train)

    def attack_sets(self, dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
        """(train indices of the attack's members, test indices of its non-members).

        Labelled targets: the papers' sets, D_r's training images against the whole test split.
        Unlabelled images: every training image against every test image, less the images of
        ``attack_excluded``. Left in, those classes are, after forgetting, equally uncertain as
        members and as non-members, the fit goes flat and its sign is noise (measured: 97.8 or 0.0
        by the training seed); left out, the fit has a slope on every seed.
        """
        if self.labelled:
            return self.retain_train, torch.arange(len(dataset.test_y))
        keep = lambda labels: ~torch.isin(labels, torch.tensor(self.attack_excluded, dtype=labels.dtype))  # noqa: E731
        return torch.nonzero(keep(dataset.train_y)).flatten(), torch.nonzero(keep(dataset.test_y)).flatten()

    def attack_description(self, dataset: Dataset) -> str:
        """Which images the membership attack was fitted on, in words."""
        if self.labelled:
            return "members: D_r's training images; non-members: the whole test split (the papers' sets)"
        if not self.attack_excluded:
            return "members: every training image; non-members: every test image"
        names = ", ".join(f"{c} ('{dataset.classes[c]}')" for c in self.attack_excluded)
        return (f"members: training images; non-members: test images; both without class {names}, "
                "which the baseline assigns the forget images to")

    def d_order(self, dataset: Dataset, order: str = "reference") -> torch.Tensor:
        """Train indices of D in the order importance is accumulated.

        ``reference``: D_r sorted by class (stable), then D_f appended, as the reference code
        does; it depends on the target. ``class-sorted``: every train sample sorted by class,
        independent of the target, so I_D can be computed once and reused for every target.
        """
        if order not in D_ORDERS:
            raise UserError(f"unknown D order '{order}'; choose one of: {', '.join(D_ORDERS)}")
        if order == "class-sorted" or not self.labelled:
            return _sorted_by_class(dataset.train_y, torch.arange(len(dataset.train_y)))
        return torch.cat([_sorted_by_class(dataset.train_y, self.retain_train), self.forget_train])

    def full_loader(self, dataset: Dataset, batch_size: int, order: str = "reference") -> TensorLoader:
        return loader_from_indices(dataset, "train", self.d_order(dataset, order), batch_size)

    def forget_loader(self, dataset: Dataset, batch_size: int) -> TensorLoader:
        if self.forget_images is not None:
            unlabelled = torch.full((len(self.forget_images),), NO_LABEL, dtype=torch.int64)
            return TensorLoader(dataset, self.forget_images, unlabelled, batch_size)
        return loader_from_indices(dataset, "train", self.forget_train, batch_size)


def _sorted_by_class(labels: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    order = torch.sort(labels[indices], stable=True).indices
    return indices[order]


def _resolve_name(value: str, names: tuple[str, ...], what: str, where: str) -> int:
    """A class given by name (case-insensitive) or by id."""
    lowered = [n.lower() for n in names]
    if value.lower() in lowered:
        return lowered.index(value.lower())
    try:
        idx = int(value)
    except ValueError:
        idx = None
    if idx is None or not 0 <= idx < len(names):
        shown = ", ".join(names[:12]) + (", …" if len(names) > 12 else "")
        raise UserError(f"{what} '{value}' does not exist in {where}; use an id 0–{len(names) - 1} or a name ({shown})")
    return idx


def make_split(dataset: Dataset, spec: ForgetSpec | str) -> ForgetSplit:
    """Resolve a forget target against a data set. Raises ``UserError`` with what is wrong."""
    spec = ForgetSpec.parse(spec) if isinstance(spec, str) else spec
    builders = {"class": _class_split, "subclass": _subclass_split, "random": _random_split, "images": _images_split}
    return builders[spec.kind](dataset, spec)


def _by_mask(mask_train: torch.Tensor, mask_test: torch.Tensor):
    nz = lambda m: torch.nonzero(m).flatten()  # noqa: E731
    return nz(~mask_train), nz(mask_train), nz(~mask_test), nz(mask_test)


def _class_split(dataset: Dataset, spec: ForgetSpec) -> ForgetSplit:
    cls = _resolve_name(spec.value, dataset.classes, "class", dataset.name)
    in_class = dataset.train_y == cls
    if not in_class.any():
        raise UserError(f"class {cls} ('{dataset.classes[cls]}') has no training images in {dataset.name}")
    parts = _by_mask(in_class, dataset.test_y == cls)
    return ForgetSplit(spec, f"class {cls} ('{dataset.classes[cls]}')", *parts, forget_class=cls)


def _subclass_split(dataset: Dataset, spec: ForgetSpec) -> ForgetSplit:
    if dataset.fine_classes is None:
        raise UserError(f"{dataset.name} has no sub-classes; sub-class targets need cifar20")
    fine = _resolve_name(spec.value, dataset.fine_classes, "sub-class", dataset.name)
    mask_train, mask_test = dataset.fine_train_y == fine, dataset.fine_test_y == fine
    if not mask_train.any():
        raise UserError(f"sub-class '{dataset.fine_classes[fine]}' has no training images")
    superclass = int(dataset.train_y[mask_train][0])
    desc = f"sub-class '{dataset.fine_classes[fine]}' of '{dataset.classes[superclass]}'"
    return ForgetSplit(spec, desc, *_by_mask(mask_train, mask_test), forget_class=superclass)


def _random_split(dataset: Dataset, spec: ForgetSpec) -> ForgetSplit:
    count, _, seed = spec.value.partition(":")
    try:
        n, seed_value = int(count), int(seed or 0)
    except ValueError:
        raise UserError(f"bad random target '{spec}'; use random:<n>[:<seed>] with whole numbers") from None
    n_train = len(dataset.train_y)
    if not 1 <= n < n_train:
        raise UserError(f"random:{n} must pick between 1 and {n_train - 1} of {dataset.name}'s {n_train} training images")
    gen = torch.Generator().manual_seed(seed_value)
    mask = torch.zeros(n_train, dtype=torch.bool)
    mask[torch.randperm(n_train, generator=gen)[:n]] = True
    every_test = torch.arange(len(dataset.test_y))
    return ForgetSplit(spec, f"{n} random training images (seed {seed_value})",
                       torch.nonzero(~mask).flatten(), torch.nonzero(mask).flatten(),
                       every_test, every_test[:0])


def _images_split(dataset: Dataset, spec: ForgetSpec) -> ForgetSplit:
    from core.data.images import load_images

    if spec.value.startswith(TEST_IMAGES_PREFIX):
        images, names = _test_images_of_class(dataset, spec.value.removeprefix(TEST_IMAGES_PREFIX))
    else:
        images, names = load_images(spec.value, dataset.image_shape, dataset.dark_background,
                                    digit_box=dataset.digit_box)
    return images_split(dataset, images, names, spec)


TEST_IMAGES_PREFIX = "test:"  # images:test:<class>: one class's test images, labels hidden from the method


def _test_images_of_class(dataset: Dataset, value: str) -> tuple[torch.Tensor, list[str]]:
    """A class's test images as an unlabelled target (the method never sees their label)."""
    cls = _resolve_name(value, dataset.classes, "class", dataset.name)
    mask = dataset.test_y == cls
    if not mask.any():
        raise UserError(f"class {cls} ('{dataset.classes[cls]}') has no test images in {dataset.name}")
    return dataset.test_x[mask], [f"test #{int(i)}" for i in torch.nonzero(mask).flatten()]


def with_attack_exclusion(split: ForgetSplit, baseline_predictions: torch.Tensor) -> ForgetSplit:
    """An unlabelled split whose attack leaves out the classes the baseline predicts for at least a
    tenth of the forget images (no label is read: only the model's outputs)."""
    if split.labelled or len(baseline_predictions) == 0:
        return split
    counts = torch.bincount(baseline_predictions)
    excluded = tuple(int(c) for c in torch.nonzero(counts * 10 >= len(baseline_predictions)).flatten())
    return replace(split, attack_excluded=excluded)


def images_split(dataset: Dataset, images: torch.Tensor, names, spec: ForgetSpec | None = None) -> ForgetSplit:
    """A label-free target from images already in the data set's format (uploads, gallery picks)."""
    if len(images) == 0:
        raise UserError("the forget set is empty: give at least one image")
    spec = spec or ForgetSpec("images", f"{len(images)} uploaded")
    every_train, every_test = torch.arange(len(dataset.train_y)), torch.arange(len(dataset.test_y))
    return ForgetSplit(spec, f"{len(images)} unlabelled image(s)", every_train, every_train[:0],
                       every_test, every_test[:0], forget_images=images, forget_names=tuple(names))
