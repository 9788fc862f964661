"""The ERF and gradient-flow sections of a results document, measured on a network with real weights.

:mod:`.erf` and :mod:`.gradflow` measure; this module picks what to measure
on a whole classifier and writes the answer as plain JSON values, so that the
report (:mod:`edgecnn.report`) draws it without importing any of this:

* ``erf`` — Luo et al. 2016's effective receptive field of the central unit
  of the last spatial feature map (the *trunk*: the blocks before global
  pooling), with the theoretical field next to it;
* ``gradflow`` — per-layer gradient norms of one cross-entropy backward pass
  with the network's skip connections and, on a copy with the same weights,
  without them (He et al. 2016: the identity term keeps early-layer
  gradients from vanishing).

Both run on a copy of the model, so its weights, BN statistics and mode are
left as they were. Fields: docs/report.md.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from edgecnn.analysis.erf import ERF, effective_receptive_field
from edgecnn.analysis.gradflow import GradFlow, gradient_flow

__all__ = ["erf_section", "gradflow_section", "spatial_trunk", "without_skips"]

_DIGITS = 5  # significant digits kept of the ERF map (its values sum to 1; JSON size, not precision, matters)


def spatial_trunk(model: nn.Module, input_shape: Sequence[int]) -> tuple[nn.Module, int]:
    """The leading blocks of ``model`` whose output still has spatial axes, and how many there are.

    ``model`` must have an ``nn.Sequential`` ``blocks`` (an edgecnn network) or be one.
    """
    blocks = model if isinstance(model, nn.Sequential) else getattr(model, "blocks", None)
    if not isinstance(blocks, nn.Sequential):
        raise ValueError(f"{type(model).__name__} has no 'blocks' sequence; pass its spatial part to "
                         "effective_receptive_field directly")  # fmt: skip
    shape = tuple(int(s) for s in input_shape)
    dtype = next((p.dtype for p in blocks.parameters() if p.is_floating_point()), torch.float32)
    h, n = torch.zeros((1, *shape[1:]), dtype=dtype), 0
    was = blocks.training
    blocks.eval()
    try:
        with torch.no_grad():
            for block in blocks:
                h = block(h)
                if h.dim() != len(shape):
                    break
                n += 1
    finally:
        blocks.train(was)
    if n == 0:
        raise ValueError("the network's first block already drops the spatial axes: it has no ERF")
    return blocks[:n], n


def without_skips(model: nn.Module) -> tuple[nn.Module, int]:
    """A copy of ``model`` with every skip connection turned off (same weights), and how many were on.

    A skip is a module's ``use_skip`` flag (edgecnn's inverted-residual and
    ResNet blocks): ``h = f(x) + x`` becomes ``h = f(x)``, as if the block had
    been built with ``noskip``.
    """
    plain = copy.deepcopy(model)
    n = 0
    for m in plain.modules():
        if getattr(m, "use_skip", False) is True:
            m.use_skip = False
            n += 1
    return plain, n


def _sig(v: float) -> float:
    return float(f"{v:.{_DIGITS}g}")


def erf_to_dict(erf: ERF) -> dict[str, Any]:
    """An :class:`ERF` as plain JSON values (the map rounded to 5 significant digits)."""
    rf = erf.rf
    return {
        "map": [[_sig(v) for v in row] for row in erf.map.tolist()] if erf.map.dim() == 2
        else [_sig(v) for v in erf.map.flatten().tolist()],
        "shape": list(erf.map.shape),
        "centre": list(erf.centre),
        "output_index": list(erf.output_index),
        "samples": erf.samples,
        "radius50": erf.radius50,
        "radius95": erf.radius95,
        "std": list(erf.std()),
        "rf_size": None if rf is None or rf.whole else [float(s) for s in rf.size],
        "rf_whole": bool(rf is not None and rf.whole),
        "rf_global": bool(rf is not None and rf.global_context),  # an SE gate lets the whole input in
    }  # fmt: skip


def erf_section(model: nn.Module, input_shape: Sequence[int], *, samples: int = 16, batch: int = 8,
                seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """The ``erf`` section: the ERF of the central unit of ``model``'s last spatial map, on random inputs.

    ``input_shape`` is ``(C, H, W)`` or ``(N, C, H, W)`` (N ignored: ``batch`` inputs at a time).
    """
    shape = tuple(int(s) for s in input_shape)[-3:]
    trunk, n = spatial_trunk(copy.deepcopy(model), (1, *shape))
    erf = effective_receptive_field(trunk, (batch, *shape), samples=samples, seed=seed)
    return {"layer": f"blocks.{n - 1}", "input_shape": list(shape), **erf_to_dict(erf)}


def gradflow_to_dict(flow: GradFlow) -> dict[str, Any]:
    """A :class:`GradFlow` as plain JSON values."""
    return {"loss": flow.loss, "attenuation": flow.attenuation(),
            "layers": [{"name": l.name, "kind": l.kind, "output_grad_norm": l.output_grad_norm,
                        "weight_grad_norm": l.weight_grad_norm, "weight_norm": l.weight_norm}
                       for l in flow.layers]}  # fmt: skip


def gradflow_section(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, train_mode: bool = True,
                     seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """The ``gradflow`` section: gradient norms with the skips and, same weights, without them.

    ``inputs`` are normalised images, ``targets`` their labels (cross-entropy
    loss). In ``train_mode`` BN uses batch statistics, as during training,
    on copies so that the model's running statistics are not touched. Both
    passes draw the same dropout masks (``seed``; the global RNG is restored).
    """
    with_skips = copy.deepcopy(model).train(train_mode)
    plain, n = without_skips(with_skips)

    def flow(net: nn.Module) -> dict[str, Any]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return gradflow_to_dict(gradient_flow(net, inputs, targets))

    # a network without skips has nothing to turn off: one curve
    runs = {"with skips": flow(with_skips), "without skips": flow(plain)} if n else {"as built (no skips)": flow(plain)}
    return {"batch": int(inputs.shape[0]), "mode": "train" if train_mode else "eval", "skips": n, "runs": runs}
