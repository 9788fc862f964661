"""ExecuTorch with the XNNPACK delegate as a target: ``.pte`` programs, run by ExecuTorch's C++ runtime.

Export follows ExecuTorch's XNNPACK flow (docs: "XNNPACK Backend", "Lowering a
Model to XNNPACK"): ``torch.export`` → ``to_edge_transform_and_lower`` with an
``XnnpackPartitioner`` → ``to_executorch()``. The partitioner hands XNNPACK
every node it supports (convolutions, linear, batch norm folded into them,
ReLU/ReLU6/hardswish/sigmoid, add/mul, mean …); the rest stays on
ExecuTorch's own CPU kernels, and :meth:`ExecuTorchTarget.details` says how
much of the graph that is. int8 is PT2E static post-training quantisation
with ``XNNPACKQuantizer`` (symmetric int8, per-channel weights, per-tensor
activations calibrated by histogram; Jacob et al. 2018 describe the integer
scheme), lowered the same way.

The runtime is the ``executorch.extension.pybindings._C`` extension itself
(what ``executorch.runtime`` and ``portable_lib`` re-export): importing it
costs milliseconds, while ``executorch.runtime`` imports the whole export
stack (``executorch.exir``, ``torch._dynamo``, ``torchao``: seconds). It
needs ``torch`` loaded (it links ``libtorch``) and nothing else.

Threads: XNNPACK and ExecuTorch's optimised kernels share one process-wide
threadpool (``extension/threadpool``), sized to the CPU count by default.
:class:`_ThreadPool` resizes it with ``_unsafe_reset_threadpool`` before a
program is loaded. That call *replaces* the pool, and every XNNPACK runtime
created before it keeps a pointer to the old, freed one; so each loaded
program remembers the pool generation it was created under and reloads
itself when the pool has changed since (programs loaded with different
thread counts stay correct, but alternating between them reloads each time:
time them in separate phases).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import importlib
import importlib.metadata
import logging
import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

from edgecnn.latency.isa import InstructionSet
from edgecnn.latency.targets.base import Program, Target

CALIBRATION_BATCH = 32
"""Calibration images per forward pass when the network exports with a dynamic batch (else one at a time)."""

_NATIVE_INFO = re.compile(rb"^\[(cpuinfo_utils|threadpool)\.cpp:\d+\] ")
"""ExecuTorch's informational C++ log lines on stderr (CPU probing, pool resizes): dropped, all else passes."""

_QUIET_LOGS: dict[str, re.Pattern[str]] = {
    # torchao's CUDA-only extensions (mxfp8, cutlass) cannot load on a CPU build of torch
    "torchao": re.compile(r"Failed to load .*torchao[/\\]_C_\w+.*\.so"),
    "torchao.kernel.intmm": re.compile(r"Warning: Detected no triton"),
    # torchao registers an Enum as a pytree constant, which torch 2.13 deprecates
    "torch.utils._pytree": re.compile(r"<enum '\w+'> is an Enum subclass and is now natively supported"),
}
"""Log records the export stack prints at import and lowering, by logger: dropped; nothing else is."""


@functools.lru_cache(maxsize=1)
def _version() -> str | None:
    """The ``executorch`` distribution's version if its runtime extension imports (milliseconds), else None."""
    try:
        _runtime()
        return importlib.metadata.version("executorch")
    except (ImportError, OSError, importlib.metadata.PackageNotFoundError):
        return None


def _runtime() -> ModuleType:
    """ExecuTorch's runtime extension (``_C``); ``torch`` is imported first because it links ``libtorch``."""
    import torch  # noqa: F401  (loads libtorch before the extension resolves against it)

    return importlib.import_module("executorch.extension.pybindings._C")


@contextlib.contextmanager
def _native_log_filtered() -> Iterator[None]:
    """Drop ExecuTorch's informational C++ log lines (:data:`_NATIVE_INFO`) written to stderr meanwhile.

    The runtime logs with ``fprintf(stderr)``, below Python: fd 2 is sent to a
    temporary file for the duration and every other line is written back.
    """
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to filter
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().splitlines(keepends=True) if not _NATIVE_INFO.match(line)]
            if kept:
                os.write(2, b"".join(kept))


class _DropRecords(logging.Filter):
    def __init__(self, pattern: re.Pattern[str]) -> None:
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """The export stack's known console noise filtered (warnings by message, log records by logger and message)."""
    filters = [(logging.getLogger(name), _DropRecords(pattern)) for name, pattern in _QUIET_LOGS.items()]
    for logger, f in filters:
        logger.addFilter(f)
    try:
        with warnings.catch_warnings():
            # torch.export's pytree, deep-copied while lowering (torch 2.13)
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                                    category=FutureWarning)  # fmt: skip
            # executorch reads its schemas through importlib.resources' legacy calls
            warnings.filterwarnings("ignore", message=r"(read_text|open_text|read_binary) is deprecated",
                                    category=DeprecationWarning)  # fmt: skip
            # torchao and executorch still define TorchScript classes at import
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.script_method` is deprecated",
                                    category=DeprecationWarning)  # fmt: skip
            yield
    finally:
        for logger, f in filters:
            logger.removeFilter(f)


class _ThreadPool:
    """ExecuTorch's one process-wide threadpool: its size, and a generation that changes whenever it is replaced."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.generation = 0
        self.threads: int | None = None  # None: not read yet
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        # the child re-creates the pool (extension/threadpool/threadpool.cpp: child_atfork); runtimes must follow
        self.generation += 1

    def use(self, threads: int) -> int:
        """Resize the pool to ``threads`` if it differs; the generation runtimes created now belong to."""
        with self.lock:
            rt = _runtime()
            with _native_log_filtered():
                if self.threads is None:
                    self.threads = int(rt._threadpool_get_thread_count())
                if self.threads != threads:
                    rt._unsafe_reset_threadpool(threads)
                    self.threads = int(rt._threadpool_get_thread_count())
                    self.generation += 1
            if self.threads != threads:
                raise RuntimeError(f"ExecuTorch's threadpool has {self.threads} threads after asking for {threads}")
            return self.generation


_POOL = _ThreadPool()


class _ExecuTorchProgram(Program):
    """A ``.pte`` loaded by ExecuTorch's runtime (method ``forward``), reloaded whenever the threadpool is replaced."""

    def __init__(self, artifact: bytes, *, threads: int) -> None:
        self.artifact = bytes(artifact)  # the runtime reads the program in place: this keeps it alive
        self.threads = threads
        self._generation = -1
        self._bound: object = None  # the bind() whose input the method holds now
        self._ensure()
        sizes = self._method.method_meta().input_tensor_meta(0).sizes()
        self.input_shape: tuple[int, ...] = tuple(int(s) for s in sizes)

    def _ensure(self) -> None:
        """(Re)load program and method if the pool changed since they were created (or never were)."""
        if self._generation == _POOL.generation and self.threads == _POOL.threads:
            return
        rt = _runtime()
        with _POOL.lock:
            generation = _POOL.use(self.threads)
            with _native_log_filtered():
                self._program = rt._load_program_from_buffer(
                    self.artifact, program_verification=rt.Verification.InternalConsistency
                )
                self._method = self._program.load_method("forward")
            self._generation, self._bound = generation, None

    def _check(self, shape: tuple[int, ...]) -> None:
        if tuple(shape[1:]) != self.input_shape[1:]:
            raise ValueError(f"this program takes inputs shaped {list(self.input_shape)}, got {list(shape)}")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Logits of ``x``; a batch other than the exported one runs in slices of that size."""
        arr = np.ascontiguousarray(x, dtype=np.float32)
        self._check(arr.shape)
        batch = self.input_shape[0]
        if arr.shape[0] % batch:
            raise ValueError(f"batch {arr.shape[0]} is not a multiple of the exported batch {batch}")
        self._ensure()
        self._bound = None  # call() sets the method's input
        outs = [self._method.call((torch.from_numpy(arr[i : i + batch]),))[0] for i in range(0, arr.shape[0], batch)]
        return torch.cat(outs).numpy() if len(outs) > 1 else outs[0].numpy()

    def bind(self, x: torch.Tensor) -> Callable[[], object]:
        """``set_inputs`` once; each call is one ``execute()`` (input and output stay in the planned buffers)."""
        xt = x.detach().to("cpu", torch.float32).contiguous()
        if tuple(xt.shape) != self.input_shape:
            raise ValueError(f"this program takes inputs shaped {list(self.input_shape)}, got {list(xt.shape)}")
        token = object()

        def prepare() -> None:
            self._ensure()
            self._method.set_inputs((xt,))
            self._bound = token

        def run() -> None:
            if self._bound is not token or self._generation != _POOL.generation:
                prepare()  # another bind()/call() replaced the input, or the pool was replaced
            self._method.execute()

        prepare()
        return run


# ---------------------------------------------------------------------------------------------------------------
# How much of the graph XNNPACK runs


def _node_name(target: Any) -> str:
    return str(getattr(target, "__name__", target))


def _cost(node: Any) -> int:
    """Multiply-accumulates of a convolution or matrix product; output elements for any other op."""
    val = node.meta.get("val")
    if isinstance(val, (tuple, list)):
        val = val[0] if val else None
    if not isinstance(val, torch.Tensor):
        return 0
    out = int(val.numel())
    name = _node_name(node.target)

    def shape(i: int) -> tuple[int, ...]:
        arg = node.args[i] if len(node.args) > i else None
        v = getattr(arg, "meta", {}).get("val")
        return tuple(v.shape) if isinstance(v, torch.Tensor) else ()

    if name.startswith("aten.convolution") and len(w := shape(1)) >= 3:
        return out * int(np.prod(w[1:]))  # weight [out, in/groups, *kernel]
    if name.startswith("aten.linear") and (w := shape(1)):
        return out * w[-1]
    if name.startswith(("aten.mm", "aten.bmm")) and (a := shape(0)):
        return out * a[-1]
    if name.startswith("aten.addmm") and (a := shape(1)):
        return out * a[-1]
    return out


def _delegation(program: Any) -> dict[str, Any]:
    """Delegated share of an edge program after partitioning (``to_edge_transform_and_lower``).

    Every ``call_function`` node of the edge graph counts (``getitem`` excepted):
    those inside an ``executorch_call_delegate``'s lowered module (its
    ``original_module``, the partition as the partitioner cut it) run on
    XNNPACK, those left in the top graph run on ExecuTorch's CPU kernels.
    ``delegated_share`` weighs each node by its cost (:func:`_cost`:
    multiply-accumulates of convolutions and matrix products, output elements
    otherwise), ``delegated_node_share`` counts nodes.
    """
    gm = program.graph_module
    delegated = total = 0
    cost_in = cost_all = 0
    partitions = 0
    left: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op != "call_function" or _node_name(node.target) == "getitem":
            continue
        if _node_name(node.target) == "executorch_call_delegate":
            partitions += 1
            lowered = getattr(gm, node.args[0].target)
            for inner in lowered.original_module.graph.nodes:
                if inner.op == "call_function" and _node_name(inner.target) != "getitem":
                    c = _cost(inner)
                    delegated, total, cost_in, cost_all = delegated + 1, total + 1, cost_in + c, cost_all + c
            continue
        total += 1
        cost_all += _cost(node)
        name = _node_name(node.target)
        left[name] = left.get(name, 0) + 1
    return {
        "delegated_share": cost_in / cost_all if cost_all else (delegated / total if total else 0.0),
        "share_basis": "compute",
        "delegated_node_share": delegated / total if total else 0.0,
        "delegated_nodes": delegated,
        "total_nodes": total,
        "partitions": partitions,
        "not_delegated": dict(sorted(left.items())),
    }


def _xnnpack_nodes(blob: bytes) -> int:
    """Nodes of an XNNPACK delegate payload (``XNNGraph.xnodes``, backends/xnnpack/serialization/schema.fbs)."""
    from flatbuffers import encode, number_types
    from flatbuffers.table import Table

    fb = blob
    if blob[4:8] == b"XH00":  # XNNHeader: pad(4) magic(4) length(2) flatbuffer offset(4) size(4) …
        off, size = int.from_bytes(blob[10:14], "little"), int.from_bytes(blob[14:18], "little")
        fb = blob[off : off + size]
    buf = bytearray(fb)
    table = Table(buf, encode.Get(number_types.UOffsetTFlags.packer_type, buf, 0))
    field = table.Offset(6)  # vtable slot 1: xnodes (slot 0 is version)
    return table.VectorLen(field) if field else 0


def _pte_delegation(artifact: bytes) -> dict[str, Any]:
    """Delegated share read from a ``.pte`` alone: XNNPACK nodes vs kernel calls left to ExecuTorch's CPU kernels.

    Counts nodes as the runtime runs them (XNNPACK has fused batch norm and
    activations into its convolutions), so it is a node share, not the compute
    share :func:`_delegation` gives at export.
    """
    with _quiet_export():
        from executorch.exir._serialize._program import deserialize_pte_binary
        from executorch.exir.schema import DelegateCall, KernelCall

        program = deserialize_pte_binary(artifact).program
    delegated = partitions = kernels = 0
    left: dict[str, int] = {}
    for plan in program.execution_plan:
        if plan.name != "forward":
            continue
        for chain in plan.chains:
            for instr in chain.instructions:
                args = instr.instr_args
                if isinstance(args, KernelCall):
                    op = plan.operators[args.op_index]
                    name = op.name.replace("::", ".") + (f".{op.overload}" if op.overload else "")
                    left[name] = left.get(name, 0) + 1
                    kernels += 1
                elif isinstance(args, DelegateCall):
                    partitions += 1
                    delegate = plan.delegates[args.delegate_index]
                    if "xnnpack" in delegate.id.lower():
                        delegated += _xnnpack_nodes(program.backend_delegate_data[delegate.processed.index].data)
    total = delegated + kernels
    share = delegated / total if total else 0.0
    return {"delegated_share": share, "share_basis": "nodes", "delegated_node_share": share,
            "delegated_nodes": delegated, "total_nodes": total, "partitions": partitions,
            "not_delegated": dict(sorted(left.items()))}  # fmt: skip


_EXPORTED: dict[str, dict[str, Any]] = {}
"""Delegation of the artifacts exported in this process, by sha256 (the edge graph is gone once serialised)."""
_EXPORTED_MAX = 256


def _quantized_program(model: nn.Module, x: torch.Tensor, calibration: Iterable[torch.Tensor]) -> Any:
    """PT2E int8 (``XNNPACKQuantizer``, per-channel symmetric) of ``model``, exported for inputs like ``x``.

    The graph is captured with a dynamic batch where the network allows it, so
    calibration runs :data:`CALIBRATION_BATCH` images per pass (the observers
    see the same values; HistogramObserver's per-call cost made batch-1
    calibration of 300 images take minutes); otherwise one image at a time.
    """
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    images = [c.detach().to("cpu", torch.float32) for c in calibration]
    if not images:
        raise ValueError("int8 calibration needs at least one input")
    for c in images:
        if tuple(c.shape[1:]) != tuple(x.shape[1:]):
            raise ValueError(f"calibration inputs must be shaped like {list(x.shape)}, got {list(c.shape)}")
    try:
        batch = torch.export.Dim("batch", min=1, max=1 << 16)
        wide = x.expand(2, *x.shape[1:]).contiguous()
        captured, chunk = torch.export.export(model, (wide,), dynamic_shapes=({0: batch},)).module(), CALIBRATION_BATCH
    except Exception:  # the network fixes its batch (e.g. view(1, -1)): calibrate at the example's batch
        captured, chunk = torch.export.export(model, (x,)).module(), 0
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(captured, quantizer)
    with torch.no_grad():
        if chunk:
            for i in range(0, len(images), chunk):
                prepared(torch.cat(images[i : i + chunk]).contiguous())
        else:
            for c in images:
                prepared(c.contiguous())
    return torch.export.export(convert_pt2e(prepared), (x,))


class ExecuTorchTarget(Target):
    """ExecuTorch runtime with the XNNPACK delegate (fp32, or int8 through PT2E and ``XNNPACKQuantizer``)."""

    name = "executorch"
    install = "pip install 'edgecnn[executorch]'"
    artifact_suffix = ".pte"
    export_seconds = 6.0  # torch.export → to_edge → XNNPACK lowering of one block: 5–9 s here
    int8 = True
    # a table may time its blocks back to back (drift_reference=False): between two XNNPACK programs the reference
    # workload itself ran 1.24–1.77× slower than its baseline (cache and allocator state, not the machine), so
    # normalising by it added error — the unnormalised retest of the same networks was within ±10% for all 20
    always_normalised = False

    def version(self) -> str | None:
        """The installed ``executorch`` distribution's version (None without its runtime extension)."""
        return _version()

    def export(self, model: nn.Module, example: torch.Tensor, *, calibration: Iterable[torch.Tensor] | None = None,
               isa: InstructionSet | None = None) -> bytes:  # fmt: skip
        """The ``.pte`` of ``model`` (eval mode) for inputs shaped like ``example``, lowered to XNNPACK.

        int8 when ``calibration`` (batch-1 inputs) is given: :func:`_quantized_program`.
        Weights are made contiguous first: channels-last 1×1 weights (edgecnn
        trains channels-last) make ``torch.export`` emit ``as_strided_copy``
        nodes that XNNPACK does not take, splitting the graph into partitions.
        """
        self.require()
        module = copy.deepcopy(model).to("cpu").eval().to(memory_format=torch.contiguous_format)
        x = example.detach().to("cpu", torch.float32).contiguous()
        with _quiet_export():  # the imports print too (torchao at import)
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import to_edge_transform_and_lower

            if calibration is None:
                program = torch.export.export(module, (x,))
            else:
                program = _quantized_program(module, x, calibration)
            edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
            stats = _delegation(edge.exported_program())
            artifact = bytes(edge.to_executorch().buffer)
        if len(_EXPORTED) >= _EXPORTED_MAX:
            _EXPORTED.pop(next(iter(_EXPORTED)))
        _EXPORTED[hashlib.sha256(artifact).hexdigest()] = stats
        return artifact

    def load(self, artifact: bytes, *, threads: int, device: str = "cpu") -> Program:
        """The ``.pte`` loaded with ExecuTorch's threadpool at ``threads`` threads (see the module doc)."""
        if device != "cpu":
            raise ValueError(f"the executorch target (XNNPACK) runs on the CPU, not {device!r}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.require()
        return _ExecuTorchProgram(artifact, threads=threads)

    def int8_record(self, isa: InstructionSet | None = None) -> dict[str, Any]:
        return {"quantizer": "XNNPACKQuantizer (PT2E, torchao.quantization.pt2e)",
                "weights": "int8 symmetric, per output channel", "activations": "int8, per tensor, HistogramObserver",
                "calibration_batch": CALIBRATION_BATCH}  # fmt: skip

    def details(self, artifact: bytes) -> dict[str, Any]:
        """Runtime version and how much of the graph XNNPACK runs.

        For an artifact exported in this process: :func:`_delegation` (share of
        the compute, from the edge graph at export); for any other ``.pte``:
        :func:`_pte_delegation` (share of the nodes, read from the file).
        ``not_delegated`` names the ops left on ExecuTorch's CPU kernels.
        """
        stats = _EXPORTED.get(hashlib.sha256(artifact).hexdigest())
        if stats is None:
            self.require()
            stats = _pte_delegation(artifact)
        return {"executorch": self.version(), "backend": "XnnpackBackend", **stats}
