"""Structured channel pruning of any network over coupled channel groups: plan, then apply (SPEC §5).

The groups come from :mod:`edgecnn.compress.groups` (residual adds, depthwise
and grouped convs, SE gates, concatenation, split / shuffle, flatten →
linear, norms, transposed convs), the channel scores from
:mod:`edgecnn.compress.importance`. :func:`plan_prune` chooses how many
channels each group keeps and which — for a target of

* ``keep=0.6``: keep 60% of the channels,
* ``macs=N`` / ``params=N``: at most N MACs / parameters at the input size,
* ``widths={group: count or channel list}``: exactly these,

with ``allocation="uniform"`` (every group keeps the same fraction, found by
bisection for a cost target) or ``"global"`` (channels ranked across groups
by their score divided by the group's mean score — Torch-Pruning's
``global_pruning`` with mean normalisation — removed one rounding step at a
time, cheapest first, until the target holds). Kept widths are multiples of
``round_to`` (default 8, the mobile grid; 1 for none) or the full width, and
never zero. The plan lists every group changed (width before/after, kept
channels) and every group left alone with the reason, and the params and
MACs before and after — computed exactly from the kept counts, so they equal
:func:`edgecnn.analysis.analyze` of the result (MACs of a conv / linear are
its weight count times its output positions, both known per layer).

:func:`prune` applies a plan and returns a :class:`Pruned` — a **new**
model (the input is untouched) and the kept indices of every pruned
dimension. For an :class:`~edgecnn.build.EdgeNet` the result is written in
arch space: a residual run's ``c`` and each block's ``m`` change in the
arch string (``m`` is then written explicitly, SE squeeze widths follow the
MobileNetV3 rule from the new widths), weights are transferred and
``build(pruned.arch)`` loads the pruned state dict strictly — pruned EdgeNets
are costed, latency-predicted, saved and loaded like any other. Groups the
arch format cannot write (channels tied across blocks of different widths
by a zero-padding shortcut, grouped convs) are skipped with that reason. Two
arch rules are kept by nudging a width by one channel off the grid: an
inverted residual whose new inner width equals its new input width would
lose its expand conv in the builder, and a ResNet block with a projection
shortcut whose input and output widths become equal would get an identity
one; an inverted residual whose widths become equal without a skip before
gets ``noskip``. :func:`edgecnn.compress.prune_inner.prune_inner` remains the
inner-width-only planner; its weight transfer is :func:`apply_kept` here.
"""

from __future__ import annotations

import copy
import heapq
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from edgecnn.arch import ArchSpec, BlockSpec
from edgecnn.blocks import se_width
from edgecnn.build import EdgeNet, build
from edgecnn.compress.groups import ChannelGraph, Group, channel_groups
from edgecnn.compress.importance import Criterion, importance
from edgecnn.plan import LayerPlan, resolve

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


# ---------------------------------------------------------------- costs


class _Costs:
    """Exact params and MACs of the model for any kept counts per group (no model built)."""

    def __init__(self, model: nn.Module, graph: ChannelGraph) -> None:
        a = graph.trace.analysis
        self.params, self.macs = a.params, a.macs
        self.width = {g.index: g.width for g in graph.groups}
        # (module, param) -> {dim: [(group, indices per channel)]}
        self.dims: dict[tuple[str, str], dict[int, list[tuple[int, int]]]] = defaultdict(lambda: defaultdict(list))
        for g in graph.prunable:
            for m, member in enumerate(g.members):
                self.dims[(member.module, member.param)][member.dim].append((g.index, int(g.rows[m].shape[1])))
        self.shape: dict[tuple[str, str], tuple[int, ...]] = {}
        self.counted: set[tuple[str, str]] = set()
        for key in self.dims:
            t = getattr(model.get_submodule(key[0]), key[1])
            self.shape[key] = tuple(t.shape)
            if isinstance(t, nn.Parameter):
                self.counted.add(key)
        self.layer_macs: dict[str, int] = defaultdict(int)
        for r in a.layers:
            if r.kind in ("conv", "conv_transpose", "linear") and (r.target, "weight") in self.dims:
                self.layer_macs[r.target] += r.macs

    def numel(self, key: tuple[str, str], counts: Mapping[int, int]) -> int:
        shape = list(self.shape[key])
        for dim, users in self.dims[key].items():
            shape[dim] -= sum(per * (self.width[g] - counts.get(g, self.width[g])) for g, per in users)
        return math.prod(shape)

    def __call__(self, counts: Mapping[int, int]) -> tuple[int, int]:
        params, macs = self.params, self.macs
        for key in self.counted:
            params -= math.prod(self.shape[key]) - self.numel(key, counts)
        for module, m in self.layer_macs.items():
            key = (module, "weight")
            full = math.prod(self.shape[key])
            macs -= m - m // full * self.numel(key, counts)
        return params, macs


# ---------------------------------------------------------------- EdgeNet arch space


def _field(p: LayerPlan, sub: str) -> str | None:
    """Which arch width an output filter at ``blocks.<pos>.<sub>`` sets: "c", "m", "m2", "sq" or None (tied)."""
    kind = p.spec.kind
    if sub.endswith("se.fc1"):
        return "sq"
    if sub.endswith("se.fc2") or sub.startswith("dw."):
        return None  # tied to the channels it gates / reads
    if kind == "ir":
        return "m" if sub.startswith("expand") else "c"
    if kind in ("basic", "bottleneck"):
        if sub.startswith("body.0"):
            return "m"
        if kind == "bottleneck" and sub.startswith("body.1"):
            return "m2"
    return "c"


class _ArchSpace:
    """Maps the groups of an EdgeNet onto arch widths; derived widths and the builder's rules."""

    def __init__(self, model: EdgeNet, graph: ChannelGraph) -> None:
        self.model = model
        self.plans = resolve(model.arch, num_classes=model.num_classes, in_chans=model.in_chans)
        self.role: dict[int, tuple[str, tuple[int, ...]]] = {}  # group -> (field, positions)
        self.reason: dict[int, str] = {}
        for g in graph.prunable:
            fields: set[tuple[int, str]] = set()
            for member in g.producers():
                head, _, sub = member.module.partition(".")
                pos_str, _, sub = sub.partition(".")
                if head != "blocks" or not pos_str.isdigit():
                    fields.add((-1, "?"))
                    continue
                f = _field(self.plans[int(pos_str)], sub)
                if f is not None:
                    fields.add((int(pos_str), f))
            kinds = {f for _, f in fields}
            positions = tuple(sorted(p for p, _ in fields))
            if len(kinds) == 1 and "?" not in kinds and positions:
                (f,) = kinds
                widths = {self._width(self.plans[p], f) for p in positions}
                if (f != "c" and len(positions) == 1) or (f == "c" and widths == {g.width}):
                    self.role[g.index] = (f, positions)
                    continue
            self.reason[g.index] = ("the arch format cannot write it: its channels are tied across blocks "
                                    f"{sorted(set(positions))} of different widths (zero-padding shortcut?)")  # fmt: skip
        self.by_field = {(f, p): g for g, (f, ps) in self.role.items() for p in ps}

    @staticmethod
    def _width(p: LayerPlan, f: str) -> int:
        return {"c": p.cout, "m": p.mid, "m2": p.mid, "sq": p.squeeze}[f] or 0

    def free(self, g: int) -> bool:
        return g in self.role and self.role[g][0] in ("c", "m")

    def widths(self, counts: Mapping[int, int]) -> list[tuple[int, int, int | None, bool]]:
        """(cin, cout, mid, noskip) per position for the kept counts of the free groups."""
        out = []
        cin = self.model.in_chans
        for p in self.plans:
            g = self.by_field.get(("c", p.position))
            if p.spec.kind in ("maxpool", "avgpool", "gap", "dropout"):
                cout = cin
            else:
                cout = p.cout if g is None else counts.get(g, p.cout)
            mid = p.mid
            if p.spec.kind == "ir" and p.mid == p.cin:
                mid = cin  # no expand conv: the inner channels are the input channels
            elif (gm := self.by_field.get(("m", p.position))) is not None:
                mid = counts.get(gm, p.mid)
            had_skip = p.spec.kind == "ir" and p.spec.skip != "none" and (p.spec.s or 1) == 1 and p.cin == p.cout
            noskip = p.spec.kind == "ir" and not had_skip and (p.spec.s or 1) == 1 and cin == cout
            out.append((cin, cout, mid, noskip))
            cin = cout
        return out

    def fix(self, counts: dict[int, int], step: int) -> dict[int, int]:
        """Counts with the derived groups filled in and the builder's rules kept (see the module docstring)."""
        counts = dict(counts)
        for _ in range(64):
            widths = self.widths(counts)
            bumped = False
            for p, (cin, cout, mid, _) in zip(self.plans, widths):
                g = None
                if p.spec.kind == "ir" and p.mid != p.cin and mid == cin:
                    g = self.by_field[("m", p.position)]
                elif (p.spec.kind in ("basic", "bottleneck") and p.spec.skip in (None, "auto")
                      and (p.cin != p.cout or (p.spec.s or 1) > 1) and (p.spec.s or 1) == 1 and cin == cout):
                    g = self.by_field.get(("c", p.position))  # fmt: skip
                if g is not None:
                    width = self._width(p, self.role[g][0])
                    counts[g] = counts.get(g, width) + 1 if counts.get(g, width) < width else width - 1
                    bumped = True
                    break
            if not bumped:
                break
        widths = self.widths(counts)
        for g, (f, (pos, *_)) in self.role.items():
            p = self.plans[pos]
            cin, cout, mid, _ = widths[pos]
            if f == "m2":
                counts[g] = mid  # type: ignore[assignment]
            elif f == "sq":
                base = mid if p.spec.kind == "ir" else (cin if p.spec.kind == "ds" else cout)
                counts[g] = se_width(base, p.spec.se or 0.0)  # type: ignore[arg-type]
        return counts

    def arch(self, counts: Mapping[int, int]) -> str:
        widths = self.widths(counts)
        out: list[BlockSpec] = []
        for p, (cin, cout, mid, noskip) in zip(self.plans, widths):
            b = p.spec
            changes: dict[str, Any] = {}
            if b.c is not None and not p.classifier and cout != p.cout:
                changes["c"] = cout
            if b.kind == "conv" and (b.g or 1) > 1 and b.g == p.cin:
                changes["g"] = cin  # a depthwise conv block follows its input width
            if b.kind in ("ir", "basic", "bottleneck") and (mid != p.mid or cin != p.cin or "c" in changes):
                changes["m"] = mid
            if noskip:
                changes["skip"] = "none"
            out.append(b.with_(**changes) if changes else b)
        return ArchSpec(tuple(_collapse(out, self.model.spec))).format()


def _collapse(blocks: list[BlockSpec], original: ArchSpec) -> list[BlockSpec]:
    """Write repeats back as ``r`` where a repeated block kept one spec."""
    out: list[BlockSpec] = []
    i = 0
    for b in original.blocks:
        n = b.r or 1
        reps = blocks[i : i + n]
        i += n
        first = reps[0]
        same = all(r == first.with_(s=1) for r in reps[1:]) and (n == 1 or first.r is not None)
        out.extend([first.with_(r=n)] if same and n > 1 else reps)
    return out


# ---------------------------------------------------------------- planning


def _allowed(width: int, step: int) -> list[int]:
    """Kept widths a group may take, descending: the full width, then multiples of ``step`` below it."""
    top = (width - 1) // step * step
    return [width, *range(top, 0, -step)] if width > step else [width]


def _nearest(width: int, step: int, fraction: float) -> int:
    target = fraction * width
    return min(_allowed(width, step), key=lambda k: (abs(k - target), k))


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
) -> PrunePlan:
    """Choose the kept channels of every coupled group of ``model`` for one target (see the module docstring).

    ``input_size`` = (C, H, W) or example ``inputs``: the shapes the costs are
    for. ``widths``: ``{group index: count or component indices}``; counts
    keep the top-scored channels in their order, indices keep exactly those
    in the given order. ``data`` / ``loss_fn``: for ``criterion="taylor"``.
    ``graph``: a :func:`channel_groups` result of this model to reuse.
    ``arch_space``: write the result as an arch string (EdgeNets whose
    modules are the builder's; ``None`` decides: an EdgeNet after
    ``fold_bn`` is pruned as a plain module). Reads the model only;
    :func:`prune` applies the plan.
    """
    rule = _targets(keep, macs, params, widths)
    if allocation not in ALLOCATIONS:
        raise ValueError(f"allocation must be one of {', '.join(ALLOCATIONS)}, got {allocation!r}")
    cg = graph if graph is not None else channel_groups(model, input_size, inputs=inputs, round_to=round_to)
    costs = _Costs(model, cg)
    arch = _ArchSpace(model, cg) if _in_arch_space(model, arch_space, cg) else None
    reasons: dict[int, str] = {g.index: g.reason for g in cg.groups if g.reason is not None}
    if arch is not None:
        for g in cg.prunable:
            if g.index in arch.reason:
                reasons[g.index] = arch.reason[g.index]
            elif not arch.free(g.index):
                reasons[g.index] = f"its width follows another group's ({arch.role[g.index][0]} of the arch)"
    free = [g for g in cg.prunable if g.index not in reasons and (widths is not None or g.width > round_to)]
    for g in cg.prunable:
        if g.index not in reasons and g not in free:
            reasons[g.index] = f"width {g.width} is not above the rounding grid round_to={round_to}"
    name = criterion if isinstance(criterion, str) else getattr(criterion, "__name__", "custom")
    scores = importance(cg, model, criterion, data=data, loss_fn=loss_fn, seed=seed)

    def complete(counts: dict[int, int]) -> dict[int, int]:
        return arch.fix(counts, round_to) if arch is not None else counts

    explicit: dict[int, list[int]] = {}
    if widths is not None:
        counts = {}
        valid = {g.index: g for g in free}
        for gi, v in widths.items():
            if gi not in valid:
                why = reasons.get(gi, "no such group") if isinstance(gi, int) else "not a group index"
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
        counts = complete(counts)
    elif allocation == "uniform":
        counts = _uniform(free, round_to, keep, macs, params, costs, complete)
    else:
        counts = _global(free, scores, round_to, keep, macs, params, costs, complete)

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
    p_after, m_after = costs(counts)
    shape = tuple(cg.inputs[0].shape[1:])
    return PrunePlan(tuple(entries), tuple(skipped), rule, name, allocation, round_to, shape, costs.params, p_after,
                     costs.macs, m_after, model.arch if arch else None, arch.arch(counts) if arch else None,
                     tuple(g.index for g in free), cg)  # fmt: skip


def _in_arch_space(model: nn.Module, wanted: bool | None, cg: ChannelGraph) -> bool:
    """Whether ``model`` is pruned in arch space: an EdgeNet as the builder made it (not BN-folded or edited).

    Checked without building anything: every block's params and MACs, as the
    trace measured them (``cg``'s analysis), equal what its arch implies
    (:func:`edgecnn.analysis.cost_from_spec`) — folding a BN into its conv,
    or any edit of a layer's shape, changes some block's count. (A model that
    still slipped through would fail :func:`prune`'s strict state-dict load
    with a ValueError, never silently.)
    """
    if wanted is False:
        return False
    same = isinstance(model, EdgeNet) and _matches_arch(model, cg)
    if wanted and not same:
        raise ValueError("arch_space=True needs an EdgeNet as the builder made it (not BN-folded or edited); "
                         "pass arch_space=None to prune it as a plain module")  # fmt: skip
    return same


def _matches_arch(model: EdgeNet, cg: ChannelGraph) -> bool:
    from edgecnn.analysis import cost_from_spec  # compress reads analysis, never the reverse

    shape = tuple(cg.inputs[0].shape[1:]) if len(cg.inputs) == 1 else ()
    if len(shape) != 3 or shape[0] != model.in_chans:
        return False
    spec = cost_from_spec(model.arch, (shape[1], shape[2]), num_classes=model.num_classes, in_chans=model.in_chans)
    got: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in cg.trace.analysis.layers:
        head, _, rest = r.name.partition(".")
        pos = rest.partition(".")[0].partition("#")[0]
        block = f"{head}.{pos}" if head == "blocks" and pos.isdigit() else r.name
        got[block][0] += r.params
        got[block][1] += r.macs
    if cg.trace.analysis.unused_params:
        return False
    return dict(got) == {c.name: [c.params, c.macs] for c in spec.layers}


def _over(costs: _Costs, counts: dict[int, int], macs: int | None, params: int | None) -> bool:
    p, m = costs(counts)
    return (macs is not None and m > macs) or (params is not None and p > params)


def _uniform(free: list[Group], step: int, keep: float | None, macs: int | None, params: int | None,
             costs: _Costs, complete: Callable[[dict[int, int]], dict[int, int]]) -> dict[int, int]:  # fmt: skip
    def at(f: float) -> dict[int, int]:
        return complete({g.index: _nearest(g.width, step, f) for g in free})

    if keep is not None:
        return at(keep)
    if not _over(costs, at(1.0), macs, params):
        return at(1.0)
    if _over(costs, at(0.0), macs, params):
        p, m = costs(at(0.0))
        raise ValueError(f"the target cannot be met by pruning channels: the narrowest network (every group at "
                         f"its smallest width) has {p:,} params and {m:,} MACs")  # fmt: skip
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if _over(costs, at(mid), macs, params) else (mid, hi)
    return at(lo)


def _global(free: list[Group], scores: Mapping[int, torch.Tensor], step: int, keep: float | None,
            macs: int | None, params: int | None, costs: _Costs,
            complete: Callable[[dict[int, int]], dict[int, int]]) -> dict[int, int]:  # fmt: skip
    counts = {g.index: g.width for g in free}
    ranked: dict[int, list[float]] = {}
    for g in free:
        s = scores[g.index].double()
        mean = float(s.mean())
        ranked[g.index] = sorted((s / mean if mean > 0 else torch.ones_like(s)).tolist())
    allowed = {g.index: _allowed(g.width, step) for g in free}
    total = sum(g.width for g in free)

    def chunk(gi: int) -> tuple[float, int, int] | None:
        k = counts[gi]
        lower = [a for a in allowed[gi] if a < k]
        if not lower:
            return None
        nxt = lower[0]
        width = len(ranked[gi])
        removed = ranked[gi][width - k : width - nxt]
        return (sum(removed) / len(removed), gi, nxt)

    heap = [c for gi in counts if (c := chunk(gi)) is not None]
    heapq.heapify(heap)

    def done() -> bool:
        if keep is not None:
            return sum(counts.values()) <= keep * total
        return not _over(costs, complete(counts), macs, params)

    while not done():
        if not heap:
            if keep is not None:
                break
            p, m = costs(complete(counts))
            raise ValueError(f"the target cannot be met by pruning channels: the narrowest network has {p:,} "
                             f"params and {m:,} MACs")  # fmt: skip
        _, gi, nxt = heapq.heappop(heap)
        counts[gi] = nxt
        if (c := chunk(gi)) is not None:
            heapq.heappush(heap, c)
    return complete(counts)


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
    elif isinstance(m, nn.modules.batchnorm._BatchNorm):
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
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and m.groups > 1:
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

