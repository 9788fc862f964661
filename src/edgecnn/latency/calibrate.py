"""Calibration of the lookup-table sum against whole networks measured on this device.

A block timed alone is not the same block inside a network: its caches, the
dispatch around it and (ONNX Runtime) the fusions across its boundary differ,
and the difference is systematic (per device and backend), not noise. As
nn-Meter (Zhang et al. 2021) fits its kernel predictors on measured data
rather than trusting isolated sums, we fit a small correction on *calibration*
networks — drawn with a different seed from the networks the predictor is
validated on — and store it in the table:

``latency ≈ Σ_g s_g · (Σ entries of group g)``, two groups:

* ``body`` — the searchable blocks (inverted residuals and the like), whose
  sum varies from network to network;
* ``fixed`` — stem/head convs, pooling, classifier and the per-inference
  overhead, nearly the same in every network of a search space (so ``s_fixed``
  also absorbs a constant offset).

The scales minimise the squared *relative* error ``Σ_i (pred_i / meas_i − 1)²``
(weighted least squares), the quantity the predictor is judged by. Two
parameters cannot be tuned to a validation set; their fit error is stored.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from edgecnn.kinds import BLOCK_KINDS

GROUPS: tuple[str, ...] = ("body", "fixed")
FIXED_KINDS = frozenset({"overhead"} | {k.name for k in BLOCK_KINDS.values() if k.latency_group == "fixed"})
"""Block kinds (first field of a table key) of the ``fixed`` group (:attr:`BlockKind.latency_group`); the rest: body."""


def group_of(key: str) -> str:
    """``fixed`` or ``body`` for a table key (``ir|cin40|…`` → ``body``, ``overhead|…`` → ``fixed``)."""
    return "fixed" if key.split("|", 1)[0] in FIXED_KINDS else "body"


def group_sums(parts: Iterable[tuple[str, float]]) -> dict[str, float]:
    """Σ latency per group of ``(key, ms)`` pairs."""
    out = dict.fromkeys(GROUPS, 0.0)
    for key, ms in parts:
        out[group_of(key)] += ms
    return out


@dataclass(frozen=True)
class Calibration:
    """Per-group scales fitted on measured networks (see the module doc)."""

    scales: dict[str, float]  # group -> multiplier of that group's summed entries
    networks: int  # how many calibration networks the fit used
    fit_mape: float  # mean |relative error| on the calibration networks after the fit
    raw_mape: float  # the same before calibration (plain sums)
    info: dict[str, Any] = field(default_factory=dict)  # how the calibration networks were drawn (seed, size)

    def apply(self, sums: dict[str, float]) -> float:
        """Calibrated latency from per-group sums."""
        return sum(self.scales[g] * sums.get(g, 0.0) for g in GROUPS)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        scales = {g: float(data["scales"][g]) for g in GROUPS}
        info = dict(data.get("info", {}))
        return cls(scales, int(data["networks"]), float(data["fit_mape"]), float(data["raw_mape"]), info)


def fit(
    sums: Sequence[dict[str, float]], measured_ms: Sequence[float], *, info: dict[str, Any] | None = None
) -> Calibration:
    """Scales minimising ``Σ_i (Σ_g s_g x_ig / y_i − 1)²`` over networks ``i``.

    ``sums[i]`` are network ``i``'s per-group entry sums (:func:`group_sums`), ``measured_ms[i]`` its latency.
    """
    if len(sums) != len(measured_ms):
        raise ValueError(f"{len(sums)} predictions but {len(measured_ms)} measurements")
    if len(sums) < 2 * len(GROUPS):
        raise ValueError(f"calibration needs at least {2 * len(GROUPS)} measured networks, got {len(sums)}")
    if any(not y > 0 for y in measured_ms):
        raise ValueError("measured latencies must be positive")
    # rows x_i / y_i against a target of ones: least squares on relative error
    a = torch.tensor([[s.get(g, 0.0) / y for g in GROUPS] for s, y in zip(sums, measured_ms)], dtype=torch.float64)
    if torch.linalg.matrix_rank(a) < len(GROUPS):
        raise ValueError("calibration networks do not vary enough to separate the groups; sample more varied networks")
    coef = torch.linalg.lstsq(a, torch.ones(len(sums), 1, dtype=torch.float64)).solution.flatten().tolist()
    info = dict(info or {})
    if any(not v > 0 for v in coef):
        # a negative scale means the groups were not separable on these networks (too few, too alike):
        # fall back to one common scale, argmin_s Σ (s·r_i − 1)² = Σ r_i / Σ r_i² with r_i = Σ_g x_ig / y_i
        r = a.sum(dim=1)
        coef = [float(r.sum() / (r * r).sum())] * len(GROUPS)
        info["fallback"] = "one common scale (the per-group fit gave a non-positive scale)"
    scales = dict(zip(GROUPS, coef))
    cal = Calibration(scales, len(sums), 0.0, 0.0, info)
    fit_err = [cal.apply(s) / y - 1 for s, y in zip(sums, measured_ms)]
    raw_err = [sum(s.values()) / y - 1 for s, y in zip(sums, measured_ms)]
    fit_mape, raw_mape = statistics.fmean(map(abs, fit_err)), statistics.fmean(map(abs, raw_err))
    return Calibration(scales, len(sums), fit_mape, raw_mape, info)
