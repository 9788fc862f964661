"""How many channels each group keeps: exact costs of any kept counts, the rounding grid, channel-split ties, and
the uniform and global allocations of :func:`edgecnn.compress.channels.prune.plan_prune` (docs/design.md §5).

* :class:`Costs` — params and MACs of the model for kept counts per group,
  without building it: a member dimension shrinks by (channels removed) ×
  (indices per channel), a layer's MACs scale with its weight count.
* :func:`allowed_widths` — the full width, then the multiples of
  ``round_to`` below it; :func:`split_ties` narrows these for groups tied
  by an equal channel split (``chunk(2)`` of ShuffleNetV2: every piece
  keeps the same count, so the tied groups keep one fraction).
* :func:`uniform` — every group keeps the same fraction (bisection on it
  for a MACs / params budget); :func:`global_ranking` — channels ranked
  across groups by score / the group's mean score (Torch-Pruning's
  ``global_pruning`` with mean normalisation), removed one grid step at a
  time, cheapest first, until the target holds.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from edgecnn.compress.channels.groups import ChannelGraph, Group

__all__ = ["Costs", "allowed_widths", "global_ranking", "nearest", "split_ties", "uniform"]


class Costs:
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


def allowed_widths(width: int, step: int) -> list[int]:
    """Kept widths a group may take, descending: the full width, then multiples of ``step`` below it."""
    top = (width - 1) // step * step
    return [width, *range(top, 0, -step)] if width > step else [width]


def nearest(allowed: Sequence[int], fraction: float) -> int:
    target = fraction * allowed[0]
    return min(allowed, key=lambda k: (abs(k - target), k))


def split_ties(cg: ChannelGraph, reasons: dict[int, str], step: int, exact: bool
                ) -> tuple[dict[int, list[int]], dict[int, int]]:  # fmt: skip
    """Kept counts each group may take (descending, the full width first) and the groups that follow a leader.

    A split into equal pieces (``chunk(2)`` of ShuffleNetV2) stays valid only
    if every piece keeps the same count. The groups it ties (connected through
    the splits: a *cluster*) keep the same fraction ``n / d`` of their widths
    (``d`` = the gcd of the widths), which keeps every piece's count equal
    because the full widths do; the first group leads, the others follow
    (``reasons`` gets why). A cluster whose pieces hold different numbers of
    channels that cannot be pruned is left alone. ``exact``: counts need not
    be on the grid ``step`` (explicit widths).
    """
    width = {g.index: g.width for g in cg.groups}
    cand = {g.index for g in cg.prunable if g.index not in reasons}
    parent = {g: g for g in cand}

    def find(g: int) -> int:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    stuck: dict[int, str] = {}
    for sp in cg.splits:
        inside = [g for piece in sp.pieces for g, _ in piece if g in cand]
        for g in inside[1:]:
            parent[find(g)] = find(inside[0])
        fixed = [f + sum(n * width[g] for g, n in piece if g not in cand) for f, piece in zip(sp.fixed, sp.pieces)]
        if len(set(fixed)) > 1:
            for g in inside:
                stuck.setdefault(g, f"{sp.where}: the pieces of this channel split hold {fixed} channels that cannot "
                                    "be pruned, so no piece can shrink")  # fmt: skip
    tied = {g for sp in cg.splits for piece in sp.pieces for g, _ in piece if g in cand}
    clusters: dict[int, list[int]] = defaultdict(list)
    for g in sorted(tied):
        clusters[find(g)].append(g)
    allowed = {g: allowed_widths(width[g], 1 if exact else step) for g in cand}
    followers: dict[int, int] = {}
    for members in clusters.values():
        lead, *rest = members
        why = next((stuck[g] for g in members if g in stuck), None)
        if why is not None:
            for g in members:
                reasons[g] = why
            continue
        d = math.gcd(*(width[g] for g in members))
        ok = [n for n in range(d - 1, 0, -1) if exact or all(width[g] * n // d % step == 0 for g in members)]
        allowed[lead] = [width[lead], *(width[lead] * n // d for n in ok)]
        where = next(sp.where for sp in cg.splits if any(g == lead for piece in sp.pieces for g, _ in piece))
        for g in rest:
            followers[g] = lead
            reasons[g] = (f"its width follows group {lead}'s: tied by the channel split at {where} (every piece "
                          "keeps the same count)")  # fmt: skip
    return allowed, followers


def _over(costs: Costs, counts: dict[int, int], macs: int | None, params: int | None) -> bool:
    p, m = costs(counts)
    return (macs is not None and m > macs) or (params is not None and p > params)


def uniform(free: list[Group], allowed: Mapping[int, Sequence[int]], keep: float | None, macs: int | None,
             params: int | None, costs: Costs, complete: Callable[[dict[int, int]], dict[int, int]]
             ) -> dict[int, int]:  # fmt: skip
    def at(f: float) -> dict[int, int]:
        return complete({g.index: nearest(allowed[g.index], f) for g in free})

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


def global_ranking(free: list[Group], scores: Mapping[int, torch.Tensor], allowed: Mapping[int, Sequence[int]],
            followers: Mapping[int, int], width: Mapping[int, int], keep: float | None, macs: int | None,
            params: int | None, costs: Costs, complete: Callable[[dict[int, int]], dict[int, int]]
            ) -> dict[int, int]:  # fmt: skip
    counts = {g.index: g.width for g in free}
    team = {g.index: [g.index, *(f for f, lead in followers.items() if lead == g.index)] for g in free}
    ranked: dict[int, list[float]] = {}
    for gi in (h for t in team.values() for h in t):
        s = scores[gi].double()
        mean = float(s.mean())
        ranked[gi] = sorted((s / mean if mean > 0 else torch.ones_like(s)).tolist())
    total = sum(width[h] for t in team.values() for h in t)

    def kept(c: Mapping[int, int]) -> int:
        return sum(width[h] * c[gi] // width[gi] for gi, t in team.items() for h in t)

    def chunk(gi: int) -> tuple[float, int, int] | None:
        k = counts[gi]
        lower = [a for a in allowed[gi] if a < k]
        if not lower:
            return None
        nxt = lower[0]
        removed = [v for h in team[gi]
                   for v in ranked[h][width[h] - width[h] * k // width[gi] : width[h] - width[h] * nxt // width[gi]]]
        return (sum(removed) / len(removed), gi, nxt)

    heap = [c for gi in counts if (c := chunk(gi)) is not None]
    heapq.heapify(heap)

    def done() -> bool:
        if keep is not None:
            return kept(counts) <= keep * total
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
