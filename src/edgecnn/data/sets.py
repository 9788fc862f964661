"""In-memory data sets: :class:`ImageSplit`, :class:`DataSet`, and the built-in digits.

A data set is two splits of ``uint8`` images (``N×C×H×W``) with ``int64``
labels, the class names, the per-channel mean and standard deviation of the
training pixels (for normalisation) and the augmentation that suits it. Every
field is a tensor, a number or a string, so a :class:`DataSet` pickles to a
worker process and holds no global state.

The built-in default is scikit-learn's copy of the UCI optical digits (Alpaydin
& Kaynak 1998; 1 797 8×8 grey images, 10 classes, no download): it is upsampled
once with bilinear interpolation to the network's input size and split
stratified with a fixed seed.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgecnn.limits import MAX_MEMORY_GB

DIGITS = "digits"
"""Name of the built-in data set (the default of ``--data``)."""


@dataclass(frozen=True)
class Augment:
    """Train-time augmentation applied to whole batches (see :func:`edgecnn.data.loader.crop_flip`).

    The default is the CIFAR recipe of He et al. 2016 ("Deep residual learning",
    §4.2): pad 4 pixels with zeros, take a random crop of the original size,
    flip horizontally with probability 0.5.
    """

    pad: int = 4  # zero padding on each side before the random crop; 0 = no crop
    flip: bool = True  # random horizontal flip with probability 1/2 (off for digits: a mirrored 2 is no 2)

    def __post_init__(self) -> None:
        if self.pad < 0:
            raise ValueError(f"augmentation pad must be >= 0, got {self.pad}")


@dataclass(frozen=True)
class ImageSplit:
    """One split of a data set, held in memory."""

    images: torch.Tensor  # uint8, N×C×H×W, contiguous
    labels: torch.Tensor  # int64, N, class indices into DataSet.classes
    paths: tuple[str, ...] = ()  # source file of each image (relative to the data root), empty for digits

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            shape = tuple(self.images.shape)
            raise ValueError(f"images must be a uint8 N×C×H×W tensor, got {self.images.dtype} {shape}")
        if self.labels.shape != (self.images.shape[0],):
            n = self.images.shape[0]
            raise ValueError(f"need one label per image: {tuple(self.labels.shape)} labels for {n} images")
        if self.paths and len(self.paths) != len(self.labels):
            raise ValueError(f"need one path per image: {len(self.paths)} paths for {len(self.labels)} images")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: torch.Tensor | np.ndarray | list[int]) -> ImageSplit:
        """The images at ``index`` (in that order)."""
        idx = torch.as_tensor(np.asarray(index), dtype=torch.long)
        paths = tuple(self.paths[i] for i in idx.tolist()) if self.paths else ()
        return ImageSplit(self.images[idx].contiguous(), self.labels[idx].clone(), paths)

    def per_class_limit(self, limit: int) -> ImageSplit:
        """At most ``limit`` images of each class, the first ones in the split's order."""
        keep = first_per_class(self.labels.numpy(), limit)
        return self if len(keep) == len(self) else self.subset(keep)


@dataclass(frozen=True)
class DataSet:
    """A classification data set: a train and a test split, class names and normalisation statistics."""

    name: str  # "digits" or the source path
    train: ImageSplit  # the split the network learns from
    test: ImageSplit  # the held-out split accuracy is reported on
    classes: tuple[str, ...]  # class names; label i is classes[i]
    mean: tuple[float, ...]  # per-channel mean of the training pixels, on the 0..1 scale
    std: tuple[float, ...]  # per-channel standard deviation of the training pixels, 0..1 scale
    augment: Augment = field(default_factory=Augment)  # the train-time augmentation that suits this data
    skipped: int = 0  # unreadable images skipped while decoding the source

    def __post_init__(self) -> None:
        for split in (self.train, self.test):
            if split.images.shape[1:] != self.train.images.shape[1:]:
                raise ValueError(
                    f"train and test images differ in shape: {tuple(self.train.images.shape[1:])} vs "
                    f"{tuple(split.images.shape[1:])}"
                )
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise ValueError(f"mean/std need {self.in_chans} channels, got {len(self.mean)}/{len(self.std)}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_chans(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> int:
        """Height of the stored images (they are square unless a folder held non-square images)."""
        return int(self.train.images.shape[2])

    def summary(self) -> str:
        c, h, w = self.train.images.shape[1:]
        skipped = f", {self.skipped} unreadable images skipped" if self.skipped else ""
        return (
            f"{self.name}: {len(self.train)} train / {len(self.test)} test images, "
            f"{c}×{h}×{w}, {self.num_classes} classes{skipped}"
        )


def first_per_class(labels: np.ndarray, limit: int) -> np.ndarray:
    """Indices of the first ``limit`` samples of each class, in their original order."""
    if limit < 1:
        raise ValueError(f"limit must be a positive number of images per class, got {limit}")
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    starts = np.searchsorted(sorted_labels, sorted_labels, side="left")
    rank = np.arange(len(labels)) - starts
    return np.sort(order[rank < limit])


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices, each class split ``round(test_fraction·n_c)`` to test (at least 1, not all).

    The class proportions hold in both parts; the choice within a class is a
    permutation drawn with ``seed``. Returns sorted index arrays.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 2:
            raise ValueError(f"class {c} has a single image; a train/test split needs at least 2 per class")
        k = min(max(int(round(test_fraction * len(idx))), 1), len(idx) - 1)
        test.append(rng.permutation(idx)[:k])
    test_idx = np.sort(np.concatenate(test))
    return np.setdiff1d(np.arange(len(labels)), test_idx), test_idx


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images, on the 0..1 scale (float64 sums)."""
    if len(images) == 0:
        raise ValueError("cannot compute normalisation statistics of an empty split")
    c = images.shape[1]
    s = torch.zeros(c, dtype=torch.float64)
    s2 = torch.zeros(c, dtype=torch.float64)
    for i in range(0, len(images), chunk):
        x = images[i : i + chunk].to(torch.float64).transpose(0, 1).reshape(c, -1)
        s += x.sum(1)
        s2 += (x * x).sum(1)
    n = images.numel() // c
    mean = s / n
    std = (s2 / n - mean * mean).clamp_min(0).sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant channel: leave it unscaled
    return tuple((mean / 255).tolist()), tuple((std / 255).tolist())


def make_dataset(
    name: str,
    train: ImageSplit,
    test: ImageSplit,
    classes: tuple[str, ...],
    *,
    augment: Augment,
    limit: int | None = None,
    skipped: int = 0,
) -> DataSet:
    """Assemble a :class:`DataSet`: apply the per-class ``limit``, compute the normalisation statistics."""
    if limit is not None:
        train, test = train.per_class_limit(limit), test.per_class_limit(limit)
    if len(train) == 0:
        raise ValueError(f"{name}: the train split has no images")
    if len(test) == 0:
        raise ValueError(f"{name}: the test split has no images")
    mean, std = channel_stats(train.images)
    return DataSet(name, train, test, tuple(classes), mean, std, augment, skipped)


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images 1797×8×8 in 0..16, labels) from the CSV scikit-learn ships, read the way its loader reads it.

    Importing ``sklearn.datasets`` costs seconds (it pulls in SciPy) in every
    process — DDP ranks and search workers included — so the file is found
    without importing scikit-learn, which is the fallback.
    """
    spec = importlib.util.find_spec("sklearn")
    for root in (spec.submodule_search_locations or []) if spec else []:
        csv = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if csv.is_file():
            data = np.loadtxt(csv, delimiter=",")
            return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    return d.images, d.target.astype(np.int64)


def load_digits(
    *, image_size: int = 32, test_fraction: float = 0.2, seed: int = 0, limit: int | None = None
) -> DataSet:
    """scikit-learn's 8×8 digits, upsampled to ``image_size`` (1 channel), split stratified with ``seed``.

    The 0..16 grey levels are scaled to 0..255 and resized once here with
    bilinear interpolation (``F.interpolate``), not in the training loop. The
    default augmentation is a random crop after padding by one original pixel
    (``image_size // 8``), without flips.
    """
    if image_size < 8:
        raise ValueError(f"digits are 8×8; image_size must be >= 8, got {image_size}")
    raw, target = _digits_arrays()
    # upsampled in float32, then stored as uint8: 5 bytes per pixel at once
    MAX_MEMORY_GB.check(len(raw) * image_size**2 * 5 / 1e9, f"digits at image_size {image_size}")
    x = torch.from_numpy(raw).float().mul_(255.0 / 16.0).unsqueeze(1)
    if image_size != 8:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = x.round_().clamp_(0, 255).to(torch.uint8).contiguous()
    labels = torch.from_numpy(target)
    train_idx, test_idx = stratified_split(target, test_fraction, seed)
    full = ImageSplit(images, labels)
    classes = tuple(str(c) for c in range(10))
    augment = Augment(pad=max(1, image_size // 8), flip=False)
    return make_dataset(DIGITS, full.subset(train_idx), full.subset(test_idx), classes, augment=augment, limit=limit)
