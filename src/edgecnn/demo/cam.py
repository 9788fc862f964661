"""The demo's CAM stage: where the network looks, on the first test image of each class."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from edgecnn.data import DataSet
from edgecnn.data.sets import first_per_class
from edgecnn.demo.config import DemoConfig
from edgecnn.explain.run import ExplainConfig, explain_images
from edgecnn.demo.stage_log import StageLog


def cam_stage(log: StageLog, cfg: DemoConfig, model: torch.nn.Module, data: DataSet, out: Path,
              which: str) -> dict[str, Any] | None:  # fmt: skip
    """Grad-CAM (or CAM) on the first test image of each class, overlays written under ``out/cam``."""
    cam = None
    if cfg.cam_images:
        with log.stage("cam", f"where {which} looks ({cfg.cam_method} on {cfg.cam_images} test images)") as info:
            labels = data.test.labels.numpy()
            pick = sorted(first_per_class(labels, 1), key=lambda i: labels[i])[: cfg.cam_images]  # class 0, 1, …
            explain = ExplainConfig(method=cfg.cam_method)  # type: ignore[arg-type]
            cam = explain_images(model, data.test.images[pick], mean=data.mean, std=data.std, out_dir=out,
                                 cfg=explain, labels=data.test.labels[pick], classes=data.classes,
                                 image_size=cfg.image_size)  # fmt: skip
            right = sum(r["label"] == r["predicted"] for r in cam["images"])
            info["note"] = f"{cam['method']} at {cam['layer']}, {right} of {len(pick)} right; overlays in {out / 'cam'}"
            log.console.print(info["note"])
    else:
        log.skip("cam", "where the network looks", "cam_images = 0")
    return cam
