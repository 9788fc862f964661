"""The results document of a compression run (``kind: "compress"``), shared by every method and the benchmark.

A JSON object a generic report renderer can show without knowing the method:
the network before and after (top-1, measured latency, MACs, params, arch),
the budget, and a per-iteration ``history`` (NetAdapt) — schema in
``docs/compress.md``. :func:`model_stats` measures one network for it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import nn

from edgecnn.analysis.spec_cost import cost_from_spec
from edgecnn.atomic import atomic_write_text
from edgecnn.data import DataSet
from edgecnn.latency.measure import TimingConfig, measure
from edgecnn.train.evaluation import evaluate

KIND = "compress"
VERSION = 1
QUICK_TIMING = TimingConfig(warmup=5, min_repeats=10, max_repeats=200, max_seconds=3.0, retries=1, retry_wait_s=0.5)


@dataclass(frozen=True)
class ModelStats:
    """One network, as the closing table shows it."""

    arch: str | None
    top1: float  # test top-1
    latency_ms: float | None  # measured median, batch 1 (None: not measured)
    macs: int  # per image
    params: int


def model_stats(model: nn.Module, data: DataSet, *, backend: str = "eager", threads: int | None = None,
                timing: TimingConfig | None = QUICK_TIMING, measure_latency: bool = True) -> ModelStats:  # fmt: skip
    """Test top-1, measured latency (batch 1), MACs and params of an EdgeNet on ``data``."""
    arch = getattr(model, "arch", None)
    if not isinstance(arch, str):
        raise ValueError("model_stats needs an EdgeNet (its arch string gives MACs and params)")
    cost = cost_from_spec(arch, data.image_size, data.num_classes, data.in_chans)
    top1 = evaluate(model, data, channels_last=False).top1
    ms = None
    if measure_latency:
        shape = (1, data.in_chans, data.image_size, data.image_size)
        ms = measure(model.eval(), shape, backend=backend, threads=threads, config=timing).stats.median_ms
    return ModelStats(arch, top1, ms, cost.macs, cost.params)


def compress_document(method: str, budget: dict[str, Any], before: ModelStats, after: ModelStats, *,
                      met: bool, history: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:  # fmt: skip
    """The ``kind: "compress"`` JSON object (see docs/compress.md, "The results document")."""
    return {"kind": KIND, "version": VERSION, "method": method, "budget": budget, "met": met,
            "before": asdict(before), "after": asdict(after), "history": history or [], **extra}  # fmt: skip


def write_document(doc: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write the document atomically as indented JSON."""
    return atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
