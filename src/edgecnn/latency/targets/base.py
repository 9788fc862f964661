"""The interface every deployment target implements (:mod:`edgecnn.latency.targets`).

A target answers five questions about one runtime: is it installed (and which
version), how a PyTorch module becomes its deployable artifact (:meth:`Target.export`),
how an artifact is loaded and run (:meth:`Target.load` → :class:`Program`),
how one inference is timed (:meth:`Program.bind`: input bound once, one
synchronous run per call, for :func:`edgecnn.latency.measure.time_fn`), and
what else describes a measurement on it (:meth:`Target.details`). Per-layer
profiles are optional (:attr:`Target.profiles_layers`).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from edgecnn.latency.isa import InstructionSet


@dataclass(frozen=True)
class BlockTiming:
    """How a latency table times one block (:meth:`Target.time_block`)."""

    threads: int
    device: str
    config: Any  # edgecnn.latency.measure.TimingConfig
    reference: Any  # edgecnn.latency.measure.Reference, or None (eager tables without drift normalisation)
    profile_runs: int = 30  # profiler-based methods: profiled runs per entry
    method: str = "context"  # a target's own block method (ONNX Runtime: "context" or "profile")
    cache: dict[tuple[object, ...], Any] = field(default_factory=dict, compare=False)  # per-table state of a method


class Program(ABC):
    """A loaded artifact: run it on batch-1 inputs, or bind an input for timing."""

    @abstractmethod
    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The outputs (logits) of one inference on ``x`` (float32, N×C×H×W)."""

    @abstractmethod
    def bind(self, x: torch.Tensor) -> Callable[[], object]:
        """A callable running one synchronous inference on ``x`` (bound once), for the timing loop."""


class Target(ABC):
    """One runtime the network can be deployed to and timed on."""

    name: ClassVar[str]  # the registry key, recorded in every measurement's fingerprint
    install: ClassVar[str]  # how to install what it needs, e.g. "pip install 'edgecnn[onnx]'"
    artifact_suffix: ClassVar[str]  # file suffix of an exported artifact (".onnx", ".pte", ".pt")
    profiles_layers: ClassVar[bool] = False  # whether it has a per-layer profiler (see per_layer)
    int8: ClassVar[bool] = False  # whether export() can quantise to int8 (calibration=...)
    always_normalised: ClassVar[bool] = True  # table entries always drift-normalised (eager may time back to back)
    block_call_overhead: ClassVar[bool] = False  # table entries include a per-call cost to subtract (eager)
    export_seconds: ClassVar[float] = 0.0  # rough cost of preparing one block for timing (export + lower), this VM

    @abstractmethod
    def version(self) -> str | None:
        """The installed runtime's version; None when it is not installed."""

    def require(self) -> None:
        """ValueError saying how to install the runtime when it is missing."""
        if self.version() is None:
            raise ValueError(f"the {self.name} target needs its runtime: {self.install}")

    @abstractmethod
    def export(self, model: nn.Module, example: torch.Tensor, *, calibration: Iterable[torch.Tensor] | None = None,
               isa: InstructionSet | None = None) -> bytes:  # fmt: skip
        """The deployable artifact of ``model`` for inputs shaped like ``example`` (int8 when ``calibration``;
        ``isa``: the CPU the int8 artifact is for, this one when None — e.g. an agent's device)."""

    @abstractmethod
    def load(self, artifact: bytes, *, threads: int, device: str = "cpu") -> Program:
        """The artifact loaded for inference with ``threads`` intra-op threads."""

    def int8_variants(self, model: nn.Module, example: torch.Tensor, calibration: Iterable[torch.Tensor], *,
                      isa: InstructionSet | None = None) -> dict[str, bytes]:  # fmt: skip
        """int8 artifacts with some layer groups kept in fp32 (name → artifact), for a measured per-layer fallback;
        none where the runtime cannot mix (the default)."""
        return {}

    def int8_record(self, isa: InstructionSet | None = None) -> dict[str, Any]:
        """How :meth:`export` quantises for ``isa`` (this CPU when None): settings and why, for results and manifests."""
        return {}

    def channel_multiple(self, isa: InstructionSet | None = None) -> int:
        """The channel count this target's fast convolution kernels want on ``isa`` (this CPU when None): a
        layer whose channels are not a multiple of it may fall to a slower path, so pruning and width multipliers
        aimed at this target keep widths on it (``round_to`` / ``divisor``). 1: no known preference."""
        return 1

    def details(self, artifact: bytes) -> dict[str, Any]:
        """What a measurement on this target records besides the time (e.g. opset, delegated share)."""
        return {}

    def block_timer(self, plan: Any, module: Callable[[], nn.Module], x: torch.Tensor,
                    how: BlockTiming) -> Callable[[], Any]:  # fmt: skip
        """The block ``plan`` (built by ``module()``) prepared for timing on ``x``: each call times it once more
        (LatencyStats) — a latency table's later sweeps re-time the same loaded artifact instead of exporting again.

        The default exports the block alone, loads it once, and times it with the table's drift reference.
        A target with another block method overrides this (ONNX Runtime: in context).
        """
        from edgecnn.latency.timing import time_fn

        with self.threads(how.threads):
            run, _ = self.runner(module(), x, threads=how.threads, device=how.device)

        def timed() -> Any:
            with self.threads(how.threads):
                # reading x before each run warms it, as its producer would inside the network
                return time_fn(run, how.config, reference=how.reference, setup=x.sum)

        return timed

    def time_block(self, plan: Any, module: Callable[[], nn.Module], x: torch.Tensor,
                   how: BlockTiming) -> Any:  # fmt: skip
        """One latency-table entry: the block timed once (:meth:`block_timer`, called once)."""
        return self.block_timer(plan, module, x, how)()

    def layer_breakdown(self, model: nn.Module, x: torch.Tensor, *, threads: int, device: str, channels_last: bool,
                        config: Any, runs: int) -> tuple[list[Any], float, str]:  # fmt: skip
        """Per-block latencies (``LayerLatency``), the time no block owns (0 where not measured), and the method.

        Targets without a per-layer profiler say so (:attr:`profiles_layers`).
        """
        raise ValueError(f"the {self.name} target has no per-layer profiler; use --backend eager or onnxruntime")

    def _no_channels_last(self, channels_last: bool) -> None:
        if channels_last:
            raise ValueError(f"channels_last applies to the eager backend only; {self.name} picks its own layout")

    @contextlib.contextmanager
    def threads(self, threads: int) -> Iterator[None]:
        """Around a timing of this target: set process-wide thread state if the runtime needs it (eager does)."""
        yield

    def runner(self, model: nn.Module, x: torch.Tensor, *, threads: int, device: str = "cpu",
               channels_last: bool = False) -> tuple[Callable[[], object], dict[str, Any]]:  # fmt: skip
        """Export, load and bind in one step: (one-inference callable, details to record)."""
        self._no_channels_last(channels_last)
        self.require()
        artifact = self.export(model, x)
        return self.load(artifact, threads=threads, device=device).bind(x), self.details(artifact)
