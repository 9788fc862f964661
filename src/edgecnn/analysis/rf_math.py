"""Receptive-field algebra, independent of any graph: the :class:`RF` value and the per-layer rules.

Araujo et al. 2019, *Computing Receptive Fields of Convolutional Neural
Networks* (Distill): per axis, a layer with kernel ``k``, stride ``s``,
padding ``p`` and dilation ``d`` maps size, jump and first centre as
``R += (k−1)·d·J``, ``J *= s``, ``start += ((k−1)/2·d − p)·J``.
:mod:`edgecnn.analysis.receptive` applies these rules to an fx graph.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Union

# An int where the value is integral, else an exact Fraction (half pixels of even kernels, the
# fractional jumps of transposed convs): floats would put a stride-3 bound at 4.9999 instead of 5.
Num = Union[int, Fraction]


def as_num(x: float | Fraction) -> Num:
    """``x`` as an int when whole, else as an exact Fraction."""
    if type(x) is int:  # the common case (odd kernels, integer strides): skip Fraction entirely
        return x
    q = x if isinstance(x, Fraction) else Fraction(x).limit_denominator(10**6)
    return int(q) if q.denominator == 1 else q


def fmt_num(x: Num) -> str:
    """``7``, ``7.5``, ``0.333``: a field value for a table."""
    return str(x) if isinstance(x, int) else f"{float(x):.4g}"


@dataclass(frozen=True)
class RF:
    """Receptive field of one tensor, per spatial axis (H, W for 2D)."""

    size: tuple[Num, ...]  # R: input pixels one output sees along each axis (the input's extent when whole)
    jump: tuple[Num, ...]  # J: input pixels between two neighbouring outputs (effective stride)
    start: tuple[Num, ...]  # centre of the first output's field, input pixel coordinates
    whole: bool = False  # the conv path itself sees the whole input (global pooling, flatten→linear, a 1×1 map)
    note: str = ""  # approximations made on the way ("" when exact)
    global_context: bool = False  # the output also depends on global context outside ``size`` (an SE gate,
    # attention, a broadcast pooled feature): the field above is the conv path's; True whenever ``whole``

    @property
    def area(self) -> Num:
        """Pixels in the field: the product of the per-axis sizes."""
        return as_num(math.prod(self.size))

    def bounds(self, index: Sequence[int] | None = None) -> tuple[tuple[Num, Num], ...]:
        """``(lo, hi)`` per axis, inclusive, of the field of output ``index`` (default: the first), unclipped."""
        index = tuple(index) if index is not None else (0,) * len(self.size)
        if len(index) != len(self.size):
            raise ValueError(f"index {index} has {len(index)} axes, the field has {len(self.size)}")
        out = []
        for r, j, c, i in zip(self.size, self.jump, self.start, index):
            centre = c if self.whole else c + i * j
            out.append((as_num(centre - Fraction(r - 1) / 2), as_num(centre + Fraction(r - 1) / 2)))
        return tuple(out)

    def label(self) -> str:
        """Short text for tables: ``"11×11 J4"``, ``"51×51 J8 +global"`` (conv path + global context) or
        ``"whole input"``."""
        if self.whole:
            return "whole input"
        size = "×".join(fmt_num(r) for r in self.size)
        jump = "×".join(fmt_num(j) for j in dict.fromkeys(self.jump))
        return f"{size} J{jump}" + (" +global" if self.global_context else "")


def identity_rf(ndim: int) -> RF:
    """The field of the network input itself: one pixel, jump 1."""
    return RF((1,) * ndim, (1,) * ndim, (0,) * ndim)


def whole_rf(extent: Sequence[int], note: str = "") -> RF:
    """The field of an output that sees the whole input of ``extent`` pixels per axis (global pooling)."""
    return RF(tuple(extent), tuple(extent), tuple(as_num(Fraction(e - 1, 2)) for e in extent), True, note, True)


def add_note(rf: RF, note: str) -> RF:
    """``rf`` with ``note`` appended to its approximation notes (once)."""
    if not note or note in rf.note:
        return rf
    return replace(rf, note=f"{rf.note}; {note}" if rf.note else note)


def conv_rule(rf: RF, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int],
              dilation: Sequence[int]) -> RF:  # fmt: skip
    """One conv or pooling layer (Araujo et al. 2019, eqs. for r, S and u)."""
    if rf.whole:
        return rf
    size, jump, start = [], [], []
    for r, j, c, k, s, p, d in zip(rf.size, rf.jump, rf.start, kernel, stride, padding, dilation):
        size.append(as_num(r + (k - 1) * d * j))
        jump.append(as_num(j * s))
        half = (k - 1) * d // 2 if (k - 1) * d % 2 == 0 else Fraction((k - 1) * d, 2)
        start.append(as_num(c + (half - p) * j))
    return RF(tuple(size), tuple(jump), tuple(start), False, rf.note, rf.global_context)


def conv_transpose_rule(rf: RF, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int],
                        dilation: Sequence[int]) -> RF:  # fmt: skip
    """A transposed conv: output ``o`` reads inputs ``i`` with ``o = i·s − p + j·d`` (the continuous hull)."""
    if rf.whole:
        return rf
    size, jump, start = [], [], []
    for r, j, c, k, s, p, d in zip(rf.size, rf.jump, rf.start, kernel, stride, padding, dilation):
        size.append(as_num(r + Fraction((k - 1) * d, s) * j))
        jump.append(as_num(Fraction(j) / s))
        start.append(as_num(c + (p - Fraction(k - 1, 2) * d) * j / s))
    return replace(rf, size=tuple(size), jump=tuple(jump), start=tuple(start))


def merge(rfs: Sequence[RF]) -> RF:
    """Branches meeting (add, mul, cat): the union of the first outputs' intervals.

    A branch that sees the whole input (an SE gate ``x · σ(fc(pool(x)))``, attention weights, a broadcast
    pooled feature) does not widen the union: the result is the union of the other, spatial branches with
    ``global_context=True``. Only when every branch is whole is the result whole.
    """
    if len(rfs) == 1:
        return rfs[0]
    if not rfs:
        raise ValueError("merge needs at least one receptive field")
    spatial = [rf for rf in rfs if not rf.whole]
    if not spatial:
        return rfs[0]
    context = len(spatial) < len(rfs) or any(rf.global_context for rf in spatial)
    if len(spatial) == 1:
        rf = spatial[0]
        notes = {n for r in rfs for n in r.note.split("; ") if n}
        return replace(rf, global_context=context, note="; ".join(sorted(notes)))
    rfs = spatial
    size, jump, start = [], [], []
    notes = {n for rf in rfs for n in rf.note.split("; ") if n}
    for axis in range(len(rfs[0].size)):
        # in half pixels (2·lo, 2·hi): integers for integer fields, so no Fraction arithmetic in the common case
        lo2 = min(2 * rf.start[axis] - (rf.size[axis] - 1) for rf in rfs)
        hi2 = max(2 * rf.start[axis] + (rf.size[axis] - 1) for rf in rfs)
        jumps = {rf.jump[axis] for rf in rfs}
        if len(jumps) > 1:
            notes.add("branches with different jumps merged (largest kept)")
        width, centre4 = hi2 - lo2, lo2 + hi2
        size.append(width // 2 + 1 if type(width) is int and width % 2 == 0 else as_num(Fraction(width, 2) + 1))
        jump.append(max(jumps))
        start.append(centre4 // 4 if type(centre4) is int and centre4 % 4 == 0 else as_num(Fraction(centre4, 4)))
    return RF(tuple(size), tuple(jump), tuple(start), False, "; ".join(sorted(notes)), context)
