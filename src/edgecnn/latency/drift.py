"""What a shared machine does to a timing, and how a measurement sees it (used by :mod:`edgecnn.latency.measure`).

* :class:`ForeignCpu`: the share of the CPUs other processes used during a measurement (Linux ``/proc/stat``);
* :func:`normalized_samples`: each run divided by the drift reference runs around it (docs/latency.md);
* :func:`local_drifts` and :func:`calm_samples`: how slow the machine ran around each run, and the runs kept when
  ``TimingConfig.max_drift`` drops those of a disturbed moment.
"""

from __future__ import annotations

import os
import time


class ForeignCpu:
    """Share of the machine's CPU time used by *other* processes during a ``with`` block (Linux).

    Busy jiffies of all CPUs (/proc/stat) minus this process's own user+system
    time, over wall time × CPUs. A latency measured while another process
    competes for the cores (here: parallel test runs on a 2-core VM) is not the
    device's latency, so :func:`time_fn` retries such measurements.
    """

    def __init__(self) -> None:
        self.share: float | None = None

    @staticmethod
    def _busy_s() -> float | None:
        try:
            with open("/proc/stat", encoding="ascii") as f:
                vals = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
        return (sum(vals[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own_s() -> float:
        t = os.times()
        return t.user + t.system

    def __enter__(self) -> ForeignCpu:
        self._b0, self._o0, self._w0 = self._busy_s(), self._own_s(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        busy = self._busy_s()
        wall = time.perf_counter() - self._w0
        if busy is None or self._b0 is None or wall < 0.05:  # jiffies are 10 ms: too short to judge
            return
        foreign = (busy - self._b0) - (self._own_s() - self._o0)
        self.share = min(max(foreign / (wall * (os.cpu_count() or 1)), 0.0), 1.0)


def normalized_samples(times_ms: list[float], ref_ms: list[float], baseline_ms: float) -> list[float]:
    """``times_ms[i] / mean(ref_ms[i], ref_ms[i+1]) × baseline_ms``: each run against the reference runs around it."""
    if len(ref_ms) != len(times_ms) + 1:
        raise ValueError(f"need one reference time around each run: {len(times_ms)} runs, {len(ref_ms)} references")
    return [t / ((a + b) / 2) * baseline_ms for t, a, b in zip(times_ms, ref_ms, ref_ms[1:])]


def local_drifts(ref_ms: list[float], baseline_ms: float) -> list[float]:
    """How slow the machine ran around each run: ``mean(ref_ms[i], ref_ms[i+1]) / baseline_ms``."""
    return [(a + b) / 2 / baseline_ms for a, b in zip(ref_ms, ref_ms[1:])]


def calm_samples(times_ms: list[float], ref_ms: list[float], baseline_ms: float, max_drift: float | None, *,
                 keep_at_least: int) -> tuple[list[float], list[int]]:  # fmt: skip
    """Normalised runs (:func:`normalized_samples`) and the indices kept: with ``max_drift``, only the runs whose
    references ran at most ``max_drift`` × their baseline, when at least ``keep_at_least`` did (else all).

    Normalisation divides a slowdown out only to first order (docs/latency.md: under a neighbour that slowed the
    reference 1.7×, networks came out up to 14% too fast), so the runs taken in a disturbed moment are dropped.
    """
    samples = normalized_samples(times_ms, ref_ms, baseline_ms)
    every = list(range(len(samples)))
    if max_drift is None:
        return samples, every
    kept = [i for i, d in enumerate(local_drifts(ref_ms, baseline_ms)) if d <= max_drift]
    if len(kept) < keep_at_least:
        return samples, every
    return [samples[i] for i in kept], kept
