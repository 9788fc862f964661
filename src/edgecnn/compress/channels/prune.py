"""Structured channel pruning of any network over coupled channel groups: plan, then apply (docs/design.md §5).

The groups come from :mod:`edgecnn.compress.channels.groups` (residual adds, depthwise
and grouped convs, SE gates, concatenation, split / shuffle, flatten →
linear, norms, transposed convs), the channel scores from
:mod:`edgecnn.compress.channels.importance`. :func:`plan_prune` chooses how many
channels each group keeps and which — for a target of

* ``keep=0.6``: keep 60% of the channels,
* ``macs=N`` / ``params=N``: at most N MACs / parameters at the input size,
* ``widths={group: count or channel list}``: exactly these,

with ``allocation="uniform"`` or ``"global"`` (how the channels are
shared out: :mod:`edgecnn.compress.channels.prune_alloc`). Kept widths are multiples
of ``round_to`` (default 8, the mobile grid; 1 for none) or the full width,
and never zero. The plan lists every group changed (width before/after,
kept channels) and every group left alone with the reason, and the params
and MACs before and after — computed exactly from the kept counts, so they
equal :func:`edgecnn.analysis.analyze` of the result.

:func:`prune` applies a plan and returns a :class:`Pruned` — a **new**
model (the input is untouched) and the kept indices of every pruned
dimension. For an :class:`~edgecnn.build.EdgeNet` the result is written in
arch space (:mod:`edgecnn.compress.channels.prune_arch`): a residual run's ``c`` and
each block's ``m`` change in the arch string, weights are transferred and
``build(pruned.arch)`` loads the pruned state dict strictly — pruned
EdgeNets are costed, latency-predicted, saved and loaded like any other.
:func:`edgecnn.compress.channels.prune_inner.prune_inner` remains the
inner-width-only planner; its weight transfer is :func:`apply_kept` here.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from edgecnn.build import EdgeNet, build
from edgecnn.compress.channels.components import Group
from edgecnn.compress.channels.groups import ChannelGraph, channel_groups
from edgecnn.compress.channels.importance import Criterion, importance
from edgecnn.compress.channels.prune_alloc import Costs, global_ranking, split_ties, uniform
from edgecnn.compress.channels.prune_arch import ArchSpace, in_arch_space
from edgecnn.ops import CustomOp

__all__ = ["GroupPrune", "GroupSkip", "PrunePlan", "Pruned", "apply_kept", "plan_prune", "prune", "zero_pruned_"]

ALLOCATIONS = ("uniform", "global")


@dataclass(frozen=True)
class GroupPrune:
    """One group the plan changes: its width before and the channels (components) it keeps, in order."""

    group: int  # index into the channel graph's groups
    description: str  # "group 3: width 24, produced by ..."
    width_before: int
    kept: tuple[int, ...]  # kept components of the group, in their new order

    @property
    def width_after(self) -> int:
        return len(self.kept)


@dataclass(frozen=True)
class GroupSkip:
    """A group the plan leaves as it is, and why."""

    group: int
    description: str
    width: int
    reason: str


def blocked_summary(cg: Any, reasons: Mapping[int, str], free: list[Any], round_to: int, shown: int = 4) -> str:
    """Why a network cannot get narrower: the free groups at their floor, and the groups that cannot change with
    their reasons (most common reason first, a few groups each)."""
    by_reason: dict[str, list[int]] = {}
    for gi, why in reasons.items():
        by_reason.setdefault(why, []).append(gi)
    parts = [f"{len(free)} of {len(cg.groups)} channel groups may shrink (to widths on the grid round_to="
             f"{round_to}; at the narrowest they keep {round_to} channels each)"]  # fmt: skip
    for why, groups in sorted(by_reason.items(), key=lambda kv: -len(kv[1]))[:shown]:
        more = f", … {len(groups) - shown} more" if len(groups) > shown else ""
        parts.append(f"{len(groups)} cannot ({why}: group(s) {', '.join(map(str, sorted(groups)[:shown]))}{more})")
    return "; ".join(parts) + " — relax the budget, lower --round-to, or drop blocks (--drop-blocks)"


@dataclass(frozen=True)
class PrunePlan:
    """What :func:`prune` does to a model."""

    groups: tuple[GroupPrune, ...]  # groups that change (or are reordered), in graph order
    skipped: tuple[GroupSkip, ...]  # groups that cannot or need not change, with the reason
    rule: str  # the target, e.g. "keep=0.5", "macs<=1000000", "widths"
    criterion: str  # importance criterion name
    allocation: str  # "uniform" or "global"
    round_to: int  # rounding grid of kept widths
    input_shape: tuple[int, ...]  # (C, H, W) the costs are for
    params_before: int
    params_after: int
    macs_before: int  # per image
    macs_after: int
    arch_before: str | None  # EdgeNet only: arch strings before and after
    arch: str | None
    free: tuple[int, ...]  # the groups a target may shrink (what ``widths`` accepts)
    graph: ChannelGraph = field(repr=False, compare=False)

    @property
    def channels_before(self) -> int:
        return sum(g.width_before for g in self.groups)

    @property
    def channels_after(self) -> int:
        return sum(g.width_after for g in self.groups)

    def summary(self) -> str:
        """A header, one line per changed group and one per skipped group, for logs and the CLI."""
        lines = [f"pruned {len(self.groups)} group(s) by {self.rule} ({self.allocation}, {self.criterion}, "
                 f"round_to={self.round_to}): params {self.params_before:,} → {self.params_after:,}, "
                 f"MACs {self.macs_before:,} → {self.macs_after:,}"]  # fmt: skip
        if self.arch is not None:
            lines.append(f"  arch: {self.arch}")
        lines += [f"  {g.description}: {g.width_before} → {g.width_after}" for g in self.groups]
        lines += [f"  kept {s.description}: {s.reason}" for s in self.skipped]
        return "\n".join(lines)


@dataclass
class Pruned:
    """The result of :func:`prune`: a new model and the kept indices of every pruned dimension."""

    model: nn.Module  # the pruned model (an EdgeNet built from ``arch`` when the input was one)
    kept: dict[str, tuple[int, ...]]  # "module.param[dim]" -> kept original indices, in order (changed only)
    arch: str | None  # EdgeNet only: the arch string of ``model``
    plan: PrunePlan


# ---------------------------------------------------------------- planning


def _targets(keep: float | None, macs: int | None, params: int | None, widths: Mapping[int, Any] | None) -> str:
    given = {"keep": keep, "macs": macs, "params": params, "widths": widths}
    named = [k for k, v in given.items() if v is not None]
    if len(named) != 1:
        raise ValueError(f"give exactly one of keep, macs, params, widths; got {named or 'none'}")
    if keep is not None and not 0 < keep <= 1:
        raise ValueError(f"keep is the fraction of channels to keep, in (0, 1]; got {keep}")
    for name, v in (("macs", macs), ("params", params)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"{name} must be a positive integer budget, got {v!r}")
    return {"keep": f"keep={keep}", "macs": f"macs<={macs}", "params": f"params<={params}",
            "widths": "widths"}[named[0]]  # fmt: skip


def plan_prune(
    model: nn.Module,
    input_size: Sequence[int] | None = None,
    *,
    inputs: torch.Tensor | Sequence[torch.Tensor] | None = None,
    keep: float | None = None,
    macs: int | None = None,
    params: int | None = None,
    widths: Mapping[int, int | Sequence[int]] | None = None,
    criterion: str | Criterion = "l1",
    allocation: str = "uniform",
    round_to: int = 8,
    data: Iterable[Any] | None = None,
    loss_fn: Callable[..., torch.Tensor] | None = None,
    seed: int = 0,
    graph: ChannelGraph | None = None,
    arch_space: bool | None = None,
    custom_ops: Sequence[CustomOp] | None = None,
) -> PrunePlan:
    """Choose the kept channels of every coupled group of ``model`` for one target (see the module docstring).

    ``input_size`` = (C, H, W) or example ``inputs``: the shapes the costs are
    for. ``widths``: ``{group index: count or component indices}``; counts
    keep the top-scored channels in their order, indices keep exactly those
    in the given order. ``data`` / ``loss_fn``: for ``criterion="taylor"``.
    ``graph``: a :func:`channel_groups` result of this model to reuse. ``custom_ops``: how modules of your
    own relate their channels (:class:`edgecnn.ops.CustomOp`; passed to :func:`channel_groups`).
    ``arch_space``: write the result as an arch string (EdgeNets whose
    modules are the builder's; ``None`` decides: an EdgeNet after
    ``fold_bn`` is pruned as a plain module). Reads the model only;
    :func:`prune` applies the plan.
    """
    rule = _targets(keep, macs, params, widths)
    if allocation not in ALLOCATIONS:
        raise ValueError(f"allocation must be one of {', '.join(ALLOCATIONS)}, got {allocation!r}")
    cg = graph if graph is not None else channel_groups(model, input_size, inputs=inputs, round_to=round_to,
                                                        custom_ops=custom_ops)  # fmt: skip
    costs = Costs(model, cg)
    may = _prunable(model, cg, arch_space, round_to, widths is not None)
    name = criterion if isinstance(criterion, str) else getattr(criterion, "__name__", "custom")
    scores = importance(cg, model, criterion, data=data, loss_fn=loss_fn, seed=seed)
    counts, explicit = _counts(may, cg, scores, costs, round_to, widths, allocation, keep, macs, params)
    entries, skipped = _entries(cg, counts, explicit, scores, may.reasons)
    p_after, m_after = costs(counts)
    shape = tuple(cg.inputs[0].shape[1:])
    arch = may.arch
    return PrunePlan(tuple(entries), tuple(skipped), rule, name, allocation, round_to, shape, costs.params, p_after,
                     costs.macs, m_after, model.arch if arch else None, arch.arch(counts) if arch else None,
                     tuple(g.index for g in may.free), cg)  # fmt: skip


@dataclass
class _Prunable:
    """Which groups a plan may change: the free groups, and why every other one cannot change."""

    arch: ArchSpace | None  # the arch-space view where the result is written as an arch string
    reasons: dict[int, str]  # group -> why it cannot change
    allowed: dict[int, list[int]]  # group -> the kept counts it may take (descending, the full width first)
    followers: dict[int, int]  # group tied by a channel split -> its leader
    free: list[Group]  # the groups a target may shrink


def _prunable(model: nn.Module, cg: ChannelGraph, arch_space: bool | None, round_to: int,
              exact: bool) -> _Prunable:  # fmt: skip
    """The groups that may shrink, and the reason of every one that may not (the graph's, the arch's, the
    rounding grid's, a channel split's)."""
    arch = ArchSpace(model, cg) if in_arch_space(model, arch_space, cg) else None
    reasons: dict[int, str] = {g.index: g.reason for g in cg.groups if g.reason is not None}
    if arch is not None:
        for g in cg.prunable:
            if g.index in arch.reason:
                reasons[g.index] = arch.reason[g.index]
            elif not arch.free(g.index):
                reasons[g.index] = f"its width follows another group's ({arch.role[g.index][0]} of the arch)"
    allowed, followers = split_ties(cg, reasons, round_to, exact)
    free = [g for g in cg.prunable if g.index not in reasons and len(allowed[g.index]) > 1]
    for g in cg.prunable:
        if g.index not in reasons and g not in free:
            reasons[g.index] = (f"width {g.width} is not above the rounding grid round_to={round_to}"
                                if g.index not in followers.values() else
                                f"no smaller width keeps every group of its channel split on the grid "
                                f"round_to={round_to}")  # fmt: skip
    return _Prunable(arch, reasons, allowed, followers, free)


def _counts(may: _Prunable, cg: ChannelGraph, scores: Mapping[int, torch.Tensor], costs: Costs, round_to: int,
            widths: Mapping[int, int | Sequence[int]] | None, allocation: str, keep: float | None, macs: int | None,
            params: int | None) -> tuple[dict[int, int], dict[int, list[int]]]:  # fmt: skip
    """How many channels every group keeps (the given ``widths``, or the allocation's share of the budget), and
    the groups whose kept channels were given as indices."""
    width = {g.index: g.width for g in cg.groups}
    followers, arch = may.followers, may.arch

    def complete(counts: dict[int, int]) -> dict[int, int]:
        counts = dict(counts)
        for f, lead in followers.items():  # a group tied by a channel split keeps the same fraction as its leader
            counts[f] = width[f] * counts.get(lead, width[lead]) // width[lead]
        return arch.fix(counts, round_to) if arch is not None else counts

    if widths is not None:
        counts, explicit = _given_widths(may, widths)
        return complete(counts), explicit
    try:
        if allocation == "uniform":
            return uniform(may.free, may.allowed, keep, macs, params, costs, complete), {}
        return global_ranking(may.free, scores, may.allowed, followers, width, keep, macs, params, costs,
                              complete), {}  # fmt: skip
    except ValueError as exc:  # the budget is below the narrowest network: say which groups hold it up
        raise ValueError(f"{exc}; {blocked_summary(cg, may.reasons, may.free, round_to)}") from None


def _given_widths(may: _Prunable, widths: Mapping[int, int | Sequence[int]]
                  ) -> tuple[dict[int, int], dict[int, list[int]]]:  # fmt: skip
    """``widths`` checked against the free groups: the kept count per group, and the given indices where the
    kept channels were named."""
    counts: dict[int, int] = {}
    explicit: dict[int, list[int]] = {}
    valid = {g.index: g for g in may.free}
    for gi, v in widths.items():
        if gi not in valid:
            why = may.reasons.get(gi, "no such group") if isinstance(gi, int) else "not a group index"
            raise ValueError(f"widths: group {gi!r} cannot be pruned ({why}); prunable: {sorted(valid)}")
        w = valid[gi].width
        if isinstance(v, int) and not isinstance(v, bool):
            if not 1 <= v <= w:
                raise ValueError(f"widths: group {gi} keeps {v} channels? give 1 to its width {w}")
            counts[gi] = v
        else:
            idx = list(v)
            if not idx or len(set(idx)) != len(idx) or not all(isinstance(i, int) and 0 <= i < w for i in idx):
                raise ValueError(f"widths: group {gi} needs distinct component indices in 0..{w - 1}, got {v!r}")
            counts[gi], explicit[gi] = len(idx), idx
        if counts[gi] not in may.allowed[gi]:
            raise ValueError(f"widths: group {gi} is tied by a channel split to groups "
                             f"{sorted(f for f, lead in may.followers.items() if lead == gi)}, which keep the same "
                             f"fraction; it may keep {sorted(may.allowed[gi])} channels, not {counts[gi]}")  # fmt: skip
    return counts, explicit


def _entries(cg: ChannelGraph, counts: dict[int, int], explicit: dict[int, list[int]],
             scores: Mapping[int, torch.Tensor], reasons: dict[int, str]
             ) -> tuple[list[GroupPrune], list[GroupSkip]]:  # fmt: skip
    """The kept channels of every group that changes (the top-scored, in their order, or the given indices), and
    every group left alone that cannot change, with its reason."""
    entries, skipped = [], []
    for g in cg.groups:
        k = counts.get(g.index, g.width)
        if g.index in explicit:
            kept = explicit[g.index]
        elif k < g.width:
            order = torch.argsort(scores[g.index], descending=True, stable=True)
            kept = sorted(order[:k].tolist())
        else:
            kept = list(range(g.width))
        if kept != list(range(g.width)):
            entries.append(GroupPrune(g.index, g.describe(), g.width, tuple(kept)))
        elif g.index in reasons:
            skipped.append(GroupSkip(g.index, g.describe(), g.width, reasons[g.index]))
    return entries, skipped


# ---------------------------------------------------------------- applying


def _fix_attributes(m: nn.Module, depthwise_mult: int | None) -> None:
    w = getattr(m, "weight", None)
    if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        m.out_channels = w.shape[0]
        if depthwise_mult is not None:
            m.in_channels = m.groups = w.shape[0] // depthwise_mult
        else:
            m.in_channels = w.shape[1] * m.groups
    elif isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        m.in_channels, m.out_channels = w.shape[0], w.shape[1] * m.groups
    elif isinstance(m, nn.Linear):
        m.out_features, m.in_features = w.shape
    elif isinstance(m, nn.modules.batchnorm._NormBase):  # batch and instance norms
        m.num_features = (w if w is not None else m.running_mean).shape[0]
    elif isinstance(m, nn.LayerNorm):
        m.normalized_shape = (w.shape[0],)
    elif isinstance(m, nn.PReLU):
        m.num_parameters = w.shape[0]


def _apply(model: nn.Module, plan: PrunePlan) -> tuple[nn.Module, dict[str, tuple[int, ...]]]:
    return apply_kept(model, plan.graph, {e.group: e.kept for e in plan.groups})


@torch.no_grad()
def apply_kept(model: nn.Module, cg: ChannelGraph, keep: Mapping[int, Sequence[int]]
               ) -> tuple[nn.Module, dict[str, tuple[int, ...]]]:  # fmt: skip
    """A copy of ``model`` keeping, per group of ``cg``, the components in ``keep`` (in that order).

    The one weight-slicing step of every pruning in edgecnn (no checks on the
    choice beyond the graph's: planners decide); returns the copy and the
    kept indices of each changed ``"module.param[dim]"``.
    """
    index = cg.kept_indices(keep)
    new = copy.deepcopy(model)
    touched: dict[str, int | None] = {}
    kept: dict[str, tuple[int, ...]] = {}
    for (module, param, dim), idx in index.items():
        if idx == list(range(cg.sizes[(module, param, dim)])):
            continue
        m = new.get_submodule(module)
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and 1 < m.groups == m.in_channels:  # depthwise
            touched[module] = m.out_channels // m.in_channels
        else:
            touched.setdefault(module, None)
        t = getattr(m, param)
        sliced = t.detach().index_select(dim, torch.tensor(idx, dtype=torch.long, device=t.device)).clone()
        if isinstance(t, nn.Parameter):
            setattr(m, param, nn.Parameter(sliced, requires_grad=t.requires_grad))
        else:
            m._buffers[param] = sliced
        kept[f"{module}.{param}[{dim}]"] = tuple(idx)
    for module, mult in touched.items():
        _fix_attributes(new.get_submodule(module), mult)
    return new, kept


def prune(model: nn.Module, plan: PrunePlan) -> Pruned:
    """A new, pruned model (and the kept indices per layer) from a plan made for ``model``; ``model`` is unchanged.

    An EdgeNet comes back as ``build(plan.arch)`` with the pruned weights loaded strictly.
    """
    if plan.graph.model is not model:
        raise ValueError("the plan was made for another model; plan this one with plan_prune(model, ...)")
    new, kept = _apply(model, plan)
    if plan.arch is None:
        return Pruned(new, kept, None, plan)
    assert isinstance(model, EdgeNet)
    rebuilt = build(plan.arch, num_classes=model.num_classes, in_chans=model.in_chans)
    try:
        rebuilt.load_state_dict(new.state_dict())  # strict: every shape must match the rebuilt network
    except RuntimeError as e:
        raise ValueError(f"the pruned weights do not fit {plan.arch!r}: {str(e).splitlines()[0]}") from e
    first = next(model.parameters(), None)
    if first is not None:
        rebuilt.to(device=first.device, dtype=first.dtype)
    return Pruned(rebuilt.train(model.training), kept, rebuilt.arch, plan)


@torch.no_grad()
def zero_pruned_(model: nn.Module, plan: PrunePlan) -> nn.Module:
    """Zero, in place, every per-channel parameter that *produces* a channel the plan removes; returns ``model``.

    The producing filters and biases (conv / linear / depthwise rows, the
    "out" members) and the norms' scale and shift (``γ = β = 0``) of each
    removed channel: the channel is then exactly 0 after its norm, whatever
    the norm's running statistics — zeroing the filter alone would leave
    ``β − γμ/σ`` after an unfolded BN, and the folded bias after a folded
    one. Downstream of that, an op keeps the channel at 0 if it maps 0 to 0
    (ReLU, hard-swish, pooling, adds of zeroed channels, ``x · gate``), so a
    model whose activations on pruned channels do (every zoo model and the
    test nets) computes with these channels zeroed exactly what the pruned
    model computes without them: the check in ``tests/test_compress_prune.py``.
    """
    cg = plan.graph
    for e in plan.groups:
        g = cg.groups[e.group]
        removed = [c for c in range(g.width) if c not in set(e.kept)]
        for m, member in enumerate(g.members):
            if member.role == "in":
                continue
            t = getattr(model.get_submodule(member.module), member.param)
            if member.role == "norm" and member.param not in ("weight", "bias"):
                continue
            if removed:
                idx = g.rows[m][removed].flatten()
                t.index_fill_(member.dim, idx[idx >= 0].to(t.device), 0.0)
    return model
