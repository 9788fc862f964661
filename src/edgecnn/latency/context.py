"""ONNX Runtime block latency *in context*: the time a block adds to a graph around it.

A block exported and timed alone is not what it costs inside a network run by
ONNX Runtime: the graph's input and output are converted to and from ORT's
blocked (NCHWc) layout, a session run has a fixed cost, and ORT's profiler —
the way the isolated entries used to be read — slows every kernel it times
(by about a quarter on the development VM: a MobileNetV3-style network ran
2.0–3.2 ms without profiling and 2.5–4.1 ms with it), which is why the plain
sum of profiled entries came out 27–35% too high.

So a block's entry is its **marginal** run time in a small context graph
(the "chain" measurement of nn-Meter's kernel detection, Zhang et al. 2021,
applied as FBNet's lookup table, Wu et al. 2019, fills entries)::

    with    = pre → block (× stack) → post        without = pre → post
    entry   = (T(with) − T(without)) / stack

* ``pre`` — a 1×1 conv + ReLU keeping the block's input shape, so the block
  reads a tensor a conv just wrote, already in ORT's internal layout, as it
  would from its predecessor in a network. The network's first block reads
  the graph input itself, so its context has no ``pre``.
* ``post`` — global average pooling when the tensor is a feature map
  (nothing for a vector), so the graph output is tiny and its layout
  conversion negligible. ``post`` reads the block's output in ``with`` and
  the block's input in ``without``; summed over the blocks of a network
  those differences telescope to ``post(last map) − post(image)``: the
  network's own pooling (which the ``gap`` block's entry, ``0`` by this
  construction, does not hold) minus a constant per input shape; both are in
  the table's per-network ``overhead|…`` entry, which is the probe network's
  end-to-end time minus its block entries.
* session run cost, the input's layout conversion and ``pre`` are in both
  graphs and cancel; fusions inside the block happen as in the network.
* ``stack`` > 1 (shape-preserving blocks only) chains copies of the block to
  lift its cost above the run-to-run jitter.

Runs of ``with`` and ``without`` alternate, each between two runs of the
table's reference workload (:class:`~edgecnn.latency.measure.Reference`),
which evicts the block's weights from the caches as preceding layers do and
cancels the machine's drift; the entry is the median over pairs of
``with − without`` (each normalised by its own neighbouring reference runs).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from edgecnn.blocks import GlobalAvgPool
from edgecnn.build import BUILDERS
from edgecnn.latency.measure import (
    LatencyStats,
    Reference,
    TimingConfig,
    check_clock,
    clock_of,
    retry_disturbed,
    summarize,
    timed_ms,
)
from edgecnn.plan import LayerPlan


def _post(t: torch.Tensor) -> nn.Module:  # the network's own pooling module: it exports as the network's does
    return GlobalAvgPool() if t.dim() == 4 else nn.Identity()


def _pre(plan: LayerPlan, x: torch.Tensor) -> nn.Module:
    if x.dim() != 4 or plan.position == 0:  # vectors, and the network's first block, read what they get as is
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(plan.cin, plan.cin, 1), nn.ReLU())


def shape_preserving(plan: LayerPlan) -> bool:
    """Whether the block's output has its input's shape (then copies of it can be chained)."""
    return plan.cin == plan.cout and plan.in_size == plan.out_size and plan.in_size is not None


@dataclass(frozen=True)
class ContextGraphs:
    """The two networks whose time difference is a block's in-context cost."""

    with_block: nn.Module  # pre → block × stack → post
    without_block: nn.Module  # pre → post
    stack: int  # copies of the block in ``with_block``


def context_graphs(plan: LayerPlan, x: torch.Tensor, *, stack: int = 1) -> ContextGraphs:
    """``pre → block × stack → post`` and ``pre → post`` for ``plan`` on its input ``x`` (see the module doc).

    ``stack > 1`` needs a shape-preserving block (:func:`shape_preserving`).
    """
    if stack < 1:
        raise ValueError(f"stack must be a positive integer, got {stack}")
    if stack > 1 and not shape_preserving(plan):
        raise ValueError(
            f"block {plan.spec.format()!r} changes its input's shape ({plan.cin}→{plan.cout} channels, "
            f"{plan.in_size}→{plan.out_size}); only shape-preserving blocks can be stacked: use stack=1"
        )
    pre = _pre(plan, x)
    blocks = [BUILDERS[plan.spec.kind](plan).eval() for _ in range(stack)]
    with torch.no_grad():
        y = x
        for b in blocks:
            y = b(y)
    with_block = nn.Sequential(pre, *blocks, _post(y)).eval()
    without_block = nn.Sequential(pre, _post(x)).eval()
    return ContextGraphs(with_block, without_block, stack)


def marginal_stats(
    with_fn: Callable[[], object],
    without_fn: Callable[[], object],
    reference: Reference,
    config: TimingConfig | None = None,
    *,
    stack: int = 1,
) -> LatencyStats:
    """Cost of ``with_fn`` over ``without_fn`` (ms, divided by ``stack``): alternating runs, drift-normalised.

    Sequence ``ref, with, ref, without, ref, with, …``; each run is normalised by the
    reference runs on either side. Samples are ``(with_i − without_i) / stack`` of
    adjacent pairs; rounds of ``config.round_size`` pairs continue until their median
    moves by less than ``config.rel_tol`` of the ``with`` median (or a cap). ``min_ms``
    is ``(min with − min without) / stack``; ``raw_median_ms`` the unnormalised median difference.
    """
    cfg = config or TimingConfig()
    clock = clock_of(cfg)

    def timed(f: Callable[[], object]) -> float:
        return timed_ms(f, clock)

    for _ in range(cfg.warmup):
        reference.fn()
        with_fn()
        without_fn()
    w_raw: list[float] = []
    o_raw: list[float] = []
    refs: list[float] = [timed(reference.fn)]
    w_norm: list[float] = []
    o_norm: list[float] = []
    diffs: list[float] = []
    raw_diffs: list[float] = []
    base = reference.baseline_ms
    previous: float | None = None
    start = time.perf_counter()  # the cap is on elapsed time
    while True:
        for _ in range(cfg.round_size):
            w = timed(with_fn)
            refs.append(timed(reference.fn))
            o = timed(without_fn)
            refs.append(timed(reference.fn))
            wn = w / ((refs[-3] + refs[-2]) / 2) * base
            on = o / ((refs[-2] + refs[-1]) / 2) * base
            w_raw.append(w)
            o_raw.append(o)
            w_norm.append(wn)
            o_norm.append(on)
            diffs.append((wn - on) / stack)
            raw_diffs.append((w - o) / stack)
        stop = len(diffs) >= cfg.max_repeats or time.perf_counter() - start > cfg.max_seconds
        stable = False
        if len(diffs) >= cfg.min_repeats:
            median = statistics.median(diffs)
            scale = statistics.median(w_norm)
            stable = previous is not None and abs(median - previous) <= cfg.rel_tol * scale
            previous = median
        if stable or stop:
            s = summarize(
                diffs, stable=stable, drift=statistics.median(refs) / base, raw_median_ms=statistics.median(raw_diffs)
            )
            return LatencyStats(
                s.median_ms, s.q1_ms, s.q3_ms, (min(w_norm) - min(o_norm)) / stack, s.mean_ms, s.repeats, s.stable,
                s.foreign_cpu, s.drift, s.raw_median_ms,
            )  # fmt: skip


def ort_block_in_context(
    plan: LayerPlan,
    x: torch.Tensor,
    *,
    threads: int,
    reference: Reference,
    config: TimingConfig | None = None,
    device: str = "cpu",
    stack: int | None = None,
    without_cache: dict[tuple[object, ...], Callable[[], object]] | None = None,
) -> LatencyStats:
    """In-context ONNX Runtime cost of ``plan`` on input ``x`` (see the module doc).

    ``stack=None`` chains 2 copies of a shape-preserving block, else 1. ``without_cache``
    (any dict kept by the caller) reuses the ``pre → post`` session across blocks of one input shape.
    """
    from edgecnn.export import onnx_bytes
    from edgecnn.latency.onnx_backend import make_session, session_runner

    check_clock(config, threads=threads, device=device)
    n = (2 if shape_preserving(plan) else 1) if stack is None else stack
    graphs = context_graphs(plan, x, stack=n)
    with_fn = session_runner(make_session(onnx_bytes(graphs.with_block, x), threads=threads, device=device), x)
    key = (tuple(x.shape), plan.position == 0, threads, device)
    without_fn = None if without_cache is None else without_cache.get(key)
    if without_fn is None:
        without_fn = session_runner(
            make_session(onnx_bytes(graphs.without_block, x), threads=threads, device=device), x
        )
        if without_cache is not None:
            without_cache[key] = without_fn
    cfg = config or TimingConfig()
    return retry_disturbed(lambda: marginal_stats(with_fn, without_fn, reference, cfg, stack=n), cfg)
