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
   SE gate, input size, batch, …; :func:`~edgecnn.latency.widths.split_key`). Within the slice the
   latency is interpolated multilinearly over the widths (:func:`~edgecnn.latency.widths.interpolate`):
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

:meth:`LatencyModel.ensure_grid` measures such a grid (:func:`~edgecnn.latency.widths.width_grid`) for
every block of a network before NetAdapt starts, so its proposals are answered
without measuring.

Entries are read for all four statistics (median, quartiles, min); an
interpolated :class:`TableEntry` has ``repeats == 0``: it was never timed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from functools import lru_cache
from pathlib import Path

from edgecnn.arch import ArchSpec, as_spec
from edgecnn.latency.predict import STATS, Prediction, combine
from edgecnn.latency.table import LatencyTable, TableEntry, block_key, merge_sweeps, overhead_key
from edgecnn.latency.widths import Slice, entry_values, interpolate, split_key, width_grid
from edgecnn.plan import LayerPlan, resolve

SOURCES: tuple[str, ...] = ("table", "interpolated", "measured")
WORKER_ENV = "EDGECNN_WORKER"
"""Set to "1" in :mod:`edgecnn.executor` workers, where measuring would time a CPU shared with fine-tunes."""

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
        self._slices: dict[str, Slice] = {}
        self._cache: dict[str, TableEntry | None] = {}
        self._indexed: tuple[int, int] | None = None  # (len(table.entries), table.revision) the slices were built at

    def entries_changed(self) -> None:
        """Forget the interpolation built from the entries: call it after writing over entries of
        ``table.entries`` by hand. Added entries, and entries :meth:`~edgecnn.latency.table.LatencyTable.retime`
        replaced (it bumps ``table.revision``), are noticed without it."""
        self._indexed = None

    # ---- the slices ------------------------------------------------------------------------------------
    def _index(self) -> dict[str, Slice]:
        entries = self.table.entries
        now = (len(entries), self.table.revision)  # entries added, or replaced by retime
        if self._indexed != now:
            self._slices, self._cache = {}, {}
            for key, e in entries.items():
                sk = split_key(key)
                if sk is not None:
                    s = self._slices.setdefault(sk.slice, Slice(sk.axes))
                    s.points.setdefault(sk.coords, []).append((sk.squeeze, entry_values(e)))
            self._indexed = now
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
        timers: dict[str, Callable[[], TableEntry]] = {}  # each variant prepared once, re-timed by later sweeps
        done = 0
        for _ in range(sweeps):
            for variants in todo.values():
                with self._measuring():
                    for v in variants:
                        k = block_key(v, batch=batch)
                        if k not in timers:
                            timers[k] = self.table.block_timer(v, batch=batch)
                        runs.setdefault(k, []).append(timers[k]())
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


def whole_network_model(*, backend: str, threads: int, device: str = "cpu", config: object | None = None,
                        lane: Callable[[], AbstractContextManager[object]] | None = None) -> LatencyModel:  # fmt: skip
    """A latency model for networks without an arch string (your own code): every network measured end to end.

    Its table holds no blocks; :class:`~edgecnn.compress.resource_meter.ResourceMeter` times each proposal whole in
    ``lane()``. Eager and ExecuTorch time back to back and read the fastest run (the steadiest statistic under
    load); ONNX Runtime normalises by its drift reference and reads the median.
    """
    from edgecnn.latency.table import new_table
    from edgecnn.latency.targets import get_target

    back_to_back = not get_target(backend).always_normalised
    table = new_table(backend=backend, threads=threads, device=device, config=config,  # type: ignore[arg-type]
                      drift_reference=not back_to_back)  # fmt: skip
    return LatencyModel(table, lane=lane, stat="min" if back_to_back else "median")
