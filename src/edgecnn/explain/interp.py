"""Coordinates between an image and an activation map, and interpolation of a map up to the image (docs/design.md §7).

A network's last spatial layer gives an ``h×w`` map over an ``H×W`` image, a
scale of ``S = H/h`` (per axis) image pixels per map cell. To draw a map over
the image (CAM, Grad-CAM) or to ask which cells a pixel reads, one needs a
*convention* for where a pixel and a cell sit. Two are in use:

``corner``
    A coordinate is measured from the top-left corner of the grid and a
    sample sits at its integer coordinate: ``x_map = x_img / S``. This is the
    convention of TensorFlow 1's ``resize_bilinear`` and of PyTorch's legacy
    ``mode="nearest"``. docs/design.md §7's example: a 32×32 image over a 10×10 map,
    ``S = 3.2``, pixel (4, 8) maps to (1.25, 2.5).
``half_pixel``
    A sample sits at the centre of its square, so the centres line up:
    ``x_map + ½ = (x_img + ½) / S``. This is PyTorch's ``align_corners=False``
    (and OpenCV's ``resize``); pixel (4, 8) of the example maps to
    (4.5/3.2 − ½, 8.5/3.2 − ½) = (0.90625, 2.15625).

**Bilinear** interpolation mixes the four cells around the map coordinate
``(y, x)``: with ``i = ⌊y⌋``, ``j = ⌊x⌋``, ``a = y − i``, ``b = x − j`` the
weights are ``(1−a)(1−b)``, ``(1−a)b``, ``a(1−b)``, ``ab`` for cells
``(i, j)``, ``(i, j+1)``, ``(i+1, j)``, ``(i+1, j+1)``. Coordinates outside the
grid are clamped to ``[0, n−1]`` (the border value is repeated), as PyTorch
does. **Nearest-neighbour** takes one cell: under ``corner`` the cell whose
square ``[i, i+1)`` holds the point, ``⌊y⌋`` (PyTorch ``mode="nearest"``);
under ``half_pixel`` the cell whose centre is nearest, ``⌊y + ½⌋`` of the
half-pixel coordinate, i.e. ``⌊(y_img + ½)/S⌋`` (PyTorch
``mode="nearest-exact"``).

:func:`upsample` implements both modes under both conventions with its own
index arithmetic; the tests hold it equal to ``F.interpolate`` where PyTorch has
the same rule (half-pixel bilinear = ``bilinear, align_corners=False``;
half-pixel nearest = ``nearest-exact``; corner nearest = ``nearest``) and to
``F.grid_sample`` for corner bilinear, which PyTorch's resize lacks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

Convention = Literal["corner", "half_pixel"]
Mode = Literal["bilinear", "nearest"]
CONVENTIONS: tuple[str, ...] = ("corner", "half_pixel")
MODES: tuple[str, ...] = ("bilinear", "nearest")

__all__ = ["CONVENTIONS", "MODES", "Convention", "Grid", "Mode", "upsample"]


def _check(convention: str, mode: str | None = None) -> None:
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown coordinate convention {convention!r}; use one of {', '.join(CONVENTIONS)}")
    if mode is not None and mode not in MODES:
        raise ValueError(f"unknown interpolation {mode!r}; use one of {', '.join(MODES)}")


def _pair(size: int | tuple[int, int], what: str) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 1 or w < 1:
        raise ValueError(f"{what} size must be positive, got {h}×{w}")
    return int(h), int(w)


@dataclass(frozen=True)
class Grid:
    """An ``image`` (H, W) of pixels over a ``map`` (h, w) of cells, under one coordinate ``convention``."""

    image: tuple[int, int]  # (H, W) image pixels
    map: tuple[int, int]  # (h, w) activation-map cells
    convention: Convention = "half_pixel"  # where pixels and cells sit (module docstring)

    def __post_init__(self) -> None:
        object.__setattr__(self, "image", _pair(self.image, "image"))
        object.__setattr__(self, "map", _pair(self.map, "map"))
        _check(self.convention)

    @property
    def scale(self) -> tuple[float, float]:
        """Image pixels per map cell along (y, x): ``S = H/h``, ``W/w``."""
        return self.image[0] / self.map[0], self.image[1] / self.map[1]

    def to_map(self, y: float, x: float) -> tuple[float, float]:
        """Map coordinates of image point (y, x) (not clamped)."""
        sy, sx = self.scale
        if self.convention == "corner":
            return y / sy, x / sx
        return (y + 0.5) / sy - 0.5, (x + 0.5) / sx - 0.5

    def to_image(self, y: float, x: float) -> tuple[float, float]:
        """Image coordinates of map point (y, x): the inverse of :meth:`to_map`."""
        sy, sx = self.scale
        if self.convention == "corner":
            return y * sy, x * sx
        return (y + 0.5) * sy - 0.5, (x + 0.5) * sx - 0.5

    def bilinear_weights(self, y: float, x: float) -> dict[tuple[int, int], float]:
        """The map cells that bilinear interpolation mixes for image point (y, x), and their weights (sum 1).

        Cells are ``(row, col)``; after clamping to the grid, cells that
        coincide have their weights added and cells of weight 0 are left out,
        so there are one to four entries.
        """
        (i0, i1, a), (j0, j1, b) = (_taps(c, n) for c, n in zip(self.to_map(y, x), self.map))
        out: dict[tuple[int, int], float] = {}
        for (i, wi) in ((i0, 1 - a), (i1, a)):
            for (j, wj) in ((j0, 1 - b), (j1, b)):
                if wi * wj:
                    out[(i, j)] = out.get((i, j), 0.0) + wi * wj
        return out

    def nearest_cell(self, y: float, x: float) -> tuple[int, int]:
        """The map cell nearest-neighbour interpolation reads for image point (y, x)."""
        my, mx = self.to_map(y, x)
        return _nearest(my, self.map[0], self.convention), _nearest(mx, self.map[1], self.convention)


def _taps(c: float, n: int) -> tuple[int, int, float]:
    """Lower and upper cell and the upper cell's weight for map coordinate ``c`` on ``n`` cells (clamped)."""
    c = min(max(c, 0.0), n - 1.0)
    lo = min(int(math.floor(c)), n - 1)
    return lo, min(lo + 1, n - 1), c - lo


def _nearest(c: float, n: int, convention: str) -> int:
    idx = math.floor(c) if convention == "corner" else math.floor(c + 0.5)
    return min(max(idx, 0), n - 1)


def _axis(out: int, n: int, convention: str, mode: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per output position along one axis: lower index, upper index, weight of the upper (float64 maths)."""
    s = out / n
    pos = torch.arange(out, dtype=torch.float64)
    c = pos / s if convention == "corner" else (pos + 0.5) / s - 0.5
    if mode == "nearest":
        idx = torch.floor(c) if convention == "corner" else torch.floor(c + 0.5)
        idx = idx.clamp(0, n - 1).long()
        return idx, idx, torch.zeros(out, dtype=torch.float64)
    c = c.clamp(0, n - 1)
    lo = torch.floor(c).long().clamp(max=n - 1)
    return lo, (lo + 1).clamp(max=n - 1), c - lo


def upsample(maps: torch.Tensor, size: int | tuple[int, int], *, mode: Mode = "bilinear",
             convention: Convention = "half_pixel") -> torch.Tensor:  # fmt: skip
    """Resize ``maps`` (``…×h×w``) to ``size`` (H, W) by ``mode`` under ``convention``; float in, float out.

    Separable: rows, then columns, each output value a mix of the taps of
    :meth:`Grid.bilinear_weights` (or the one cell of :meth:`Grid.nearest_cell`).
    """
    _check(convention, mode)
    if maps.dim() < 2:
        raise ValueError(f"need a map of at least 2 dimensions (…×h×w), got shape {tuple(maps.shape)}")
    H, W = _pair(size, "output")
    h, w = maps.shape[-2:]
    x = maps if maps.is_floating_point() else maps.float()
    i0, i1, a = _axis(H, h, convention, mode)
    j0, j1, b = _axis(W, w, convention, mode)
    a = a.to(x.dtype).view(-1, 1)
    b = b.to(x.dtype)
    rows = x[..., i0, :] * (1 - a) + x[..., i1, :] * a
    return rows[..., j0] * (1 - b) + rows[..., j1] * b
