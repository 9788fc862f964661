"""ONNX Runtime as a target: export to ONNX with BN folded, run on the CPU execution provider.

Sessions, I/O binding and the node profiler live in :mod:`edgecnn.latency.onnx_backend`;
int8 is static post-training quantisation with settings chosen for the CPU
(:mod:`edgecnn.compress.quantize`, :mod:`edgecnn.latency.isa`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from edgecnn.export import DEFAULT_OPSET, onnx_bytes
from edgecnn.latency.fingerprint import onnxruntime_version
from edgecnn.latency.drift import normalized_samples
from edgecnn.latency.timing import LatencyStats, Reference, summarize
from edgecnn.latency.isa import InstructionSet
from edgecnn.latency.targets.base import BlockTiming, Program, Target
from edgecnn.latency.targets.ort_int8 import conv_groups, inline_constant_identities, int8_settings, quantize_onnx


def _is_boundary_reorder(node: str) -> bool:
    # ORT names the layout conversions it adds at the graph input/output exactly so;
    # the ones inside the graph get a "_token_N" suffix
    return node in ("ReorderInput", "ReorderOutput")


def profile_block(module: nn.Module, x: torch.Tensor, threads: int, runs: int, reference: Reference) -> LatencyStats:
    from edgecnn.latency.onnx_backend import profile_nodes

    refs: list[float] = []

    def between() -> None:  # the reference, timed, before the first and after every profiled run
        t0 = time.perf_counter()
        reference.fn()
        refs.append((time.perf_counter() - t0) * 1e3)

    nodes = profile_nodes(module, x, threads=threads, runs=runs, between=between)
    per_run = [0.0] * runs
    for name, times in nodes.items():
        if not _is_boundary_reorder(name):
            per_run = [a + t for a, t in zip(per_run, times)]
    drift = statistics.median(refs) / reference.baseline_ms
    samples = normalized_samples(per_run, refs, reference.baseline_ms)
    return summarize(samples, drift=drift, raw_median_ms=statistics.median(per_run))



class _OrtProgram(Program):
    def __init__(self, session: Any) -> None:
        self.session = session
        self.input = session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self.input: np.ascontiguousarray(x, dtype=np.float32)})[0])

    def bind(self, x: torch.Tensor) -> Callable[[], object]:
        from edgecnn.latency.onnx_backend import session_runner

        return session_runner(self.session, x)


class OrtTarget(Target):
    """ONNX Runtime, CPU execution provider, all graph optimisations, sequential executor."""

    name = "onnxruntime"
    install = "pip install 'edgecnn[onnx]'"
    artifact_suffix = ".onnx"
    export_seconds = 0.8  # torch.onnx.export of one block
    profiles_layers = True
    int8 = True

    def version(self) -> str | None:
        return onnxruntime_version()

    def export(self, model: nn.Module, example: torch.Tensor, *, calibration: Iterable[torch.Tensor] | None = None,
               isa: InstructionSet | None = None) -> bytes:  # fmt: skip
        """ONNX (opset :data:`~edgecnn.export.DEFAULT_OPSET`, BN folded); int8 QDQ when ``calibration`` is given,
        with the settings chosen for this CPU (:func:`~edgecnn.latency.targets.ort_int8.int8_settings`)."""
        fp32 = onnx_bytes(model, example)
        if calibration is None:
            return fp32
        self.require()
        settings, _ = int8_settings(isa)
        return quantize_onnx(fp32, (x.detach().cpu().numpy() for x in calibration), settings)

    def int8_variants(self, model: nn.Module, example: torch.Tensor, calibration: Iterable[torch.Tensor], *,
                      isa: InstructionSet | None = None) -> dict[str, bytes]:  # fmt: skip
        """int8 with each fallback group (depthwise, SE) kept fp32, and with both: ``"fp32 depthwise"``, …"""
        self.require()
        fp32 = onnx_bytes(model, example)
        groups = {k: v for k, v in conv_groups(inline_constant_identities(fp32)).items() if v}
        settings, _ = int8_settings(isa)
        batches = [x.detach().cpu().numpy() for x in calibration]
        combos = [[k] for k in groups] + ([list(groups)] if len(groups) > 1 else [])
        return {"fp32 " + "+".join(c): quantize_onnx(fp32, iter(batches), settings,
                                                     exclude=[n for k in c for n in groups[k]]) for c in combos}  # fmt: skip

    def load(self, artifact: bytes, *, threads: int, device: str = "cpu") -> Program:
        from edgecnn.latency.onnx_backend import make_session

        return _OrtProgram(make_session(artifact, threads=threads, device=device))

    def int8_record(self, isa: InstructionSet | None = None) -> dict[str, Any]:
        from edgecnn.latency.isa import detect_isa

        isa = isa or detect_isa()
        settings, why = int8_settings(isa)
        return {"settings": settings.to_dict(), "reason": why, "saturates_16bit_sums": isa.saturates_int8}

    def channel_multiple(self, isa: InstructionSet | None = None) -> int:
        """MLAS's NCHWc block: 8 floats with AVX2, 16 with AVX-512F; other CPUs have no NCHWc kernels (1).

        ONNX Runtime's ``NchwcTransformer`` moves a convolution to the blocked NCHWc kernels only when its channel
        counts suit the block; otherwise it runs the plain NCHW path. Checked with ONNX Runtime 1.32 on a 2-core AMD
        EPYC (AVX2): input channels a multiple of 4 (or fewer than the block) go to NCHWc, with the output channels
        padded up to the block (12 channels cost 16); 15 or 30 channels do not. Widths on the block get the fast
        kernels with nothing padded. Measured there (``benchmarks/netadapt_cifar.py``): ResNet-20 at 15/30/60
        channels ran 1.35x as long as at 16/32/64, at 8/16/32 0.38x."""
        from edgecnn.latency.isa import detect_isa

        isa = isa or detect_isa()
        if isa.family != "x86":
            return 1
        if "avx512f" in isa.features:
            return 16
        return 8 if "avx2" in isa.features else 1

    def details(self, artifact: bytes) -> dict[str, Any]:
        return {"opset": DEFAULT_OPSET, "providers": ["CPUExecutionProvider"]}

    def runner(self, model: nn.Module, x: torch.Tensor, *, threads: int, device: str = "cpu",
               channels_last: bool = False) -> tuple[Callable[[], object], dict[str, Any]]:  # fmt: skip
        from edgecnn.latency.onnx_backend import ort_runner

        self._no_channels_last(channels_last)
        self.require()
        return ort_runner(model, x, threads=threads, device=device)

    def block_timer(self, plan: Any, module: Callable[[], nn.Module], x: torch.Tensor,
                    how: BlockTiming) -> Callable[[], Any]:  # fmt: skip
        """``context``: the block's marginal cost in a small graph (:mod:`edgecnn.latency.context`);
        ``profile`` (older tables): its kernels' time from ORT's profiler, alone. Each call prepares and times
        anew (ORT exports in well under a second)."""
        self.require()
        if how.reference is None:
            raise ValueError("onnxruntime table entries are always drift-normalised: give the table's reference")
        if how.method == "context" and plan is not None:
            from edgecnn.latency.context import ort_block_in_context

            return lambda: ort_block_in_context(plan, x, threads=how.threads, reference=how.reference,
                                                config=how.config, device=how.device,
                                                without_cache=how.cache)  # fmt: skip
        return lambda: profile_block(module(), x, how.threads, how.profile_runs, how.reference)

    def layer_breakdown(self, model: nn.Module, x: torch.Tensor, *, threads: int, device: str, channels_last: bool,
                        config: Any, runs: int) -> tuple[list[Any], float, str]:  # fmt: skip
        """ORT's profiler: kernel time of each node in whole-graph runs, summed per block."""
        from edgecnn.latency.per_layer import _ort_layers

        self._no_channels_last(channels_last)
        self.require()
        layers, unassigned = _ort_layers(model, x, threads=threads, device=device, runs=runs)
        return layers, unassigned, "ONNX Runtime profiler: kernel time of each node in whole-graph runs, summed per block"
