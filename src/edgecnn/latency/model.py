"""Latency of blocks whose widths were never measured: the table, else interpolation across widths, else measuring.

NetAdapt (Yang et al. 2018) shrinks one channel group at a time and so proposes
widths no table holds (37 channels here, 53 there). Its paper builds per-layer
lookup tables over a grid of channel counts; between grid points, a block's
latency is a smooth function of its widths, close to bilinear — its MACs are
sums of products of widths (an inverted residual: ``cin·mid + k²·mid +
mid·cout`` per pixel). :class:`LatencyModel` answers a block in three steps:

1. **table** — the block's key (:func:`~edgecnn.latency.table.block_key`) is an
   entry: that entry, exactly.
2. **interpolation** — the entries that differ from the block only in their
   widths form its *slice* (same kind, kernel, stride, dilation, activation,
   SE gate, input size, batch, …; :func:`split_key`). Within the slice the
   latency is interpolated multilinearly over the widths (:func:`interpolate`):
   piecewise-linear along one width, bilinear over two (a conv's ``cin, cout``),
   trilinear over three (``cin, cout, mid``). Exact for any function that is
   linear in each width separately, which includes every MACs count above.
3. **measuring** — otherwise, if allowed, the block is measured alone on this
   device (:meth:`LatencyTable.measure_block`), inside the executor's measuring
   lane when one is given, and stored in the table; else a ``ValueError`` says
   which block is missing and the widths its slice covers.

Slices are split where the block's structure changes, not just its size: an
identity residual (stride 1, ``cin == cout``) against a projection or none,
an inverted residual without expansion conv (``mid == cin``) against one with,
a depthwise conv (``g == cin == cout``) against a grouped one, SE present or
absent; a tie (``cin == cout``, ``mid == cin``) makes the two widths one axis.
The SE squeeze width is no interpolation axis: its two FCs on the pooled
vector cost a few hundred multiply-adds against the block's ``mid·H·W``-scale
convolutions, so an entry of the same other widths with the nearest squeeze
width stands in for it.

Outside the measured range of a width there is nothing to interpolate from:
the block is measured (``measure=True``) or refused. ``extrapolate=True``
instead extends the line through the two nearest measured widths (floored at
0 ms) — fine a few channels past the edge, not across a factor of two.

:meth:`LatencyModel.ensure_grid` measures such a grid (:func:`width_grid`) for
every block of a network before NetAdapt starts, so its proposals are answered
without measuring.

Entries are read for all four statistics (median, quartiles, min); an
interpolated :class:`TableEntry` has ``repeats == 0``: it was never timed.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from edgecnn.arch import KINDS, ArchSpec, BlockSpec, as_spec
from edgecnn.blocks import make_divisible
from edgecnn.latency.predict import STATS, Prediction, combine
from edgecnn.latency.table import LatencyTable, TableEntry, block_key, overhead_key
from edgecnn.plan import LayerPlan, resolve

SOURCES: tuple[str, ...] = ("table", "interpolated", "measured")
WORKER_ENV = "EDGECNN_WORKER"
"""Set to "1" in :mod:`edgecnn.executor` workers, where measuring would time a CPU shared with fine-tunes."""

Coords = tuple[int, ...]
Values = tuple[float, float, float, float]  # median, q1, q3, min
_RESIDUAL = ("ir", "basic", "bottleneck")
_SAME_WIDTH = ("maxpool", "avgpool", "gap", "dropout")  # cout == cin by construction
_WIDTH = ("cin", "cout", "mid", "sq")
_WIDTH_FIELD = re.compile(r"(cin|cout|mid|sq)(\d+|-)")
_GROUPS_FIELD = re.compile(r"g(\d+|-)")


@dataclass(frozen=True)
class SliceKey:
    """A key split into what stays fixed within a slice and the widths that vary."""

    slice: str  # the key with its widths replaced by the slice's structure markers
    axes: tuple[str, ...]  # names of the interpolation axes, e.g. ("cin", "cout", "mid") or ("c", "mid")
    coords: Coords  # the block's widths along those axes
    squeeze: int  # SE hidden width (not an axis; nearest one stands in)


def split_key(key: str) -> SliceKey | None:
    """Split a block key into its slice and width coordinates; None for keys that have no widths (overhead)."""
    parts = key.split("|")
    kind = parts[0]
    if kind not in KINDS:
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
    groups = next(p for p in fixed if _GROUPS_FIELD.fullmatch(p))
    markers = [f"se={int(sq > 0)}"]
    axes: tuple[str, ...]
    if kind in _SAME_WIDTH:
        axes, coords = ("c",), (cin,)
    elif kind == "conv" and groups not in ("g1", "g-") and groups == f"g{cin}" and cin == cout:
        fixed = ["g=dw" if p == groups else p for p in fixed]  # depthwise: one width
        axes, coords = ("c",), (cin,)
    else:
        named = {"cin": cin, "cout": cout, "mid": mid} if mid else {"cin": cin, "cout": cout}
        if kind in _RESIDUAL:
            identity = "skip=none" not in fixed and "s1" in fixed and cin == cout
            markers.append("res=id" if identity else "res=no")
            if identity:  # the identity shortcut ties cin to cout: one axis
                named = {"c": cout, **{k: v for k, v in named.items() if k == "mid"}}
        if kind == "ir":
            markers.append("exp=0" if mid == cin else "exp=1")
            if mid == cin:  # no expansion conv (MobileNetV2's t=1 block): the inner width is the input's
                named.pop("mid")
        axes, coords = tuple(named), tuple(named.values())
    return SliceKey("|".join([kind, *markers, *fixed]), axes, coords, sq)


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


def _values(e: TableEntry) -> Values:
    return (e.median_ms, e.q1_ms, e.q3_ms, e.min_ms)


@dataclass
class _Slice:
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
    keys = KINDS[b.kind].keys
    cin = plan.cin if cin is None else cin
    changes: dict[str, int] = {}
    if cout is not None and cout != plan.cout:
        if "c" not in keys or plan.classifier:
            raise ValueError(f"{b.kind} block {b.format()!r}: its output width is not its own to set; change cin")
        changes["c"] = cout
    if mid is not None or plan.mid is not None:
        if "m" not in keys:
            raise ValueError(f"{b.kind} blocks have no inner width; valid widths: cin, cout")
        changes["m"] = plan.mid if mid is None else mid  # keep the inner width, not the ratio, when cin changes
    if b.kind == "conv" and (b.g or 1) > 1 and b.g == plan.cin == plan.cout:  # depthwise stays depthwise
        if changes.get("c", plan.cout) != cin:
            raise ValueError(f"depthwise conv {b.format()!r}: cin and cout must stay equal, got {cin} and {cout}")
        changes["g"] = cin
    block = b.with_(**changes)
    flat_input = plan.in_size is None
    blocks: tuple[BlockSpec, ...] = (BlockSpec("gap"), block) if flat_input else (block,)
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
            if plan.spec.kind in _SAME_WIDTH:
                w.pop("cout")
        variant = with_widths(plan, **w)
        vk = split_key(block_key(variant, batch=batch))
        if vk is not None and vk.slice == sk.slice:
            out.append(variant)
    return out


def merge_sweeps(entries: Sequence[TableEntry]) -> TableEntry:
    """One entry from several measurements of a block: the fastest run of all, the median of the other statistics.

    A slowdown only ever adds time, so the minimum over sweeps is the least disturbed run; the median,
    quartiles of each sweep are combined by their median.
    """
    if not entries:
        raise ValueError("no measurements to merge")

    def mid(name: str) -> float:
        vals = sorted(getattr(e, name) for e in entries)
        n = len(vals)
        return vals[n // 2] if n % 2 else (vals[n // 2 - 1] + vals[n // 2]) / 2

    return TableEntry(mid("median_ms"), mid("q1_ms"), mid("q3_ms"), min(e.min_ms for e in entries),
                      sum(e.repeats for e in entries))  # fmt: skip


@lru_cache(maxsize=4096)
def _plans(spec: ArchSpec, size: tuple[int, int], num_classes: int, in_chans: int) -> tuple[LayerPlan, ...]:
    return tuple(resolve(spec, num_classes=num_classes, in_chans=in_chans, input_size=size))


class LatencyModel:
    """Block and network latency from a :class:`LatencyTable`: its entry, else interpolated, else measured.

    ``measure=True`` measures what cannot be interpolated (in ``lane()``, e.g. an
    executor's :meth:`~edgecnn.executor.Executor.exclusive`, and never inside an
    executor worker) and adds it to the table, saved to ``path`` if given.
    ``counts`` says how many blocks came from each source. ``stat`` is the
    statistic :meth:`predict` sums unless told otherwise (``"min"`` for a table
    measured without drift reference, :func:`~edgecnn.latency.table.new_table`).
    """

    def __init__(
        self,
        table: LatencyTable,
        *,
        measure: bool = False,
        extrapolate: bool = False,
        lane: Callable[[], AbstractContextManager[object]] | None = None,
        path: str | Path | None = None,
        stat: str = "median",
    ) -> None:
        if stat not in STATS:
            raise ValueError(f"unknown statistic {stat!r}; valid: {', '.join(STATS)}")
        self.table, self.measure, self.extrapolate, self.stat = table, measure, extrapolate, stat
        self.lane = lane or nullcontext
        self.path = None if path is None else Path(path)
        self.counts = dict.fromkeys(SOURCES, 0)
        self._slices: dict[str, _Slice] = {}
        self._cache: dict[str, TableEntry | None] = {}
        self._indexed = -1  # len(table.entries) when the slices were built

    # ---- the slices ------------------------------------------------------------------------------------
    def _index(self) -> dict[str, _Slice]:
        entries = self.table.entries
        if self._indexed != len(entries):  # entries are only ever added
            self._slices, self._cache = {}, {}
            for key, e in entries.items():
                sk = split_key(key)
                if sk is not None:
                    s = self._slices.setdefault(sk.slice, _Slice(sk.axes))
                    s.points.setdefault(sk.coords, []).append((sk.squeeze, _values(e)))
            self._indexed = len(entries)
        return self._slices

    def interpolated(self, key: str) -> TableEntry | None:
        """The entry interpolated within the key's slice (None if the slice does not enclose it)."""
        slices = self._index()
        if key not in self._cache:
            sk = split_key(key)
            s = None if sk is None else slices.get(sk.slice)
            vals = None
            if sk is not None and s is not None:
                # the nearest SE width stands in for the block's (see the module doc)
                points = [(c, min(opts, key=lambda o: abs(o[0] - sk.squeeze))[1]) for c, opts in s.points.items()]
                vals = interpolate(points, sk.coords, extrapolate=self.extrapolate)
            self._cache[key] = None if vals is None else TableEntry(*vals, repeats=0)
        return self._cache[key]

    def describe_slice(self, key: str) -> str:
        """``'12 entries, cin 16–96, cout 16–96'``: what the key's slice holds (for error messages)."""
        sk = split_key(key)
        s = None if sk is None else self._index().get(sk.slice)
        if sk is None or s is None:
            return "no entry of the same kind, kernel, stride, input size and batch"
        ranges = [f"{a} {min(c[i] for c in s.points)}–{max(c[i] for c in s.points)}" for i, a in enumerate(s.axes)]
        return f"{len(s.points)} entries, " + ", ".join(ranges)

    # ---- one block -------------------------------------------------------------------------------------
    def lookup(self, plan: LayerPlan, *, batch: int = 1) -> tuple[TableEntry, str]:
        """The block's entry and where it came from (one of :data:`SOURCES`)."""
        key = block_key(plan, batch=batch)
        hit = self.table.entries.get(key)
        if hit is not None:
            self.counts["table"] += 1
            return hit, "table"
        guess = self.interpolated(key)
        if guess is not None:
            self.counts["interpolated"] += 1
            return guess, "interpolated"
        if not self.measure:
            raise ValueError(
                f"no latency for block {key}: not in the table and its slice cannot interpolate it "
                f"({self.describe_slice(key)}); measure it (LatencyModel(measure=True)), allow extrapolate=True, "
                "or extend the table with `edgecnn latency build-table`"
            )
        with self._measuring():
            entry = self.table.measure_block(plan, batch=batch)
        self.table.entries[key] = entry
        self._saved()
        self.counts["measured"] += 1
        return entry, "measured"

    def _measuring(self) -> AbstractContextManager[object]:
        if os.environ.get(WORKER_ENV) == "1":
            raise ValueError(
                "latency cannot be measured inside an executor worker (other tasks load the same CPU); "
                "measure in the driver (LatencyModel(measure=True, lane=executor.exclusive)) or use the table"
            )
        return self.lane()

    def _saved(self) -> None:
        if self.path is not None:
            self.table.save(self.path)

    def _overhead(self, *, in_chans: int, size: tuple[int, int], batch: int, num_classes: int) -> TableEntry:
        okey = overhead_key(in_chans=in_chans, input_size=size, batch=batch, num_classes=num_classes)
        if okey not in self.table.entries:
            if not self.measure:
                raise ValueError(
                    f"the latency table has no overhead entry {okey} (it is measured, never interpolated); "
                    "measure it (LatencyModel(measure=True)) or `edgecnn latency build-table` at this input size"
                )
            with self._measuring():
                self.table.measure_overhead(in_chans=in_chans, input_size=size, batch=batch, num_classes=num_classes)
            self._saved()
        return self.table.entries[okey]

    # ---- grids ----------------------------------------------------------------------------------------
    def ensure_grid(
        self,
        arch: str | ArchSpec,
        *,
        input_size: int | tuple[int, int],
        fractions: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
        batch: int = 1,
        num_classes: int = 1000,
        in_chans: int = 3,
        divisor: int = 8,
        sweeps: int = 1,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Measure, for every block of ``arch``, the :func:`width_grid` variants the table lacks; returns how many.

        Run it once before NetAdapt or a width search: afterwards every narrower
        network of the same blocks is answered by the table or by interpolation,
        without measuring. Each block's variants are measured in one entry of the lane,
        the table is saved (``path``) after each sweep.

        ``divisor``: the grid's rounding (:func:`width_grid`); a search that goes
        below 8 channels (NetAdapt with ``round_to=2``) wants a finer one, e.g. 2
        with a fraction of 0.125, or its narrowest proposals are measured one by one.
        ``sweeps``: measure the whole grid that many times, a sweep apart, and keep
        per entry the fastest run of all sweeps and the median of their other
        statistics (:func:`merge_sweeps`) — on a loaded CPU one measurement can be
        slowed throughout (another process on the sibling core); another sweep
        seconds later rarely is.
        """
        if sweeps < 1:
            raise ValueError(f"sweeps must be a positive integer, got {sweeps}")
        size = (input_size, input_size) if isinstance(input_size, int) else (int(input_size[0]), int(input_size[1]))
        todo: dict[str, list[LayerPlan]] = {}  # original block key -> its missing variants
        seen: set[str] = set()  # two blocks of arch may share variants
        for p in _plans(as_spec(arch), size, int(num_classes), int(in_chans)):
            for v in width_grid(p, fractions, divisor=divisor, batch=batch):
                k = block_key(v, batch=batch)
                if k not in self.table.entries and k not in seen:
                    seen.add(k)
                    todo.setdefault(block_key(p, batch=batch), []).append(v)
        total = sum(len(v) for v in todo.values())
        runs: dict[str, list[TableEntry]] = {}
        done = 0
        for _ in range(sweeps):
            for variants in todo.values():
                with self._measuring():
                    for v in variants:
                        runs.setdefault(block_key(v, batch=batch), []).append(self.table.measure_block(v, batch=batch))
                        done += 1
                        if on_progress:
                            on_progress(done, total * sweeps)
            for k, entries in runs.items():
                self.table.entries[k] = merge_sweeps(entries)
            self._saved()
        self.counts["measured"] += total
        self._overhead(in_chans=in_chans, size=size, batch=batch, num_classes=num_classes)
        return total

    # ---- a network -------------------------------------------------------------------------------------
    def predict(
        self,
        arch: str | ArchSpec,
        *,
        input_size: int | tuple[int, int],
        batch: int = 1,
        num_classes: int = 1000,
        in_chans: int = 3,
        stat: str | None = None,
        calibrated: bool = True,
    ) -> Prediction:
        """Like :func:`edgecnn.latency.predict`, with interpolated (or measured) entries for missing blocks.

        ``stat`` defaults to the model's.
        """
        stat = self.stat if stat is None else stat
        if stat not in STATS:
            raise ValueError(f"unknown statistic {stat!r}; valid: {', '.join(STATS)}")
        size = (input_size, input_size) if isinstance(input_size, int) else (int(input_size[0]), int(input_size[1]))
        plans = _plans(as_spec(arch), size, int(num_classes), int(in_chans))
        parts = []
        for p in plans:
            entry, _ = self.lookup(p, batch=batch)
            parts.append((block_key(p, batch=batch), entry.value(stat)))
        overhead = self._overhead(in_chans=in_chans, size=size, batch=batch, num_classes=num_classes)
        okey = overhead_key(in_chans=in_chans, input_size=size, batch=batch, num_classes=num_classes)
        return combine(self.table, okey, overhead.value(stat), parts, stat=stat, calibrated=calibrated)

    def sources(self, arch: str | ArchSpec, *, input_size: int | tuple[int, int], batch: int = 1,
                num_classes: int = 1000, in_chans: int = 3) -> Iterator[tuple[str, str]]:  # fmt: skip
        """``(block key, source)`` per block, without measuring (a miss is ``"missing"``)."""
        size = (input_size, input_size) if isinstance(input_size, int) else (int(input_size[0]), int(input_size[1]))
        for p in _plans(as_spec(arch), size, int(num_classes), int(in_chans)):
            key = block_key(p, batch=batch)
            if key in self.table.entries:
                yield key, "table"
            else:
                yield key, "interpolated" if self.interpolated(key) is not None else "missing"
