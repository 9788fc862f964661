"""Explain a batch of images: CAM / Grad-CAM maps, PNG overlays and the ``cam`` section of a results document.

One code path for ``edgecnn explain`` and the demo's CAM stage. Images come
as stored ``uint8`` tensors (``N×C×H×W``) and are normalised by the same
:class:`~edgecnn.data.loader.BatchLoader` that trained the network, so the
network sees exactly what it saw in training. Each overlay PNG holds the
image and the map drawn on it side by side; the returned section (plain
JSON values) names the files relative to the run folder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from edgecnn.data import BatchLoader, ImageSplit
from edgecnn.explain.cam import Method, class_activation_map
from edgecnn.explain.interp import Convention, Grid, Mode
from edgecnn.explain.overlay import overlay, save_png

__all__ = ["BATCH", "ExplainConfig", "explain_images"]

BATCH = 64  # images per forward pass: a long --count explains in chunks (eval mode: images are independent)


@dataclass(frozen=True)
class ExplainConfig:
    """How the maps are computed and drawn."""

    method: Method = "cam"  # "cam" (GAP → linear heads) or "gradcam" (any head)
    interp: Mode = "bilinear"  # how the map is upsampled to the image
    convention: Convention = "half_pixel"  # image ↔ map coordinates (edgecnn.explain.interp)
    layer: str | None = None  # target module; None = the last spatial layer
    target: int | None = None  # class to explain; None = the predicted class
    alpha: float = 0.5  # opacity of the map over the image
    zoom: int = 4  # integer enlargement of the PNGs (digits are 32×32)


def explain_images(model: nn.Module, images: torch.Tensor, *, mean: Sequence[float], std: Sequence[float],
                   out_dir: str | os.PathLike[str], cfg: ExplainConfig = ExplainConfig(),
                   labels: torch.Tensor | None = None, classes: Sequence[str] = (), image_size: int | None = None,
                   names: Sequence[str] = (), subdir: str = "cam") -> dict[str, Any]:  # fmt: skip
    """Maps of ``images`` (uint8 N×C×H×W), overlays written to ``out_dir/subdir/<i>.png``; the ``cam`` section.

    The network sees :data:`BATCH` images per pass (eval mode: the maps do not
    depend on the batching), so a long ``--count`` needs no more memory than 64.
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or len(images) == 0:
        got = f"{images.dtype} {tuple(images.shape)}"
        raise ValueError(f"images must be a non-empty uint8 N×C×H×W tensor, got {got}")
    n = len(images)
    split = ImageSplit(images.contiguous(), labels if labels is not None else torch.zeros(n, dtype=torch.long))
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    loader = BatchLoader(split, batch_size=min(n, BATCH), mean=mean, std=std, image_size=image_size, device=device)
    out, rows = Path(out_dir), []

    def name(k: int) -> str:
        return str(classes[k]) if k < len(classes) else str(k)

    start = 0
    for x, _ in loader:  # in order (no shuffling): images start .. start + len(x)
        cam = class_activation_map(model, x, method=cfg.method, layer=cfg.layer, target=cfg.target)
        side = tuple(x.shape[-2:])
        heat = cam.upsampled(side, mode=cfg.interp, convention=cfg.convention)
        shown = images[start:start + len(x)]  # what the network saw, at its input size, for the overlay
        if tuple(shown.shape[-2:]) != side:
            shown = F.interpolate(shown.float(), size=side, mode="bilinear", align_corners=False, antialias=True)
            shown = shown.round().clamp(0, 255).to(torch.uint8)
        probs = cam.logits.softmax(1)
        grid = Grid(side, tuple(cam.maps.shape[-2:]), cfg.convention)  # type: ignore[arg-type]
        gap = np.full((side[0] * cfg.zoom, 4, 3), 255, np.uint8)  # white 4-pixel gap between image and overlay
        peaks = cam.peaks()
        for k in range(len(x)):
            i = start + k
            plain = np.asarray(overlay(shown[k], None, zoom=cfg.zoom))
            pair = np.concatenate([plain, gap, np.asarray(overlay(shown[k], heat[k], alpha=cfg.alpha, zoom=cfg.zoom))],
                                  1)  # fmt: skip
            rel = f"{subdir}/{i}.png"
            save_png(Image.fromarray(pair), out / rel)
            pred, c = int(cam.logits[k].argmax()), int(cam.classes[k])
            rows.append({
                "file": rel, "name": names[i] if i < len(names) else None,
                "label": name(int(labels[i])) if labels is not None else None,
                "predicted": name(pred), "probability": float(probs[k, pred]), "explained": name(c),
                "peak_cell": list(peaks[k]), "peak_pixel": [round(v, 3) for v in grid.to_image(*peaks[k])],
            })  # fmt: skip
        start += len(x)
    return {"method": cfg.method, "interp": cfg.interp, "convention": cfg.convention, "layer": cam.layer,
            "map_size": list(cam.maps.shape[-2:]), "image_size": list(side), "scale": list(grid.scale),
            "images": rows}  # fmt: skip
