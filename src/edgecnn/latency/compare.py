"""Before and after on one target, back to back: the measurement every latency verdict rests on.

A budget is *met* or *missed* on a measured latency, and one measurement on a
shared CPU is not enough to say which: a single run of a NetAdapt meter once
read 0.125 ms for a network whose fastest runs, taken back to back with its
baseline, were 94% of the baseline's — a "met" that was not. So a verdict here
is taken the way a careful person would take it by hand:

- both networks are exported **once** for the target and timed in the same
  process (or on the same agent), in alternating order (A B, B A, …) over
  ``rounds`` rounds, so a slow phase of the machine hits both;
- each round keeps each network's **fastest** run (what the hardware does
  without interference; on one thread read on the thread's **CPU clock**, which
  leaves out the time slices the OS gave to other processes) — the fastest run
  is the steadiest statistic under load (docs/latency.md);
- the after/before **ratio per round** gives a spread, the noise band, and the
  verdict reads the **median** ratio, so a single outlier round cannot decide it.

:func:`interleaved` is the primitive (also what :mod:`edgecnn.deploy` times its
fp32/int8 forms with); :func:`compare_latency` applies it to two networks;
:func:`judge` turns a comparison and a budget into a :class:`Verdict` with its
reason.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from time import sleep as _sleep
from typing import Any

import torch
from torch import nn

from edgecnn.build import build
from edgecnn.latency.fingerprint import check_backend, check_device, is_agent_address
from edgecnn.latency.remote import check_remote_runtime, client_for, measure_remote
from edgecnn.latency.targets import get_target
from edgecnn.latency.timing import LatencyStats, TimingConfig, check_clock, default_threads, time_fn

__all__ = ["ANCHOR", "COMPARE_TIMING", "Anchor", "Comparison", "Verdict", "anchored_ms", "compare_latency", "fastest_ms",
           "fastest_runs", "interleaved", "judge", "sitting_ms"]  # fmt: skip

# one timing of one network in one round: short (the rounds give the spread), never retried (the rounds are retries)
COMPARE_TIMING = TimingConfig(warmup=5, min_repeats=20, max_repeats=300, max_seconds=1.0, retries=0, max_foreign=None)


def interleaved(timers: dict[str, Callable[[], LatencyStats]], *, rounds: int = 3,
                on_round: Callable[[int, int], None] | None = None, pause_s: float = 0.0,
                sleep: Callable[[float], None] = _sleep) -> dict[str, list[LatencyStats]]:  # fmt: skip
    """Each timer's statistics per round, the rounds alternating their order (A B, B A, …).

    A timer runs one full timing (e.g. :func:`~edgecnn.latency.timing.time_fn` of a bound program, or a
    measurement on an agent) and returns its statistics. ``on_round(done, rounds)`` after each round.
    ``pause_s``: seconds between rounds, so that the rounds spread over a span longer than one episode of
    contention on the machine (a round of small networks takes milliseconds: without a pause a whole sitting
    fits inside one, and every round's fastest run is slow — docs/search.md).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if not pause_s >= 0:
        raise ValueError(f"pause_s must be >= 0 seconds, got {pause_s!r}")
    names = list(timers)
    runs: dict[str, list[LatencyStats]] = {n: [] for n in names}
    for r in range(rounds):
        if r and pause_s:
            sleep(pause_s)
        for n in names if r % 2 == 0 else reversed(names):
            runs[n].append(timers[n]())
        if on_round is not None:
            on_round(r + 1, rounds)
    return runs


@dataclass(frozen=True)
class Comparison:
    """Two networks timed back to back on one target: per round, each one's fastest and median run (ms)."""

    target: str  # the runtime (edgecnn.latency.targets)
    threads: int
    device: str  # "cpu" or an agent's HOST:PORT
    clock: str  # "cpu" (the thread's CPU time) or "wall"
    before_ms: tuple[float, ...]  # per round: the before network's fastest run
    after_ms: tuple[float, ...]  # per round: the after network's fastest run
    before_median_ms: tuple[float, ...] = ()  # per round: medians, for reference
    after_median_ms: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not self.before_ms or len(self.before_ms) != len(self.after_ms):
            raise ValueError("a comparison needs the same number (>= 1) of rounds for both networks")

    @classmethod
    def of(cls, runs: Mapping[str, Sequence[LatencyStats]], before: str, after: str, *, target: str, threads: int,
           device: str, clock: str) -> Comparison:  # fmt: skip
        """Two of the networks timed in one sitting (:func:`fastest_runs`'s ``runs``) as a back-to-back comparison:
        per round, each one's fastest run (and its median, for reference)."""
        b, a = runs[before], runs[after]
        return cls(target, threads, device, clock, tuple(s.min_ms for s in b), tuple(s.min_ms for s in a),
                   tuple(s.median_ms for s in b), tuple(s.median_ms for s in a))  # fmt: skip

    @property
    def rounds(self) -> int:
        return len(self.before_ms)

    @property
    def ratios(self) -> tuple[float, ...]:
        """after / before, per round."""
        return tuple(a / b if b > 0 else float("inf") for a, b in zip(self.after_ms, self.before_ms))

    @property
    def ratio(self) -> float:
        """The median of the per-round ratios: what the verdict reads."""
        return statistics.median(self.ratios)

    @property
    def band(self) -> tuple[float, float]:
        """The lowest and highest per-round ratio: the noise band of :attr:`ratio`."""
        return min(self.ratios), max(self.ratios)

    @property
    def before(self) -> float:
        """The before network's latency: the median over rounds of its fastest run (ms)."""
        return statistics.median(self.before_ms)

    @property
    def after(self) -> float:
        """The after network's latency, likewise (ms)."""
        return statistics.median(self.after_ms)

    def text(self) -> str:
        lo, hi = self.band
        where = f"on {self.device}" if self.device != "cpu" else "here"
        return (f"{self.after:.3f} ms vs {self.before:.3f} ms = {self.ratio:.1%} (rounds {lo:.1%}–{hi:.1%}; "
                f"{self.target}, {self.threads} thread(s) {where}, fastest runs on the {self.clock} clock, "
                f"{self.rounds} interleaved rounds)")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "before": self.before, "after": self.after, "ratio": self.ratio,
                "band": list(self.band), "rounds": self.rounds, "text": self.text()}  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    """Whether a measured comparison meets a latency budget, and why."""

    met: bool
    limit_ms: float  # the budget in measured milliseconds (a share budget: share × the measured before)
    measured_ms: float  # the after network's measured latency (Comparison.after)
    tolerance: float  # share above the limit still counted as met (the noise band allowed)
    reason: str

    @property
    def over(self) -> float:
        """How far the measured latency is over the limit, as a share of the limit (negative: under)."""
        return self.measured_ms / self.limit_ms - 1 if self.limit_ms > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "over": self.over}


def judge(cmp: Comparison, *, share: float | None = None, limit_ms: float | None = None,
          tolerance: float = 0.0) -> Verdict:  # fmt: skip
    """The verdict on ``cmp`` for a budget of ``share`` × the before network, or of ``limit_ms`` milliseconds.

    Met when the **median** per-round value is within the limit × (1 + ``tolerance``): a share budget reads the
    median after/before ratio, a millisecond budget the median of the after network's fastest runs. One fast
    round cannot make it met, nor one slow round make it missed.
    """
    if (share is None) == (limit_ms is None):
        raise ValueError("give exactly one of share (a budget relative to the before network) and limit_ms")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    lo, hi = cmp.band
    if share is not None:
        limit = share * cmp.before
        met = cmp.ratio <= share * (1 + tolerance)
        said = (f"measured {cmp.ratio:.1%} of the before network (rounds {lo:.1%}–{hi:.1%}) against a budget of "
                f"{share:.1%}" + (f" + {tolerance:.0%} tolerance" if tolerance else ""))  # fmt: skip
    else:
        limit = float(limit_ms)  # type: ignore[arg-type]
        met = cmp.after <= limit * (1 + tolerance)
        said = (f"measured {cmp.after:.3f} ms (rounds {min(cmp.after_ms):.3f}–{max(cmp.after_ms):.3f}) against a "
                f"budget of {limit:.3f} ms" + (f" + {tolerance:.0%} tolerance" if tolerance else ""))  # fmt: skip
    over = cmp.after / limit - 1 if limit > 0 else float("inf")
    reason = f"met: {said}" if met else f"missed by {over:.1%}: {said}"
    return Verdict(met, limit, cmp.after, tolerance, reason)


def fastest_runs(models: Mapping[str, nn.Module], input_shape: tuple[int, ...], *, backend: str,
                 threads: int | None = None, device: str = "cpu", rounds: int = 5, config: TimingConfig | None = None,
                 on_round: Callable[[int, int], None] | None = None,
                 time: Callable[[Callable[[], object], TimingConfig], LatencyStats] = time_fn,
                 pause_s: float = 0.0, sleep: Callable[[float], None] = _sleep,
                 ) -> tuple[str, dict[str, list[LatencyStats]]]:  # fmt: skip
    """``models`` timed back to back on ``backend`` in ``rounds`` interleaved rounds (the module doc), each exported
    once: the clock used and each model's statistics per round (its fastest run: ``min_ms``).

    ``config``: one network's timing in one round (default :data:`COMPARE_TIMING`, on the CPU clock when it can
    be read: one thread on this machine). ``time``: the stopwatch (a test passes a scripted one). ``pause_s``:
    seconds between rounds (:func:`interleaved`; ``sleep`` the pause, a test passes its own).
    """
    check_backend(backend)
    check_device(device)
    if not models:
        raise ValueError("nothing to time: give at least one network")
    threads = threads or default_threads()
    remote = is_agent_address(device)
    if config is None:
        clock = "cpu" if threads == 1 and device == "cpu" else "wall"
        config = TimingConfig(**{**asdict(COMPARE_TIMING), "clock": clock})
    if not remote:
        check_clock(config, threads=threads, device=device)
    x = torch.zeros(input_shape)
    tgt = get_target(backend)
    if remote:
        check_remote_runtime(backend, device)
        client = client_for(device)
        arts = {n: tgt.export(m.eval(), x) for n, m in models.items()}
        timers = {n: (lambda a=a: measure_remote(None, input_shape, runtime=backend, threads=threads, config=config,
                                                 client=client, artifact=a).stats) for n, a in arts.items()}  # fmt: skip
        return config.clock, interleaved(timers, rounds=rounds, on_round=on_round, pause_s=pause_s, sleep=sleep)
    with tgt.threads(threads):
        bound = {n: tgt.runner(m.eval(), x, threads=threads, device=device)[0] for n, m in models.items()}
        return config.clock, interleaved({n: (lambda f=f: time(f, config)) for n, f in bound.items()}, rounds=rounds,
                                         on_round=on_round, pause_s=pause_s, sleep=sleep)  # fmt: skip


def fastest_ms(rounds: Sequence[LatencyStats]) -> float:
    """One network's latency from :func:`fastest_runs`: the median over rounds of each round's fastest run."""
    return statistics.median(s.min_ms for s in rounds)


ANCHOR = "__anchor__"
"""The name an :class:`Anchor`'s network is timed under among the others (:func:`fastest_runs`)."""


@dataclass(frozen=True)
class Anchor:
    """A network whose latency is the unit of every sitting: ``arch`` measured ``ms`` when the target was set.

    The fastest run on the CPU clock is steady within a sitting, not across hours: on the shared 2-core VM here a
    network read 0.408 ms in one sitting and 0.553 ms, quiet, in one four hours later (the whole machine 35%
    slower; docs/search.md). A target in milliseconds set in the first sitting then reads every network of the
    second as over it. Timed in the same interleaved rounds as the networks measured, the anchor turns each into
    its **median per-round ratio** to the anchor times ``ms`` (:func:`anchored_ms`) — its latency at the speed the
    target was set at — as :func:`compare_latency` turns a pruned network into its share of the baseline.
    """

    arch: str  # canonical arch string (built with the measured networks' classes and channels)
    ms: float  # its latency in the sitting the target was set in (fastest runs, as every network here)

    def __post_init__(self) -> None:
        if not (self.ms > 0 and self.ms < float("inf")):
            raise ValueError(f"the anchor's latency must be a positive number of ms, got {self.ms}")


def anchored_ms(runs: Mapping[str, Sequence[LatencyStats]], anchor: Anchor,
                key: str = ANCHOR) -> dict[str, float]:  # fmt: skip
    """Every network of :func:`fastest_runs`'s ``runs`` but the anchor's (under ``key``) in the anchor's sitting:
    the median over rounds of its fastest run over the anchor's in that round, times ``anchor.ms``."""
    ref = [s.min_ms for s in runs[key]]
    out = {}
    for name, per in runs.items():
        if name != key:
            if len(per) != len(ref):
                raise ValueError(f"{name!r} was timed in {len(per)} rounds and the anchor in {len(ref)}")
            out[name] = anchor.ms * statistics.median(s.min_ms / r for s, r in zip(per, ref))
    return out


def sitting_ms(models: Mapping[str, nn.Module], input_shape: tuple[int, ...], *, anchor: Anchor | None = None,
               num_classes: int = 1000, **timing: Any) -> tuple[dict[str, float], dict[str, list[LatencyStats]]]:  # fmt: skip
    """``models`` timed back to back (:func:`fastest_runs`, ``timing`` its keywords): each one's latency — the
    median of its rounds' fastest runs, or with ``anchor`` its :func:`anchored_ms`, the anchor network (``num_classes``
    outputs, the input's channels) timed in the same rounds — and the runs (the anchor's under :data:`ANCHOR`)."""
    nets = dict(models)
    if anchor is not None:
        if ANCHOR in nets:
            raise ValueError(f"{ANCHOR!r} names the anchor; give the networks other names")
        nets[ANCHOR] = build(anchor.arch, num_classes=num_classes, in_chans=input_shape[1])
    _, runs = fastest_runs(nets, input_shape, **timing)
    ms = {n: fastest_ms(r) for n, r in runs.items() if n != ANCHOR} if anchor is None else anchored_ms(runs, anchor)
    return ms, runs


def compare_latency(before: nn.Module, after: nn.Module, input_shape: tuple[int, ...], *, backend: str,
                    threads: int | None = None, device: str = "cpu", rounds: int = 5,
                    config: TimingConfig | None = None,
                    on_round: Callable[[int, int], None] | None = None,
                    time: Callable[[Callable[[], object], TimingConfig], LatencyStats] = time_fn) -> Comparison:  # fmt: skip
    """Time ``before`` and ``after`` back to back on ``backend`` (see the module doc; :func:`fastest_runs`)."""
    threads = threads or default_threads()
    clock, runs = fastest_runs({"before": before, "after": after}, input_shape, backend=backend, threads=threads,
                               device=device, rounds=rounds, config=config, on_round=on_round, time=time)  # fmt: skip
    return Comparison.of(runs, "before", "after", target=backend, threads=threads, device=device, clock=clock)
