"""How good is the lookup-table predictor on this device? Sample networks, measure them, compare.

nn-Meter (Zhang et al. 2021) reports the share of networks predicted within
±10% of their measured latency (99.0% on a mobile CPU) and the mean absolute
percentage error; we report the same, on networks drawn from the search space
the predictor will be used on, together with what bounds them: the
**noise floor**. Every network is measured twice (the second pass in reverse
order, later in time); the second measurement against the first is what a
perfect predictor would score. Measurements are drift-normalised against the
table's reference workload (:class:`~edgecnn.latency.measure.Reference`); the
unnormalised medians of the same runs are kept to show what normalising buys.

:func:`calibrate` fits the table's :class:`~edgecnn.latency.calibrate.Calibration`
on networks that must be drawn with another seed than the validation networks
(the report then holds out-of-sample errors only). Given a
:class:`~edgecnn.latency.model.LatencyModel` over the table, it fits that
model's predictions (interpolated widths included) — NetAdapt's case, where
the networks are pruned variants of one network
(:func:`edgecnn.compress.netadapt.variants.random_variants`) and
``latency ≈ s_fixed·Σ fixed + s_body·Σ body`` is an offset (the blocks pruning
leaves alone) plus a scale of the blocks it narrows.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from edgecnn.arch import ArchSpec
from edgecnn.build import build
from edgecnn.latency.calibrate import Calibration, fit, group_sums
from edgecnn.latency.compare import Anchor, sitting_ms
from edgecnn.latency.measure import LatencyStats, merge_passes, prepare
from edgecnn.latency.model import LatencyModel
from edgecnn.latency.predict import STATS, Prediction, predict
from edgecnn.latency.table import LatencyTable

CALIBRATE_BY = ("table", "fastest")
"""How :func:`calibrate` measures its networks: as the table's entries are, or by back-to-back fastest runs."""

Sampler = Callable[[random.Random], ArchSpec | str]
"""Draws one network from a random generator, e.g. ``edgecnn.search.space.MOBILENET_V3_SPACE.sample``."""

TOLERANCES: tuple[float, ...] = (0.05, 0.10, 0.20)
_EPS = 1e-9  # 11/10 − 1 is 0.10000000000000009 in floating point: a boundary case counts as within


def _within(errors: list[float], tol: float) -> float:
    return sum(abs(e) <= tol + _EPS for e in errors) / len(errors)


def loadavg() -> tuple[float, float, float] | None:
    """1/5/15-minute load averages (Linux), None elsewhere."""
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            a, b, c = (float(v) for v in f.read().split()[:3])
    except (OSError, ValueError):
        return None
    return (a, b, c)


def error_summary(errors: list[float]) -> dict[str, Any]:
    """MAPE, share within each of :data:`TOLERANCES`, signed bias (mean, median) and worst error of relative errors."""
    if not errors:
        return {"n": 0}
    return {
        "n": len(errors),
        "mape": statistics.fmean(abs(e) for e in errors),
        "within": {f"{t:.2f}": _within(errors, t) for t in TOLERANCES},
        "mean_error": statistics.fmean(errors),
        "median_error": statistics.median(errors),
        "max_abs_error": max(abs(e) for e in errors),
    }


@dataclass(frozen=True)
class ValidationRow:
    """One sampled network: predicted against measured latency (two measurements)."""

    arch: str  # canonical arch string
    predicted_ms: float  # table prediction (calibrated when the table has a calibration)
    raw_predicted_ms: float  # plain sum of the entries
    measured: LatencyStats  # first end-to-end measurement (drift-normalised)
    retest: LatencyStats | None  # second measurement of the same network, later (None: single pass)

    @property
    def error(self) -> float:
        """Relative error of the prediction against the first measurement, ``pred/meas − 1``."""
        return self.predicted_ms / self.measured.median_ms - 1.0

    @property
    def raw_error(self) -> float:
        return self.raw_predicted_ms / self.measured.median_ms - 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch, "predicted_ms": self.predicted_ms, "raw_predicted_ms": self.raw_predicted_ms,
            "error": self.error, "raw_error": self.raw_error, "measured": self.measured.to_dict(),
            "retest": None if self.retest is None else self.retest.to_dict(),
        }  # fmt: skip


@dataclass(frozen=True)
class ValidationReport:
    """Error distribution of the predictor over sampled networks, next to the measurement's own noise."""

    rows: tuple[ValidationRow, ...]  # one per measured network
    tolerance: float  # the ±share counted as "within" by :attr:`within` (0.10)
    input_size: int  # resolution the networks ran at
    seed: int  # sampling seed of the validation networks
    load: dict[str, Any] = field(default_factory=dict)  # loadavg before/after, share of CPUs others used

    @property
    def errors(self) -> list[float]:
        return [r.error for r in self.rows]

    @property
    def mape(self) -> float:
        """Mean absolute percentage error (as a share: 0.05 = 5%)."""
        return statistics.fmean(abs(e) for e in self.errors) if self.rows else float("nan")

    @property
    def within(self) -> float:
        """Share of networks predicted within ±tolerance."""
        return _within(self.errors, self.tolerance) if self.rows else float("nan")

    def noise(self, *, normalized: bool = True) -> list[float]:
        """Test-retest relative differences (second / first − 1); ``normalized=False``: of the raw medians."""
        out = []
        for r in self.rows:
            if r.retest is None:
                continue
            if normalized:
                out.append(r.retest.median_ms / r.measured.median_ms - 1)
            elif r.retest.raw_median_ms and r.measured.raw_median_ms:
                out.append(r.retest.raw_median_ms / r.measured.raw_median_ms - 1)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": len(self.rows),
            "tolerance": self.tolerance,
            "input_size": self.input_size,
            "seed": self.seed,
            "predictor": error_summary(self.errors),
            "predictor_uncalibrated": error_summary([r.raw_error for r in self.rows]),
            "noise_floor": error_summary(self.noise()),
            "noise_floor_unnormalized": error_summary(self.noise(normalized=False)),
            "load": dict(self.load),
            "rows": [r.to_dict() for r in self.rows],
        }


def sample_archs(n: int, sampler: Sampler, *, seed: int = 0) -> list[str]:
    """``n`` canonical arch strings drawn by ``sampler`` with ``random.Random(seed)``.

    The sampler comes from the caller (the CLI passes the search space's), so
    latency measurement does not depend on the search that is built on it.
    """
    if n < 1:
        raise ValueError(f"number of networks must be positive, got {n}")
    rng = random.Random(seed)
    drawn = [sampler(rng) for _ in range(n)]
    return [a.format() if isinstance(a, ArchSpec) else ArchSpec.parse(a).format() for a in drawn]


def arch_timer(table: LatencyTable, arch: str, *, input_size: int, num_classes: int = 1000,
               in_chans: int = 3) -> Callable[[], LatencyStats]:  # fmt: skip
    """``arch`` prepared once for end-to-end timing as the table's entries are (backend, threads, drift
    reference); each call times it once more — passes spread out in time re-time the same loaded artifact."""
    fp = table.fingerprint
    net = build(arch, num_classes=num_classes, in_chans=in_chans)
    timer, _ = prepare(net, (1, in_chans, input_size, input_size), backend=fp.backend, threads=fp.threads,
                       device=fp.device, config=table.config, reference=table.drift())  # fmt: skip
    return timer


def measure_arch(table: LatencyTable, arch: str, *, input_size: int, num_classes: int = 1000,
                 in_chans: int = 3) -> LatencyStats:  # fmt: skip
    """End-to-end latency of ``arch`` measured as the table's entries are (backend, threads, drift reference)."""
    return arch_timer(table, arch, input_size=input_size, num_classes=num_classes, in_chans=in_chans)()


def passes_over(timers: list[Callable[[], LatencyStats]], rounds: int, *, reverse: bool = False,
                on_each: Callable[[int, int], None] | None = None) -> list[list[LatencyStats]]:  # fmt: skip
    """Each timer run ``rounds`` times round-robin (a whole pass over all of them apart): its runs, per timer
    (merge them with :func:`~edgecnn.latency.timing.merge_passes`); ``reverse``: each pass in reverse order."""
    order = list(reversed(range(len(timers)))) if reverse else list(range(len(timers)))
    runs: list[list[LatencyStats]] = [[] for _ in timers]
    for r in range(rounds):
        for j, i in enumerate(order):
            runs[i].append(timers[i]())
            if on_each:
                on_each(r * len(order) + j + 1, rounds * len(order))
    return runs


def calibrate(
    table: LatencyTable,
    archs: list[str],
    *,
    input_size: int,
    num_classes: int = 1000,
    in_chans: int = 3,
    info: dict[str, Any] | None = None,
    table_path: str | None = None,
    on_stage: Callable[[str, int, int], None] | None = None,
    model: LatencyModel | None = None,
    stat: str = "median",
    rounds: int = 1,
    sweeps: int = 1,
    by: str = "table",
    pause_s: float = 0.0,
    anchor: Anchor | None = None,
) -> Calibration:
    """Measure ``archs`` (calibration networks), fit the per-group scales and store them in ``table``.

    Without ``model`` every block of ``archs`` is measured into the table first;
    with a :class:`LatencyModel` over ``table`` its predictions (interpolated or
    measured on demand) are fitted. ``stat``: the statistic of entries and
    measurements fitted (``"min"`` for a table measured without drift reference).
    ``rounds``: measure the networks round-robin that many times and keep each
    one's fastest run (``min``) or the median of its medians. ``sweeps``: how many times each new table entry
    is timed (:meth:`LatencyTable.ensure`).

    ``by``: how the networks are measured. ``"table"``: as the table's entries are (its timing config and drift
    reference), read by ``stat``. ``"fastest"``: as every latency verdict is
    (:func:`~edgecnn.latency.compare.fastest_runs`: back to back in ``rounds`` interleaved rounds ``pause_s``
    seconds apart, each round's fastest run on the CPU clock with one thread, the median over rounds) — the scales then map the table's
    ``stat`` sums to that latency, the one a search's finalists and its target are measured by. On a shared 2-core
    VM the search tables of six runs calibrated ``"table"``-wise beside other work predicted their chosen networks
    9–26% low; the same tables calibrated ``"fastest"`` predicted them within 4–5% (bias −2–−3%; docs/search.md).
    ``anchor`` (with ``"fastest"``): the networks read in the anchor's sitting
    (:class:`~edgecnn.latency.compare.Anchor`), so the scales map the table to the speed the target was set at.
    """
    if stat not in STATS:
        raise ValueError(f"unknown statistic {stat!r}; valid: {', '.join(STATS)}")
    if by not in CALIBRATE_BY:
        raise ValueError(f"unknown calibration measurement {by!r}; valid: {', '.join(CALIBRATE_BY)}")
    if anchor is not None and by != "fastest":
        raise ValueError(f"an anchor is timed with the networks back to back: pass by='fastest', not {by!r}")
    if model is not None and model.table is not table:
        raise ValueError("the latency model must predict from the table being calibrated")
    if model is None:
        table.ensure(
            archs, input_size=input_size, num_classes=num_classes, in_chans=in_chans, path=table_path,
            on_progress=(lambda d, t: on_stage("table", d, t)) if on_stage else None, sweeps=sweeps,
        )  # fmt: skip
    if rounds < 1:
        raise ValueError(f"rounds must be a positive integer, got {rounds}")
    kw: dict[str, Any] = {"input_size": input_size, "num_classes": num_classes, "in_chans": in_chans}
    sums = []
    for arch in archs:
        pred: Prediction = (predict(table, arch, stat=stat, calibrated=False, **kw) if model is None else
                            model.predict(arch, stat=stat, calibrated=False, **kw))  # fmt: skip
        sums.append(group_sums((("overhead", pred.overhead_ms), *pred.blocks)))
    if by == "fastest":
        fp = table.fingerprint
        nets = {str(i): build(a, num_classes=num_classes, in_chans=in_chans) for i, a in enumerate(archs)}
        ms, _ = sitting_ms(nets, (1, in_chans, input_size, input_size), anchor=anchor, num_classes=num_classes,
                           backend=fp.backend, threads=fp.threads, device=fp.device, rounds=rounds, pause_s=pause_s,
                           on_round=(lambda d, t: on_stage("calibrate", d, t)) if on_stage else None)  # fmt: skip
        measured = [ms[str(i)] for i in range(len(archs))]
    else:
        timers = [arch_timer(table, arch, **kw) for arch in archs]
        runs = passes_over(timers, rounds, on_each=(lambda d, t: on_stage("calibrate", d, t)) if on_stage else None)
        measured = [m.min_ms if stat == "min" else m.median_ms for m in map(merge_passes, runs)]
    # info should say how archs were drawn ({"seed": s, "n": n}) so that validate() can refuse them
    anchored = {} if anchor is None else {"anchor": asdict(anchor)}
    table.calibration = fit(sums, measured, info={"input_size": input_size, "stat": stat, "by": by, **anchored,
                                                  **(info or {})})  # fmt: skip
    if table_path is not None:
        table.save(table_path)
    return table.calibration


def validate(
    table: LatencyTable,
    archs: list[str],
    *,
    input_size: int,
    num_classes: int = 1000,
    time_cap_s: float | None = None,
    tolerance: float = 0.10,
    seed: int = 0,
    retest: bool = True,
    table_path: str | None = None,
    on_stage: Callable[[str, int, int], None] | None = None,
    sampler: Sampler | None = None,
    rounds: int = 1,
    sweeps: int = 1,
) -> ValidationReport:
    """Fill ``table`` for ``archs``, measure each end to end (twice with ``retest``), compare with its prediction.

    ``rounds`` > 1: each measurement is that many passes over all the networks (each network prepared once),
    merged per network (:func:`passes_over`), and so is the retest — the noise floor then says how repeatable
    such a measurement is. ``sweeps``: how many times each new table entry is timed (:meth:`LatencyTable.ensure`).

    ``time_cap_s`` stops measuring new networks once exceeded (the report says how
    many were measured). ``on_stage(stage, done, total)`` reports progress of the
    ``"table"``, ``"measure"`` and ``"retest"`` stages. ``sampler`` is the one
    the calibration networks were drawn with (their seed and count are in the
    table): with it, networks the table was calibrated on are refused, so the
    report holds out-of-sample errors only.
    """
    cal = table.calibration
    if sampler is not None and cal is not None and "seed" in cal.info and "n" in cal.info:
        seen = set(sample_archs(int(cal.info["n"]), sampler, seed=int(cal.info["seed"])))
        overlap = sum(a in seen for a in archs)
        if overlap:
            raise ValueError(
                f"{overlap} of the validation networks were used to calibrate this table (seed {cal.info['seed']}); "
                "validate on networks drawn with another seed"
            )
    table.ensure(
        archs, input_size=input_size, num_classes=num_classes, path=table_path,
        on_progress=(lambda d, t: on_stage("table", d, t)) if on_stage else None, sweeps=sweeps,
    )  # fmt: skip
    if rounds < 1:
        raise ValueError(f"rounds must be a positive integer, got {rounds}")
    load_start = loadavg()
    names: list[str] = []
    fns: list[Callable[[], LatencyStats]] = []
    runs: list[list[LatencyStats]] = []
    start = time.monotonic()
    for i, arch in enumerate(archs):  # the first pass times each network as soon as it is prepared
        if time_cap_s is not None and time.monotonic() - start > time_cap_s:
            break
        names.append(arch)
        fns.append(arch_timer(table, arch, input_size=input_size, num_classes=num_classes))
        runs.append([fns[-1]()])
        if on_stage:
            on_stage("measure", i + 1, len(archs))
    for i, more in enumerate(passes_over(fns, rounds - 1)):
        runs[i] += more
    first = [(a, merge_passes(r)) for a, r in zip(names, runs)]
    second: dict[int, LatencyStats] = {}
    if retest:  # reverse order: the two measurements of a network are as far apart in time as possible on average
        again = passes_over(fns, rounds, reverse=True,
                            on_each=(lambda d, t: on_stage("retest", d, t)) if on_stage else None)  # fmt: skip
        second = {i: merge_passes(r) for i, r in enumerate(again)}
    rows = []
    for i, (arch, stats) in enumerate(first):
        pred = predict(table, arch, input_size=input_size, num_classes=num_classes)
        rows.append(ValidationRow(arch, pred.total_ms, pred.raw_ms, stats, second.get(i)))
    all_stats = [s for _, s in first] + list(second.values())
    foreign = [s.foreign_cpu for s in all_stats if s.foreign_cpu is not None]
    drift = [s.drift for s in all_stats if s.drift is not None]
    load = {
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        "foreign_cpu_median": statistics.median(foreign) if foreign else None,
        "foreign_cpu_max": max(foreign) if foreign else None,
        "drift_median": statistics.median(drift) if drift else None,
        "drift_range": [min(drift), max(drift)] if drift else None,
    }
    return ValidationReport(tuple(rows), tolerance, input_size, seed, load)
