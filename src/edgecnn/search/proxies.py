"""Zero-cost accuracy proxies: scores of an *untrained* network that may rank candidates without training them.

Each proxy builds the candidate from its arch string with a fixed seed and
scores it in well under a second on a CPU, from at most one batch:

* ``synflow`` — Tanaka et al. 2020 (*Pruning neural networks without any
  data by iteratively conserving synaptic flow*), as a NAS proxy in
  Abdelfattah et al. 2021 (*Zero-Cost Proxies for Lightweight NAS*, §3):
  every parameter replaced by its absolute value, an all-ones input in double
  precision, ``R = Σ output``; the score is ``Σ_θ |θ · ∂R/∂θ|`` over the
  weights. BN runs in eval mode with fresh statistics (an identity), as
  Abdelfattah et al. remove it for this proxy. Reported as ``log`` of the sum:
  the raw value spans hundreds of orders of magnitude.
* ``naswot`` — Mellor et al. 2021 (*Neural Architecture Search without
  Training*, §3): for a batch of ``N`` images, the binary code of every unit
  after every activation (``x > 0``); ``K[i, j]`` = the number of units on
  which images ``i`` and ``j`` agree; the score is ``log |det K|``.
* ``grad_norm`` — Abdelfattah et al. 2021, §3: the sum over weight tensors
  of the L2 norm of the cross-entropy gradient of one batch at initialisation.
* ``params`` — the parameter count: the baseline the proxy papers find hard
  to beat (Abdelfattah et al. 2021, Table 2; White et al. 2022).

:class:`ProxyEstimator` has the estimator interface of
:mod:`edgecnn.search.estimate` (a list of arch strings → a list of scores), so
:func:`~edgecnn.search.estimate.rank_agreement` measures its Kendall τ against
trained accuracies like any other estimator.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgecnn.activations import ACTIVATIONS, GATES, make_activation
from edgecnn.build import build
from edgecnn.data import DataSet

__all__ = ["PROXIES", "PROXY_BATCH", "ProxyEstimator", "grad_norm", "naswot", "param_count", "proxy_batch", "synflow"]

PROXY_BATCH = 64  # images a proxy reads (NASWOT's K is PROXY_BATCH × PROXY_BATCH)

Batch = tuple[torch.Tensor, torch.Tensor]  # (images, labels)


def synflow(model: nn.Module, batch: Batch) -> float:
    """``log Σ |θ ⊙ ∂R/∂θ|`` over conv/linear weights, ``R`` the summed output of the all-ones input (see the doc).

    ``model`` is not changed (the proxy runs on a double-precision copy with absolute weights).
    """
    net = _copy(model).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    x = torch.ones((1, *batch[0].shape[1:]), dtype=torch.float64)
    net.zero_grad()
    net(x).sum().backward()
    total = sum(float((p.detach() * p.grad).abs().sum()) for p in net.parameters()
                if p.grad is not None and p.dim() > 1)  # fmt: skip
    return math.log(total) if total > 0 else float("-inf")


def naswot(model: nn.Module, batch: Batch) -> float:
    """``log |det K|``, ``K[i, j]`` the number of activation units on which images ``i`` and ``j`` agree (x > 0)."""
    net = _copy(model).eval()
    codes: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: codes.append((out.flatten(1) > 0).double()))
             for m in net.modules() if isinstance(m, _ACTIVATION_TYPES)]  # fmt: skip
    try:
        with torch.no_grad():
            net(batch[0])
    finally:
        for h in hooks:
            h.remove()
    if not codes:
        raise ValueError("naswot needs activation modules to read binary codes from; the network has none")
    c = torch.cat(codes, dim=1)
    k = c @ c.T + (1 - c) @ (1 - c).T
    sign, logdet = torch.linalg.slogdet(k)
    return float(logdet) if sign != 0 else float("-inf")


def grad_norm(model: nn.Module, batch: Batch) -> float:
    """Σ over conv/linear weights of ``‖∂L/∂W‖₂``, ``L`` the cross-entropy of ``batch`` at initialisation."""
    net = _copy(model).train()
    net.zero_grad()
    F.cross_entropy(net(batch[0]), batch[1]).backward()
    return sum(float(p.grad.norm()) for p in net.parameters() if p.grad is not None and p.dim() > 1)


def param_count(model: nn.Module, batch: Batch) -> float:
    """The number of parameters (the baseline proxy)."""
    return float(sum(p.numel() for p in model.parameters()))


PROXIES: dict[str, Callable[[nn.Module, Batch], float]] = {
    "synflow": synflow, "naswot": naswot, "grad_norm": grad_norm, "params": param_count,
}  # fmt: skip
"""Proxy name → function(model, batch) → score (higher: predicted better)."""

# the units NASWOT reads: every activation but the identity and the SE gates (a sigmoid is > 0 everywhere: its
# constant code would add the same count to every entry of K)
_ACTIVATION_TYPES = tuple({type(make_activation(n)) for n in ACTIVATIONS if n not in (*GATES, "linear")})


def _copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


def proxy_batch(data: DataSet, *, n: int = PROXY_BATCH, seed: int = 0) -> Batch:
    """``n`` training images of ``data`` drawn with ``seed``, normalised as training sees them (no augmentation)."""
    from edgecnn.data import BatchLoader

    idx = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))[:n]
    loader = BatchLoader(data.train.subset(idx.tolist()), batch_size=n, mean=data.mean, std=data.std, train=False)
    x, y = next(iter(loader))
    return x, y


@dataclass
class ProxyEstimator:
    """Scores arch strings by a zero-cost proxy of the freshly built network (seeded, so a score is repeatable)."""

    proxy: str  # a key of PROXIES
    batch: Batch  # the images (normalised, N×C×H×W) and labels the proxy reads
    num_classes: int
    seed: int = 0

    def __post_init__(self) -> None:
        if self.proxy not in PROXIES:
            raise ValueError(f"unknown proxy {self.proxy!r}; valid: {', '.join(PROXIES)}")

    def __call__(self, archs: list[str]) -> list[float]:
        out = []
        for arch in archs:
            torch.manual_seed(self.seed)
            model = build(arch, num_classes=self.num_classes, in_chans=self.batch[0].shape[1])
            out.append(PROXIES[self.proxy](model, self.batch))
        return out
