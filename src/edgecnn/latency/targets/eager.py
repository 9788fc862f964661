"""PyTorch eager (inference mode) as a target: the network as it is trained, no export.

No device runs PyTorch eager in production; it is here as the baseline every
other target is compared with, and because its per-block timings need no
export. The module itself is timed in memory (:meth:`EagerTarget.runner`);
:meth:`EagerTarget.export` writes a ``torch.export`` program (``.pt2``).
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from edgecnn.latency.isa import InstructionSet
from edgecnn.latency.targets.base import Program, Target


class _EagerProgram(Program):
    def __init__(self, module: nn.Module, *, threads: int, device: str) -> None:
        self.module, self.threads_n, self.device = module.to(device), threads, device

    def __call__(self, x: np.ndarray) -> np.ndarray:
        from edgecnn.latency.timing import torch_threads

        with torch_threads(self.threads_n), torch.inference_mode():
            return self.module(torch.from_numpy(np.ascontiguousarray(x)).to(self.device)).cpu().numpy()

    def bind(self, x: torch.Tensor) -> Callable[[], object]:
        from edgecnn.latency.timing import eager_runner

        with warnings.catch_warnings():  # copying an exported module's pytree specs
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated", category=FutureWarning)
            return eager_runner(self.module, (x,), device=self.device)


class EagerTarget(Target):
    """PyTorch eager mode, ``torch.inference_mode``, ``torch.set_num_threads`` around every timing."""

    name = "eager"
    install = "pip install torch"
    artifact_suffix = ".pt2"
    profiles_layers = True
    always_normalised = False  # a table may time eager blocks back to back (drift_reference=False)
    block_call_overhead = True  # an isolated module call costs a few µs the network pays once, not per block

    def version(self) -> str | None:
        return str(torch.__version__)

    def export(self, model: nn.Module, example: torch.Tensor, *, calibration: Iterable[torch.Tensor] | None = None,
               isa: InstructionSet | None = None) -> bytes:  # fmt: skip
        """A ``torch.export`` program (``.pt2``) of ``model``; eager has no int8 path here."""
        if calibration is not None:
            raise ValueError("the eager target has no int8 export; use --target onnxruntime or executorch")
        with warnings.catch_warnings():  # torch's own pytree deprecation, raised inside save/load
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated", category=FutureWarning)
            program = torch.export.export(copy.deepcopy(model).eval(), (example,))  # exported in eval mode
            buf = io.BytesIO()
            torch.export.save(program, buf)
        return buf.getvalue()

    def load(self, artifact: bytes, *, threads: int, device: str = "cpu") -> Program:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated", category=FutureWarning)
            module = torch.export.load(io.BytesIO(artifact)).module()
        return _EagerProgram(module, threads=threads, device=device)

    @contextlib.contextmanager
    def threads(self, threads: int) -> Iterator[None]:
        from edgecnn.latency.timing import torch_threads

        with torch_threads(threads):
            yield

    def runner(self, model: nn.Module, x: torch.Tensor, *, threads: int, device: str = "cpu",
               channels_last: bool = False) -> tuple[Callable[[], object], dict[str, Any]]:  # fmt: skip
        """The module itself, no export (callers time it inside :meth:`threads`)."""
        from edgecnn.latency.timing import eager_runner

        return eager_runner(model, (x,), device=device, channels_last=channels_last), {}

    def layer_breakdown(self, model: nn.Module, x: torch.Tensor, *, threads: int, device: str, channels_last: bool,
                        config: Any, runs: int) -> tuple[list[Any], float, str]:  # fmt: skip
        """Each block timed alone on the input it receives inside the network."""
        from edgecnn.latency.per_layer import _eager_layers

        layers = _eager_layers(model, x, threads=threads, device=device, channels_last=channels_last, config=config)
        return layers, 0.0, "eager: each block timed alone on the input it receives inside the network"
