"""NetAdapt: shrink a trained network step by step to a resource budget (Yang et al. 2018; MobileNetV3's rule).

Each iteration ``i`` asks for a network whose resource
(:class:`~edgecnn.compress.resource_meter.ResourceMeter`: for an EdgeNet, latency from
the :class:`~edgecnn.latency.model.LatencyModel` and exact MACs or params by
arch; for any other module, exact counts and latency measured end to end) is
at most ``R_{i-1} − ΔR_i``, with
``ΔR_i = initial_step · R_0 · decay^(i-1)`` (never below the budget itself):

1. **Proposals** — one per free coupled-channel group
   (:func:`edgecnn.compress.channels.groups.channel_groups`): the largest width of that
   group alone, on the ``round_to`` grid, that meets the step, dropping the
   group's least important channels (:func:`~edgecnn.compress.channels.prune.plan_prune`
   with ``widths=``, then :func:`~edgecnn.compress.channels.prune.prune` in arch space).
   A group that cannot meet the step even at its smallest width proposes nothing;
   when no group can, the step is halved (up to ``step_halvings`` times) —
   a fixed step larger than any one group's share would otherwise end the run.
   With ``drop_blocks=True`` every block with an identity skip whose removal
   meets the step is a proposal too (:mod:`edgecnn.compress.netadapt.drop_block`):
   on a small network at a small input the latency is mostly per-layer
   overhead, which narrowing cannot remove and dropping a layer does.
2. **Cheap ranking** — every proposal's BatchNorm statistics are re-estimated
   on a few training batches (:func:`~edgecnn.train.recalibrate.recalibrate_bn_`;
   EagleEye, Li et al. 2020: pruned networks ranked by accuracy after BN
   recalibration track their accuracy after fine-tuning) and it is evaluated
   on a held-out slice of the training split (the test split is never used
   to choose).
3. **Short-term fine-tune** of the ``top_k`` best through the
   :class:`~edgecnn.executor.Executor` (:func:`~edgecnn.train.task.run_finetune`,
   ``short_steps`` steps each, the same seed for all), evaluated on the same hold-out.
4. **Selection** — the proposal with the best accuracy (``selection="accuracy"``,
   NetAdapt), or with the best ``ΔAcc / |ΔR|`` against the current network
   (``"ratio"``, MobileNetV3 §4.2: the accuracy lost per unit of resource saved).

The winner (with its fine-tuned weights) is the next network. The state —
arch, weights, history — is written atomically after every iteration
(:mod:`edgecnn.compress.netadapt.state`, loadable with ``weights_only=True``),
so a run killed at any point resumes (``resume=True``) after its last
completed iteration, with the same history; a network that is not an EdgeNet
is rebuilt by replaying the recorded widths on the start network. When the
budget is met, the network gets a long-term fine-tune (``long_epochs`` epochs
on the whole training split) and is evaluated once on the test split.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from edgecnn.ops import CustomOp
from edgecnn.build import EdgeNet
from edgecnn.compress.budget import Budget
from edgecnn.compress.netadapt.drop_block import BlockDrop, drop_block, droppable_blocks, plan_drop
from edgecnn.compress.channels.importance import check_criterion
from edgecnn.compress.channels.groups import channel_groups
from edgecnn.compress.resource_meter import ResourceMeter, network_key
from edgecnn.compress.netadapt.state import STATE_FORMAT, load_state, restore, run_settings, save_state, state_path
from edgecnn.compress.channels.prune import PrunePlan, plan_prune, prune
from edgecnn.train.recalibrate import recalibrate_bn_if_any_
from edgecnn.data import BatchLoader, DataSet
from edgecnn.executor import Executor
from edgecnn.train.config import FINETUNE, TrainConfig
from edgecnn.train.evaluation import evaluate
from edgecnn.train.loop import finetune
from edgecnn.train.task import DataRef, FinetuneTask, run_finetune

__all__ = ["STATE_FORMAT", "Iteration", "NetAdaptConfig", "NetAdaptResult", "ResourceMeter", "load_state",
           "netadapt", "save_state"]  # fmt: skip

SELECTIONS: tuple[str, ...] = ("accuracy", "ratio")


@dataclass(frozen=True)
class NetAdaptConfig:
    """The step schedule and the fine-tuning budget of a NetAdapt run."""

    initial_step: float = 0.05  # ΔR_1 as a fraction of the starting resource R_0
    decay: float = 0.98  # ΔR_i = initial_step · R_0 · decay^(i-1)
    short_steps: int = 50  # short-term fine-tune of each of the top_k proposals (0: rank by recalibration only)
    top_k: int = 3  # proposals fine-tuned per iteration (the best after BN recalibration)
    long_epochs: float = 0.0  # long-term fine-tune of the final network, in epochs of the training split
    selection: str = "accuracy"  # "accuracy" (NetAdapt) or "ratio" (ΔAcc/|ΔR|, MobileNetV3)
    criterion: str = "l1"  # channel importance within a group (edgecnn.compress.channels.importance)
    round_to: int = 8  # kept widths are multiples of this (or the full width)
    recal_batches: int = 10  # batches for BN recalibration of each proposal
    holdout: float = 0.1  # share of the training split held out to score proposals
    max_iterations: int = 200  # a safety stop
    step_halvings: int = 4  # when no single group can take a step, halve it up to this many times
    drop_blocks: bool = False  # also propose removing each identity-residual block (depth), scored the same way
    train: TrainConfig = FINETUNE  # recipe of both fine-tunes (lr, batch size, seed, ...)

    def __post_init__(self) -> None:
        if not 0 < self.initial_step < 1:
            raise ValueError(f"initial_step is a fraction of the starting resource in (0, 1), got {self.initial_step}")
        if not 0 < self.decay <= 1:
            raise ValueError(f"decay must be in (0, 1], got {self.decay}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}")
        if self.top_k < 1 or self.short_steps < 0 or self.recal_batches < 1 or self.long_epochs < 0:
            raise ValueError("top_k and recal_batches must be >= 1, short_steps and long_epochs >= 0")
        if not 0 < self.holdout < 1:
            raise ValueError(f"holdout is a share of the training split in (0, 1), got {self.holdout}")
        check_criterion(self.criterion, has_data=False, where="NetAdapt's per-group bisection")


@dataclass(frozen=True)
class Iteration:
    """What one NetAdapt iteration did (one line of the history)."""

    iteration: int  # 1-based
    target: float  # the step's bound on the resource
    resource: float  # the chosen network's resource
    top1: float  # its hold-out top-1 after the short fine-tune (or recalibration)
    recal_top1: float  # its hold-out top-1 after BN recalibration only
    group: int  # the channel group it shrank; -1: it dropped a block (drop_blocks)
    description: str  # the group, readably, or "blocks.<i> dropped (<block>)"
    width_before: int  # the group's width; a dropped block's channels
    width_after: int  # the group's kept width; 0 for a dropped block
    proposals: int  # proposals that met the step
    arch: str  # the network after the iteration (an EdgeNet's arch string, else its network_key)
    seconds: float  # wall time of the iteration


@dataclass
class NetAdaptResult:
    """The compressed network and how it got there."""

    model: nn.Module  # an EdgeNet when the input was one
    arch: str | None  # EdgeNet only
    budget: Budget
    target: float  # the budget as an absolute bound
    start: float  # resource of the original network
    resource: float  # resource of the result
    start_top1: float  # hold-out top-1 of the original network
    top1: float  # test top-1 of the result (after the long-term fine-tune)
    met: bool  # resource <= target
    stopped: str  # "met" or why the run stopped early
    history: list[Iteration] = field(default_factory=list)


def _data_ref(ref: DataRef, fraction: float, seed: int) -> DataRef:
    return DataRef(ref.source, ref.image_size, ref.limit, ref.seed, ref.cache, holdout=fraction, holdout_seed=seed)


def _free_groups(model: nn.Module, graph: Any, round_to: int) -> tuple[int, ...]:
    return plan_prune(model, graph=graph, keep=1.0, round_to=round_to).free


@dataclass(frozen=True)
class _Proposal:
    """One candidate of an iteration: what it changes, its resource, and the plan that builds it."""

    group: int  # channel group, or -1 for a dropped block
    description: str
    width_before: int
    width_after: int
    resource: float
    plan: PrunePlan | BlockDrop

    @property
    def name(self) -> str:
        return f"group {self.group}" if self.group >= 0 else self.description.split(" (")[0]

    def build(self, model: nn.Module) -> nn.Module:
        if isinstance(self.plan, BlockDrop):
            assert isinstance(model, EdgeNet)
            return drop_block(model, self.plan.position)
        return prune(model, self.plan).model


def _width_proposal(model: nn.Module, graph: Any, group: int, meter: ResourceMeter, bound: float,
                    cfg: NetAdaptConfig, plans: dict[tuple[int, int], tuple[Any, float]] | None = None
                    ) -> _Proposal | None:  # fmt: skip
    found = _propose(model, graph, group, meter, bound, cfg, plans)
    if found is None:
        return None
    plan, r = found
    entry = next(e for e in plan.groups if e.group == group)
    return _Proposal(group, entry.description, entry.width_before, entry.width_after, r, plan)


def _drop_proposals(model: EdgeNet, meter: ResourceMeter, bound: float) -> list[_Proposal]:
    """One proposal per identity-residual block whose removal meets ``bound``."""
    out = []
    for position in droppable_blocks(model):
        d = plan_drop(model, position)
        r = meter(d.arch)
        if r <= bound:
            out.append(_Proposal(-1, d.description, d.width, 0, r, d))
    return out


def _propose(model: nn.Module, graph: Any, group: int, meter: ResourceMeter, bound: float, cfg: NetAdaptConfig,
             plans: dict[tuple[int, int], tuple[Any, float]] | None = None) -> tuple[Any, float] | None:  # fmt: skip
    """The widest width of ``group`` on the grid whose network meets ``bound`` (bisection; resource falls with width).

    ``plans`` memoises ``(group, width) -> (plan, resource)`` for one network: a halved step bisects the
    same widths again.
    """
    width = graph.groups[group].width
    grid = [w for w in range(cfg.round_to, width, cfg.round_to)] or [w for w in range(1, width)]
    if not grid:
        return None
    memo = {} if plans is None else plans

    def plan_at(w: int) -> tuple[Any, float]:
        if (group, w) not in memo:
            p = plan_prune(model, graph=graph, widths={group: w}, criterion=cfg.criterion, round_to=cfg.round_to)
            memo[group, w] = (p, meter.of_plan(model, p))
        return memo[group, w]

    lo_plan = plan_at(grid[0])
    if lo_plan[1] > bound:
        return None
    lo, hi, best = 0, len(grid) - 1, lo_plan
    while lo < hi:  # invariant: grid[lo] meets the bound
        mid = (lo + hi + 1) // 2
        cand = plan_at(grid[mid])
        if cand[1] <= bound:
            lo, best = mid, cand
        else:
            hi = mid - 1
    return best


def _finetune_task(name: str, cand: nn.Module, data: DataRef, cfg: NetAdaptConfig) -> FinetuneTask:
    """A short fine-tune of ``cand``: an EdgeNet travels as arch + weights, any other network whole, its weights
    inside it (sent once)."""
    if isinstance(cand, EdgeNet):
        return FinetuneTask(name, cand.arch, cand.state_dict(), data, cfg.short_steps, cfg.train)
    return FinetuneTask(name, "", {}, data, cfg.short_steps, cfg.train, module=cand)


def _score(model: nn.Module, loader: BatchLoader, val: DataSet, batches: int) -> float:
    recalibrate_bn_if_any_(model, loader, num_batches=batches)
    return evaluate(model, val, channels_last=False).top1


def netadapt(
    model: nn.Module,
    data: DataRef,
    budget: Budget,
    *,
    meter: ResourceMeter,
    config: NetAdaptConfig | None = None,
    executor: Executor | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    on_iteration: Callable[[Iteration], None] | None = None,
    on_proposal: Callable[[int, int], None] | None = None,
    on_step: Callable[[str, int, int], None] | None = None,
    custom_ops: Sequence[CustomOp] | None = None,
) -> NetAdaptResult:
    """Run NetAdapt on a trained network until ``budget`` holds (see the module docstring).

    ``model``: an EdgeNet (pruned in arch space, latency from the meter's table)
    or any module :func:`~edgecnn.compress.channels.groups.channel_groups` can trace
    (pruned in module space; a latency budget is then measured end to end,
    :class:`~edgecnn.compress.resource_meter.ResourceMeter`; block dropping needs an
    EdgeNet). ``data`` says where the data is (workers load it themselves); ``meter``
    measures the budget's resource; ``executor`` runs the short fine-tunes
    (default: in this process). ``out``: folder of the state file written after
    every iteration; ``resume=True`` continues from it. ``on_iteration`` is
    called after each iteration is saved; ``on_step(what, done, total)`` says which part of an iteration runs
    (bisection of the widths, scoring, short fine-tunes, the long fine-tune); ``on_proposal(done, total)`` while
    proposals are scored. ``custom_ops``: how modules of your own relate their channels
    (:class:`edgecnn.ops.CustomOp`, as for :func:`~edgecnn.compress.channels.prune.plan_prune`); the same on resume.
    """
    cfg = config or NetAdaptConfig()
    _check_run(model, budget, meter, cfg)
    run = _setup(model, data, budget, meter, cfg, executor, out, on_proposal, on_step)
    run.custom_ops = custom_ops
    current, history, start_top1 = _start(run, resume)
    current, stopped = _shrink(run, current, history, start_top1, on_iteration)
    return _finish(run, current, start_top1, stopped, history)


@dataclass
class _Run:
    """What every iteration of one NetAdapt run reads."""

    model: nn.Module  # the network the run started from
    budget: Budget
    meter: ResourceMeter
    cfg: NetAdaptConfig
    ref: DataRef  # the training split less the hold-out (the short fine-tunes' data)
    val: DataSet  # train = the training split less the hold-out, test = the hold-out
    full: DataSet  # the whole data set (the long fine-tune, the final test)
    shape: tuple[int, int, int]  # (C, H, W) of the input
    start_r: float  # the start network's resource
    target: float  # the budget as an absolute bound
    settings: dict[str, Any]  # recorded in the state; a resumed run must have the same
    state_file: Path | None
    executor: Executor
    say: Callable[[str, int, int], None]  # on_step, or nothing
    on_proposal: Callable[[int, int], None] | None
    custom_ops: Sequence[CustomOp] | None = None  # the user's own ops (channel_groups)


def _check_run(model: nn.Module, budget: Budget, meter: ResourceMeter, cfg: NetAdaptConfig) -> None:
    if cfg.drop_blocks and not isinstance(model, EdgeNet):
        raise ValueError("drop_blocks removes blocks in arch space: it needs an EdgeNet (a model built from an arch "
                         "string); prune channels only (drop_blocks=False) for other modules")  # fmt: skip
    if meter.resource != budget.resource:
        raise ValueError(f"the budget is on {budget.resource} but the meter measures {meter.resource}")


def _setup(model: nn.Module, data: DataRef, budget: Budget, meter: ResourceMeter, cfg: NetAdaptConfig,
           executor: Executor | None, out: str | Path | None, on_proposal: Callable[[int, int], None] | None,
           on_step: Callable[[str, int, int], None] | None) -> _Run:  # fmt: skip
    """The data (hold-out split off), the start resource and the absolute target of a run."""
    ref = _data_ref(data, cfg.holdout, cfg.train.seed)
    from edgecnn.train.task import worker_data

    val = worker_data(ref)  # train = the training split less the hold-out, test = the hold-out
    full = worker_data(data)
    state_file = state_path(out) if out is not None else None
    start_r = meter.of_model(model)
    return _Run(model, budget, meter, cfg, ref, val, full, (meter.in_chans, val.image_size, val.image_size), start_r,
                budget.target(start_r), run_settings(budget, cfg), state_file, executor or Executor("serial"),
                on_step or (lambda _what, _done, _total: None), on_proposal)  # fmt: skip


def _start(run: _Run, resume: bool) -> tuple[nn.Module, list[Iteration], float]:
    """The network to shrink, the history so far and the start's hold-out top-1: the model as given, or where
    ``resume`` finds a state, the network, history and top-1 it recorded."""
    current = run.model.eval()
    history: list[Iteration] = []
    start_top1 = None
    state_file = run.state_file
    if resume and state_file is not None and state_file.is_file():
        st = load_state(state_file, settings=run.settings, max_iterations=run.cfg.max_iterations)  # every field checked
        try:
            current = restore(run.model, st, run.shape, round_to=run.cfg.round_to,
                              custom_ops=run.custom_ops).eval()  # fmt: skip
        except ValueError as exc:
            raise ValueError(f"{state_file}: {exc}") from None
        history = [Iteration(**h) for h in st["history"]]
        start_top1 = float(st["start_top1"])
    if start_top1 is None:
        start_top1 = evaluate(current, run.val, channels_last=False).top1
    return current, history, start_top1


def _shrink(run: _Run, current: nn.Module, history: list[Iteration], start_top1: float,
            on_iteration: Callable[[Iteration], None] | None) -> tuple[nn.Module, str]:  # fmt: skip
    """Iterations until the budget holds (or none can go on): the network, and "met" or why it stopped. Each
    iteration is appended to ``history`` and saved to the state file."""
    acc = history[-1].top1 if history else start_top1
    while run.meter.of_model(current) > run.target:
        i = len(history) + 1
        if i > run.cfg.max_iterations:
            return current, f"stopped after max_iterations={run.cfg.max_iterations}"
        step = _iteration(run, current, i, acc)
        if isinstance(step, str):
            return current, step
        current, it = step
        acc = it.top1
        history.append(it)
        if run.state_file is not None:
            save_state(run.state_file, {
                "start_arch": network_key(run.model), "start_top1": start_top1, "arch": network_key(current),
                "state_dict": {k: v.detach().cpu() for k, v in current.state_dict().items()},
                "history": [asdict(h) for h in history], "settings": run.settings,
            })  # fmt: skip
        if on_iteration:
            on_iteration(history[-1])
    return current, "met"


def _iteration(run: _Run, current: nn.Module, i: int, acc: float) -> tuple[nn.Module, Iteration] | str:
    """Iteration ``i``: proposals that meet the step, ranked, the best fine-tuned, one chosen; the chosen network
    (with its weights) and its history line, or why no proposal meets the step."""
    t0 = time.perf_counter()
    cfg = run.cfg
    r_now = run.meter.of_model(current)
    step = cfg.initial_step * run.start_r * cfg.decay ** (i - 1)
    bound = max(r_now - step, run.target)
    graph = channel_groups(current, run.shape, round_to=cfg.round_to, custom_ops=run.custom_ops)
    free = _free_groups(current, graph, cfg.round_to)
    loader = BatchLoader(run.val.train, batch_size=cfg.train.batch_size, mean=run.val.mean, std=run.val.std,
                         train=True, seed=cfg.train.seed + i)  # fmt: skip
    found, bound = _proposals(run, current, graph, free, bound, r_now, i)
    scored = _score_all(run, current, found, loader, i)
    if not scored:
        what = "channel group or droppable block" if cfg.drop_blocks else "channel group"
        return f"no {what} can meet the step to {bound:.4g} at iteration {i}"
    scored.sort(key=lambda s: -s[0])  # stable: ties keep graph order (groups, then dropped blocks)
    recal, prop, cand, top1 = _select(run, scored[: cfg.top_k], i, acc, r_now)
    return cand.eval(), Iteration(i, bound, prop.resource, top1, recal, prop.group, prop.description,
                                  prop.width_before, prop.width_after, len(scored), network_key(cand),
                                  time.perf_counter() - t0)  # fmt: skip


def _proposals(run: _Run, current: nn.Module, graph: Any, free: tuple[int, ...], bound: float, r_now: float,
               i: int) -> tuple[list[_Proposal], float]:  # fmt: skip
    """The proposals that meet ``bound`` (the widest width of each free group, and blocks to drop), halving the
    step while none does; with the bound they meet."""
    cfg, say = run.cfg, run.say
    plans: dict[tuple[int, int], tuple[Any, float]] = {}  # (group, width) -> (plan, resource), this network
    found: list[_Proposal] = []
    for _ in range(cfg.step_halvings + 1):  # no single group can take the whole step: halve it
        found = []
        for k, g in enumerate(free):  # the widest width of each group that meets the step (bisection)
            say(f"iteration {i}: bisecting the widths of {len(free)} channel groups", k, len(free))
            if (p := _width_proposal(current, graph, g, run.meter, bound, cfg, plans)) is not None:
                found.append(p)
        say(f"iteration {i}: bisecting the widths of {len(free)} channel groups", len(free), len(free))
        if cfg.drop_blocks:
            assert isinstance(current, EdgeNet)
            found += _drop_proposals(current, run.meter, bound)
        if found or bound >= r_now:
            break
        bound = (bound + r_now) / 2
    return found, bound


def _score_all(run: _Run, current: nn.Module, found: list[_Proposal], loader: BatchLoader,
               i: int) -> list[tuple[float, _Proposal, nn.Module]]:  # fmt: skip
    """Every proposal built and scored on the hold-out after BN recalibration: (top-1, proposal, network)."""
    scored = []
    for n, prop in enumerate(found):
        run.say(f"iteration {i}: scoring {len(found)} proposals (BN recalibration)", n, len(found))
        cand = prop.build(current)
        scored.append((_score(cand, loader, run.val, run.cfg.recal_batches), prop, cand))
        if run.on_proposal:
            run.on_proposal(n + 1, len(found))
    return scored


def _select(run: _Run, best: list[tuple[float, _Proposal, nn.Module]], i: int, acc: float,
            r_now: float) -> tuple[float, _Proposal, nn.Module, float]:  # fmt: skip
    """The best proposals fine-tuned briefly (through the executor) and the winner chosen by ``cfg.selection``,
    its fine-tuned weights loaded: (its recalibrated top-1, the proposal, the network, its top-1)."""
    cfg = run.cfg
    if cfg.short_steps > 0:
        run.say(f"iteration {i}: short fine-tunes of the best {len(best)} ({cfg.short_steps} steps each)", 0,
                len(best))  # fmt: skip
        tasks = [_finetune_task(f"iter {i}, {prop.name}", cand, run.ref, cfg) for _, prop, cand in best]
        outcomes = run.executor.map(run_finetune, tasks)
        tops = [o.top1 for o in outcomes]
    else:
        outcomes, tops = [None] * len(best), [s[0] for s in best]

    def merit(j: int) -> float:
        if cfg.selection == "accuracy":
            return tops[j]
        return (tops[j] - acc) / max(abs(r_now - best[j][1].resource), 1e-12)

    j = max(range(len(best)), key=lambda j: (merit(j), -j))
    recal, prop, cand = best[j]
    if outcomes[j] is not None:
        cand.load_state_dict(outcomes[j].state_dict)
    return recal, prop, cand, tops[j]


def _finish(run: _Run, current: nn.Module, start_top1: float, stopped: str,
            history: list[Iteration]) -> NetAdaptResult:  # fmt: skip
    """The long fine-tune of the result, its test top-1 and resource."""
    cfg, full = run.cfg, run.full
    if cfg.long_epochs > 0:
        per_epoch = max(1, len(full.train) // cfg.train.batch_size)
        steps = max(1, round(cfg.long_epochs * per_epoch))
        run.say(f"long fine-tune of the result ({steps} steps)", 0, 1)
        finetune(current, full, steps=steps, config=cfg.train)
    top1 = evaluate(current, full, channels_last=False).top1
    r_end = run.meter.of_model(current)
    arch = current.arch if isinstance(current, EdgeNet) else None
    return NetAdaptResult(current.eval(), arch, run.budget, run.target, run.start_r, r_end, start_top1, top1,
                          r_end <= run.target, stopped, history)  # fmt: skip
