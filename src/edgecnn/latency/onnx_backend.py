"""ONNX Runtime as a measurement backend: sessions with a fixed thread count, timed runs, node profiles.

The model is exported with BN folded (:mod:`edgecnn.export`) and run through
an ``InferenceSession`` with ``intra_op_num_threads`` fixed and the
sequential executor, so the thread count means the same as
``torch.set_num_threads`` in eager mode. Inputs and outputs go through an
``IOBinding``: the input is bound once, so a timed run is the graph alone,
not a numpy copy-in per call.

Per-node times come from ORT's own profiler (``SessionOptions.enable_profiling``):
each node event is named after the exported node (``/blocks/blocks.3/dw/conv/Conv…``),
which maps it back to the block that produced it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from edgecnn.export import DEFAULT_OPSET, onnx_bytes


def require_onnxruntime() -> Any:
    """The ``onnxruntime`` module, or a ValueError that says how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise ValueError("the onnxruntime backend needs ONNX Runtime: pip install 'edgecnn[onnx]'") from None
    return onnxruntime


def make_session(model_bytes: bytes, *, threads: int, device: str = "cpu", profile_prefix: str | None = None) -> Any:
    """An ``InferenceSession`` with ``threads`` intra-op threads, all graph optimisations, sequential execution."""
    ort = require_onnxruntime()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only: the CPU-only build warns about absent GPU providers
    if profile_prefix is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ValueError("this onnxruntime has no CUDA provider; install onnxruntime-gpu or use --device cpu")
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(model_bytes, opts, providers=providers)


def session_runner(session: Any, x: torch.Tensor) -> Callable[[], object]:
    """A callable running ``session`` once on ``x`` (bound once; output allocated by ORT each run)."""
    binding = session.io_binding()
    binding.bind_cpu_input(session.get_inputs()[0].name, x.detach().cpu().numpy())
    for out in session.get_outputs():
        binding.bind_output(out.name)

    def run() -> object:
        session.run_with_iobinding(binding)  # synchronous: returns when the outputs are ready
        return None

    return run


def ort_runner(
    model: nn.Module, x: torch.Tensor, *, threads: int, device: str = "cpu", opset: int = DEFAULT_OPSET
) -> tuple[Callable[[], object], dict[str, Any]]:
    """Export ``model`` on ``x`` and return a one-inference callable plus details to record."""
    session = make_session(onnx_bytes(model, x, opset=opset), threads=threads, device=device)
    return session_runner(session, x), {"opset": opset, "providers": list(session.get_providers())}


def profile_nodes(
    model: nn.Module,
    x: torch.Tensor,
    *,
    threads: int,
    runs: int = 20,
    warmup: int = 5,
    device: str = "cpu",
    between: Callable[[], object] | None = None,
) -> dict[str, list[float]]:
    """Per-node kernel times (ms) from ORT's profiler: ``node name -> one time per timed run``.

    Node names drop ORT's ``_kernel_time`` suffix; nodes ORT created itself (layout
    reorders) keep their generated names. ``between`` (e.g. a reference workload
    that times itself) runs before the first timed run and after every timed run.
    """
    if runs < 1 or warmup < 0:
        raise ValueError("runs must be >= 1 and warmup >= 0")
    with tempfile.TemporaryDirectory() as tmp:
        session = make_session(
            onnx_bytes(model, x), threads=threads, device=device, profile_prefix=os.path.join(tmp, "ort")
        )
        run = session_runner(session, x)
        for _ in range(warmup):
            run()
        if between is not None:
            between()
        for _ in range(runs):
            run()
            if between is not None:
                between()
        with open(session.end_profiling(), encoding="utf-8") as f:
            events = json.load(f)
    per_node: dict[str, list[float]] = defaultdict(list)
    for ev in events:
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            per_node[ev["name"].removesuffix("_kernel_time")].append(ev["dur"] / 1e3)
    # the first `warmup` events of each node belong to the warm-up runs
    return {name: times[warmup:] for name, times in per_node.items() if len(times) > warmup}
