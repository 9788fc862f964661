"""Training threads that fit the cores other work leaves free (``TrainConfig(threads="auto")``).

PyTorch's CPU kernels split each operation over ``torch.get_num_threads()``
OpenMP threads (one per core by default) and meet at a barrier after it. When
another process keeps one of those cores busy, the thread that shares it is
descheduled for whole time slices and every barrier waits for it: on a 2-core
machine with one other busy process, the demo's network (batch 64) trained at
188 images/s with 2 threads and 500 with 1, where the quiet machine gave 743
with 2 and 501 with 1 (``benchmarks/train_threads.py``; setting
``OMP_WAIT_POLICY=PASSIVE`` lifted a 2-thread case from 180 only to 288). So the
right thread count is the number of cores *left free*, and that changes while a
long training runs.

:class:`ThreadGovernor` measures it from the kernel's counters: every few
seconds it reads how long the CPUs this process may run on were busy
(``/proc/stat``, per CPU) and subtracts this process's own CPU time
(``os.times``); what remains is the cores other work kept busy. The thread
count becomes the cores less that share rounded half up (half a core busy
counts as one), at least 1. Where ``/proc/stat`` is missing (not Linux) the
governor leaves the count as it is.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = ["CpuSample", "ThreadGovernor", "available_cpus", "fitting_threads", "others_busy", "sample_cpu"]

INTERVAL_S = 5.0  # how often a running training looks again
FIRST_LOOK_S = 0.25  # how long the first look, before training starts, watches the CPUs
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user nice system irq softirq steal (idle and iowait are not busy)
_clock, _sleep, _times = time.monotonic, time.sleep, os.times  # looked up at each call (tests replace them)
# this process's last look per (CPUs, counters file): its sample, count and the other cores busy; fits in a row
# within INTERVAL_S of it (NetAdapt's short fine-tunes) take it over instead of waiting for a look of their own
_recent: dict[tuple[tuple[int, ...], str], tuple["CpuSample", int, float]] = {}


@dataclass(frozen=True)
class CpuSample:
    """One reading of the clocks: when, how long ``cpus`` were busy in all, and this process's CPU time."""

    at: float  # time.monotonic()
    busy_s: float  # busy seconds of the CPUs this process may use, summed over them, since boot
    own_s: float  # user + system seconds of this process (all its threads)


def available_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity; all of them where the OS has no affinity call)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _busy_seconds(stat_text: str, cpus: list[int], ticks: float) -> float:
    """Busy seconds of ``cpus`` from the text of ``/proc/stat`` (its ``cpuN`` lines, in clock ticks)."""
    wanted, total = {f"cpu{c}" for c in cpus}, 0
    for line in stat_text.splitlines():
        name, _, rest = line.partition(" ")
        if name in wanted:
            values = rest.split()
            total += sum(int(values[i]) for i in _BUSY_FIELDS if i < len(values))
    return total / ticks


def sample_cpu(cpus: list[int], stat: Path = Path("/proc/stat")) -> CpuSample | None:
    """Read the clocks now; None where there is no ``/proc/stat`` to read."""
    try:
        text = stat.read_text()
    except OSError:
        return None
    t = _times()
    return CpuSample(_clock(), _busy_seconds(text, cpus, os.sysconf("SC_CLK_TCK")), t.user + t.system)


def others_busy(before: CpuSample, after: CpuSample) -> float:
    """How many cores other processes kept busy between two samples (0 when the interval is empty)."""
    wall = after.at - before.at
    if wall <= 0:
        return 0.0
    return max(0.0, (after.busy_s - before.busy_s) - (after.own_s - before.own_s)) / wall


def fitting_threads(cores: int, others: float) -> int:
    """Threads for ``cores`` cores of which other work keeps ``others`` busy: the free ones, at least 1."""
    return max(1, min(cores, cores - math.floor(others + 0.5)))  # half a core busy counts as one


@dataclass
class ThreadGovernor:
    """Keeps ``torch``'s intra-op thread count at the cores other work leaves free, looking every ``interval_s``.

    ``start()`` watches the CPUs for ``FIRST_LOOK_S`` and sets the count — or, when this process looked less than
    ``interval_s`` ago (short fits in a row, as NetAdapt's fine-tunes), takes that look's count without waiting;
    ``tick()`` (called once per training step, nearly free in between) looks again when ``interval_s`` has
    passed. ``changes`` records the first choice and every change as ``(step, threads, other cores busy)``.
    """

    interval_s: float = INTERVAL_S
    cpus: list[int] = field(default_factory=lambda: available_cpus())
    stat: Path = Path("/proc/stat")
    threads: int = 0  # the count now (0 before start)
    changes: list[tuple[int, int, float]] = field(default_factory=list)
    _last: CpuSample | None = None

    @property
    def _key(self) -> tuple[tuple[int, ...], str]:
        return tuple(self.cpus), str(self.stat)

    def start(self, step: int = 0) -> int:
        self.threads = torch.get_num_threads()
        before = _recent.get(self._key)
        if before is not None and 0 <= _clock() - before[0].at < self.interval_s:  # a look moments ago: its count
            self._last = before[0]
            self._set(step, before[1], before[2])
            return self.threads
        first = sample_cpu(self.cpus, self.stat)
        if first is None:  # no counters here: leave the count as it is
            return self.threads
        _sleep(FIRST_LOOK_S)
        self._last = first
        self._look(step, first_look=True)
        return self.threads

    def tick(self, step: int) -> None:
        if self._last is not None and _clock() - self._last.at >= self.interval_s:
            self._look(step)

    def _look(self, step: int, first_look: bool = False) -> None:
        now = sample_cpu(self.cpus, self.stat)
        if now is None or self._last is None:
            return
        others = others_busy(self._last, now)
        self._last = now
        want = fitting_threads(len(self.cpus), others)
        _recent[self._key] = (now, want, round(others, 2))
        if want != self.threads or first_look:
            self._set(step, want, round(others, 2))

    def _set(self, step: int, want: int, others: float) -> None:
        torch.set_num_threads(want)
        self.threads = want
        self.changes.append((step, want, others))
