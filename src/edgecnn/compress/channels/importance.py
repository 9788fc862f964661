"""Channel importance for structured pruning: one score per channel of each group, higher = keep (docs/design.md §5).

A channel of a coupled group lives in several layers; its score sums over
the layers that *produce* it (every conv / linear / depthwise filter of the
group's "out" members). Criteria, selected by name or passed as a callable
``(graph, model) -> {group index: scores}``:

* ``"l1"`` / ``"l2"`` — the L1 (Li et al. 2017, "Pruning Filters for
  Efficient ConvNets", §3.1) or L2 norm of the producing filters **after
  folding the BatchNorm that follows them** (``W_j·|γ_j|/√(σ²_j+ε)``): a conv
  followed by BN is invariant to the scale of its filters (docs/design.md §5), so the
  raw norm says little; the folded filter is what runs at inference. The
  BN is the one right after a conv / linear that feeds only it (what
  :func:`edgecnn.compress.fold_bn.fold_bn` folds).
* ``"bn_scale"`` — Network Slimming's ``|γ|`` (Liu et al. 2017), summed over
  the group's BatchNorms; groups without a BN fall back to ``"l1"``.
* ``"taylor"`` — first-order Taylor (Molchanov et al. 2019, "Importance
  Estimation for Neural Network Pruning", eq. 8 on groups): per batch
  ``(Σ_θ θ·∂L/∂θ)²`` over the channel's producing weights, biases and BN
  parameters, summed over the batches given (``data``).
* ``"random"`` — uniform scores from a seeded generator (the control).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from edgecnn.compress.channels.groups import ChannelGraph, Group

__all__ = ["CRITERIA", "CRITERION_KINDS", "Criterion", "CriterionKind", "check_criterion", "data_free_criteria",
           "importance"]  # fmt: skip

Criterion = Callable[[ChannelGraph, nn.Module], Mapping[int, torch.Tensor]]


@dataclass(frozen=True)
class Inputs:
    """What a criterion may read besides the graph and the model."""

    data: Iterable[Any] | None
    loss_fn: Callable[..., torch.Tensor]
    seed: int


@dataclass(frozen=True)
class CriterionKind:
    """One importance criterion: its name, whether it needs batches, and how it scores the prunable groups."""

    name: str
    needs_data: bool  # True: scores from gradients on batches (callers without data must refuse it up front)
    scores: Callable[[ChannelGraph, nn.Module, Inputs], dict[int, torch.Tensor]]
    source: str  # the paper (or "control")


def _per_index(t: torch.Tensor, dim: int, p: int) -> torch.Tensor:
    """Sum of ``|t|^p`` over every dim but ``dim``: one number per index of ``dim`` (one fused reduction)."""
    t = t.detach()
    others = [d for d in range(t.dim()) if d != dim % t.dim()]
    if not others:
        return t.float().abs() if p == 1 else t.float().pow(2)
    norm = torch.linalg.vector_norm(t, ord=p, dim=others, dtype=torch.float32)
    return norm if p == 1 else norm.pow(2)


def _per_channel(g: Group, m: int, values: torch.Tensor) -> torch.Tensor:
    """Per component of ``g``: the sum of ``values`` (indexed like member ``m``'s dim) over its indices."""
    return values[g.indices(m)].sum(1)


def _fold_scales(graph: ChannelGraph, model: nn.Module) -> dict[str, torch.Tensor]:
    """Layer path -> |γ|/√(σ²+ε) of the BN right after it (the pairs :func:`edgecnn.compress.fold_bn` folds)."""
    out = {}
    for layer, name in graph.folds.items():
        bn = model.get_submodule(name)
        if bn.running_var is None:
            continue
        gamma = bn.weight.detach() if bn.weight is not None else torch.ones_like(bn.running_var)
        out[layer] = (gamma.abs() / torch.sqrt(bn.running_var + bn.eps)).float()
    return out


def _norm_scores(g: Group, model: nn.Module, scales: Mapping[str, torch.Tensor], p: int) -> torch.Tensor:
    total = torch.zeros(g.width)
    for m, member in enumerate(g.members):
        if member.role != "out" or member.param != "weight":
            continue
        w = getattr(model.get_submodule(member.module), "weight")
        values = _per_index(w, member.dim, p)
        scale = scales.get(member.module)
        if scale is not None:  # the folded filter: output channel j scaled by BN j's |γ|/σ
            values = values * (scale if p == 1 else scale.pow(2))
        total += _per_channel(g, m, values)
    return total if p == 1 else total.sqrt()


def _bn_scores(g: Group, model: nn.Module, scales: Mapping[str, torch.Tensor]) -> torch.Tensor:
    bns = [(m, member) for m, member in enumerate(g.members)
           if member.param == "weight" and isinstance(model.get_submodule(member.module), _BatchNorm)]  # fmt: skip
    if not bns:
        return _norm_scores(g, model, scales, 1)
    total = torch.zeros(g.width)
    for m, member in bns:
        total += _per_channel(g, m, model.get_submodule(member.module).weight.detach().abs().float())
    return total


def _taylor(graph: ChannelGraph, model: nn.Module, data: Iterable[Any], loss_fn: Callable[..., torch.Tensor]
            ) -> dict[int, torch.Tensor]:  # fmt: skip
    groups = graph.prunable
    members: dict[tuple[str, str], torch.Tensor] = {}
    for g in groups:
        for member in g.members:
            if member.role in ("out", "norm") and member.param in ("weight", "bias"):
                t = getattr(model.get_submodule(member.module), member.param)
                if isinstance(t, nn.Parameter):
                    members[(member.module, member.param)] = t
    params = list(members.values())
    scores = {g.index: torch.zeros(g.width) for g in groups}
    batches = 0
    for batch in data:
        x, y = batch if isinstance(batch, (tuple, list)) else (batch, None)
        out = model(x)
        loss = loss_fn(out, y) if y is not None else loss_fn(out)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        prod = {k: (p.detach() * g).float() for (k, p), g in zip(members.items(), grads) if g is not None}
        for g in groups:
            s = torch.zeros(g.width)
            for m, member in enumerate(g.members):
                tp = prod.get((member.module, member.param))
                if tp is not None and member.role in ("out", "norm"):
                    t = tp.movedim(member.dim, 0)
                    s += _per_channel(g, m, t.reshape(t.shape[0], -1).sum(1))
            scores[g.index] += s.pow(2)
        batches += 1
    if batches == 0:
        raise ValueError("the taylor criterion needs data: give a few batches, e.g. data=[(x, y)]")
    return scores


def _norms(p: int) -> Callable[[ChannelGraph, nn.Module, Inputs], dict[int, torch.Tensor]]:
    def scores(graph: ChannelGraph, model: nn.Module, _: Inputs) -> dict[int, torch.Tensor]:
        scales = _fold_scales(graph, model)
        return {g.index: _norm_scores(g, model, scales, p) for g in graph.prunable}

    return scores


def _bn(graph: ChannelGraph, model: nn.Module, _: Inputs) -> dict[int, torch.Tensor]:
    scales = _fold_scales(graph, model)
    return {g.index: _bn_scores(g, model, scales) for g in graph.prunable}


def _random(graph: ChannelGraph, _model: nn.Module, inputs: Inputs) -> dict[int, torch.Tensor]:
    gen = torch.Generator().manual_seed(inputs.seed)
    return {g.index: torch.rand(g.width, generator=gen) for g in graph.prunable}


CRITERION_KINDS: dict[str, CriterionKind] = {c.name: c for c in (
    CriterionKind("l1", False, _norms(1), "Li et al. 2017, filter L1 norm (BN folded)"),
    CriterionKind("l2", False, _norms(2), "filter L2 norm (BN folded)"),
    CriterionKind("bn_scale", False, _bn, "Liu et al. 2017, Network Slimming |gamma|"),
    CriterionKind("taylor", True, lambda g, m, i: _taylor(g, m, i.data or [], i.loss_fn),
                  "Molchanov et al. 2019, first-order Taylor on groups"),
    CriterionKind("random", False, _random, "control"),
)}  # fmt: skip
"""Every importance criterion, one record each: adding one is one entry here (and its tests)."""

CRITERIA: tuple[str, ...] = tuple(CRITERION_KINDS)


def data_free_criteria() -> tuple[str, ...]:
    """The criteria that score without batches (what NetAdapt, one-shot pruning and the CLI can run)."""
    return tuple(n for n, c in CRITERION_KINDS.items() if not c.needs_data)


def check_criterion(criterion: str | Criterion, *, has_data: bool, where: str) -> None:
    """``ValueError`` up front when ``criterion`` is unknown, or needs batches that ``where`` does not give it."""
    if callable(criterion):
        return
    if criterion not in CRITERION_KINDS:
        raise ValueError(f"unknown importance criterion {criterion!r}; valid: {', '.join(CRITERIA)} or a callable")
    if CRITERION_KINDS[criterion].needs_data and not has_data:
        raise ValueError(f"the {criterion} criterion scores channels from gradients on batches, which {where} does "
                         f"not give it; use one of {', '.join(data_free_criteria())}, or prune once with "
                         "edgecnn.compress.plan_prune(..., criterion='taylor', data=[(x, y), ...])")  # fmt: skip


def importance(
    graph: ChannelGraph,
    model: nn.Module,
    criterion: str | Criterion = "l1",
    *,
    data: Iterable[Any] | None = None,
    loss_fn: Callable[..., torch.Tensor] | None = None,
    seed: int = 0,
) -> dict[int, torch.Tensor]:
    """Per prunable group of ``graph``, one score per channel (component), higher = more important.

    ``data`` (taylor only): batches ``(x, y)`` (or ``x``; then ``loss_fn``
    takes the output alone); ``loss_fn`` defaults to cross-entropy.
    """
    if callable(criterion):
        scores = dict(criterion(graph, model))
        for g in graph.prunable:
            if g.index not in scores or scores[g.index].numel() != g.width:
                raise ValueError(f"the criterion must give {g.width} scores for group {g.index}")
        return scores
    check_criterion(criterion, has_data=True, where="")  # unknown names; taylor says so itself without batches
    return CRITERION_KINDS[criterion].scores(graph, model, Inputs(data, loss_fn or F.cross_entropy, seed))
