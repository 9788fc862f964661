"""The platform-aware objective: ``ACC(m)·[LAT(m)/TAR]^w`` (MnasNet), or a hard latency constraint.

MnasNet (Tan et al. 2019, §3, Eq. 2) maximises ``ACC(m)·[LAT(m)/TAR]^w`` with
``w = α`` where ``LAT ≤ TAR`` and ``β`` otherwise; with ``α = β = −0.07`` the
objective trades about 5% of latency for 0.35% of accuracy (a network twice as
fast may lose ~5% relative accuracy and score the same). MobileNetV3 (Howard
et al. 2019, §4.1) found that small models lose accuracy much faster with
latency and used ``w = −0.15``. With ``hard=True`` a network over the target is
infeasible (score −inf): the objective is then plain accuracy under
``LAT ≤ TAR`` (MnasNet's Eq. 1, the alternative it argues against).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

MNASNET_W = -0.07
"""MnasNet's soft-constraint exponent (α = β = −0.07)."""
SMALL_MODEL_W = -0.15
"""MobileNetV3's exponent for small models."""


@dataclass(frozen=True)
class Objective:
    """What a search maximises; ``score(acc, lat)`` of a candidate."""

    target_ms: float  # TAR: the latency target on the user's device
    w: float = MNASNET_W  # exponent of the latency ratio (< 0: slower networks score lower)
    hard: bool = False  # True: LAT ≤ TAR is a constraint and the score is the accuracy

    def __post_init__(self) -> None:
        if not (math.isfinite(self.target_ms) and self.target_ms > 0):
            raise ValueError(f"the latency target must be a positive number of ms, got {self.target_ms!r}")
        if not (math.isfinite(self.w) and self.w <= 0):
            raise ValueError(f"w must be <= 0 (e.g. -0.07 MnasNet, -0.15 small models), got {self.w!r}")

    def feasible(self, lat_ms: float) -> bool:
        """Whether a network of latency ``lat_ms`` may be returned (always, with the soft objective)."""
        return not self.hard or lat_ms <= self.target_ms

    def score(self, acc: float, lat_ms: float) -> float:
        """``acc·(lat/target)^w``, or ``acc`` under the hard constraint (−inf when it is violated)."""
        if not lat_ms > 0:
            raise ValueError(f"latency must be positive, got {lat_ms!r}")
        if self.hard:
            return acc if lat_ms <= self.target_ms else -math.inf
        return acc * (lat_ms / self.target_ms) ** self.w

    def describe(self) -> str:
        if self.hard:
            return f"max ACC s.t. LAT <= {self.target_ms:g} ms"
        return f"ACC·(LAT/{self.target_ms:g} ms)^{self.w:g}"

    def choose(self, measured: Sequence[tuple[float, float]]) -> Choice:
        """Which finalist to train, from ``(acc, measured_ms)`` in the search's order (best by the table first).

        The search ranks candidates by the table; the finalists are then measured end to end, and the measurement
        decides (MnasNet's reward is the latency measured on the device, Tan et al. 2019 §3). Soft objective: the
        highest score by the measured latency (the first on a tie). Hard constraint: the first finalist whose
        measured latency meets the target; when none does, the fastest as measured, with ``meets_target`` False —
        the constraint is not met, and the caller says so.
        """
        if not measured:
            raise ValueError("no finalists to choose from: measure at least one (finalists >= 1)")
        if not self.hard:
            scores = [self.score(acc, ms) for acc, ms in measured]
            best = max(range(len(scores)), key=lambda i: (scores[i], -i))
            why = "the highest objective by the measured latency" + (f" (#{best + 1} by the table)" if best else "")
            return Choice(best, None, why)
        fits = [i for i, (_, ms) in enumerate(measured) if ms <= self.target_ms]
        if fits:
            i = fits[0]
            above = f": the {i} ranked above it by the table measured over {self.target_ms:g} ms" if i else ""
            why = f"the best finalist within the target as measured{above}"
            return Choice(i, True, why)
        i = min(range(len(measured)), key=lambda k: (measured[k][1], k))
        over = 100 * (measured[i][1] / self.target_ms - 1)
        return Choice(i, False, f"no finalist meets the target as measured: the fastest, {measured[i][1]:.4g} ms, is "
                                f"{over:.1f}% over {self.target_ms:g} ms")


@dataclass(frozen=True)
class Choice:
    """The finalist :meth:`Objective.choose` picks, whether it meets a hard target as measured, and why."""

    index: int  # position among the finalists (0: the best by the table)
    meets_target: bool | None  # hard constraint: its measured latency is within the target; soft objective: None
    reason: str


def parse_target(text: str) -> float:
    """``"3ms"``, ``"3 ms"``, ``"0.5s"``, ``"800us"`` or a bare number of ms → milliseconds."""
    t = str(text).strip().lower().replace(" ", "")
    scale = 1.0
    for suffix, factor in (("ms", 1.0), ("us", 1e-3), ("µs", 1e-3), ("s", 1e3)):
        if t.endswith(suffix):
            t, scale = t[: -len(suffix)], factor
            break
    try:
        value = float(t) * scale
    except ValueError:
        raise ValueError(f"latency target {text!r} is not a duration; write e.g. 3ms, 0.8ms or 1200us") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"latency target must be positive, got {text!r}")
    return value


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points ``(acc, lat)`` that no other point beats in both (higher acc, lower lat), by latency."""
    order = sorted(range(len(points)), key=lambda i: (points[i][1], -points[i][0]))
    front, best = [], -math.inf
    for i in order:
        if points[i][0] > best:
            front.append(i)
            best = points[i][0]
    return front
