"""How good is the lookup-table predictor on this device? Sample networks, measure them, compare.

nn-Meter (Zhang et al. 2021) reports the share of networks predicted within
±10% of their measured latency (99.0% on a mobile CPU) and the mean absolute
percentage error; we report the same two numbers, on networks drawn from the
search space the predictor will be used on.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgecnn.build import build
from edgecnn.latency.measure import measure
from edgecnn.latency.predict import predict
from edgecnn.latency.table import LatencyTable
from edgecnn.search.space import MOBILENET_V3_SPACE, SearchSpace


@dataclass(frozen=True)
class ValidationRow:
    """One sampled network: predicted against measured latency."""

    arch: str  # canonical arch string
    predicted_ms: float  # table prediction (median entries)
    measured_ms: float  # end-to-end median
    measured_iqr_ms: float  # spread of the end-to-end runs
    predicted_min_ms: float  # table prediction from the entries' minima
    measured_min_ms: float  # fastest end-to-end run
    foreign_cpu: float | None  # share of CPUs other processes used while measuring

    @property
    def error(self) -> float:
        """Relative error of the median prediction, ``pred/meas − 1``."""
        return self.predicted_ms / self.measured_ms - 1.0

    @property
    def error_min(self) -> float:
        return self.predicted_min_ms / self.measured_min_ms - 1.0


def _summary(errors: list[float], tol: float) -> dict[str, float]:
    if not errors:
        return {"mape": float("nan"), "within": float("nan"), "median_error": float("nan"), "max_abs_error": float("nan")}
    return {
        "mape": statistics.fmean(abs(e) for e in errors),
        "within": sum(abs(e) <= tol for e in errors) / len(errors),
        "median_error": statistics.median(errors),
        "max_abs_error": max(abs(e) for e in errors),
    }


@dataclass(frozen=True)
class ValidationReport:
    """Error distribution of the predictor over sampled networks."""

    rows: tuple[ValidationRow, ...]  # one per measured network
    tolerance: float  # the ±share counted as "within" (0.10)
    input_size: int  # resolution the networks ran at
    seed: int  # sampling seed

    @property
    def errors(self) -> list[float]:
        return [r.error for r in self.rows]

    @property
    def mape(self) -> float:
        """Mean absolute percentage error (as a share: 0.05 = 5%)."""
        return _summary(self.errors, self.tolerance)["mape"]

    @property
    def within(self) -> float:
        """Share of networks predicted within ±tolerance."""
        return _summary(self.errors, self.tolerance)["within"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": len(self.rows),
            "tolerance": self.tolerance,
            "input_size": self.input_size,
            "seed": self.seed,
            "median": _summary(self.errors, self.tolerance),
            "min": _summary([r.error_min for r in self.rows], self.tolerance),
            "rows": [
                {
                    "arch": r.arch, "predicted_ms": r.predicted_ms, "measured_ms": r.measured_ms,
                    "measured_iqr_ms": r.measured_iqr_ms, "error": r.error, "predicted_min_ms": r.predicted_min_ms,
                    "measured_min_ms": r.measured_min_ms, "error_min": r.error_min, "foreign_cpu": r.foreign_cpu,
                }  # fmt: skip
                for r in self.rows
            ],
        }


def sample_archs(n: int, *, seed: int = 0, space: SearchSpace = MOBILENET_V3_SPACE) -> list[str]:
    """``n`` canonical arch strings drawn from ``space`` with ``random.Random(seed)``."""
    if n < 1:
        raise ValueError(f"number of networks must be positive, got {n}")
    rng = random.Random(seed)
    return [space.sample(rng).format() for _ in range(n)]


def validate(
    table: LatencyTable,
    archs: list[str],
    *,
    input_size: int,
    num_classes: int = 1000,
    time_cap_s: float | None = None,
    tolerance: float = 0.10,
    seed: int = 0,
    table_path: str | None = None,
    on_stage: Callable[[str, int, int], None] | None = None,
) -> ValidationReport:
    """Fill ``table`` for ``archs``, then measure each end to end and compare with its prediction.

    ``time_cap_s`` stops measuring new networks once exceeded (the report says how
    many were measured). ``on_stage(stage, done, total)`` reports progress of the
    ``"table"`` and ``"measure"`` stages.
    """
    fp = table.fingerprint
    table.ensure(
        archs, input_size=input_size, num_classes=num_classes, path=table_path,
        on_progress=(lambda d, t: on_stage("table", d, t)) if on_stage else None,
    )  # fmt: skip
    rows = []
    start = time.monotonic()
    for i, arch in enumerate(archs):
        if time_cap_s is not None and time.monotonic() - start > time_cap_s:
            break
        pred = predict(table, arch, input_size=input_size, num_classes=num_classes)
        pred_min = predict(table, arch, input_size=input_size, num_classes=num_classes, stat="min")
        net = build(arch, num_classes=num_classes)
        m = measure(
            net, (1, 3, input_size, input_size), backend=fp.backend, threads=fp.threads, device=fp.device,
            config=table.config,
        ).stats  # fmt: skip
        rows.append(
            ValidationRow(arch, pred.total_ms, m.median_ms, m.iqr_ms, pred_min.total_ms, m.min_ms, m.foreign_cpu)
        )
        if on_stage:
            on_stage("measure", i + 1, len(archs))
    return ValidationReport(tuple(rows), tolerance, input_size, seed)
