"""Measured per-layer latency for layer-replacing compression (low-rank, separable): shapes, timings, verdicts.

Replacing one layer by two thinner ones (a truncated SVD, a depthwise
separable pair) saves MACs but adds an operator launch, a second pass over
memory and an intermediate tensor; on a given device the pair can be slower
than the layer it replaces — at small spatial sizes and narrow widths it
usually is (fixed per-op cost dominates). So these methods time every
candidate replacement on the device, at the shapes the layer sees inside the
network, and drop the ones that are not faster (docs/design.md §5: "a factorisation
that is slower on the device is reported and skipped").

This file owns: the input shapes of chosen layers (one real forward at batch
1 with pre-hooks, so any ``nn.Module`` works), the :data:`LayerLatency`
protocol (``(module, input_shape) → ms``; tests inject a fake one so the
choice is deterministic) and its default, :func:`measured_layer_latency`
(:func:`edgecnn.latency.measure.measure` on the command's backend and
threads), :func:`layer_ms`, the sum over a layer's calls, and
:func:`select_to_budget`, the greedy choice both methods share.

**Selection** (Zhang et al. 2016, "Accelerating Very Deep Convolutional
Networks for Classification and Detection", §3.5): maximise ``Π_l E_l`` — the
product over layers of the share of the weight's energy the replacement keeps
(``1 − ‖W − Ŵ‖²_F/‖W‖²_F``) — subject to the budget, greedily: from the
unchanged network, repeatedly take the one step down a layer's list of
options (each cheaper and keeping less energy than the one before) that
loses the least ``log E`` per unit of resource saved (:func:`greedy_path`).
For MACs and params the walk stops where the exact resource meets the
target. For latency, per-layer savings measured alone do not add up to the
whole network's (launch overheads, caches: on digits at 16×16 the layers'
sum said 0.71 ms where the whole network measured 0.47 ms), so the stopping
point is found by bisection over the walk with the **whole network timed**
at each probe (``log₂`` of the walk's length + 1 measurements).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn

from edgecnn.analysis import analyze
from edgecnn.latency.measure import TimingConfig, measure

__all__ = ["NOT_CHOSEN", "LayerLatency", "MeasuredResult", "Step", "call_shapes", "exact_resource", "front",
           "greedy_path", "layer_ms", "measured_layer_latency", "select_to_budget"]

LayerLatency = Callable[[nn.Module, tuple[int, ...]], float]  # ms of a module on one input of this shape (batch 1)


@dataclass(frozen=True)
class MeasuredResult:
    """What a by-layer method (low-rank, separable) did to reach its budget; each method adds its plan."""

    model: nn.Module  # the transformed copy (PlainNet for an EdgeNet)
    resource: str  # "latency" (ms), "macs" or "params"
    start: float  # the resource of the input network (latency: measured whole)
    value: float  # the resource of the result (latency: measured whole; macs/params: exact)
    target: float
    evaluated: int  # networks built and valued whole (latency: the bisection's measurements)

    @property
    def met(self) -> bool:
        return self.value <= self.target


def call_shapes(model: nn.Module, names: Iterable[str], input_size: Sequence[int]) -> dict[str, list[tuple[int, ...]]]:
    """The input shape of every call of each named module, from one forward of a batch-1 random input.

    A module the forward never reaches maps to ``[]``. The model's mode is kept
    (BN in train mode would update its running statistics: eval is used for the pass).
    """
    wanted = {name: model.get_submodule(name) for name in names}
    shapes: dict[str, list[tuple[int, ...]]] = {name: [] for name in wanted}
    handles = []
    for name, m in wanted.items():
        def hook(_m: nn.Module, args: tuple, _name: str = name) -> None:
            if args and isinstance(args[0], torch.Tensor):
                shapes[_name].append(tuple(args[0].shape))

        handles.append(m.register_forward_pre_hook(hook))
    was_training = model.training
    try:
        p = next(model.parameters(), None)
        x = torch.randn(1, *input_size, dtype=p.dtype if p is not None else torch.float32,
                        device=p.device if p is not None else "cpu")  # fmt: skip
        with torch.no_grad():
            model.eval()(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return shapes


def layer_ms(module: nn.Module, shapes: Sequence[tuple[int, ...]], latency: LayerLatency) -> float:
    """The module's latency summed over its calls (one input shape per call)."""
    return sum(latency(module, s) for s in shapes)


def measured_layer_latency(*, backend: str = "eager", threads: int | None = None, timing: TimingConfig | None = None,
                           device: str = "cpu") -> LayerLatency:  # fmt: skip
    """A :data:`LayerLatency` that times the module alone on the device: median ms at batch 1.

    Same backend (eager or ONNX Runtime) and threads as the command's end-to-end measurements;
    ``timing`` defaults to short timings (:data:`edgecnn.compress.summary.QUICK_TIMING`'s settings).
    """
    cfg = timing or TimingConfig(warmup=5, min_repeats=10, max_repeats=200, max_seconds=1.0, retries=1,
                                 retry_wait_s=0.2)  # fmt: skip

    def latency(module: nn.Module, shape: tuple[int, ...]) -> float:
        return measure(module.eval(), shape, backend=backend, threads=threads, config=cfg, device=device).stats.median_ms

    return latency


NOT_CHOSEN = "<not chosen>"  # placeholder in a plan's skip reasons, replaced by select_to_budget's explanation
Step = tuple[float, float]  # (resource of the layer, log of its kept energy); the original layer is (cost, 0.0)
M = TypeVar("M")


def greedy_path(options: Mapping[str, Sequence[Step]]) -> list[str]:
    """The greedy's steps in order, all the way down every layer's list: the layer that moves at each step.

    Each step takes the layer whose next option loses the least ``log E`` per
    unit of resource saved (ties: the name). A prefix of ``k`` steps moves each
    layer as often as its name occurs in the first ``k`` entries.
    """
    at = {n: 0 for n in options}
    path: list[str] = []
    while True:
        moves = []  # (log-energy lost per unit of resource saved, layer) of each layer's next step
        for n, i in at.items():
            s = options[n]
            if i + 1 < len(s):
                moves.append(((s[i][1] - s[i + 1][1]) / (s[i][0] - s[i + 1][0]), n))
        if not moves:
            return path
        n = min(moves)[1]
        at[n] += 1
        path.append(n)


def select_to_budget(options: Mapping[str, Sequence[Step]], start: float, target: float, *,
                     build: Callable[[dict[str, int]], M], value: Callable[[M], float],
                     measured: bool) -> tuple[dict[str, int], M, float, int, str]:  # fmt: skip
    """The shortest prefix of :func:`greedy_path` whose network meets ``target`` (module docstring, "Selection").

    ``options[name]`` lists ``(cost, log E)`` from the original layer down,
    cheaper and lower each step (:func:`front`). ``build(choice)`` makes the
    network for ``{name: index}`` (indices > 0 only) and ``value`` gives its
    resource. Exact resources (``measured=False``): the prefix is where
    ``start`` minus the layers' savings first meets the target. Measured
    (latency): the prefix is found by bisection on ``value`` of whole networks
    (per-layer savings do not add up; the measurement decides), assuming
    longer prefixes are not slower. When even the whole path is over, it is
    returned (the most the options can do) — unless it measures no faster
    than the unchanged network measured next to it, then nothing is
    replaced. Returns the choice, the network, its value, how many networks
    were built and valued, and why the layers left out were left out (one
    line, for the plan's skip reasons).
    """
    path = greedy_path(options)

    def choice(k: int) -> dict[str, int]:
        out: dict[str, int] = {}
        for n in path[:k]:
            out[n] = out.get(n, 0) + 1
        return out

    made: dict[int, tuple[M, float]] = {}

    def probe(k: int) -> float:
        if k not in made:
            m = build(choice(k))
            made[k] = (m, value(m))
        return made[k][1]

    if not measured:
        predicted, k, at = start, 0, dict.fromkeys(options, 0)
        while predicted > target and k < len(path):
            n = path[k]
            predicted -= options[n][at[n]][0] - options[n][at[n] + 1][0]
            at[n], k = at[n] + 1, k + 1
        probe(k)
        return choice(k), made[k][0], made[k][1], len(made), "the budget is met without it"
    hi, why = len(path), "the budget is met without it (whole network measured)"
    if start <= target or not path:
        hi = 0
    elif probe(hi) >= probe(0):  # no faster than the unchanged network, measured again next to it
        why = (f"with every candidate replaced the whole network measured {made[hi][1]:.4f}, no faster than the "
               f"original's {made[0][1]:.4f}: nothing is replaced")  # fmt: skip
        hi = 0
    elif probe(hi) <= target:
        lo = 0  # the unchanged network (start) is over
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if probe(mid) <= target:
                hi = mid
            else:
                lo = mid
    probe(hi)
    return choice(hi), made[hi][0], made[hi][1], len(made), why


def front(start: float, points: Sequence[tuple[float, float]]) -> tuple[list[Step], list[int]]:
    """The non-dominated options below ``start``: ``(cost, energy)`` points → steps from the layer down.

    Returns the steps (first: ``(start, 0.0)``) and, per later step, the index of its point.
    An option is kept only when it keeps more energy than every cheaper one.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    kept: list[int] = []
    best = -math.inf
    for i in order:
        c, e = points[i]
        if c < start and e > 0 and math.log(e) > best:
            kept.append(i)
            best = math.log(e)
    kept.reverse()
    return [(start, 0.0)] + [(points[i][0], math.log(points[i][1])) for i in kept], kept


def exact_resource(model: nn.Module, input_size: Sequence[int], resource: str) -> float:
    """MACs per image or params of any module, from :func:`edgecnn.analysis.analyze` (one traced pass)."""
    a = analyze(model, tuple(input_size), receptive_fields=False)
    return float(a.macs if resource == "macs" else a.params)
