"""The reference workload that drift-normalised timing divides by (see :class:`~edgecnn.latency.measure.Reference`).

A small MobileNetV3-style network (stem, an SE inverted residual, a 1×1 head
conv and a 1280-wide classifier: dense, depthwise and memory-bound kernels
all present) at 64², run on the same backend and thread count as the
workload it normalises. Its weights (~7 MB, mostly the classifier) exceed a
core's L2, so running it also leaves the caches as a preceding layer of a
real network would: the next block starts with its own weights cold.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

from edgecnn.build import build
from edgecnn.latency.measure import (
    Reference,
    TimingConfig,
    clock_of,
    eager_runner,
    example_input,
    timed_ms,
    torch_threads,
)

REFERENCE_ARCH = (
    "conv_k3_s2_c16_hswish ir_m16_c16_relu ir_k5_s2_e4_c40_se0.25_hsgate_hswish ir_s2_e6_c80_hswish "
    "conv_k1_c480_hswish gap fc_c1280_hswish fc"
)
REFERENCE_SIZE = 64
"""Input resolution of the reference network (about 1 ms in eager mode on one laptop-class core)."""


def reference_runner(*, backend: str, threads: int, device: str = "cpu") -> Callable[[], object]:
    """One run of the reference network on ``backend`` (eager callers set the thread count around it)."""
    net = build(REFERENCE_ARCH, num_classes=1000)
    x = example_input((1, 3, REFERENCE_SIZE, REFERENCE_SIZE), seed=1)
    from edgecnn.latency.targets import get_target

    return get_target(backend).runner(net, x, threads=threads, device=device)[0]


def baseline_ms(fn: Callable[[], object], *, runs: int = 60, warmup: int = 10, clock: str = "wall") -> float:
    """The reference's nominal latency: the 25th percentile of ``runs`` back-to-back runs.

    A low quantile rather than the median because slowdowns only ever add time;
    it only sets the unit the normalised latencies are expressed in. ``clock``:
    as :attr:`TimingConfig.clock`, the clock the normalised runs are timed with.
    """
    for _ in range(warmup):
        fn()
    tick = clock_of(TimingConfig(clock=clock))
    times = [timed_ms(fn, tick) for _ in range(runs)]
    return statistics.quantiles(times, n=4, method="inclusive")[0]


def make_reference(
    *, backend: str, threads: int, device: str = "cpu", baseline: float | None = None, clock: str = "wall"
) -> Reference:
    """A :class:`Reference` for ``backend``/``threads``; measures its baseline (with ``clock``) unless one is given."""
    fn = reference_runner(backend=backend, threads=threads, device=device)
    if baseline is None:
        with torch_threads(threads):
            baseline = baseline_ms(fn, clock=clock)
    return Reference(fn, baseline)
