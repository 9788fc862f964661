"""Timing primitives: warm-up, repeat until the median is stable, report the spread.

One timing loop (:func:`time_fn`) serves every target: a target only supplies
a callable that runs one synchronous inference (:mod:`edgecnn.latency.targets`).
We report the median — robust to the scheduler hiccups that dominate the mean
on a shared CPU — with the interquartile range and the minimum. What was
measured is recorded by :mod:`edgecnn.latency.measure` (its
:class:`~edgecnn.latency.measurement.Measurement`), which dispatches to a
target on this machine or to a device's agent.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

from edgecnn.latency.drift import ForeignCpu, calm_samples, local_drifts


@dataclass(frozen=True)
class TimingConfig:
    """How long to time: warm-up, then rounds until the median settles (or a cap)."""

    warmup: int = 10  # untimed runs first (allocator, caches, lazy init, CPU frequency)
    min_repeats: int = 20  # never stop with fewer timed runs
    max_repeats: int = 500  # hard cap on timed runs
    round_size: int = 10  # runs between two checks of the median
    rel_tol: float = 0.01  # stable when the median moves by less than this share between checks
    max_seconds: float = 10.0  # wall-clock cap on the timed part
    max_foreign: float | None = 0.2  # retry when other processes used more than this share of the CPUs (Linux)
    max_drift: float | None = None  # with a reference: drop runs, then retry, where it ran > this × its baseline
    retries: int = 3  # how many times to retry a disturbed measurement (then keep the least disturbed one)
    retry_wait_s: float = 2.0  # pause before a retry, to let the other load pass
    clock: str = "wall"  # "wall": elapsed time; "cpu": the calling thread's CPU time (1 CPU thread only, see CLOCKS)

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.min_repeats < 1 or self.round_size < 1:
            raise ValueError("warmup must be >= 0, min_repeats and round_size >= 1")
        if self.max_repeats < self.min_repeats:
            raise ValueError(f"max_repeats ({self.max_repeats}) must be >= min_repeats ({self.min_repeats})")
        if not (self.rel_tol > 0 and self.max_seconds > 0):
            raise ValueError("rel_tol and max_seconds must be positive")
        if self.retries < 0 or self.retry_wait_s < 0:
            raise ValueError("retries and retry_wait_s must be >= 0")
        if self.max_drift is not None and not self.max_drift >= 1.0:
            raise ValueError(f"max_drift is a slowdown (>= 1.0, e.g. 1.3) or None, got {self.max_drift!r}")
        if self.clock not in CLOCKS:
            raise ValueError(f"unknown clock {self.clock!r}; valid: {', '.join(CLOCKS)}")


CLOCKS: tuple[str, ...] = ("wall", "cpu")
"""What a timed run reads. ``wall``: elapsed time (``time.perf_counter``). ``cpu``: the CPU time of the
calling thread (``time.thread_time``, the scheduler's per-thread account): with one CPU thread (PyTorch and ONNX
Runtime then run every kernel on the calling thread) this is the inference's latency without the slices the OS
gave to other processes, which a shared machine's wall clock is full of. It misses the work of other threads and
the wait for a GPU, so it is refused with more than one thread or on CUDA (:func:`check_clock`)."""


def clock_of(config: TimingConfig) -> Callable[[], float]:
    """The clock (seconds) that ``config.clock`` names."""
    return time.thread_time if config.clock == "cpu" else time.perf_counter


def check_clock(config: TimingConfig | None, *, threads: int, device: str) -> None:
    """ValueError unless ``config``'s clock can time ``threads`` threads on ``device`` (see :data:`CLOCKS`)."""
    if config is not None and config.clock == "cpu" and (threads != 1 or not device.startswith("cpu")):
        raise ValueError(
            f"the 'cpu' clock times one CPU thread; got {threads} thread(s) on {device!r}: "
            "use threads=1 on the CPU, or clock='wall'"
        )


def timed_ms(fn: Callable[[], object], clock: Callable[[], float]) -> float:
    """Milliseconds ``clock`` advances during one call of ``fn``."""
    t0 = clock()
    fn()
    return (clock() - t0) * 1e3


@dataclass(frozen=True)
class LatencyStats:
    """Summary of timed runs, in milliseconds."""

    median_ms: float  # median of the timed runs: the number to quote
    q1_ms: float  # first quartile
    q3_ms: float  # third quartile
    min_ms: float  # fastest run (a lower bound, what the hardware can do without interference)
    mean_ms: float  # arithmetic mean (sensitive to outliers; for reference)
    repeats: int  # number of timed runs
    stable: bool  # True if the median settled within rel_tol before a cap stopped the loop
    foreign_cpu: float | None = None  # share of all CPUs other processes used meanwhile (None: unknown)
    drift: float | None = None  # reference-normalised runs: median reference time / its baseline (1.0 = nominal speed)
    raw_median_ms: float | None = None  # reference-normalised runs: median of the unnormalised times

    @property
    def iqr_ms(self) -> float:
        """Interquartile range ``q3 − q1``."""
        return self.q3_ms - self.q1_ms

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "iqr_ms": self.iqr_ms}


def merge_passes(passes: Sequence[LatencyStats]) -> LatencyStats:
    """One measurement from several passes over the same prepared model, taken apart in time.

    The median over passes of each pass's median and quartiles (and mean, drift, raw median), the fastest run of
    all, the runs summed, the largest foreign-CPU share, stable only if every pass was: a slow moment of the
    machine that covers one pass of three leaves the median between the other two, where a single pass would
    carry it whole (the rule :func:`edgecnn.latency.table.merge_sweeps` applies to table entries).
    """
    if not passes:
        raise ValueError("no passes to merge")

    def mid(values: list[float | None]) -> float | None:
        got = [v for v in values if v is not None]
        return statistics.median(got) if got else None

    foreign = [p.foreign_cpu for p in passes if p.foreign_cpu is not None]
    return LatencyStats(
        median_ms=statistics.median(p.median_ms for p in passes), q1_ms=statistics.median(p.q1_ms for p in passes),
        q3_ms=statistics.median(p.q3_ms for p in passes), min_ms=min(p.min_ms for p in passes),
        mean_ms=statistics.median(p.mean_ms for p in passes), repeats=sum(p.repeats for p in passes),
        stable=all(p.stable for p in passes), foreign_cpu=max(foreign) if foreign else None,
        drift=mid([p.drift for p in passes]), raw_median_ms=mid([p.raw_median_ms for p in passes]),
    )  # fmt: skip


def summarize(
    samples_ms: list[float],
    *,
    stable: bool = True,
    foreign_cpu: float | None = None,
    drift: float | None = None,
    raw_median_ms: float | None = None,
) -> LatencyStats:
    """Median, quartiles (inclusive method), min and mean of ``samples_ms``."""
    if not samples_ms:
        raise ValueError("no timing samples to summarize")
    if len(samples_ms) == 1:
        q1 = q3 = samples_ms[0]
    else:
        q1, _, q3 = statistics.quantiles(samples_ms, n=4, method="inclusive")
    return LatencyStats(
        median_ms=statistics.median(samples_ms),
        q1_ms=q1,
        q3_ms=q3,
        min_ms=min(samples_ms),
        mean_ms=statistics.fmean(samples_ms),
        repeats=len(samples_ms),
        stable=stable,
        foreign_cpu=foreign_cpu,
        drift=drift,
        raw_median_ms=raw_median_ms,
    )


@dataclass(frozen=True)
class Reference:
    """A fixed workload timed between the runs of the measured one, to cancel the machine's drift.

    On a shared or virtualised CPU the speed of the same code moves by tens of
    percent within seconds (host contention, frequency, a neighbour on the
    other core). A run of the measured function timed between two runs of a
    fixed reference sees almost the same machine as they do, so the ratio
    ``t / mean(t_ref before, t_ref after)`` is far steadier than ``t``; times
    ``baseline_ms`` it is the latency at the reference's nominal speed.
    """

    fn: Callable[[], object]  # one run of the reference workload (same backend and threads as the measured one)
    baseline_ms: float  # the reference's latency at nominal speed (the unit the ratios are converted back to)

    def __post_init__(self) -> None:
        if not self.baseline_ms > 0:
            raise ValueError(f"reference baseline must be positive, got {self.baseline_ms}")


def time_fn(
    fn: Callable[[], object],
    config: TimingConfig | None = None,
    *,
    reference: Reference | None = None,
    setup: Callable[[], object] | None = None,
) -> LatencyStats:
    """Time ``fn`` (one synchronous inference per call): warm-up, then rounds until the median is stable.

    ``fn`` must block until its work is done (CUDA callers synchronise inside it).
    With ``reference``, every sample is ``t / mean(reference before, after) × baseline``
    (see :class:`Reference`) and ``drift`` says how slow the machine ran meanwhile.
    ``setup`` runs untimed right before each timed call (e.g. to touch the input).
    If other processes took more than ``config.max_foreign`` of the CPUs meanwhile,
    or the reference ran more than ``config.max_drift`` times slower than its
    baseline, wait and measure again (up to ``config.retries`` times).
    """
    cfg = config or TimingConfig()
    return retry_disturbed(lambda: _time_once(fn, cfg, reference, setup), cfg)


def retry_disturbed(measure_once: Callable[[], LatencyStats], config: TimingConfig) -> LatencyStats:
    """``measure_once()`` with ``foreign_cpu`` filled in; measured again (after a pause) while disturbed.

    Disturbed: other processes used more than ``config.max_foreign`` of the CPUs
    meanwhile, or (reference-normalised runs) the reference ran more than
    ``config.max_drift`` times slower than its baseline even over the runs kept
    (:func:`calm_samples` drops the runs of a disturbed moment first) — normalisation divides
    a slowdown out only to first order: under a neighbour that slowed the
    reference 1.7×, ONNX Runtime networks came out up to 14% too fast
    (docs/latency.md). After ``config.retries`` retries the least disturbed
    attempt is kept (lowest drift, then lowest foreign share).
    """
    attempts: list[LatencyStats] = []
    for attempt in range(config.retries + 1):
        with ForeignCpu() as foreign:
            stats = measure_once()
        stats = replace(stats, foreign_cpu=foreign.share)
        attempts.append(stats)
        if not any(disturbance(stats, config)) or attempt == config.retries:
            break
        time.sleep(config.retry_wait_s)
    return min(attempts, key=lambda s: disturbance(s, config))


def disturbance(stats: LatencyStats, config: TimingConfig) -> tuple[float, float]:
    """How far ``stats`` exceeds the config's limits: (drift over ``max_drift``, foreign share over ``max_foreign``).

    ``(0, 0)``: not disturbed. Compared as a tuple, it orders attempts from the least disturbed.
    """
    drift = 0.0
    if config.max_drift is not None and stats.drift is not None:
        drift = max(0.0, stats.drift - config.max_drift)
    foreign = 0.0
    if config.max_foreign is not None and stats.foreign_cpu is not None:
        foreign = max(0.0, stats.foreign_cpu - config.max_foreign)
    return drift, foreign


def _time_once(
    fn: Callable[[], object], cfg: TimingConfig, reference: Reference | None, setup: Callable[[], object] | None
) -> LatencyStats:
    clock = clock_of(cfg)

    def timed(f: Callable[[], object]) -> float:
        return timed_ms(f, clock)

    for _ in range(cfg.warmup):
        if reference is not None:
            reference.fn()
        fn()
    raw: list[float] = []
    refs: list[float] = [timed(reference.fn)] if reference is not None else []
    samples = raw
    previous: float | None = None
    start = time.perf_counter()  # the cap is on elapsed time, whatever the runs are timed with
    while True:
        for _ in range(cfg.round_size):
            if setup is not None:
                setup()
            raw.append(timed(fn))
            if reference is not None:
                refs.append(timed(reference.fn))
        if reference is not None:
            samples, kept = calm_samples(raw, refs, reference.baseline_ms, cfg.max_drift, keep_at_least=cfg.min_repeats)
        stop = len(samples) >= cfg.max_repeats or time.perf_counter() - start > cfg.max_seconds
        stable = False
        if len(samples) >= cfg.min_repeats:
            median = statistics.median(samples)
            stable = previous is not None and abs(median - previous) <= cfg.rel_tol * previous
            previous = median
        if stable or stop:
            if reference is None:
                return summarize(samples, stable=stable)
            if len(kept) == len(raw):  # every run kept: the drift of the whole measurement, as without max_drift
                drift, raw_median = statistics.median(refs) / reference.baseline_ms, statistics.median(raw)
            else:  # over the calm runs only
                local = local_drifts(refs, reference.baseline_ms)
                drift, raw_median = statistics.median(local[i] for i in kept), statistics.median(raw[i] for i in kept)
            return summarize(samples, stable=stable, drift=drift, raw_median_ms=raw_median)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run with ``torch.set_num_threads(threads)`` and restore the previous count afterwards."""
    old = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be a positive integer, got {threads}")
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(old)


def eager_runner(
    module: nn.Module, inputs: tuple[torch.Tensor, ...], *, device: str = "cpu", channels_last: bool = False
) -> Callable[[], object]:
    """A callable running ``module(*inputs)`` once under ``torch.inference_mode`` (synchronised on CUDA).

    The module is copied, so the caller's model keeps its device and memory format.
    """
    model = copy.deepcopy(module).eval().to(device)
    args = tuple(t.to(device) for t in inputs)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        args = tuple(t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t for t in args)
    sync = torch.cuda.synchronize if device.startswith("cuda") else None

    def run() -> object:
        with torch.inference_mode():
            out = model(*args)
        if sync is not None:
            sync()
        return out

    return run


def example_input(input_shape: tuple[int, ...], *, seed: int = 0) -> torch.Tensor:
    """A reproducible random input of ``input_shape`` (latency does not depend on the values)."""
    if any(int(d) < 1 for d in input_shape):
        raise ValueError(f"input shape must be positive, got {input_shape}")
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*input_shape, generator=gen)


def default_threads() -> int:
    """The thread count used when none is given: all cores PyTorch would use."""
    return torch.get_num_threads()
