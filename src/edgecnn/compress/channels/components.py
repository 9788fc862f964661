"""From label unions to channel groups: union-find over slots, then components grouped by what they touch (docs/design.md §5).

The label run (:mod:`edgecnn.compress.channels.labels`) gives every output channel
of a layer a *slot* and records the unions it meets (a residual add, an SE
gate, a grouped conv's positions) and the blocks (an op without a channel
rule, the network output). This file turns them into the
:class:`Group` s of :class:`edgecnn.compress.channels.groups.ChannelGraph`:

1. :meth:`Slots.resolve` — connected components of the unions (every slot
   ends at its component's smallest slot, the *root*); a blocked component
   keeps the reason of its first block in graph order.
2. :class:`Components` — components that touch the same set of (layer,
   parameter, dimension) sources, sit in the same pieces of every channel
   split and share a block reason form one group, whose channels are ordered
   by root (the earliest producer's order); per member, the ``(width, n)``
   index rows each channel owns. Then each equal channel split
   (``chunk``) as the groups in each of its pieces (:class:`Split`).

Both steps exist twice with one result: on tensors (vectorised: a hash of
the touched sources per root, scatter/unique) for large networks, and in
plain Python below :data:`SMALL` slots + labels, where torch's per-op cost
(~5 µs an op, ~100 ops) would be most of a small network's planning time.
``tests/test_compress_prune.py`` checks they agree.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Components", "Group", "Key", "Member", "Slots", "Split", "SMALL"]

Key = tuple[str, str, int]  # (module path, parameter or buffer name, dimension)
SMALL = 4096  # slots + labels up to which components and groups are found in plain Python (no per-op cost)


@dataclass(frozen=True)
class Member:
    """One indexed dimension of one parameter (or buffer) of one layer, inside a group."""

    module: str  # module path, as in model.named_modules()
    param: str  # "weight", "bias", "running_mean", ...
    dim: int  # the dimension of that tensor the group's channels index
    role: str  # "out" (a filter that produces the channel), "in" (reads it) or "norm" (per-channel scale/shift)

    @property
    def key(self) -> Key:
        return (self.module, self.param, self.dim)

    def __str__(self) -> str:
        return f"{self.module}.{self.param}[{self.dim}]"


@dataclass(frozen=True, eq=False)
class Group:
    """Channels that are removed together: per member, the indices each component (channel) owns.

    ``rows[m]`` is a ``(width, n)`` long tensor: row ``c`` holds the indices
    of component ``c`` in member ``m``'s dimension (``n`` is 1 for most
    layers, ``H·W`` for a Linear after a flatten, the multiplier for a
    depthwise conv with a channel multiplier; ``-1`` pads rows of a group
    whose channels own different counts, which is then not prunable).
    ``channels[c][m]`` is the same as nested tuples.
    """

    index: int  # position in ChannelGraph.groups
    members: tuple[Member, ...]  # in graph order of first use
    rows: tuple[torch.Tensor, ...]  # per member: (width, n) indices
    reason: str | None  # why the group cannot be pruned; None when it can
    round_to: int  # kept widths are multiples of this (or the full width)

    @property
    def width(self) -> int:
        """Number of channels (components) in the group."""
        return int(self.rows[0].shape[0])

    @property
    def prunable(self) -> bool:
        return self.reason is None

    @functools.cached_property
    def channels(self) -> tuple[tuple[tuple[int, ...], ...], ...]:
        """``channels[c][m]``: the indices of component ``c`` in member ``m`` (tuples, for reading)."""
        rows = [t.tolist() for t in self.rows]
        return tuple(tuple(tuple(i for i in r[c] if i >= 0) for r in rows) for c in range(self.width))

    def indices(self, m: int) -> torch.Tensor:
        """``(width, n)`` long tensor: the indices of every component in member ``m``."""
        return self.rows[m]

    def producers(self) -> tuple[Member, ...]:
        """The members whose filters produce the channels (conv/linear outputs, depthwise filters)."""
        return tuple(m for m in self.members if m.role == "out" and m.param == "weight")

    def describe(self) -> str:
        """One line: the width and the producing layers."""
        names = sorted({m.module for m in self.producers()})
        shown = ", ".join(names[:4]) + (f", … ({len(names)} layers)" if len(names) > 4 else "")
        return f"group {self.index}: width {self.width}, produced by {shown or '(no layer)'}"


@dataclass(frozen=True)
class Split:
    """A split of channels into equal pieces (``chunk(n)``): valid after pruning only if every piece keeps the same
    count. ``pieces[p]``: ``(group index, occurrences per channel)`` of the groups in piece ``p``; ``fixed[p]``: its
    positions that belong to no group (the network input, mixed labels)."""

    where: str  # the fx node, e.g. "chunk (chunk)"
    pieces: tuple[tuple[tuple[int, int], ...], ...]
    fixed: tuple[int, ...]


# ---------------------------------------------------------------- union-find over slots


class Slots:
    """Channel slots, and the unions and blocks met on the walk, resolved at once (slot 0 is "no slot": the
    network input, constants, padding).

    :meth:`resolve` finds the connected components of the recorded unions
    (min-label propagation with pointer jumping on tensors; a union-find in
    Python below :data:`SMALL`: every slot ends at the smallest slot of its
    component, its *root*) and gives each blocked component the reason of
    the first block recorded on any of its slots, in graph order.
    """

    def __init__(self) -> None:
        self.count = 1
        self.events: list[tuple[torch.Tensor, torch.Tensor | None, str]] = []  # (a, b, why); b None: a block

    def new(self, n: int) -> torch.Tensor:
        start = self.count
        self.count += n
        return torch.arange(start, start + n, dtype=torch.long)

    def union(self, a: torch.Tensor, b: torch.Tensor, why: str) -> None:
        """Tie slot ``a[i]`` to ``b[i]``; a slot tied to 0 (not a slot) is blocked with ``why``."""
        self.events.append((a.reshape(-1), b.reshape(-1), why))

    def block(self, labels: torch.Tensor, why: str) -> None:
        """Block every slot in ``labels`` with ``why`` (0s, "no slot", are ignored)."""
        self.events.append((labels.reshape(-1), None, why))

    def resolve(self) -> tuple[torch.Tensor, dict[int, str]]:
        """(root of every slot, reason per blocked root)."""
        if self.count + sum(len(a) for a, _, _ in self.events) <= SMALL:
            return self._resolve_small()
        n = self.count
        ties = [(a, b) for a, b, _ in self.events if b is not None]
        a = torch.cat([t for t, _ in ties]) if ties else torch.zeros(0, dtype=torch.long)
        b = torch.cat([t for _, t in ties]) if ties else torch.zeros(0, dtype=torch.long)
        keep = (a != b) & (a != 0) & (b != 0)
        a, b = a[keep], b[keep]
        root = torch.arange(n)
        while True:
            low = torch.minimum(root[a], root[b])
            new = root.scatter_reduce(0, a, low, "amin").scatter_reduce_(0, b, low, "amin")
            while True:  # pointer jumping
                up = new[new]
                if torch.equal(up, new):
                    break
                new = up
            if torch.equal(new, root):
                break
            root = new
        # blocks: a slot tied to 0, or named by a block; the first event (graph order) names the reason
        slots, event = [], []
        for e, (x, y, _) in enumerate(self.events):
            if y is None:
                slots.append(x)
            else:
                slots.append(torch.where(x == 0, y, torch.where(y == 0, x, 0)))
            event.append(torch.full((len(slots[-1]),), e, dtype=torch.long))
        if not slots:
            return root, {}
        r = root[torch.cat(slots)]
        e_of = torch.cat(event)
        hit = r != 0
        first = torch.full((n,), len(self.events), dtype=torch.long).scatter_reduce_(0, r[hit], e_of[hit], "amin")
        blocked = torch.nonzero(first < len(self.events), as_tuple=True)[0]
        return root, {g: self.events[e][2] for g, e in zip(blocked.tolist(), first[blocked].tolist())}


    def _resolve_small(self) -> tuple[torch.Tensor, dict[int, str]]:
        """:meth:`resolve` in plain Python: a union-find whose roots are the smallest slots (the same result)."""
        parent = list(range(self.count))

        def find(x: int) -> int:
            r = x
            while parent[r] != r:
                r = parent[r]
            while parent[x] != r:
                parent[x], x = r, parent[x]
            return r

        events = [(a.tolist(), None if b is None else b.tolist(), why) for a, b, why in self.events]
        for a, b, _ in events:
            if b is not None:
                for x, y in zip(a, b):
                    if x and y and x != y:
                        rx, ry = find(x), find(y)
                        if rx < ry:
                            parent[ry] = rx
                        elif ry < rx:
                            parent[rx] = ry
        root = [find(x) for x in range(self.count)]
        reason: dict[int, str] = {}
        for a, b, why in events:  # the first block of a component (graph order) names its reason
            hit = a if b is None else [y if x == 0 else (x if y == 0 else 0) for x, y in zip(a, b)]
            for x in hit:
                r = root[x]
                if r and r not in reason:
                    reason[r] = why
        return torch.tensor(root, dtype=torch.long), dict(sorted(reason.items()))


# ---------------------------------------------------------------- components -> groups


class Components:
    """The groups of the resolved slots: :attr:`groups`, :attr:`splits`, and per slot its :attr:`roots` and
    per root its group (:attr:`group_of_root`, -1 for none)."""

    def __init__(self, uses: dict[Key, tuple[str, torch.Tensor]], slots: Slots,
                 pieces: list[tuple[str, tuple[torch.Tensor, ...]]], round_to: int) -> None:  # fmt: skip
        self.uses, self.slots, self.pieces = uses, slots, pieces
        self.roots = torch.zeros(0, dtype=torch.long)  # every slot's root (set by _group)
        self.group_of_root = torch.zeros(0, dtype=torch.long)  # final group index per root, -1 for none
        self.groups = self._group(round_to)
        self.splits = self._splits()

    def _group(self, round_to: int) -> tuple[Group, ...]:
        """Components (roots) that touch the same set of dims form a group: all dims at once, on tensors.

        Dims that record the *same* labels (a conv's weight and bias, the BN
        after it, the next layer's input: views of one vector) are one
        "source"; the work is done per source.
        """
        roots, reason_of = self.slots.resolve()  # every slot's root (the smallest slot of its component)
        self.roots = roots
        n = roots.numel()
        keys = list(self.uses)
        labels, keys_of, src_of_key = self._sources(keys)
        if n + sum(t.numel() for t in labels) <= SMALL:
            return self._group_small(roots.tolist(), reason_of, keys, labels, keys_of, round_to)
        nsrc = len(labels)
        lengths = torch.tensor([t.numel() for t in labels], dtype=torch.long)
        sid = torch.repeat_interleave(torch.arange(nsrc), lengths)  # source of each element
        pos = torch.arange(sid.numel()) - (torch.cumsum(lengths, 0) - lengths)[sid]  # its index in that dim
        r = roots[torch.cat(labels)] if labels else torch.zeros(0, dtype=torch.long)
        signature, live = self._signatures(roots, reason_of, sid, r, src_of_key, nsrc)
        _, gid_live = torch.unique(signature[live], return_inverse=True)
        gid = torch.full((n,), -1, dtype=torch.long)
        gid[live] = gid_live
        ngroups = int(gid_live.max()) + 1 if live.numel() else 0
        members, uneven = _members(_runs(gid, gid_live, live, r, sid, pos, nsrc, ngroups), keys_of, ngroups)
        first_root = torch.full((ngroups,), n, dtype=torch.long).scatter_reduce(0, gid_live, live, "amin").tolist()
        built = [self._finish(g_i, members[g_i], keys, first_root[g_i], reason_of.get(first_root[g_i]), uneven[g_i])
                 for g_i in range(ngroups)]  # fmt: skip
        built.sort(key=lambda b: b[0])
        final = torch.full((ngroups + 1,), -1, dtype=torch.long)  # pre-sort group -> final index (-1: none)
        final[torch.tensor([b[4] for b in built], dtype=torch.long)] = torch.arange(len(built))
        self.group_of_root = final[gid]  # gid -1 reads the extra -1 at the end
        return self._groups_of(built, round_to)

    def _sources(self, keys: list[Key]) -> tuple[list[torch.Tensor], list[list[int]], list[int]]:
        """The distinct label vectors the dims record (one per source), the key indices of each source, and each
        key's source."""
        source: dict[tuple[int, ...], int] = {}  # the memory a label vector reads -> source index
        labels: list[torch.Tensor] = []
        keys_of: list[list[int]] = []  # source -> the key indices that recorded it
        src_of_key = []
        for k_i, key in enumerate(keys):
            t = self.uses[key][1]  # kept alive by self.uses: equal (pointer, stride, length) = equal labels
            where = (t.data_ptr(), t.stride(0), t.numel()) if t.dim() == 1 and t.numel() else (-1, id(t))
            s_i = source.setdefault(where, len(labels))
            if s_i == len(labels):
                labels.append(t)
                keys_of.append([])
            keys_of[s_i].append(k_i)
            src_of_key.append(s_i)
        return labels, keys_of, src_of_key

    def _signatures(self, roots: torch.Tensor, reason_of: dict[int, str], sid: torch.Tensor, r: torch.Tensor,
                    src_of_key: list[int], nsrc: int) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """Per root, a hash of what decides its group: the sources it touches, its pieces of every channel split
        and its block reason (equal hashes <=> one group); and the roots that touch something, ascending."""
        n = roots.numel()
        # per root: a sum of random 63-bit keys of the dims it touches, so equal sets <=> equal sums
        gen = torch.Generator().manual_seed(0)
        rand = torch.zeros(nsrc, dtype=torch.long).index_add_(
            0, torch.tensor(src_of_key, dtype=torch.long), torch.randint(1, 2**62, (len(src_of_key),), generator=gen))
        nz = r != 0
        touched = torch.unique(sid[nz] * n + r[nz])
        signature = torch.zeros(n, dtype=torch.long).index_add_(0, touched % n, rand[touched // n])
        live = torch.nonzero(signature, as_tuple=True)[0]  # roots that touch something, ascending = graph order
        # a channel split: channels in different pieces (or there a different number of times) are different groups,
        # so each group's kept count says how many channels each piece keeps
        alive = signature != 0
        for _, pieces in self.pieces:
            for lab in pieces:
                r_p = roots[lab[lab != 0]]
                r_p = r_p[alive[r_p]]
                salt_p = torch.randint(1, 2**62, (1,), generator=gen)
                signature.index_add_(0, r_p, salt_p.expand(len(r_p)))
        # blocked roots carry their reason in the signature too
        reasons = list(dict.fromkeys(reason_of.values()))
        if reasons:
            salt = torch.randint(1, 2**62, (len(reasons),), generator=gen)
            blocked = torch.tensor(list(reason_of), dtype=torch.long)
            rid = torch.tensor([reasons.index(w) for w in reason_of.values()], dtype=torch.long)
            signature.index_add_(0, blocked, torch.where(signature[blocked] != 0, salt[rid], 0))
        return signature, live

    def _groups_of(self, built: list[tuple[Any, list[Key], list[torch.Tensor], str | None, int]], round_to: int
                   ) -> tuple[Group, ...]:  # fmt: skip
        return tuple(Group(i, tuple(Member(k[0], k[1], k[2], self.uses[k][0]) for k in ks), tuple(rows), reason,
                           round_to) for i, (_, ks, rows, reason, _) in enumerate(built))  # fmt: skip

    def _finish(self, g_i: int, found: list[tuple[int, torch.Tensor]], keys: list[Key], root: int,
                reason: str | None, uneven: bool) -> tuple[Any, list[Key], list[torch.Tensor], str | None, int]:  # fmt: skip
        """One group's entry: its sort key (prunable first, then by its first producer), keys, rows and reason."""
        found = sorted(found, key=lambda m: m[0])  # graph order of first use
        ks = [keys[k_i] for k_i, _ in found]
        if reason is None and not any(self.uses[k][0] == "out" and k[1] == "weight" for k in ks):
            reason = "no layer produces these channels"
        if reason is None and uneven:
            reason = "its channels own different numbers of indices in one layer"
        first = next((k_i for k_i, _ in found if self.uses[keys[k_i]][0] == "out"), found[0][0])
        return (reason is not None, first, root), ks, [t for _, t in found], reason, g_i

    def _group_small(self, roots: list[int], reason_of: dict[int, str], keys: list[Key], labels: list[torch.Tensor],
                     keys_of: list[list[int]], round_to: int) -> tuple[Group, ...]:  # fmt: skip
        """:meth:`_group` in plain Python for small networks (torch's per-op cost would dominate there): a
        component's group is the exact set of sources it touches, the count of its channels in each piece of
        a channel split and its block reason (the vectorised path hashes the same three things)."""
        labs = [t.tolist() for t in labels]
        members_of = self._small_components(roots, labs, reason_of)
        group_of = {r: g_i for g_i, rs in enumerate(members_of) for r in rs}
        rows = _small_rows(roots, labs, members_of, group_of)
        built = []
        for g_i, rs in enumerate(members_of):
            found, uneven = _small_members(rows[g_i], keys_of, len(rs))
            built.append(self._finish(g_i, found, keys, rs[0], reason_of.get(rs[0]), uneven))
        built.sort(key=lambda b: b[0])
        final = {b[4]: i for i, b in enumerate(built)}
        self.group_of_root = torch.tensor([final[group_of[r]] if r in group_of else -1 for r in range(len(roots))],
                                           dtype=torch.long)  # fmt: skip
        return self._groups_of(built, round_to)

    def _small_components(self, roots: list[int], labs: list[list[int]], reason_of: dict[int, str]
                          ) -> list[list[int]]:  # fmt: skip
        """The groups' roots (ascending, groups in order of their first root): roots that touch the same sources,
        have as many channels in each piece of every channel split and share a block reason."""
        touched: dict[int, set[int]] = defaultdict(set)  # root -> sources
        for s_i, lab in enumerate(labs):
            for x in lab:
                if roots[x]:
                    touched[roots[x]].add(s_i)
        in_pieces: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))  # root -> piece -> count
        piece = 0
        for _, pieces in self.pieces:
            for lab in pieces:
                for x in lab.tolist():
                    if x and roots[x] in touched:
                        in_pieces[roots[x]][piece] += 1
                piece += 1
        key_of: dict[Any, int] = {}
        members_of: list[list[int]] = []  # group -> its roots, ascending
        for r in sorted(touched):
            k = (frozenset(touched[r]), tuple(sorted(in_pieces[r].items())) if r in in_pieces else (), reason_of.get(r))
            g_i = key_of.setdefault(k, len(members_of))
            if g_i == len(members_of):
                members_of.append([])
            members_of[g_i].append(r)
        return members_of

    def _splits(self) -> tuple[Split, ...]:
        """Each equal channel split, as the groups in each piece (and how often each channel of a group is there)."""
        roots = self.roots
        out = []
        for where, pieces in self.pieces:
            counts, fixed = [], []
            for lab in pieces:
                g = self.group_of_root[roots[lab]]
                g = torch.where(lab == 0, -1, g)
                fixed.append(int((g < 0).sum()))
                found = torch.bincount(g[g >= 0], minlength=len(self.groups))
                counts.append(tuple((int(i), int(found[i]) // self.groups[i].width)
                                    for i in torch.nonzero(found, as_tuple=True)[0].tolist()))  # fmt: skip
            out.append(Split(where, tuple(counts), tuple(fixed)))
        return tuple(out)


# one run of the vectorised grouping: the elements of one source in one group
_Run = tuple[int, int, int, int, bool, torch.Tensor, torch.Tensor]  # group, source, width, per, ragged, pos, rank


def _ranks(gid_live: torch.Tensor, live: torch.Tensor, n: int, ngroups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The rank of each root inside its group (ascending root id: the earliest producer's channel order), and
    each group's size."""
    order = torch.argsort(gid_live, stable=True)
    sizes = torch.bincount(gid_live, minlength=ngroups)
    rank = torch.zeros(n, dtype=torch.long)
    rank[live[order]] = torch.arange(live.numel()) - (torch.cumsum(sizes, 0) - sizes)[gid_live[order]]
    return rank, sizes


def _runs(gid: torch.Tensor, gid_live: torch.Tensor, live: torch.Tensor, r: torch.Tensor, sid: torch.Tensor,
          pos: torch.Tensor, nsrc: int, ngroups: int) -> list[_Run]:  # fmt: skip
    """Every element of a group, sorted by (group, source, rank, position): one run per (group, source), with
    the group's width, the indices each channel owns and whether they are ragged (channels owning different
    counts)."""
    rank, sizes = _ranks(gid_live, live, gid.numel(), ngroups)
    g_e = gid[r]
    sel = torch.nonzero(g_e >= 0, as_tuple=True)[0]
    g_e, s_e, rank_e, pos_e = g_e[sel], sid[sel], rank[r[sel]], pos[sel]  # (source, position) ascending
    o = torch.argsort((g_e * nsrc + s_e) * (int(sizes.max()) if ngroups else 1) + rank_e, stable=True)
    g_e, s_e, rank_e, pos_e = g_e[o], s_e[o], rank_e[o], pos_e[o]
    run_key, counts = torch.unique_consecutive(g_e * nsrc + s_e, return_counts=True)
    run_g, run_s = run_key // nsrc, run_key % nsrc
    widths = sizes[run_g]
    per = counts // widths
    # a run is regular when each of its channels owns the same count of indices: rank == offset // per
    run_of = torch.repeat_interleave(torch.arange(len(counts)), counts)
    offset = torch.arange(len(g_e)) - (torch.cumsum(counts, 0) - counts)[run_of]
    bad = (rank_e != offset // per.clamp(min=1)[run_of]).long()
    ragged = (counts % widths != 0) | (torch.zeros(len(counts), dtype=torch.long).index_add_(0, run_of, bad) > 0)
    split = counts.tolist()
    parts = torch.split(pos_e, split) if split else ()
    rank_parts = torch.split(rank_e, split) if split else ()
    return list(zip(run_g.tolist(), run_s.tolist(), widths.tolist(), per.tolist(), ragged.tolist(), parts,
                    rank_parts))  # fmt: skip


def _members(runs: list[_Run], keys_of: list[list[int]], ngroups: int
             ) -> tuple[list[list[tuple[int, torch.Tensor]]], list[bool]]:  # fmt: skip
    """Per group, its (key index, ``(width, n)`` index rows) members from the runs (ragged rows padded with -1),
    and whether any of them is ragged."""
    members: list[list[tuple[int, torch.Tensor]]] = [[] for _ in range(ngroups)]  # (key index, rows)
    uneven = [False] * ngroups
    for g_i, s_i, w, c, irregular, part, rows in runs:
        if irregular:  # ragged: pad with -1
            count = torch.bincount(rows, minlength=w)
            mat = torch.full((w, int(count.max())), -1, dtype=torch.long)
            mat[rows, torch.arange(len(rows)) - (torch.cumsum(count, 0) - count)[rows]] = part
            uneven[g_i] = True
        else:
            mat = part.view(w, c)
        members[g_i].extend((k_i, mat) for k_i in keys_of[s_i])
    return members, uneven


def _small_rows(roots: list[int], labs: list[list[int]], members_of: list[list[int]], group_of: dict[int, int]
                ) -> list[dict[int, list[list[int]]]]:  # fmt: skip
    """Per group, per source it touches, the positions each of its channels (by rank) owns there."""
    rank = {r: i for rs in members_of for i, r in enumerate(rs)}
    rows: list[dict[int, list[list[int]]]] = [{} for _ in members_of]  # group -> source -> positions per rank
    for s_i, lab in enumerate(labs):
        for pos, x in enumerate(lab):
            r = roots[x]
            if r:
                g_i = group_of[r]
                per_rank = rows[g_i].get(s_i)
                if per_rank is None:
                    per_rank = rows[g_i][s_i] = [[] for _ in members_of[g_i]]
                per_rank[rank[r]].append(pos)
    return rows


def _small_members(rows: dict[int, list[list[int]]], keys_of: list[list[int]], width: int
                   ) -> tuple[list[tuple[int, torch.Tensor]], bool]:  # fmt: skip
    """One group's (key index, ``(width, n)`` index rows) members (ragged rows padded with -1), and whether any
    is ragged."""
    found: list[tuple[int, torch.Tensor]] = []
    uneven = False
    for s_i, per_rank in rows.items():
        counts = {len(p) for p in per_rank}
        if len(counts) == 1:
            mat = torch.tensor(per_rank, dtype=torch.long).view(width, -1)
        else:  # ragged: pad with -1
            wide = max(counts)
            mat = torch.tensor([p + [-1] * (wide - len(p)) for p in per_rank], dtype=torch.long)
            uneven = True
        found.extend((k_i, mat) for k_i in keys_of[s_i])
    return found, uneven
