"""PNG overlays of a class activation map on its image, drawn with Pillow (a core dependency).

The map (already upsampled to the image by :mod:`edgecnn.explain.interp`) is
coloured with matplotlib's *inferno* colour map (sampled at five anchors and
interpolated linearly, so matplotlib is not needed) and alpha-blended onto
the grey or colour image. Small images (digits are 32×32) are enlarged by an
integer ``zoom`` with nearest-neighbour so each pixel stays a visible square.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from edgecnn.atomic import atomic_write

__all__ = ["heat_colors", "overlay", "png_bytes", "save_png"]

# inferno at 0, 0.25, 0.5, 0.75, 1 (matplotlib's table): dark purple → red → yellow-white
_ANCHORS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_COLOURS = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float64)


def heat_colors(heat: torch.Tensor | np.ndarray) -> np.ndarray:
    """H×W values in [0, 1] (clipped) → H×W×3 uint8 RGB."""
    h = np.clip(np.asarray(heat, dtype=np.float64), 0.0, 1.0)
    rgb = np.stack([np.interp(h, _ANCHORS, _COLOURS[:, k]) for k in range(3)], axis=-1)
    return np.round(rgb).astype(np.uint8)


def _rgb(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """C×H×W uint8 (C = 1 or 3) → H×W×3 uint8."""
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[0] not in (1, 3) or a.dtype != np.uint8:
        raise ValueError(f"image must be a uint8 C×H×W array with 1 or 3 channels, got {a.dtype} {a.shape}")
    a = a.transpose(1, 2, 0)
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a


def overlay(image: torch.Tensor | np.ndarray, heat: torch.Tensor | np.ndarray | None, *, alpha: float = 0.5,
            zoom: int = 1) -> Image.Image:  # fmt: skip
    """The image with the heat map blended on top (``heat=None``: the image alone), enlarged ``zoom`` times."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if zoom < 1:
        raise ValueError(f"zoom must be a positive integer, got {zoom}")
    rgb = _rgb(image).astype(np.float64)
    if heat is not None:
        colours = heat_colors(heat).astype(np.float64)
        if colours.shape != rgb.shape:
            raise ValueError(f"heat map {colours.shape[:2]} and image {rgb.shape[:2]} differ in size; upsample the map")
        rgb = (1 - alpha) * rgb + alpha * colours
    out = Image.fromarray(np.round(rgb).astype(np.uint8), mode="RGB")
    return out.resize((out.width * zoom, out.height * zoom), Image.Resampling.NEAREST) if zoom > 1 else out


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def save_png(img: Image.Image, path: str | os.PathLike[str]) -> Path:
    """Write ``img`` as a PNG through the atomic writer."""
    data = png_bytes(img)
    return atomic_write(path, lambda f: f.write(data))
