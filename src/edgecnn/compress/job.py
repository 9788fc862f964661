"""One compression run: shrink to a budget, check the result measured back to back, continue where it misses.

``edgecnn compress`` and ``edgecnn demo`` both run this chain (one function
per stage, like :func:`edgecnn.search.job.run_job`):

1. :func:`shrink` — the method once: NetAdapt (:mod:`edgecnn.compress.netadapt.loop`;
   Yang et al. 2018), one-shot pruning then BN recalibration and a long
   fine-tune (:mod:`edgecnn.compress.netadapt.oneshot`), or layer replacement
   (:mod:`edgecnn.compress.factor.by_layer`). It stops when its *meter* — a latency
   table, or single timings of the whole network — says the budget holds.
2. :func:`check` — the meter is not the verdict. The start and the result are
   exported once for the target and timed **back to back**, interleaved, their
   fastest runs on the CPU clock (:func:`edgecnn.latency.compare.compare_latency`);
   the median per-round ratio against the budget is the verdict, its spread the
   noise band (:func:`edgecnn.latency.compare.judge`).
3. :func:`run_measured` — where the measured result misses a latency budget
   (NetAdapt, one-shot pruning), fit the meter to the stopwatch through the start
   and the result (:func:`next_table_target`) and continue toward the corrected
   bound, up to ``measured_rounds`` times; each round's target is written to
   ``measured_rounds.json`` so ``--resume`` continues the same round. Where it
   still misses, the run says by how much (and the CLI exits 1).

The layer methods have no continuation: their selection already measures the
whole network; their verdict is checked the same way.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from edgecnn.atomic import atomic_write_text
from edgecnn.compress.budget import Budget
from edgecnn.compress.resource_meter import ResourceMeter
from edgecnn.compress.netadapt.loop import Iteration, NetAdaptConfig, NetAdaptResult, netadapt
from edgecnn.compress.netadapt.oneshot import prune_to_budget
from edgecnn.train.recalibrate import recalibrate_bn_if_any_
from edgecnn.data import BatchLoader, DataSet
from edgecnn.executor import Executor
from edgecnn.ops import CustomOp
from edgecnn.latency.compare import Comparison, Verdict, compare_latency, judge
from edgecnn.latency.measure import device_fingerprint
from edgecnn.latency.model import LatencyModel
from edgecnn.latency.table import LatencyTable
from edgecnn.train.config import TrainConfig
from edgecnn.train.loop import finetune
from edgecnn.train.task import DataRef

__all__ = ["Check", "MeasuredRun", "Shrunk", "check", "next_table_target", "run_measured", "shrink", "table_meter"]

ROUNDS_FILE = "measured_rounds.json"


@dataclass(frozen=True)
class Check:
    """How the result is checked: where it is timed, how many interleaved rounds, how much noise is allowed."""

    backend: str = "onnxruntime"  # the deployment target the verdict is measured on
    threads: int = 1
    device: str = "cpu"  # or an agent's HOST:PORT
    rounds: int = 5  # interleaved before/after rounds per verdict
    tolerance: float = 0.03  # share above a latency budget still counted as met (stated with the verdict)
    measured_rounds: int = 2  # continuations toward a corrected bound while the measured result misses (0: none)

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.measured_rounds < 0 or self.tolerance < 0 or self.threads < 1:
            raise ValueError("rounds and threads must be >= 1, measured_rounds and tolerance >= 0")


@dataclass
class Shrunk:
    """What one pass of a method made: the network, by its meter, and the steps that rebuild a foreign network."""

    model: nn.Module
    start: float  # the budget's resource of the start, by the meter
    resource: float  # the result's, by the meter
    target: float  # the bound the pass aimed at (meter scale)
    stopped: str  # the method's own stop reason
    history: list[dict[str, Any]] = field(default_factory=list)  # NetAdapt iterations (asdict of Iteration)
    prune_steps: list[dict[int, int]] = field(default_factory=list)  # one-shot: group → width
    start_top1: float | None = None  # NetAdapt: the start's hold-out top-1


@dataclass
class MeasuredRun:
    """The whole run: the final network, the passes, the measured comparison and the verdict."""

    model: nn.Module
    passes: list[Shrunk]
    comparison: Comparison
    verdict: Verdict | None  # None: the budget is not latency (MACs/params are exact: the meter decides)
    met: bool
    stopped: str  # why the run ended, in words

    @property
    def history(self) -> list[dict[str, Any]]:
        """Every pass's NetAdapt iterations, numbered on from one pass to the next."""
        return [{**h, "iteration": i} for i, h in enumerate((h for p in self.passes for h in p.history), 1)]

    def prune_steps(self) -> list[dict[int, int]]:
        """The steps that rebuild the result from the start (``load_pruned``): every NetAdapt iteration of every
        pass in order, or the last one-shot plan (one-shot re-plans from the start in each pass)."""
        if self.passes[-1].prune_steps:
            return self.passes[-1].prune_steps
        return [{h["group"]: h["width_after"]} for h in self.history]

    def document(self) -> dict[str, Any]:
        """The run's part of the results document: the verdict, its measurement and each pass's target."""
        return {"measured": self.comparison.to_dict(),
                "verdict": self.verdict.to_dict() if self.verdict is not None else None,
                "passes": [{"target": p.target, "start": p.start, "resource": p.resource, "stopped": p.stopped,
                            "iterations": len(p.history)} for p in self.passes],
                "stopped": self.stopped}  # fmt: skip


def table_meter(arch: str, data: DataSet, how: Check, path: Path, *, fractions: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
                divisor: int = 8, lane: Callable[[], AbstractContextManager[object]] | None = None,
                on_progress: Callable[[int, int], None] | None = None) -> ResourceMeter:  # fmt: skip
    """The latency meter of an EdgeNet on ``how``'s target: a per-block table at ``path`` (opened for this device's
    fingerprint, else new), its width grid of every block of ``arch`` measured once (widths in between are
    interpolated, a block off the grid measured when asked) — the meter of ``edgecnn compress`` and the benchmarks.
    """
    fp = device_fingerprint(backend=how.backend, threads=how.threads, device=how.device)
    latency = LatencyModel(LatencyTable.open_or_new(path, fp), measure=True, lane=lane, path=path)
    latency.ensure_grid(arch, input_size=data.image_size, num_classes=data.num_classes, in_chans=data.in_chans,
                        fractions=fractions, divisor=divisor, on_progress=on_progress)  # fmt: skip
    return ResourceMeter("latency", input_size=data.image_size, num_classes=data.num_classes, in_chans=data.in_chans,
                         latency=latency)  # fmt: skip


def next_table_target(table_start: float, measured_start: float, table_now: float, measured_now: float,
                      share: float) -> float | None:  # fmt: skip
    """The meter value that should measure ``share`` × ``measured_start``, from the line through two points.

    The table sums blocks timed one by one; the network measured whole pays a
    fixed cost the sum does not see (and the machine's speed when the table was
    made). Fitting ``measured ≈ a + b · table`` through the start and the
    current result and solving for the measured budget closes that gap. None
    where the two points give no usable line (equal table values, a slope that is
    not positive) or the answer is not below ``table_now``.
    """
    if table_start <= table_now:
        return None
    b = (measured_start - measured_now) / (table_start - table_now)
    if b <= 0:
        return None
    target = table_now + (share * measured_start - measured_now) / b
    return target if 0 < target < table_now else None


def shrink(model: nn.Module, ref: DataRef, data: DataSet, budget: Budget, *, method: str, meter: ResourceMeter,
           netadapt_config: NetAdaptConfig | None = None, executor: Executor | None = None, out: Path | None = None,
           resume: bool = False, criterion: str = "l1", round_to: int = 8, train: TrainConfig | None = None,
           long_epochs: float = 0.0, batch_size: int = 128,
           on_iteration: Callable[[Iteration], None] | None = None,
           on_proposal: Callable[[int, int], None] | None = None,
           on_step: Callable[[str, int, int], None] | None = None,
           custom_ops: Sequence[CustomOp] | None = None) -> Shrunk:  # fmt: skip
    """One pass of ``method`` ("netadapt" or "prune") on a copy of ``model`` toward ``budget`` (meter scale);
    ``custom_ops``: how modules of your own relate their channels (:class:`edgecnn.ops.CustomOp`)."""
    model = copy.deepcopy(model)
    if method == "netadapt":
        r: NetAdaptResult = netadapt(model, ref, budget, meter=meter, config=netadapt_config, executor=executor,
                                     out=out, resume=resume, on_iteration=on_iteration,
                                     on_proposal=on_proposal, on_step=on_step, custom_ops=custom_ops)  # fmt: skip
        return Shrunk(r.model, r.start, r.resource, r.target, r.stopped, [asdict(h) for h in r.history],
                      start_top1=r.start_top1)  # fmt: skip
    if method != "prune":
        raise ValueError(f"shrink runs 'netadapt' or 'prune', got {method!r} (layer methods: by_layer)")
    start = meter.of_model(model)
    target = budget.target(start)
    say = on_step or (lambda _what, _done, _total: None)
    say(f"planning one-shot pruning to {target:.4g} (bisection over the keep ratio)", 0, 1)
    shot = prune_to_budget(model, target, meter, criterion=criterion, round_to=round_to, custom_ops=custom_ops)
    result = shot.model
    loader = BatchLoader(data.train, batch_size=batch_size, mean=data.mean, std=data.std, train=True)
    recalibrate_bn_if_any_(result, loader, num_batches=20)
    if long_epochs > 0 and train is not None:
        steps = max(1, round(long_epochs * max(1, len(data.train) // batch_size)))
        say(f"long fine-tune of the result ({steps} steps)", 0, 1)
        finetune(result, data, steps=steps, config=train)
    met = shot.resource <= target
    return Shrunk(result, start, shot.resource, target, "met" if met else "over budget",
                  prune_steps=[{g.group: g.width_after for g in shot.plan.groups}])  # fmt: skip


def check(start: nn.Module, result: nn.Module, input_shape: tuple[int, ...], budget: Budget, how: Check, *,
          start_meter: float | None = None, on_round: Callable[[int, int], None] | None = None,
          ) -> tuple[Comparison, Verdict | None]:  # fmt: skip
    """``start`` and ``result`` timed back to back on ``how.backend``; the verdict where ``budget`` is latency.

    A relative latency budget is a share of the start *as measured now*; an absolute one (``5ms``) is in ms.
    """
    cmp = compare_latency(start, result, input_shape, backend=how.backend, threads=how.threads, device=how.device,
                          rounds=how.rounds, on_round=on_round)  # fmt: skip
    if budget.resource != "latency":
        return cmp, None
    if budget.relative:
        return cmp, judge(cmp, share=budget.value, tolerance=how.tolerance)
    return cmp, judge(cmp, limit_ms=budget.value, tolerance=how.tolerance)


def _rounds_file(out: Path | None) -> Path | None:
    return out / ROUNDS_FILE if out is not None else None


def _saved_targets(out: Path | None, resume: bool) -> list[float]:
    """The continuation targets a previous run of this folder chose (``--resume`` continues the same rounds)."""
    path = _rounds_file(out)
    if not resume or path is None or not path.is_file():
        return []
    try:
        targets = json.loads(path.read_text())["targets"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a measured-rounds record ({exc}); start afresh with --overwrite") from None
    if not isinstance(targets, list) or not all(isinstance(t, (int, float)) and t > 0 for t in targets):
        raise ValueError(f"{path}: field 'targets' must be a list of positive numbers; start afresh with --overwrite")
    return [float(t) for t in targets]


def run_measured(model: nn.Module, ref: DataRef, data: DataSet, budget: Budget, how: Check, *, method: str,
                 meter: ResourceMeter, out: Path | None = None, resume: bool = False,
                 say: Callable[[str], object] = print, on_round: Callable[[int, int], None] | None = None,
                 **shrink_args: Any) -> MeasuredRun:  # fmt: skip
    """:func:`shrink`, then :func:`check`, then continue toward a corrected bound while a latency budget is
    missed as measured (see the module doc). ``model`` is not changed."""
    shape = (1, data.in_chans, data.image_size, data.image_size)
    saved = _saved_targets(out, resume)  # a bad record is refused before any work
    passes = [shrink(model, ref, data, budget, method=method, meter=meter, out=out, resume=resume, **shrink_args)]
    targets: list[float] = []
    while True:
        now = passes[-1]
        say(f"timing the start and the result back to back on {how.backend} ({how.rounds} interleaved rounds)")
        cmp, verdict = check(model, now.model, shape, budget, how, on_round=on_round)
        if verdict is None:  # MACs / params: exact, the meter decides
            met = now.resource <= now.target
            return MeasuredRun(now.model, passes, cmp, None, met, now.stopped)
        say(f"measured: {verdict.reason}")
        if verdict.met:
            return MeasuredRun(now.model, passes, cmp, verdict, True, "met (measured back to back)")
        if len(passes) > how.measured_rounds:
            why = f"{verdict.reason}; {how.measured_rounds} continuation round(s) used"
            return MeasuredRun(now.model, passes, cmp, verdict, False, why)
        share = verdict.limit_ms / cmp.before
        k = len(passes)
        target = saved[k - 1] if k - 1 < len(saved) else next_table_target(
            passes[0].start, cmp.before, now.resource, cmp.after, share)  # fmt: skip
        if target is None:
            why = f"{verdict.reason}; the meter and the measurements give no usable line to continue on"
            return MeasuredRun(now.model, passes, cmp, verdict, False, why)
        targets.append(target)
        if out is not None:
            atomic_write_text(_rounds_file(out), json.dumps({"targets": targets}))  # type: ignore[arg-type]
        say(f"round {k + 1}: {method} on to {target:.4g} by the meter (refitted to the measurements)")
        nxt = Budget("latency", target, False, f"{target:.4g}ms")
        sub = out / f"round{k + 1}" if out is not None else None
        start = now.model if method == "netadapt" else model  # one-shot re-plans from the start
        more = shrink(start, ref, data, nxt, method=method, meter=meter, out=sub,
                      resume=resume and k - 1 < len(saved), **shrink_args)  # fmt: skip
        if method == "netadapt" and not more.history:
            why = f"{verdict.reason}; NetAdapt found no further step ({more.stopped})"
            return MeasuredRun(now.model, passes, cmp, verdict, False, why)
        passes.append(more)
