"""Data sets held in memory as uint8 tensors, and a batched loader that augments on tensors.

The fast path for training small networks on a CPU (and for the thousands of
short fine-tunes NetAdapt and architecture search run) is to keep the whole
data set in memory as ``uint8`` ``N×C×H×W`` tensors and to augment whole
batches with tensor ops — no per-sample PIL work and no worker processes in
the hot loop.

- :mod:`edgecnn.data.sets` — :class:`DataSet` / :class:`ImageSplit` and the
  built-in default (scikit-learn's digits).
- :mod:`edgecnn.data.folder` — CIFAR-10 or any ImageFolder tree, from a folder
  or an archive, decoded once with Pillow into a cache file.
- :mod:`edgecnn.data.loader` — :class:`BatchLoader`: shuffling, random crop
  with padding and flip (He et al. 2016's CIFAR recipe), normalisation.
- :mod:`edgecnn.data.load` — :func:`load_data`: digits or a folder / archive by name.
"""

from edgecnn.data.folder import cache_dir, load_image_folder
from edgecnn.data.loader import Augment, BatchLoader, crop_flip
from edgecnn.data.load import load_data
from edgecnn.data.sets import DataSet, ImageSplit, load_digits

__all__ = [
    "Augment",
    "BatchLoader",
    "DataSet",
    "ImageSplit",
    "cache_dir",
    "crop_flip",
    "load_data",
    "load_digits",
    "load_image_folder",
]
