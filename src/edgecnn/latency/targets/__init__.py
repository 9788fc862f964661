"""Deployment targets: one module per runtime, one registry entry each.

A *target* is a runtime a network is deployed and timed on (PyTorch eager,
ONNX Runtime, ExecuTorch with XNNPACK …). Everything that measures latency —
:func:`edgecnn.latency.measure`, the drift reference, per-layer breakdowns,
tables — asks the registry for the target by name and uses only the
:class:`~edgecnn.latency.targets.base.Target` interface, so adding a runtime
is one module plus one line in :data:`TARGETS`.

Modules are imported on first use: a runtime's package (``onnxruntime``,
``executorch``) is only needed when its target is used.
"""

from __future__ import annotations

import functools
import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgecnn.latency.targets.base import Target

TARGETS: dict[str, str] = {
    "eager": "edgecnn.latency.targets.eager:EagerTarget",
    "onnxruntime": "edgecnn.latency.targets.ort:OrtTarget",
    "executorch": "edgecnn.latency.targets.executorch:ExecuTorchTarget",
}
"""name → ``module:Class`` of every known target (the class is imported on first use)."""


def target_names() -> tuple[str, ...]:
    """The registered target names, in registration order."""
    return tuple(TARGETS)


@functools.lru_cache(maxsize=None)
def get_target(name: str) -> Target:
    """The :class:`Target` registered as ``name`` (ValueError listing the valid names otherwise)."""
    if name not in TARGETS:
        raise ValueError(f"unknown target {name!r}; valid: {', '.join(TARGETS)}")
    module, _, cls = TARGETS[name].partition(":")
    return getattr(importlib.import_module(module), cls)()  # type: ignore[no-any-return]


def default_target() -> str:
    """The target a latency is measured on when none is named: ONNX Runtime where it is installed (a deployment
    runtime; eager PyTorch is per-operator overhead at small sizes, which no device runs), else eager."""
    return "onnxruntime" if get_target("onnxruntime").version() is not None else "eager"


__all__ = ["TARGETS", "default_target", "get_target", "target_names"]
