"""Pruning an EdgeNet in arch space: which arch width (``c``, ``m``, SE squeeze) each channel group is, and the
arch string of kept counts (docs/design.md §5).

A residual run's output width ``c`` is one group across its blocks, each
block's inner width ``m`` another; :class:`ArchSpace` maps the groups of
:class:`edgecnn.compress.channels.groups.ChannelGraph` onto these fields (groups
the format cannot write — channels tied across blocks of different widths
by a zero-padding shortcut, grouped convs — get a reason), fills in the
derived widths (SE squeeze by the MobileNetV3 rule, a bottleneck's second
width) and keeps the builder's rules by nudging a width one channel off the
grid: an inverted residual whose inner width equals its input width would
lose its expand conv, a ResNet block with a projection shortcut whose
widths become equal would get an identity one; an inverted residual whose
widths become equal without a skip before gets ``noskip``. What each kind
says is its record's (:mod:`edgecnn.kinds`): which width a filter sets
(``filter_fields``), an output that follows the inner width (a ghost
module's, ``cout_of_mid``), its shortcut and inner channels, and the spec of
new widths (``respec``).
:func:`in_arch_space` decides whether a model is pruned this way (an
EdgeNet as the builder made it).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from torch import nn

from edgecnn.arch import ArchSpec, BlockSpec
from edgecnn.blocks import se_width
from edgecnn.build import EdgeNet
from edgecnn.compress.channels.components import Group
from edgecnn.compress.channels.groups import ChannelGraph
from edgecnn.kinds import InnerChannels, kind_of
from edgecnn.plan import LayerPlan, resolve

__all__ = ["ArchSpace", "in_arch_space"]

_NO_INNER = InnerChannels(("", ""))


def _field(p: LayerPlan, sub: str) -> str | None:
    """Which arch width an output filter at ``blocks.<pos>.<sub>`` sets: "c", "m", "m2", "sq" or None (tied)."""
    return kind_of(p.spec.kind).filter_field(sub)


def _writable(p: LayerPlan, f: str) -> bool:
    """Whether the arch can write a pruned width ``f`` of block ``p`` (a ghost module's output must stay a
    multiple of its intrinsic width: :attr:`edgecnn.kinds.BlockKind.cout_of_mid`)."""
    follow = kind_of(p.spec.kind).cout_of_mid
    return f != "m" or follow is None or p.mid is None or follow(p, p.mid) == p.cout


class ArchSpace:
    """Maps the groups of an EdgeNet onto arch widths; derived widths and the builder's rules."""

    def __init__(self, model: EdgeNet, graph: ChannelGraph) -> None:
        self.model = model
        self.plans = resolve(model.arch, num_classes=model.num_classes, in_chans=model.in_chans)
        self.role: dict[int, tuple[str, tuple[int, ...]]] = {}  # group -> (field, positions)
        self.reason: dict[int, str] = {}
        for g in graph.prunable:
            fields = self._fields(g)
            kinds = {f for _, f in fields}
            positions = tuple(sorted(p for p, _ in fields))
            if len(kinds) == 1 and "?" not in kinds and positions:
                (f,) = kinds
                widths = {self._width(self.plans[p], f) for p in positions}
                if not all(_writable(self.plans[p], f) for p in positions):
                    self.reason[g.index] = (f"the arch format cannot write it: block {positions[0]}'s output "
                                            "width is no multiple of its inner width, so it cannot follow a pruned "
                                            "one")  # fmt: skip
                    continue
                if (f != "c" and len(positions) == 1) or (f == "c" and widths == {g.width}):
                    self.role[g.index] = (f, positions)
                    continue
            self.reason[g.index] = ("the arch format cannot write it: its channels are tied across blocks "
                                    f"{sorted(set(positions))} of different widths (zero-padding shortcut?)")  # fmt: skip
        self.by_field = {(f, p): g for g, (f, ps) in self.role.items() for p in ps}

    def _fields(self, g: Group) -> set[tuple[int, str]]:
        """(position, arch width) of every filter that makes group ``g``'s channels; (-1, "?") outside the blocks."""
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
        return fields

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
            kind = kind_of(p.spec.kind)
            g = self.by_field.get(("c", p.position))
            cout = cin if kind.keeps_width else (p.cout if g is None else counts.get(g, p.cout))
            mid = p.mid
            if kind.tied_inner(p):
                mid = cin  # no expand conv: the inner channels are the input channels
            elif (gm := self.by_field.get(("m", p.position))) is not None:
                mid = counts.get(gm, p.mid)
                if kind.cout_of_mid is not None and mid is not None:
                    cout = kind.cout_of_mid(p, mid) or cout  # the output follows the inner width
            # a block whose skip appears only where shapes match (ir) keeps none: an identity skip would be new
            noskip = kind.shortcut(p.spec, p.cin, p.cout) is None and kind.shortcut(p.spec, cin, cout) == "identity"
            out.append((cin, cout, mid, noskip))
            cin = cout
        return out

    def _nudge(self, p: LayerPlan, cin: int, cout: int, mid: int | None) -> int | None:
        """The group to move one channel off the grid so the builder keeps ``p``'s modules, or None."""
        kind = kind_of(p.spec.kind)
        if kind.inner.get(bool(p.spec.pre), _NO_INNER).tied_to_input and p.mid != p.cin and mid == cin:
            return self.by_field[("m", p.position)]  # m = c_in would drop the expand conv
        if kind.shortcut(p.spec, p.cin, p.cout) == "conv" and kind.shortcut(p.spec, cin, cout) == "identity":
            return self.by_field.get(("c", p.position))  # equal widths would drop the projection shortcut
        return None

    def fix(self, counts: dict[int, int], step: int) -> dict[int, int]:
        """Counts with the derived groups filled in and the builder's rules kept (see the module docstring)."""
        counts = dict(counts)
        for _ in range(64):
            widths = self.widths(counts)
            bumped = False
            for p, (cin, cout, mid, _) in zip(self.plans, widths):
                g = self._nudge(p, cin, cout, mid)
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
                base = {"mid": mid, "in": cin}.get(kind_of(p.spec.kind).se_on, cout)
                counts[g] = se_width(base, p.spec.se or 0.0)  # type: ignore[arg-type]
        return counts

    def arch(self, counts: Mapping[int, int]) -> str:
        widths = self.widths(counts)
        out: list[BlockSpec] = []
        for p, (cin, cout, mid, noskip) in zip(self.plans, widths):
            changes = kind_of(p.spec.kind).respec(p, cin, cout, mid)
            if noskip:
                changes["skip"] = "none"
            out.append(p.spec.with_(**changes) if changes else p.spec)
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


def in_arch_space(model: nn.Module, wanted: bool | None, cg: ChannelGraph) -> bool:
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
