"""Per-layer latency: where the milliseconds of a network go, block by block.

* Eager: every block (one module of ``EdgeNet.blocks``, or each top-level
  child of another module) is timed alone on the input it received inside the
  network (captured with forward pre-hooks). The sum of the blocks is reported
  next to the end-to-end time: the gap is the cost of calling the network
  itself plus what isolation changes (caches, dispatch).
* ONNX Runtime: the session's profiler gives each node's kernel time in one
  real run of the whole graph; nodes are mapped back to blocks by name
  (``/blocks/blocks.3/…``). Nodes ORT inserts itself (NCHWc layout reorders)
  are reported as ``unassigned_ms``. The profiler slows what it times (a
  32×32 MobileNetV3's nodes summed to 1.07 ms in profiled runs against 0.26 ms
  unprofiled), so each block's time is its **share** of the profiled run scaled
  to the end-to-end latency: the blocks add up to the measured network, and
  ``profiled_sum_ms`` keeps the raw sum (the profiler's overhead, stated).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgecnn.latency.fingerprint import check_backend
from edgecnn.latency.measure import (
    Measurement,
    TimingConfig,
    eager_runner,
    example_input,
    measure,
    summarize,
    time_fn,
    torch_threads,
    default_threads,
)


@dataclass(frozen=True)
class LayerLatency:
    """The latency of one block."""

    name: str  # module path, e.g. "blocks.3"
    kind: str  # the block's arch string for an EdgeNet, else the module class
    median_ms: float  # median over the timed runs
    iqr_ms: float  # interquartile range over the timed runs

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "median_ms": self.median_ms, "iqr_ms": self.iqr_ms}


@dataclass(frozen=True)
class LayerBreakdown:
    """End-to-end latency and its split over blocks."""

    total: Measurement  # the end-to-end measurement of the whole network
    layers: tuple[LayerLatency, ...]  # one entry per block, in network order
    method: str  # how the per-layer numbers were obtained (isolated eager timing / ORT profiler)
    unassigned_ms: float = 0.0  # ORT: median time of nodes not belonging to any block (layout reorders)
    profiled_sum_ms: float | None = None  # a profiler's breakdown: the profiled run's raw sum before scaling

    @property
    def layer_sum_ms(self) -> float:
        """Sum of the per-block medians (plus unassigned nodes)."""
        return sum(layer.median_ms for layer in self.layers) + self.unassigned_ms

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total.to_dict(),
            "layers": [layer.to_dict() for layer in self.layers],
            "method": self.method,
            "unassigned_ms": self.unassigned_ms,
            "layer_sum_ms": self.layer_sum_ms,
            "profiled_sum_ms": self.profiled_sum_ms,
        }


def units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The blocks we report on: ``EdgeNet.blocks`` entries, else the model's top-level children."""
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.Sequential):
        return [(f"blocks.{i}", m) for i, m in enumerate(blocks)]
    children = list(model.named_children())
    if not children:
        raise ValueError(f"{type(model).__name__} has no sub-modules to report per layer; measure it end to end")
    return children


def _kinds(model: nn.Module, names: list[str]) -> dict[str, str]:
    arch = getattr(model, "arch", None)
    if isinstance(arch, str):
        from edgecnn.plan import resolve

        plans = resolve(arch, num_classes=getattr(model, "num_classes", 1000), in_chans=getattr(model, "in_chans", 3))
        return {p.name: p.spec.format() for p in plans}
    return {name: type(m).__name__ for name, m in units(model) if name in names}


def _capture_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[torch.Tensor, ...]]:
    seen: dict[str, tuple[torch.Tensor, ...]] = {}
    handles = []
    for name, module in units(model):

        def hook(_m: nn.Module, args: tuple[Any, ...], name: str = name) -> None:
            seen.setdefault(name, tuple(a.detach().clone() for a in args if isinstance(a, torch.Tensor)))

        handles.append(module.register_forward_pre_hook(hook))
    try:
        with torch.inference_mode():
            model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def _eager_layers(
    model: nn.Module, x: torch.Tensor, *, threads: int, device: str, channels_last: bool, config: TimingConfig | None
) -> list[LayerLatency]:
    inputs = _capture_inputs(model, x)
    kinds = _kinds(model, list(inputs))
    out = []
    with torch_threads(threads):
        for name, module in units(model):
            if name not in inputs:  # a child the forward never called
                continue
            stats = time_fn(eager_runner(module, inputs[name], device=device, channels_last=channels_last), config)
            out.append(LayerLatency(name, kinds.get(name, type(module).__name__), stats.median_ms, stats.iqr_ms))
    return out


def _ort_layers(
    model: nn.Module, x: torch.Tensor, *, threads: int, device: str, runs: int
) -> tuple[list[LayerLatency], float]:
    from edgecnn.latency.onnx_backend import profile_nodes

    nodes = profile_nodes(model, x, threads=threads, runs=runs, device=device)
    names = [name for name, _ in units(model)]
    kinds = _kinds(model, names)
    per_unit: dict[str, list[float]] = {}
    unassigned = [0.0] * runs
    for node, times in nodes.items():
        owner = next((n for n in names if f"/{n}/" in node + "/"), None)
        if owner is None:
            unassigned = [u + t for u, t in zip(unassigned, times)]
            continue
        acc = per_unit.setdefault(owner, [0.0] * runs)
        per_unit[owner] = [a + t for a, t in zip(acc, times)]
    layers = []
    for name in names:
        if name in per_unit:
            s = summarize(per_unit[name])
            layers.append(LayerLatency(name, kinds.get(name, name), s.median_ms, s.iqr_ms))
    return layers, statistics.median(unassigned)


def per_layer(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    backend: str = "eager",
    threads: int | None = None,
    device: str = "cpu",
    channels_last: bool = False,
    config: TimingConfig | None = None,
    profile_runs: int = 20,
    label: str = "",
) -> LayerBreakdown:
    """End-to-end latency of ``model`` and the latency of each of its blocks on ``backend``."""
    check_backend(backend)
    from edgecnn.latency.remote import is_agent_address

    if is_agent_address(device):
        raise ValueError(f"per-layer profiles run on this machine only; {device} is an agent: measure the whole "
                         "network there, or build a latency table on it (latency build-table --device HOST:PORT)")
    threads = threads or default_threads()
    total = measure(
        model, input_shape, backend=backend, threads=threads, device=device,
        channels_last=channels_last, config=config, label=label,
    )  # fmt: skip
    x = example_input(input_shape)
    from edgecnn.latency.targets import get_target

    layers, unassigned, method = get_target(backend).layer_breakdown(
        model, x, threads=threads, device=device, channels_last=channels_last, config=config, runs=profile_runs
    )  # fmt: skip
    if backend == "eager":  # blocks timed alone: their sum against the network is the cost of isolation, stated
        return LayerBreakdown(total, tuple(layers), method, unassigned)
    return _scaled(total, layers, unassigned, method)


def _scaled(total: Measurement, layers: list[LayerLatency], unassigned: float, method: str) -> LayerBreakdown:
    """A profiler's per-block times as shares of the profiled run, scaled to the unprofiled end-to-end latency."""
    raw = sum(layer.median_ms for layer in layers) + unassigned
    end = total.stats.median_ms
    if raw <= 0:
        return LayerBreakdown(total, tuple(layers), method, unassigned, raw)
    f = end / raw
    scaled = tuple(LayerLatency(l.name, l.kind, l.median_ms * f, l.iqr_ms * f) for l in layers)
    note = (f"{method}; each block's share of the profiled run scaled to the end-to-end latency (the profiled nodes "
            f"summed to {raw:.3f} ms against {end:.3f} ms unprofiled: {raw / end:.2f}×, the profiler's own cost)")
    return LayerBreakdown(total, scaled, note, unassigned * f, raw)
