"""Batches from an in-memory :class:`ImageSplit`, augmented on tensors.

Per batch: gather the ``uint8`` images at the batch's indices, random crop
after zero padding and random horizontal flip in **one** gather (the CIFAR
recipe of He et al. 2016, §4.2), convert to float and normalise with the
training set's per-channel mean and standard deviation, and resize with
``F.interpolate`` when the network's input size differs from the stored size.

Randomness is a pure function of ``(seed, epoch, batch)``: the shuffle comes
from a generator seeded by ``(seed, epoch)`` and each batch's crops and flips
from one seeded by ``(seed, epoch, batch)``. So a run resumed in the middle of
an epoch sees exactly the batches an uninterrupted run sees, and the
``world_size`` ranks of a DDP run draw the same global batch and each take
their share of it — together the same samples, with the same augmentation,
as one process.

On CUDA the whole ``uint8`` split is moved to the device once (CIFAR-10's
50 000 training images are 150 MB), so augmentation runs there too.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from edgecnn.data.sets import Augment, ImageSplit

__all__ = ["Augment", "BatchLoader", "crop_flip", "mix_seed"]

_MASK64 = (1 << 64) - 1


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (splitmix64 finaliser), so nearby ``(seed, epoch, batch)`` give unrelated streams."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) & _MASK64)) * 0xBF58476D1CE4E5B9 & _MASK64
        h = (h ^ (h >> 27)) * 0x94D049BB133111EB & _MASK64
        h ^= h >> 31
    return h >> 1


def crop_flip(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor, pad: int) -> torch.Tensor:
    """Random crop after zero padding, and horizontal flip, of a batch, as one gather.

    Image ``i`` of the result is ``pad(x[i])[:, dy[i]:dy[i]+H, dx[i]:dx[i]+W]``,
    mirrored left-right where ``flip[i]``; ``dy, dx`` lie in ``[0, 2·pad]``.
    Works on any dtype (``uint8`` here, before the float conversion). The
    gather reads each padded image as one row of ``(H+2p)·(W+2p)`` pixels, so
    only a ``B×H×W`` index is built (4× fewer index elements, 5× faster on a
    CPU than indexing all four dimensions).
    """
    b, c, h, w = x.shape
    dev = x.device
    xp = F.pad(x, (pad, pad, pad, pad)) if pad else x
    wp = w + 2 * pad
    rows = dy.to(dev).view(b, 1) + torch.arange(h, device=dev).view(1, h)  # b×h
    cols = torch.arange(w, device=dev).view(1, w).expand(b, w)
    cols = torch.where(flip.to(dev).view(b, 1), w - 1 - cols, cols) + dx.to(dev).view(b, 1)  # b×w
    flat = (rows.view(b, h, 1) * wp + cols.view(b, 1, w)).view(b, 1, h * w).expand(b, c, h * w)
    return xp.reshape(b, c, -1).gather(2, flat).view(b, c, h, w)


class BatchLoader:
    """Iterate over an :class:`ImageSplit` in batches of normalised float tensors on ``device``.

    ``for x, y in loader.epoch(e)`` gives the batches of epoch ``e`` (``start``
    skips the first batches, for a resume). Train loaders shuffle, augment and
    drop the last partial batch; evaluation loaders keep the order and every
    image. With ``world_size > 1`` each rank gets its share of every global
    batch (``batch_size`` is the global batch).
    """

    def __init__(
        self,
        split: ImageSplit,
        *,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        train: bool = False,
        augment: Augment | None = None,
        image_size: int | None = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
        channels_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if train and batch_size % world_size:
            raise ValueError(f"batch size {batch_size} must be a multiple of the {world_size} processes; "
                             "change --batch-size")  # fmt: skip
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        if len(mean) != split.images.shape[1] or len(std) != split.images.shape[1]:
            raise ValueError(f"mean/std have {len(mean)}/{len(std)} channels, images {split.images.shape[1]}")
        self.device = torch.device(device)
        # on an accelerator the uint8 split lives there once; on the CPU this is no copy
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)
        self.batch_size = batch_size
        self.train = train
        self.augment = augment if train else None
        self.image_size = image_size
        self.seed = seed
        self.channels_last = channels_last
        self.rank, self.world_size = rank, world_size
        c = split.images.shape[1]
        # x_norm = (x/255 - mean)/std = (x - 255·mean) · 1/(255·std): one subtract, one multiply
        self._shift = torch.tensor([255.0 * m for m in mean], device=self.device).view(1, c, 1, 1)
        self._scale = torch.tensor([1.0 / (255.0 * s) for s in std], device=self.device).view(1, c, 1, 1)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    @property
    def num_images(self) -> int:
        """Images one epoch yields across all ranks."""
        return len(self) * self.batch_size if self.train else len(self.labels)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch(0)

    def epoch(self, epoch: int, *, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of ``epoch``, from batch ``start`` on."""
        n = len(self.labels)
        if self.train:
            g = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        for b in range(start, len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            dy = dx = flip = None
            aug = self.augment
            if aug is not None and (aug.pad or aug.flip):
                # drawn for the global batch, then shared out: DDP ranks see what one process sees
                g = torch.Generator().manual_seed(mix_seed(self.seed, epoch, b, 1))
                dy = torch.randint(0, 2 * aug.pad + 1, (len(idx),), generator=g)
                dx = torch.randint(0, 2 * aug.pad + 1, (len(idx),), generator=g)
                flip = torch.rand(len(idx), generator=g) < 0.5 if aug.flip else torch.zeros(len(idx), dtype=torch.bool)
            if self.world_size > 1:
                share = slice(self.rank, None, self.world_size)
                idx = idx[share]
                if dy is not None:
                    dy, dx, flip = dy[share], dx[share], flip[share]  # type: ignore[index]
            idx = idx.to(self.device)
            x = self.images.index_select(0, idx)  # 40× faster than images[idx] for uint8 on a CPU
            if dy is not None and aug is not None:
                x = crop_flip(x, dy, dx, flip, aug.pad)  # type: ignore[arg-type]
            yield self._finish(x), self.labels.index_select(0, idx)

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float() - self._shift) * self._scale
        size = self.image_size
        if size is not None and (x.shape[-2], x.shape[-1]) != (size, size):
            down = size < max(x.shape[-2], x.shape[-1])
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=down)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x
