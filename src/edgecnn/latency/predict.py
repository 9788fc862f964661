"""Predict a network's latency from its arch spec, without building it: Σ block entries + fixed overhead.

When the table holds a :class:`~edgecnn.latency.calibrate.Calibration`, the
total is the calibrated one (per-group scales of the sums); ``raw_ms`` keeps the
plain sum. Search and NetAdapt call this thousands of times, so it only resolves shapes
(:func:`edgecnn.plan.resolve`, pure arithmetic) and looks up strings; no
module is built and nothing is timed. How good the sum is on a given device is
measured, not assumed: see :func:`validate` and ``edgecnn latency validate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from edgecnn.arch import ArchSpec, as_spec
from edgecnn.latency.calibrate import group_sums
from edgecnn.latency.table import LatencyTable, block_key, overhead_key
from edgecnn.plan import resolve

STATS: tuple[str, ...] = ("median", "min")


@dataclass(frozen=True)
class Prediction:
    """A predicted latency and its parts (ms)."""

    total_ms: float  # the prediction: calibrated sum when the table has a calibration, else raw_ms
    overhead_ms: float  # the fixed per-inference part (probe network minus its blocks)
    blocks: tuple[tuple[str, float], ...]  # (block_key, latency) per block in network order
    stat: str  # which statistic of the entries was summed: "median" or "min"
    raw_ms: float  # overhead + Σ blocks, uncalibrated
    calibrated: bool  # whether total_ms went through the table's calibration

    def to_dict(self) -> dict[str, Any]:
        return {
            "total_ms": self.total_ms,
            "raw_ms": self.raw_ms,
            "calibrated": self.calibrated,
            "overhead_ms": self.overhead_ms,
            "stat": self.stat,
            "blocks": [{"key": k, "ms": v} for k, v in self.blocks],
        }


@lru_cache(maxsize=4096)
def _keys(spec: ArchSpec, size: tuple[int, int], batch: int, num_classes: int, in_chans: int) -> tuple[str, ...]:
    # cached: a search re-predicts the same candidates and NetAdapt the same layers many times
    plans = resolve(spec, num_classes=num_classes, in_chans=in_chans, input_size=size)
    return tuple(block_key(p, batch=batch) for p in plans)


def predict(
    table: LatencyTable,
    arch: str | ArchSpec,
    *,
    input_size: int | tuple[int, int],
    batch: int = 1,
    num_classes: int = 1000,
    in_chans: int = 3,
    stat: str = "median",
    calibrated: bool = True,
) -> Prediction:
    """Latency of ``arch`` predicted from ``table``; ValueError naming the blocks the table lacks.

    ``calibrated=False`` ignores the table's calibration (``total_ms == raw_ms``).
    """
    if stat not in STATS:
        raise ValueError(f"unknown statistic {stat!r}; valid: {', '.join(STATS)}")
    size = (input_size, input_size) if isinstance(input_size, int) else (int(input_size[0]), int(input_size[1]))
    spec = as_spec(arch)  # parse caches by string and by block
    keys = _keys(spec, size, int(batch), int(num_classes), int(in_chans))
    entries = table.entries
    okey = overhead_key(in_chans=in_chans, input_size=size, batch=batch, num_classes=num_classes)
    missing = [k for k in [okey, *keys] if k not in entries]
    if missing:
        raise ValueError(
            f"the latency table lacks {len(missing)} of {len(keys) + 1} entries for this network "
            f"(first: {missing[0]}); extend it with table.ensure([...]) or `edgecnn latency build-table`"
        )
    parts = [(k, entries[k].value(stat)) for k in keys]
    return combine(table, okey, entries[okey].value(stat), parts, stat=stat, calibrated=calibrated)


def combine(
    table: LatencyTable,
    okey: str,
    overhead: float,
    parts: Sequence[tuple[str, float]],
    *,
    stat: str = "median",
    calibrated: bool = True,
) -> Prediction:
    """The prediction from its parts: overhead + Σ blocks, through the table's calibration when it has one.

    Shared by :func:`predict` (table entries only) and :class:`~edgecnn.latency.model.LatencyModel`
    (entries, interpolated or measured).
    """
    parts = tuple(parts)
    raw = overhead + sum(v for _, v in parts)
    cal = table.calibration if calibrated else None
    total = raw if cal is None else cal.apply(group_sums(((okey, overhead), *parts)))
    if not total >= 0:  # entries are checked on load; a negative overhead entry can still outweigh the blocks
        raise ValueError(f"the latency table predicts {total:.3g} ms for this network (overhead entry {okey} is "
                         f"{overhead:.3g} ms); the table is damaged: rebuild it with `edgecnn latency build-table`")
    return Prediction(total, overhead, parts, stat, raw, cal is not None)
