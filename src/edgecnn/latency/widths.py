"""Slices of a latency table and interpolation across channel counts: pure functions over keys and entries.

What :class:`~edgecnn.latency.model.LatencyModel` stands on (its module doc
says why, after NetAdapt, Yang et al. 2018): :func:`split_key` cuts a block's
table key into what stays fixed within a *slice* (kind, kernel, stride,
activation, SE, input size, structure markers such as an identity skip) and
the widths that vary; :func:`interpolate` answers a query multilinearly from a
slice's points (exact for anything linear in each width, MACs included);
:func:`with_widths` and :func:`width_grid` give the block variants of a grid
of widths (:func:`edgecnn.latency.table.merge_sweeps` makes one entry of several sweeps of a block).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from edgecnn.arch import ArchSpec, BlockSpec
from edgecnn.blocks import make_divisible
from edgecnn.kinds import BLOCK_KINDS, kind_of, vector_kind
from edgecnn.latency.table import TableEntry, block_key
from edgecnn.plan import LayerPlan, resolve

Coords = tuple[int, ...]
Values = tuple[float, float, float, float]  # median, q1, q3, min
_WIDTH = ("cin", "cout", "mid", "sq")
_WIDTH_FIELD = re.compile(r"(cin|cout|mid|sq)(\d+|-)")


@dataclass(frozen=True)
class SliceKey:
    """A key split into what stays fixed within a slice and the widths that vary."""

    slice: str  # the key with its widths replaced by the slice's structure markers
    axes: tuple[str, ...]  # names of the interpolation axes, e.g. ("cin", "cout", "mid") or ("c", "mid")
    coords: Coords  # the block's widths along those axes
    squeeze: int  # SE hidden width (not an axis; nearest one stands in)


def split_key(key: str) -> SliceKey | None:
    """Split a block key into its slice and width coordinates; None for keys that have no widths (overhead).

    The kind's record says which widths are axes and which structure markers
    (an identity skip, an expansion conv) split slices
    (:attr:`edgecnn.kinds.BlockKind.slice_rule`).
    """
    parts = key.split("|")
    kind = BLOCK_KINDS.get(parts[0])
    if kind is None:
        return None  # overhead|... : measured per input shape, never interpolated
    widths: dict[str, int] = {}
    fixed: list[str] = []
    for p in parts[1:]:
        m = _WIDTH_FIELD.fullmatch(p)
        if m:
            widths[m[1]] = 0 if m[2] == "-" else int(m[2])
        else:
            fixed.append(p)
    cin, cout, mid, sq = (widths[w] for w in _WIDTH)
    markers, fixed, named = kind.table_slice(cin, cout, mid, fixed)
    slice_ = "|".join([parts[0], f"se={int(sq > 0)}", *markers, *fixed])
    return SliceKey(slice_, tuple(named), tuple(named.values()), sq)


def _lerp(a: Values, b: Values, t: float) -> Values:
    return tuple(x + t * (y - x) for x, y in zip(a, b))  # type: ignore[return-value]


def interpolate(
    points: Mapping[Coords, Values] | Sequence[tuple[Coords, Values]], query: Coords, *, extrapolate: bool = False
) -> Values | None:
    """Multilinear interpolation of scattered ``points`` at ``query``; None where they do not enclose it.

    Tensor-product scheme, last axis first: the points split into slabs by their
    last coordinate; the value at ``query`` is the linear mix of the two nearest
    slabs below and above ``query[-1]`` that can each answer ``query[:-1]``
    (recursively). On a full grid this is multilinear interpolation of the
    enclosing cell; it also works on partial grids (any slab that encloses the
    rest of the query will do), trying the axes in every order before giving up.
    With ``extrapolate``, a query beyond the last slab on one side uses the line
    through the two nearest slabs on that side, floored at 0.
    """
    pts = list(points.items()) if isinstance(points, Mapping) else list(points)
    if not pts:
        return None
    query = tuple(query)
    for order in itertools.permutations(range(len(query))):  # on a full grid every order gives the same value;
        # on a partial one another order may find a cell the first did not
        found = _interp([(tuple(c[i] for i in order), v) for c, v in pts], tuple(query[i] for i in order), extrapolate)
        if found is not None:
            return found
    return None


def _interp(pts: list[tuple[Coords, Values]], q: Coords, extrapolate: bool) -> Values | None:
    if not q:
        return pts[0][1]
    head, x = q[:-1], q[-1]
    slabs: dict[int, list[tuple[Coords, Values]]] = {}
    for c, v in pts:
        slabs.setdefault(c[-1], []).append((c[:-1], v))

    def at(u: int) -> Values | None:
        return _interp(slabs[u], head, extrapolate)

    if x in slabs and (exact := at(x)) is not None:
        return exact

    def answers(order: list[int], n: int) -> list[tuple[int, Values]]:
        found = []
        for u in order:
            if (r := at(u)) is not None:
                found.append((u, r))
                if len(found) == n:
                    break
        return found

    below = answers(sorted((u for u in slabs if u < x), reverse=True), 1 if not extrapolate else 2)
    above = answers(sorted(u for u in slabs if u > x), 1 if not extrapolate else 2)
    if below and above:
        (u0, v0), (u1, v1) = below[0], above[0]
        return _lerp(v0, v1, (x - u0) / (u1 - u0))
    side = below or above
    if not extrapolate or len(side) < 2:
        return None
    (u0, v0), (u1, v1) = side[1], side[0]  # the line through the two nearest, evaluated beyond them
    return tuple(max(v, 0.0) for v in _lerp(v0, v1, (x - u0) / (u1 - u0)))  # type: ignore[return-value]


def entry_values(e: TableEntry) -> Values:
    return (e.median_ms, e.q1_ms, e.q3_ms, e.min_ms)


@dataclass
class Slice:
    axes: tuple[str, ...]  # interpolation axes
    points: dict[Coords, list[tuple[int, Values]]] = field(default_factory=dict)  # widths -> [(squeeze, entry)]


def with_widths(
    plan: LayerPlan, *, cin: int | None = None, cout: int | None = None, mid: int | None = None
) -> LayerPlan:
    """The same block with other channel counts (same kind, kernel, stride, input size; SE width re-derived).

    What a width grid for the table is made of (``benchmarks/latency_interpolation.py``).
    A block whose width follows its input (pooling, gap, dropout) takes ``cin`` only;
    an inner width left at None keeps the block's current one.
    """
    b = plan.spec
    kind = kind_of(b.kind)
    keys = kind.grammar.keys
    cin = plan.cin if cin is None else cin
    if cout is not None and cout != plan.cout and ("c" not in keys or plan.classifier):
        raise ValueError(f"{b.kind} block {b.format()!r}: its output width is not its own to set; change cin")
    if (mid is not None or plan.mid is not None) and "m" not in keys:
        raise ValueError(f"{b.kind} blocks have no inner width; valid widths: cin, cout")
    if (b.g or 1) > 1 and b.g == plan.cin == plan.cout and (plan.cout if cout is None else cout) != cin:
        raise ValueError(f"depthwise conv {b.format()!r}: cin and cout must stay equal, got {cin} and {cout}")
    # the inner width stays (not the ratio) when cin changes; a depthwise conv stays depthwise
    block = b.with_(**kind.respec(plan, cin, plan.cout if cout is None else cout, mid))
    flat_input = plan.in_size is None
    blocks: tuple[BlockSpec, ...] = (BlockSpec(vector_kind()), block) if flat_input else (block,)
    classes = (cout or plan.cout) if plan.classifier else 1000
    return resolve(ArchSpec(blocks), num_classes=classes, in_chans=cin, input_size=plan.in_size or (1, 1))[-1]


def width_grid(
    plan: LayerPlan, fractions: Sequence[float] = (0.25, 0.5, 0.75, 1.0), *, divisor: int = 8, batch: int = 1
) -> list[LayerPlan]:
    """Variants of ``plan`` on a grid over its slice's width axes: each axis at ``fractions`` of its width.

    Widths are rounded to multiples of ``divisor`` (``make_divisible``); an axis
    narrower than ``divisor`` (the 3 input channels of a stem, a 10-class
    classifier's output) stays as it is, and so does a classifier's output.
    Variants that fall into another slice (an inverted residual with
    ``mid == cin`` has no expansion conv) are left out: they cannot help
    interpolate this one, and so are those its builder refuses: a zero-padding
    shortcut (``padskip``, the CIFAR ResNets) cannot reduce channels, so its
    variants keep ``cout >= cin`` (NetAdapt never proposes otherwise: the
    shortcut ties the stage widths). The block itself is always one of the variants.
    """
    if not all(0 < f <= 1 for f in fractions):
        raise ValueError(f"grid fractions must be in (0, 1], got {tuple(fractions)}")
    sk = split_key(block_key(plan, batch=batch))
    if sk is None:
        return [plan]
    values = []
    for axis, v in zip(sk.axes, sk.coords):
        fixed = v <= divisor or (axis == "cout" and plan.classifier)
        values.append([v] if fixed else sorted({v, *(make_divisible(f * v, divisor) for f in fractions)}))
    out = []
    for combo in itertools.product(*values):
        w = dict(zip(sk.axes, combo))
        if plan.spec.skip == "pad" and w.get("cout", 0) < w.get("cin", 0):
            continue  # PadShortcut refuses cout < cin
        if "c" in w:  # a tied axis: cin == cout (identity residual, depthwise, pooling)
            w["cin"] = w["cout"] = w.pop("c")
            if kind_of(plan.spec.kind).keeps_width:
                w.pop("cout")
        variant = with_widths(plan, **w)
        vk = split_key(block_key(variant, batch=batch))
        if vk is not None and vk.slice == sk.slice:
            out.append(variant)
    return out
