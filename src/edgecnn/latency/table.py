"""The latency lookup table: one measured latency per block configuration, per device and backend.

MnasNet (Tan et al. 2019) and MobileNetV3 (Howard et al. 2019) search with
measured latencies; a lookup table of per-block latencies (as in FBNet, Wu
et al. 2019, and nn-Meter, Zhang et al. 2021) lets the search and NetAdapt
cost thousands of candidates without running them. A block's entry is keyed
by exactly what determines its latency (:func:`block_key`): kind, channels,
inner and squeeze widths, kernel, stride, dilation, groups, SE gate,
activation, order, skip, input resolution and batch.

How an entry is measured, per backend (see ``docs/latency.md`` for why):

* eager — the block is built alone (``BUILDERS[kind](plan)``) and timed on an
  input of its shape; the cost of one empty call (an ``nn.Identity`` in the
  same runner) is subtracted, because inside a network that call cost is paid
  once, not once per block.
* onnxruntime — the block's marginal wall-clock cost in a small context graph,
  ``T(pre → block → post) − T(pre → post)`` (:mod:`edgecnn.latency.context`):
  fusions, layout and session overhead as inside a network. Tables written
  before this (no ``block_method`` field, read as ``"profile"``) summed the
  kernel times of the block exported alone and profiled; ORT's profiler slows
  the kernels it times, so those sums ran 27–35% high. Such a table keeps
  measuring new entries its own way, so its entries stay comparable.

Every timed run is normalised (unless the table says ``drift_reference: false``)
by a fixed reference workload run right before and after it (:class:`~edgecnn.latency.measure.Reference`,
:mod:`edgecnn.latency.reference`): the machine's speed drifts by tens of
percent within seconds, and a run compared with its neighbouring reference
runs cancels most of that. Entries are in milliseconds at the reference's
nominal speed (``reference_ms``, measured once when the table is created and
reused by every later measurement against this table). The reference run also
evicts the block's weights from the caches, as the preceding layers do inside
a network; the block's input is then touched (read) untimed, because inside a
network it was just written by the previous block.

The network-level fixed cost (session/call overhead, input layout) is an
``overhead|…`` entry: the end-to-end latency of a probe network
(``conv_k3_s2_c16 gap fc`` on the same input) minus its block entries.

A table made with ``drift_reference=False`` (eager and ExecuTorch, whose
targets allow it: ``Target.always_normalised`` false) times blocks back to
back without the reference: its ``min`` statistic is then the fastest
undisturbed run, which stays within a few percent on a CPU so loaded that
medians (normalised or not) move by 2× between two measurements of the same
network (``docs/latency.md``, "Under heavy load"); predict and calibrate such a
table with ``stat="min"``.

An optional :class:`~edgecnn.latency.calibrate.Calibration` (per-group
scales fitted on measured calibration networks) is stored with the entries.

The table is a versioned JSON file stamped with a :class:`DeviceFingerprint`;
a table from another device or backend is refused unless forced. It grows
lazily (:meth:`LatencyTable.ensure`) and is checkpointed atomically as it fills,
so an interrupted ``build-table`` resumes where it stopped.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgecnn.arch import ArchSpec
from edgecnn.atomic import atomic_write_text
from edgecnn.build import BUILDERS, build
from edgecnn.kinds import kind_of
from edgecnn.latency.calibrate import Calibration
from edgecnn.latency.fingerprint import DeviceFingerprint
from edgecnn.latency.measure import (
    CLOCKS,
    LatencyStats,
    Reference,
    TimingConfig,
    device_fingerprint,
    example_input,
    measure,
)
from edgecnn.latency.remote import client_for, is_agent_address, measure_remote
from edgecnn.latency.targets import get_target, target_names
from edgecnn.latency.targets.base import BlockTiming, Target
from edgecnn.plan import LayerPlan, resolve
from edgecnn.schema import check_table, load_json

FORMAT = "edgecnn-latency-table"
VERSION = 2  # 2: drift-normalised entries (reference_ms), cold-weight blocks, calibration
BLOCK_METHODS: tuple[str, ...] = ("context", "profile")
"""How an onnxruntime table measured its block entries (see the module doc); eager tables ignore it."""
PROBE_ARCH = "conv_k3_s2_c16 gap fc"
"""The smallest network: its end-to-end time minus its blocks is the fixed per-inference overhead."""


MAX_ENTRY_MS = 1e6
"""Ceiling of any latency a table holds (ms): 1,000 s for one block is a damaged or hand-edited file."""
MAX_SCALE = 1e6
"""Ceiling of a calibration scale: fitted scales stay near 1; far above it a group's entries are near 0."""
MAX_REPEATS = 10**9
"""Ceiling of an entry's timed runs."""


def check_magnitudes(data: dict[str, Any], source: str) -> None:
    """``ValueError`` naming ``source`` and the field when a latency, scale or count is absurdly large.

    :func:`edgecnn.schema.check_table` has checked types, finiteness and signs;
    this bounds sizes: every entry's ``*_ms`` within ``±MAX_ENTRY_MS`` (an
    ``overhead|…`` entry may be slightly negative), ``reference_ms`` and
    ``call_overhead_ms`` at most ``MAX_ENTRY_MS``, calibration scales at most
    ``MAX_SCALE``, ``repeats`` at most ``MAX_REPEATS``.
    """
    fix = "the table is damaged or edited by hand: rebuild it with `edgecnn latency build-table`"

    def fail(name: str, need: str, got: object) -> ValueError:
        return ValueError(f"{source}: field '{name}' must be {need}, got {got!r}; {fix}")

    for name in ("reference_ms", "call_overhead_ms"):
        v = data.get(name)
        if v is not None and v > MAX_ENTRY_MS:
            raise fail(name, f"at most {MAX_ENTRY_MS:,.0f} ms", v)
    cal = data.get("calibration") or {}
    for g, v in (cal.get("scales") or {}).items():
        if v > MAX_SCALE:
            raise fail(f"calibration.scales.{g}", f"at most {MAX_SCALE:g}", v)
    for key, e in (data.get("entries") or {}).items():
        where = f"entries[{key[:60]!r}]"
        for name in ("median_ms", "q1_ms", "q3_ms", "min_ms"):
            if abs(e[name]) > MAX_ENTRY_MS:
                raise fail(f"{where}.{name}", f"a latency within ±{MAX_ENTRY_MS:,.0f} ms", e[name])
        if e["repeats"] > MAX_REPEATS:
            raise fail(f"{where}.repeats", f"at most {MAX_REPEATS:,}", e["repeats"])


@dataclass(frozen=True)
class TableEntry:
    """Latency of one block configuration (ms), after the backend's correction (see module doc)."""

    median_ms: float  # median over timed runs
    q1_ms: float  # first quartile
    q3_ms: float  # third quartile
    min_ms: float  # fastest run
    repeats: int  # timed runs

    @classmethod
    def from_stats(cls, s: LatencyStats, minus_ms: float = 0.0) -> TableEntry:
        def sub(v: float) -> float:
            return max(v - minus_ms, 0.0)

        return cls(sub(s.median_ms), sub(s.q1_ms), sub(s.q3_ms), sub(s.min_ms), s.repeats)

    def value(self, stat: str) -> float:
        """The entry's ``median`` or ``min``."""
        return self.median_ms if stat == "median" else self.min_ms


def merge_sweeps(entries: Sequence[TableEntry]) -> TableEntry:
    """One entry from several measurements of a block: the fastest run of all, the median of the other statistics.

    A slowdown only ever adds time, so the minimum over sweeps is the least disturbed run; the median,
    quartiles of each sweep are combined by their median (networks measured in passes:
    :func:`edgecnn.latency.timing.merge_passes`).
    """
    if not entries:
        raise ValueError("no measurements to merge")

    def mid(name: str) -> float:
        return statistics.median(getattr(e, name) for e in entries)

    return TableEntry(mid("median_ms"), mid("q1_ms"), mid("q3_ms"), min(e.min_ms for e in entries),
                      sum(e.repeats for e in entries))  # fmt: skip


def _size(plan: LayerPlan) -> str:
    return "flat" if plan.in_size is None else f"{plan.in_size[0]}x{plan.in_size[1]}"


def block_key(plan: LayerPlan, *, batch: int = 1) -> str:
    """Canonical string of everything that determines a block's latency.

    ``ir|cin40|cout40|mid120|k5|s1|d1|g-|sq32|gate=hsigmoid|act=relu|pre=-|skip=auto|bn=-|bias=-|cls=0|in28x28|b1``
    """
    b = plan.spec
    if plan.in_size is None and not plan.flat and kind_of(b.kind).layout == "map":
        raise ValueError(f"block {plan.name} {b.format()!r} has no input size; resolve with input_size=")

    def f(v: object) -> str:
        return "-" if v is None else str(v)

    return "|".join(
        [
            b.kind, f"cin{plan.cin}", f"cout{plan.cout}", f"mid{f(plan.mid)}", f"k{f(b.k)}", f"s{f(b.s)}",
            f"d{f(b.d)}", f"g{f(b.g)}", f"sq{plan.squeeze}", f"gate={f(b.gate)}", f"act={f(b.act)}",
            f"pre={f(b.pre)}", f"skip={f(b.skip)}", f"bn={f(b.bn)}", f"bias={f(b.bias)}",
            f"cls={int(plan.classifier)}", f"in{_size(plan)}", f"b{batch}",
        ]
    )  # fmt: skip


def overhead_key(*, in_chans: int, input_size: tuple[int, int], batch: int, num_classes: int) -> str:
    """Key of the fixed per-inference overhead for an input shape."""
    return f"overhead|c{in_chans}|in{input_size[0]}x{input_size[1]}|b{batch}|ncls{num_classes}"


def block_input(plan: LayerPlan, batch: int) -> torch.Tensor:
    """A random input of the shape this block receives inside the network."""
    if plan.in_size is None:
        return example_input((batch, plan.cin))
    return example_input((batch, plan.cin, *plan.in_size))


@dataclass
class LatencyTable:
    """Per-block latencies of one device + backend + thread count, stored as versioned JSON."""

    fingerprint: DeviceFingerprint  # where and how the entries were measured
    entries: dict[str, TableEntry] = field(default_factory=dict)  # block_key / overhead_key -> latency
    call_overhead_ms: float | None = None  # eager: cost of one empty module call, subtracted from entries
    reference_ms: float | None = None  # the reference workload's nominal latency: the unit of every entry
    calibration: Calibration | None = None  # per-group scales fitted on measured networks (None: plain sums)
    drift_reference: bool = True  # eager: False times runs back to back, not normalised (see the module doc)
    config: TimingConfig = field(default_factory=TimingConfig)  # timing settings for new entries
    profile_runs: int = 30  # onnxruntime, block_method "profile": profiled runs per entry
    block_method: str = "context"  # onnxruntime: "context" (marginal cost in a graph) or "profile" (older tables)
    revision: int = field(default=0, repr=False, compare=False)  # bumped when entries are replaced in place
    _reference: Reference | None = field(default=None, repr=False, compare=False)  # built on first use
    _without: dict[tuple[object, ...], Callable[[], object]] = field(default_factory=dict, repr=False, compare=False)

    # ---- persistence -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "fingerprint": self.fingerprint.to_dict(),
            "call_overhead_ms": self.call_overhead_ms,
            "block_method": self.block_method,
            "clock": self.config.clock,
            "reference_ms": self.reference_ms,
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
            "drift_reference": self.drift_reference,
            "entries": {k: asdict(v) for k, v in sorted(self.entries.items())},
        }

    def save(self, path: str | Path) -> Path:
        """Write atomically (temp file + rename): a crash never leaves half a table."""
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "latency table") -> LatencyTable:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            got = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"{source} is not an edgecnn latency table (format {got!r})")
        if data.get("version") != VERSION:
            raise ValueError(
                f"latency table version {data.get('version')} is not supported (this edgecnn reads {VERSION}); "
                "rebuild it with `edgecnn latency build-table`"
            )
        check_table(data, source)  # finite, non-negative entries of the right shape before anything uses them
        check_magnitudes(data, source)  # and none absurdly large (1e300 ms would predict an error of 1e300 %)
        entries = {k: TableEntry(**v) for k, v in data.get("entries", {}).items()}
        cal = data.get("calibration")
        try:
            calibration = None if cal is None else Calibration.from_dict(cal)
        except KeyError as exc:
            raise ValueError(f"{source}: field 'calibration' lacks {exc}; recalibrate with `edgecnn latency "
                             "calibrate`") from None  # fmt: skip
        method = data.get("block_method", "profile")  # tables written before in-context timing profiled blocks
        if method not in BLOCK_METHODS:
            raise ValueError(f"{source}: unknown block_method {method!r} (valid: {', '.join(BLOCK_METHODS)}); "
                             "rebuild it with `edgecnn latency build-table`")  # fmt: skip
        clock = data.get("clock", "wall")  # how the entries and reference_ms were timed (older tables: wall)
        if clock not in CLOCKS:
            raise ValueError(f"{source}: unknown clock {clock!r} (valid: {', '.join(CLOCKS)}); "
                             "rebuild it with `edgecnn latency build-table`")  # fmt: skip
        drift = data.get("drift_reference", True)
        if not isinstance(drift, bool):
            raise ValueError(f"{source}: field 'drift_reference' must be true or false, got {drift!r}")
        return cls(
            DeviceFingerprint.from_dict(data["fingerprint"]), entries, data.get("call_overhead_ms"),
            data.get("reference_ms"), calibration, drift, TimingConfig(clock=clock), block_method=method,
        )  # fmt: skip

    @classmethod
    def load(cls, path: str | Path, *, expect: DeviceFingerprint | None = None, force: bool = False) -> LatencyTable:
        """Read a table; refuse it if ``expect`` (this device/backend) differs, unless ``force``."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"latency table {str(p)!r} not found; create it with `edgecnn latency build-table`")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"latency table {str(p)!r} is not UTF-8 text; rebuild it with "
                             "`edgecnn latency build-table`") from None  # fmt: skip
        data = load_json(text, f"latency table {str(p)!r}", fix="rebuild it with `edgecnn latency build-table`")
        table = cls.from_dict(data, source=f"latency table {str(p)!r}")
        if expect is not None:
            diff = table.fingerprint.differences(expect)
            if diff and not force:
                raise ValueError(
                    f"latency table {str(p)!r} was measured on another device/backend ({'; '.join(diff)}); "
                    "its latencies do not hold here. Build a table on this device, or pass force=True (--force)"
                )
        return table

    @classmethod
    def open_or_new(cls, path: str | Path, fp: DeviceFingerprint, *, force: bool = False) -> LatencyTable:
        """Load the table at ``path`` if it exists (checked against ``fp``), else start an empty one."""
        if Path(path).is_file():
            return cls.load(path, expect=fp, force=force)
        return cls(fp)

    # ---- measuring -------------------------------------------------------------------
    @property
    def backend(self) -> str:
        return self.fingerprint.backend

    def reference(self) -> Reference:
        """The drift reference of this table's backend/threads; its baseline is measured once and stored."""
        if self._reference is None:
            from edgecnn.latency.reference import make_reference

            fp = self.fingerprint
            self._reference = make_reference(
                backend=fp.backend, threads=fp.threads, device=fp.device, baseline=self.reference_ms,
                clock=self.config.clock,
            )  # fmt: skip
            self.reference_ms = self._reference.baseline_ms
        return self._reference

    @property
    def target(self) -> Target:
        """The runtime this table's entries were measured on (:mod:`edgecnn.latency.targets`)."""
        return get_target(self.backend)

    def drift(self) -> Reference | None:
        """The reference new measurements against this table are normalised by; None: ``drift_reference=False``."""
        if is_agent_address(self.fingerprint.device):
            return None  # timed on the device by its agent: no reference workload runs there
        return self.reference() if self.drift_reference or self.target.always_normalised else None

    def _block_timing(self) -> BlockTiming:
        fp = self.fingerprint
        return BlockTiming(threads=fp.threads, device=fp.device, config=self.config, reference=self.drift(),
                           profile_runs=self.profile_runs, method=self.block_method, cache=self._without)  # fmt: skip

    def _ensure_call_overhead(self) -> float:
        if not self.target.block_call_overhead:
            return 0.0  # e.g. ORT entries are kernel times: no call overhead inside them
        if self.call_overhead_ms is None:
            x = example_input((1, 8))
            self.call_overhead_ms = self.target.time_block(None, lambda: nn.Identity(), x,
                                                           self._block_timing()).median_ms  # fmt: skip
        return self.call_overhead_ms

    def block_timer(self, plan: LayerPlan, *, batch: int = 1) -> Callable[[], TableEntry]:
        """The block prepared for timing the way its target times blocks: each call measures it once more.

        Prepared (exported, lowered, loaded) once, so a second or third sweep costs timing only — on ExecuTorch
        the export of one block takes 5–9 s, its timing well under one.
        """
        build_block = lambda: BUILDERS[plan.spec.kind](plan).eval()  # noqa: E731
        x, fp = block_input(plan, batch), self.fingerprint
        if is_agent_address(fp.device):  # every target's blocks are timed alone on the device, by its agent
            def remote() -> TableEntry:
                stats = measure_remote(build_block(), tuple(x.shape), runtime=fp.backend, threads=fp.threads,
                                       config=self.config, client=client_for(fp.device)).stats  # fmt: skip
                return TableEntry.from_stats(stats, self._ensure_call_overhead())

            return remote
        timer = self.target.block_timer(plan, build_block, x, self._block_timing())
        return lambda: TableEntry.from_stats(timer(), self._ensure_call_overhead())

    def measure_block(self, plan: LayerPlan, *, batch: int = 1) -> TableEntry:
        """Measure one block on an input of its shape, the way its target times blocks (see the module doc)."""
        return self.block_timer(plan, batch=batch)()

    def measure_overhead(self, *, in_chans: int, input_size: tuple[int, int], batch: int, num_classes: int) -> None:
        """Measure the fixed overhead for an input shape with the probe network (and its block entries)."""
        key = overhead_key(in_chans=in_chans, input_size=input_size, batch=batch, num_classes=num_classes)
        if key in self.entries:
            return
        plans = resolve(PROBE_ARCH, num_classes=num_classes, in_chans=in_chans, input_size=input_size)
        for p in plans:
            k = block_key(p, batch=batch)
            if k not in self.entries:
                self.entries[k] = self.measure_block(p, batch=batch)
        net = build(PROBE_ARCH, num_classes=num_classes, in_chans=in_chans)
        fp = self.fingerprint
        total = measure(
            net, (batch, in_chans, *input_size), backend=fp.backend, threads=fp.threads, device=fp.device,
            config=self.config, reference=self.drift(),
        ).stats  # fmt: skip
        blocks = [self.entries[block_key(p, batch=batch)] for p in plans]
        med = total.median_ms - sum(e.median_ms for e in blocks)
        low = total.min_ms - sum(e.min_ms for e in blocks)
        q1 = total.q1_ms - sum(e.q1_ms for e in blocks)
        q3 = total.q3_ms - sum(e.q3_ms for e in blocks)
        self.entries[key] = TableEntry(med, q1, q3, low, total.repeats)

    def missing(self, plans: Iterable[LayerPlan], *, batch: int = 1) -> list[LayerPlan]:
        """Plans whose key is not in the table yet (first occurrence of each key)."""
        seen: set[str] = set()
        out = []
        for p in plans:
            k = block_key(p, batch=batch)
            if k not in self.entries and k not in seen:
                seen.add(k)
                out.append(p)
        return out

    def ensure(
        self,
        archs: Iterable[str | ArchSpec],
        *,
        input_size: int | tuple[int, int],
        batch: int = 1,
        num_classes: int = 1000,
        in_chans: int = 3,
        path: str | Path | None = None,
        checkpoint_s: float = 10.0,
        on_progress: Callable[[int, int], None] | None = None,
        sweeps: int = 1,
    ) -> int:
        """Measure every block of ``archs`` not yet in the table; returns how many entries were added.

        With ``path``, the table is saved there every ``checkpoint_s`` seconds, at the end, and when the
        build is interrupted (Ctrl-C, or SIGTERM, which the CLI turns into the same exception).
        ``on_progress(done, total)`` is called after each entry (of each sweep).
        ``sweeps``: time every new entry that many times, a whole sweep over the new entries apart, each block
        prepared once (:meth:`block_timer`), and keep :func:`merge_sweeps` of its
        sweeps — a block timed once in a slow moment of a shared machine is otherwise off for good, and one
        network dominated by that block with it (``benchmarks/kernel_costs.py``).
        """
        if sweeps < 1:
            raise ValueError(f"sweeps must be a positive integer, got {sweeps}")
        size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        if batch < 1:
            raise ValueError(f"batch must be a positive integer, got {batch}")
        todo: list[LayerPlan] = []
        for arch in archs:
            todo += self.missing(
                resolve(arch, num_classes=num_classes, in_chans=in_chans, input_size=size), batch=batch
            )
        todo = self.missing(todo, batch=batch)  # deduplicate across archs
        okey = overhead_key(in_chans=in_chans, input_size=size, batch=batch, num_classes=num_classes)
        probe = okey not in self.entries
        total = len(todo) * sweeps + int(probe)
        done, last_save = 0, time.monotonic()
        if on_progress:
            on_progress(0, total)
        if okey not in self.entries:
            self.measure_overhead(in_chans=in_chans, input_size=size, batch=batch, num_classes=num_classes)
            done += 1
            if on_progress:
                on_progress(done, total)
        timers: dict[str, Callable[[], TableEntry]] = {}
        runs: dict[str, list[TableEntry]] = {}
        try:
            for p in todo:
                k = block_key(p, batch=batch)
                if k in self.entries:  # the probe network may have added it
                    done += sweeps
                    continue
                timers[k] = self.block_timer(p, batch=batch)
                runs[k] = [timers[k]()]
                self.entries[k] = runs[k][0]
                done += 1
                if path is not None and time.monotonic() - last_save >= checkpoint_s:
                    self.save(path)
                    last_save = time.monotonic()
                if on_progress:
                    on_progress(done, total)
                if sweeps == 1:
                    timers.pop(k)  # nothing to time again: let the loaded artifact go
            for _ in range(sweeps - 1):
                for k, timer in timers.items():
                    runs[k].append(timer())
                    done += 1
                    if on_progress:
                        on_progress(done, total)
            for k in timers:
                self.entries[k] = merge_sweeps(runs[k])
        finally:  # also on Ctrl-C / SIGTERM: every entry measured so far is kept (first sweeps as they are)
            if path is not None:
                self.save(path)
        return len(todo) + int(probe)

    def retime(
        self,
        archs: Iterable[str | ArchSpec],
        *,
        input_size: int | tuple[int, int],
        batch: int = 1,
        num_classes: int = 1000,
        in_chans: int = 3,
        sweeps: int = 2,
        path: str | Path | None = None,
    ) -> dict[str, tuple[float, float]]:
        """Time every block of ``archs`` the table holds ``sweeps`` more times and keep :func:`merge_sweeps` of
        its old entry and the new ones; returns ``key → (old median, new median)``.

        A table whose entries were timed once each carries noise in both directions, and a search that
        optimises against it selects the networks built from the entries that came out *low* — a winner's
        curse at the level of the blocks (docs/search.md: a 128-wide k5 block entered at 0.049 ms, below its
        own ReLU and 96-wide variants, and ran 0.070 ms in the chosen network, twice). Re-timing the blocks of
        the networks a search ended on corrects the entries it leaned on; with ``sweeps=2`` each becomes the
        median of three timings. The sweeps alternate over the blocks, each prepared once; blocks the table
        lacks are left to :meth:`ensure`.
        """
        if sweeps < 1:
            raise ValueError(f"sweeps must be a positive integer, got {sweeps}")
        size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        plans: dict[str, LayerPlan] = {}
        for arch in archs:
            for p in resolve(arch, num_classes=num_classes, in_chans=in_chans, input_size=size):
                k = block_key(p, batch=batch)
                if k in self.entries and k not in plans:
                    plans[k] = p
        timers = {k: self.block_timer(p, batch=batch) for k, p in plans.items()}
        runs: dict[str, list[TableEntry]] = {k: [self.entries[k]] for k in plans}
        for _ in range(sweeps):
            for k, timer in timers.items():
                runs[k].append(timer())
        out = {}
        for k, r in runs.items():
            out[k] = (self.entries[k].median_ms, (merged := merge_sweeps(r)).median_ms)
            self.entries[k] = merged
        self.revision += 1  # a LatencyModel of this table rebuilds its interpolation
        if path is not None:
            self.save(path)
        return out


def new_table(*, backend: str, threads: int, device: str = "cpu", config: TimingConfig | None = None,
              drift_reference: bool = True) -> LatencyTable:  # fmt: skip
    """An empty table fingerprinted for this machine (``drift_reference=False``: back to back, see the module doc)."""
    if not drift_reference and get_target(backend).always_normalised:
        allowed = ", ".join(n for n in target_names() if not get_target(n).always_normalised)
        raise ValueError(f"drift_reference=False is for the {allowed} target(s); {backend} entries are always "
                         "normalised")  # fmt: skip
    return LatencyTable(device_fingerprint(backend=backend, threads=threads, device=device), config=config or TimingConfig(),
                        drift_reference=drift_reference)  # fmt: skip
