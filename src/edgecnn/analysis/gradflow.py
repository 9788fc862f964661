"""Gradient flow: per-layer gradient norms after one backward pass (docs/design.md §3).

Vanishing gradients show as norms that shrink towards the input. A skip
connection adds the identity to each block's Jacobian (He et al. 2016,
*Identity Mappings in Deep Residual Networks*, eq. 5)::

    ∂h^{l+2}/∂a^l = W^{l+2}·A'(z^{l+1})·W^{l+1} + 1

so with ``W = 0.8`` and ``A' = 0.2`` a block passes back 0.8·0.2·0.8 = 0.128
of the gradient without the skip and 1.128 with it; over ``n`` blocks that is
0.128ⁿ against 1.128ⁿ. :func:`skip_gradient` and :class:`ScalarSkipChain`
reproduce the example with autograd; :func:`gradient_flow` measures any model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LayerGrad:
    """Gradient norms of one module after the backward pass."""

    name: str  # module path in the model ("blocks.3.body.0.conv")
    kind: str  # module class name
    output_grad_norm: float  # ‖∂L/∂output‖₂ over the batch (first call, for modules called twice)
    weight_grad_norm: float | None  # ‖∂L/∂weight‖₂, None for a module without a weight
    weight_norm: float | None  # ‖weight‖₂, for the update/weight ratio


@dataclass(frozen=True)
class GradFlow:
    """Per-layer gradient norms, in forward execution order."""

    layers: tuple[LayerGrad, ...]  # input side first
    loss: float  # the loss that was back-propagated

    def output_norms(self) -> list[float]:
        return [l.output_grad_norm for l in self.layers]

    def attenuation(self) -> float:
        """Output-gradient norm of the first layer over that of the last: ≪ 1 when gradients vanish."""
        first, last = self.layers[0].output_grad_norm, self.layers[-1].output_grad_norm
        return first / last if last else float("inf")


def _default_layers(model: nn.Module) -> list[str]:
    """Convs and linears: the layers whose weights the optimiser moves."""
    return [n for n, m in model.named_modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]


def gradient_flow(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor | None = None,
    *,
    loss_fn: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor] | None = None,
    layers: Sequence[str] | None = None,
) -> GradFlow:
    """One forward and backward pass on a batch; the gradient norms at ``layers`` (default: every conv/linear).

    The loss is ``loss_fn(output, targets)``; by default the cross-entropy when
    ``targets`` is given, else ``output.sum()`` (so ``∂L/∂output = 1``). The
    model stays in the mode it is in (BN in training mode uses batch
    statistics, as in training). Parameter ``.grad`` fields are left as they were.
    """
    names = list(layers) if layers is not None else _default_layers(model)
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise ValueError(f"no module named {missing[0]!r} in the model; names look like {next(iter(modules), '')!r}")
    if not names:
        raise ValueError("no layers to watch: the model has no conv/linear; pass layers=[...]")
    outputs: dict[str, torch.Tensor] = {}
    order: list[str] = []

    def hook(name: str) -> Callable[..., None]:
        def record(_m: nn.Module, _in: object, out: object) -> None:
            if name not in outputs and isinstance(out, torch.Tensor) and out.requires_grad:
                outputs[name] = out
                order.append(name)

        return record

    handles = [modules[n].register_forward_hook(hook(n)) for n in names]
    try:
        out = model(inputs)
    finally:
        for h in handles:
            h.remove()
    if loss_fn is not None:
        loss = loss_fn(out, targets)
    elif targets is not None:
        loss = F.cross_entropy(out, targets)
    else:
        loss = out.sum()
    weights = {n: getattr(modules[n], "weight", None) for n in order}
    params = [w for w in weights.values() if isinstance(w, torch.Tensor) and w.requires_grad]
    grads = torch.autograd.grad(loss, [outputs[n] for n in order] + params, allow_unused=True)
    out_grads, w_grads = grads[: len(order)], dict(zip(map(id, params), grads[len(order):]))
    result = []
    for name, g in zip(order, out_grads):
        w = weights[name]
        wg = w_grads.get(id(w)) if isinstance(w, torch.Tensor) else None
        result.append(LayerGrad(
            name, type(modules[name]).__name__, float(g.norm()) if g is not None else 0.0,
            float(wg.norm()) if wg is not None else None,
            float(w.detach().norm()) if isinstance(w, torch.Tensor) else None,
        ))  # fmt: skip
    return GradFlow(tuple(result), float(loss.detach()))


def skip_gradient(w1: float = 0.8, w2: float = 0.8, slope: float = 0.2, *, skip: bool) -> float:
    """``∂h/∂a`` of ``h = w2·A(w1·a) [+ a]`` by autograd, at a point where ``A'(w1·a) = slope``.

    ``A`` is a leaky ReLU with negative slope ``slope``, evaluated on its
    negative side. docs/design.md §3: 0.128 without the skip, 1.128 with it.
    """
    a = torch.tensor(-1.0 if w1 >= 0 else 1.0, dtype=torch.float64, requires_grad=True)  # so that w1·a < 0
    h = w2 * F.leaky_relu(w1 * a, slope)
    if skip:
        h = h + a
    (g,) = torch.autograd.grad(h, a)
    return float(g)


class _ScalarBlock(nn.Module):
    def __init__(self, w1: float, w2: float, slope: float, skip: bool) -> None:
        super().__init__()
        # float64, so that 0.8 is 0.8 and the products match the hand values to 1e-12
        self.fc1 = nn.Linear(1, 1, bias=False, dtype=torch.float64)
        self.fc2 = nn.Linear(1, 1, bias=False, dtype=torch.float64)
        with torch.no_grad():
            self.fc1.weight.fill_(w1)
            self.fc2.weight.fill_(w2)
        self.act = nn.LeakyReLU(slope)
        self.skip = skip

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        h = self.fc2(self.act(self.fc1(a)))
        return h + a if self.skip else h


class ScalarSkipChain(nn.Module):
    """``depth`` scalar blocks ``h ← w2·LeakyReLU(w1·h) [+ h]``: docs/design.md §3's example, stacked.

    On a negative input every pre-activation stays negative (for positive
    weights), so each block multiplies the gradient by exactly ``w1·slope·w2``
    (+1 with the skip): ``∂h^L/∂h^l = 0.128^{L−l}`` or ``1.128^{L−l}``. Float64.
    """

    def __init__(self, depth: int, *, w1: float = 0.8, w2: float = 0.8, slope: float = 0.2, skip: bool) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be positive, got {depth}")
        self.blocks = nn.Sequential(*(_ScalarBlock(w1, w2, slope, skip) for _ in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)
