"""How much memory a network will take, from its arch spec alone — and a refusal above the limit.

``edgecnn.analysis.spec_cost.cost_from_spec`` costs a spec without building
it; the same resolved plan gives every layer's output size. Before a command
allocates a network (train, eval, latency, demo, list), it estimates:

* weights: ``4·P`` bytes (fp32), plus for training the gradients and two
  optimiser moments (``4·P`` each, AdamW's worst case): ``16·P``;
* activations: inference holds about two layers' outputs at a time, so
  ``4·B·max_l(A_l)·2``; training keeps every layer's output (and the inner
  width of ir/basic/bottleneck blocks) for the backward pass: ``4·B·Σ_l A_l·3``
  (output, its BN/activation copies). ``A_l`` = channels × H × W of layer l.

It is an estimate — within a small factor of what PyTorch allocates, which is
what a refusal needs: ``conv_c99999999`` or an input of 10⁶ pixels ask for
terabytes, not for 20 % more than the machine has. Above
``EDGECNN_MAX_MEMORY_GB`` (:mod:`edgecnn.limits`) :func:`check_memory` raises
a ``ValueError`` that gives the estimate and the variable that raises the limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgecnn.analysis.spec_cost import cost_from_spec
from edgecnn.arch import ArchSpec
from edgecnn.limits import MAX_MEMORY_GB
from edgecnn.plan import resolve

_F32 = 4  # bytes per element


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated bytes of one network at one input size and batch."""

    params: int  # parameters
    weights_bytes: int  # weights (+ gradients and optimiser moments when training)
    activations_bytes: int  # activations alive at once (inference) or kept for backward (training)

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.activations_bytes

    @property
    def gb(self) -> float:
        return self.total_bytes / 1e9


def estimate_memory(arch: str | ArchSpec, *, input_size: int | tuple[int, int], num_classes: int = 1000,
                    in_chans: int = 3, batch: int = 1, training: bool = False) -> MemoryEstimate:  # fmt: skip
    """The estimate of the module docstring (``ValueError`` from :mod:`edgecnn.limits` for absurd specs)."""
    size = (input_size, input_size) if isinstance(input_size, int) else (int(input_size[0]), int(input_size[1]))
    cost = cost_from_spec(arch, input_size=size, num_classes=num_classes, in_chans=in_chans)
    plans = resolve(arch, num_classes=num_classes, in_chans=in_chans, input_size=size)
    acts = [in_chans * size[0] * size[1]]
    for p in plans:
        area = p.out_size[0] * p.out_size[1] if p.out_size is not None else 1
        acts.append((p.cout + 2 * (p.mid or 0)) * area)  # ir: expanded and depthwise outputs at mid width
    if training:
        weights = 4 * _F32 * cost.params
        activations = 3 * _F32 * batch * sum(acts)
    else:
        weights = _F32 * cost.params
        activations = 2 * _F32 * batch * max(acts)
    return MemoryEstimate(cost.params, weights, activations)


def check_memory(arch: str | ArchSpec, *, input_size: int | tuple[int, int], num_classes: int = 1000,
                 in_chans: int = 3, batch: int = 1, training: bool = False,
                 what: str = "this network") -> MemoryEstimate:  # fmt: skip
    """:func:`estimate_memory`, refused with a ``ValueError`` above ``EDGECNN_MAX_MEMORY_GB``."""
    est = estimate_memory(arch, input_size=input_size, num_classes=num_classes, in_chans=in_chans, batch=batch,
                          training=training)  # fmt: skip
    limit = MAX_MEMORY_GB.value()
    if est.gb > limit:
        task = f"training at batch {batch}" if training else f"inference at batch {batch}"
        raise ValueError(
            f"{what} would need about {est.gb:,.3g} GB for {task} ({est.params:,} parameters, "
            f"{est.activations_bytes / 1e9:,.3g} GB of activations at {input_size}px), above the limit of "
            f"{limit:g} GB{MAX_MEMORY_GB.origin()}; use a smaller network, input or batch, or raise "
            f"{MAX_MEMORY_GB.env}=N"
        )
    return est
