"""Load a data set by name or path: the built-in digits or an ImageFolder tree / archive (:func:`load_data`).

The one entry point above :mod:`edgecnn.data.sets` (in-memory sets, digits)
and :mod:`edgecnn.data.folder` (folders and archives, which build on sets).
"""

from __future__ import annotations

import os

from edgecnn.data.folder import load_image_folder
from edgecnn.data.sets import DIGITS, DataSet, load_digits

__all__ = ["load_data"]


def load_data(
    source: str | os.PathLike[str] = DIGITS,
    *,
    image_size: int | None = None,
    limit: int | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    cache: str | os.PathLike[str] | None = None,
    strict: bool = False,
    progress: bool = False,
) -> DataSet:
    """Load ``"digits"`` (the default) or an ImageFolder tree / archive such as CIFAR-10.

    Args:
        source: ``"digits"``, a folder, or a ``.tar[.gz|.xz|.bz2]`` / ``.zip`` archive
            holding ``train/<class>/*.jpg`` and ``test/<class>/*.jpg`` (or just
            ``<class>/*.jpg``, then split stratified by ``test_fraction``).
        image_size: side of the stored images; digits default to 32, folders keep the
            files' size (all must match) unless this is given, then they are resized.
        limit: at most this many images per class in each split (quick tests).
        test_fraction, seed: the stratified split where the source has no test split.
        cache: folder for decoded archives (default ``$EDGECNN_CACHE`` or ``~/.cache/edgecnn``).
        strict: stop at the first unreadable image instead of skipping it (with a count).
        progress: show a progress bar while decoding.
    """
    if str(source) == DIGITS:
        return load_digits(image_size=image_size or 32, test_fraction=test_fraction, seed=seed, limit=limit)
    return load_image_folder(
        source, image_size=image_size, limit=limit, test_fraction=test_fraction, seed=seed,
        cache=cache, strict=strict, progress=progress,
    )  # fmt: skip
