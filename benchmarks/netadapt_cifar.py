"""NetAdapt against Torch-Pruning and uniform width on CIFAR-10, measured on the deployment target, over seeds.

From one ``resnet20_cifar`` baseline trained here, at each latency budget
(``--budgets``, default 50% and 75% of the baseline's latency) and each seed
(``--seeds``; by default 2 seeds at 50%, 1 at 75%), three networks:

(a) **NetAdapt** through the same compression run as ``edgecnn compress``
    (:func:`edgecnn.compress.job.run_measured`: NetAdapt on a per-block latency
    table of the target, the result timed back to back against the baseline on
    the target, continued toward a refitted bound while it misses), then a
    long fine-tune of ``L`` steps;
(b) **Torch-Pruning** ``MagnitudePruner`` (L1, one uniform ratio) on the
    channels ours can prune too (the basic blocks' inner widths: the CIFAR
    ResNets' zero-padding shortcuts tie the stage widths), its ratio bisected
    against the **measured** ratio to the baseline on the target (back to
    back, :func:`edgecnn.latency.compare.compare_latency`), BN recalibrated,
    then fine-tuned for ``S + L`` steps (``S``: the short-term steps NetAdapt
    spent inside its search, so both get the same fine-tune budget);
(b') **Torch-Pruning aligned** (``tp8``): the same with Torch-Pruning's own
    ``round_to`` set to the target's channel multiple on this CPU
    (``Target.channel_multiple``: 8 on AVX2, 16 on AVX-512F for ONNX Runtime),
    so its kept widths stay on the NCHWc kernels (below) — the peer as a user
    who knows the target would run it. On that grid the latency jumps and is
    not monotone in the ratio, so every ratio 0, 0.05, …, 0.95 is timed and the
    least pruning within the budget is kept; when none is within it, the stage
    records the measurements and trains nothing;
(a') **NetAdapt aligned** (``na8``): the same run with NetAdapt's ``round_to``
    = the target's channel multiple on this CPU (as ``tp8`` for Torch-Pruning),
    so its kept widths stay on the NCHWc kernels; ``round_to=2`` leaves widths
    such as 28 and 36, where the table interpolates across the cliff between
    blocked and plain kernels (docs/compress.md);
(c) **uniform width**: the widest ``resnet20_cifar`` of the uniform family
    whose measured ratio meets the budget, trained from scratch for the
    baseline's steps plus ``S + L``. The family is ResNet-20 with ``c``/``2c``/``4c``
    channels for every ``c`` from 8 to 16 (width ``c``/16, channels rounded to
    1, the granularity the pruned networks have), each measured against the
    baseline, widest first. Not the MobileNet
    rule's rounding to 8: ResNet-20's channels then jump from 8/16/32 (width ≤
    0.556, 38% of the baseline's latency on ONNX Runtime) to 16/24/40 (75%).
    Not a bisection over the width either: on ONNX Runtime the latency is not
    monotone in it. Its ``NchwcTransformer`` moves a convolution to the blocked
    NCHWc kernels only when its channels suit MLAS's block (8 floats with AVX2,
    16 with AVX-512F: ``get_target("onnxruntime").channel_multiple()``; ORT 1.32
    takes input channels that are multiples of 4 and pads the rest), so 15/30/60
    channels measured 1.35× the baseline's 16/32/64, 12/24/48 0.79×, 11/22/44
    0.85–0.87×, 8/16/32 0.38× (this AVX2 machine). At a 50% budget the uniform
    network is 8/16/32.

Every network is timed on the target against the baseline back to back
(interleaved rounds, fastest runs on the CPU clock, median per-round ratio:
the measured share of the baseline), its top-1 on the full test set, MACs and
params. Per (budget, method) the mean and spread over seeds. NetAdapt's two
targets (``docs/compress.md``): ≥ +0.5 pp over Torch-Pruning at no more
measured latency, and its measured latency within 5% of the budget.

**Runs that survive the machine.** Every stage writes its result into
``<work>/stages.json`` and the results file as it finishes; trainings save
``last.pt`` after every epoch and NetAdapt its state after every iteration;
``--resume`` (the default when the work folder exists) continues a stage where
it stopped. The full run keeps its work folder in
``benchmarks/state/netadapt_cifar-full`` (checkpoints of ~1-2 MB, committed as
stages finish), so a run longer than one session completes in pieces.
**One process per free core**: start the same command again while one runs
and it takes the next stage no live process has claimed (NetAdapt at
another budget or seed; a Torch-Pruning or uniform stage once its NetAdapt
stage has finished); the first one builds the latency table while the others
wait for it. A process that finds every stage left held by the others waits
and takes the next one that frees (a uniform stage once its NetAdapt stage is
done, or the stage of a process that stopped), so no core idles while work is
left (``--no-wait``: exit instead); one of them measures the results. Training uses a GPU
when one is present (``--device``); latency is always measured on the CPU
target, 1 thread.

Scales:

* ``quick`` — 100 images per class, short schedules: proves the pipeline,
  says nothing about the methods;
* ``full`` — all 50 000 training images, the 10 000 test images; the baseline
  50 epochs (cosine, SGD-Nesterov 0.1, label smoothing 0.1: ResNet-20 reaches
  ~91-92% at convergence, He et al. 2016), NetAdapt step 4% with 2 × 50 short
  steps per iteration, ``L`` = 10 epochs;
* ``full100`` — the same from two 50-epoch cosine cycles of the baseline;
* ``full-w2`` — the same from ResNet-20 ×2 (32/64/128 channels, 1.07 M
  params, 4× the MACs): on the JPEG copy of CIFAR-10 here ResNet-20 levels off
  near 88–89% (88.31% after 100 epochs), short of the ≥ 90% baseline; the
  uniform family runs from 32/64/128 down to 8/16/32.

Results: ``benchmarks/results/netadapt_cifar-<scale>-<target>.json``. Earlier
results of this benchmark (``netadapt_cifar-drop*.json``,
``netadapt_cifar-quick*.json``) came from its previous version: 10 000 training
images, latency in eager PyTorch from a calibrated table; they are kept as
they were measured.

    PYTHONPATH=src python benchmarks/netadapt_cifar.py --scale full [--stop-after baseline]
    PYTHONPATH=src python benchmarks/netadapt_cifar.py --scale quick --work runs/netadapt_cifar_quick
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import json
import os
import platform
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from _work import OtherMachine, Work  # benchmarks/_work.py (this folder is on sys.path)

from edgecnn import zoo
from edgecnn.arch import as_spec
from edgecnn.atomic import atomic_write_text
from edgecnn.build import EdgeNet, build
from edgecnn.checkpoint import checkpoint_of, load_checkpoint, load_model, save_checkpoint
from edgecnn.compress.budget import parse_budget
from edgecnn.compress.summary import model_stats
from edgecnn.compress.job import Check, run_measured, table_meter
from edgecnn.compress.netadapt.loop import NetAdaptConfig
from edgecnn.data import BatchLoader, DataSet
from edgecnn.latency.compare import Comparison, compare_latency, fastest_runs
from edgecnn.latency.fingerprint import fingerprint
from edgecnn.latency.targets import get_target
from edgecnn.train.config import FINETUNE, TrainConfig
from edgecnn.train.evaluation import evaluate
from edgecnn.train.loop import fit
from edgecnn.train.recalibrate import recalibrate_bn_
from edgecnn.train.resume import _RESUMABLE, LAST
from edgecnn.train.task import DataRef, worker_data

CIFAR = "/work/shared/data/cifar10-jpeg.tar.xz"
RESULTS = Path(__file__).parent / "results"
STATE = Path(__file__).parent / "state"
BASE = "resnet20_cifar"
TABLE = "latency_table.json"  # NetAdapt's latency table in the work folder
GRID = (1 / 32, 0.25, 0.5, 1.0)  # table widths of every block, down to 2 channels (NetAdapt's round_to)
POLL_S = 10.0  # how often a waiting process looks whether a stage it waits for has finished


@dataclass(frozen=True)
class Scale:
    """How much data and how many steps each stage gets."""

    limit: int | None  # images per class and split (None: all)
    base_epochs: int  # baseline training (per cycle)
    short_steps: int  # NetAdapt's short-term fine-tune of each of its top-2 proposals per iteration
    long_epochs: float  # the long fine-tune of every pruned network
    batch_size: int
    compare_rounds: int  # interleaved rounds of every measured comparison
    base_cycles: int = 1  # cosine cycles of the baseline, each from lr 0.1 again (warm restarts, SGDR)
    base_width: float = 1.0  # the baseline's width multiplier on ResNet-20's 16/32/64 channels (rounded to 8)

    @property
    def base_arch(self) -> str:
        return zoo.arch_of(BASE, width=self.base_width)


SCALES = {
    "quick": Scale(limit=100, base_epochs=8, short_steps=5, long_epochs=2, batch_size=64, compare_rounds=3),
    "full": Scale(limit=None, base_epochs=50, short_steps=50, long_epochs=10, batch_size=128, compare_rounds=5),
    "full100": Scale(limit=None, base_epochs=50, short_steps=50, long_epochs=10, batch_size=128, compare_rounds=5,
                     base_cycles=2),
    # ResNet-20 x2 (32/64/128 channels, 1.07 M params, 4x the MACs): ResNet-20 levels off near 88-89% on the
    # JPEG copy here (full100: 88.31% after 100 epochs), short of the >= 90% baseline the issue asks for
    "full-w2": Scale(limit=None, base_epochs=50, short_steps=50, long_epochs=10, batch_size=128, compare_rounds=5,
                     base_width=2.0),
    # full-w2's 50 epochs reached 89.80%: a second cosine cycle from them (--baseline-from its baseline.pt)
    "full100-w2": Scale(limit=None, base_epochs=50, short_steps=50, long_epochs=10, batch_size=128, compare_rounds=5,
                        base_cycles=2, base_width=2.0),
}
DEFAULT_SEEDS = {50: (0, 1), 75: (0,)}  # the minimum: >= 2 seeds at 50%, 1 at 75%


def args_() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=sorted(SCALES), default="full")
    p.add_argument("--quick", action="store_true", help="the same as --scale quick")
    p.add_argument("--work", default=None, help="work folder (default: benchmarks/state/netadapt_cifar-<scale>)")
    p.add_argument("--fresh", action="store_true", help="refuse to continue an existing work folder")
    p.add_argument("--budgets", default="50,75", help="latency budgets in %% of the baseline, comma-separated")
    p.add_argument("--seeds", default=None, help="seeds for every budget (default: 0,1 at 50%%, 0 at 75%%)")
    p.add_argument("--target", default="onnxruntime", help="the deployment target latency is measured on")
    p.add_argument("--methods", default=",".join(METHODS),
                   help="stages to run, of na (NetAdapt), tp, tp8 (Torch-Pruning, aligned), uni (uniform width), "
                        "na8 (NetAdapt on the target's channel multiple)")
    p.add_argument("--device", default="auto", help="where training runs: auto (a GPU if present), cpu, cuda")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for training (latency: always 1)")
    p.add_argument("--compile", action="store_true", help="torch.compile the trainings (~1.3x faster CPU steps)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="the trainings' arithmetic: auto (fp32 on a CPU, bf16 autocast on a GPU), or bf16 autocast "
                        "on a CPU with native bf16 (AVX512-BF16 or AMX: 1.8x faster ResNet-20 x2 steps on a Zen 4 "
                        "EPYC); recorded per epoch, evaluated in fp32, and a stage may resume in another")  # fmt: skip
    p.add_argument("--tolerance", type=float, default=0.0,
                   help="share above the budget NetAdapt's measured result may be and still count as met (default 0: "
                        "at or under the budget, as Torch-Pruning's and uniform width's choices are; "
                        "na-50-s0 ran with 0.03)")  # fmt: skip
    p.add_argument("--baseline-from", default=None,
                   help="a baseline checkpoint trained with this scale's first-cycle recipe (e.g. "
                        "benchmarks/state/netadapt_cifar-full/baseline.pt for full100): taken as the first cycle "
                        "instead of training it again (its recipe is compared, its test top-1 measured)")  # fmt: skip
    p.add_argument("--measure-here", action="store_true",
                   help="time every finished network against the baseline on this machine, whatever machine the "
                        "run is measured on, into its own results file (...-on-<isa>.json); the run is left as is")  # fmt: skip
    p.add_argument("--no-wait", action="store_true",
                   help="exit after one pass when the stages left are held by other processes (default: wait for "
                        "them and take the next stage that frees, so every process keeps its core busy)")
    p.add_argument("--remeasure", action="store_true",
                   help="time the finished networks again when they were measured already (the closing measurement "
                        "is otherwise made once, by the first process to find every stage finished)")
    p.add_argument("--stop-after", default=None, help="stop after this stage (e.g. baseline, na-50-s0)")
    p.add_argument("--tag", default="", help="appended to the results file name")
    return p.parse_args()


# ---------------------------------------------------------------- the work folder


def resumable_fit(model: nn.Module, data: DataSet, cfg: TrainConfig, run_dir: Path) -> float:
    """``fit`` with ``last.pt`` in ``run_dir`` after every epoch, continued from it when it is there; the test top-1,
    always in fp32 (a run trained with bf16 autocast is evaluated again without it, as it will be deployed)."""
    again = (run_dir / LAST).is_file()
    result = fit(model, data, cfg, out_dir=run_dir, resume=again, overwrite=not again)
    if result.history and result.history[-1].precision in (None, "fp32"):
        return result.final.top1
    return evaluate(model, data, precision="fp32").top1


def epochs_by_precision(*run_dirs: Path) -> dict[str, int]:
    """How many epochs of the runs in ``run_dirs`` ran in each arithmetic (``--precision``; a run may change it
    when it resumes), from their ``last.pt``; epochs from before the history recorded it count as ``unrecorded``."""
    paths = [d / LAST for d in run_dirs if (d / LAST).is_file()]
    return dict(Counter(h.get("precision") or "unrecorded" for p in paths for h in load_checkpoint(p).history))


# ---------------------------------------------------------------- Torch-Pruning (the peer)


def inner_arch(model: nn.Module, arch: str) -> str:
    """The arch of a resnet whose basic blocks' inner widths are those of ``model``'s ``body.0.conv``."""
    spec = as_spec(arch).expand()
    blocks = [b.with_(m=model.get_submodule(f"blocks.{i}.body.0.conv").out_channels) if b.kind == "basic" else b
              for i, b in enumerate(spec.blocks)]  # fmt: skip
    return dataclasses.replace(spec, blocks=tuple(blocks)).format()


def tp_prune(model: EdgeNet, ratio: float, example: torch.Tensor, round_to: int | None = None) -> EdgeNet:
    """Torch-Pruning's L1 magnitude pruner at a uniform ``ratio`` on the basic blocks' inner widths (kept widths
    multiples of ``round_to``, Torch-Pruning's own option, when given)."""
    import torch_pruning as tp  # bench only

    m = copy.deepcopy(model).eval()
    ignored = [mod for name, mod in m.named_modules()
               if isinstance(mod, (nn.Conv2d, nn.Linear)) and not name.endswith("body.0.conv")]  # fmt: skip
    pruner = tp.pruner.MagnitudePruner(m, example, importance=tp.importance.MagnitudeImportance(p=1),
                                       pruning_ratio=ratio, ignored_layers=ignored, round_to=round_to)  # fmt: skip
    pruner.step()
    out = build(inner_arch(m, model.arch), num_classes=model.num_classes, in_chans=model.in_chans)
    out.load_state_dict(m.state_dict())
    return out


def bisect_measured(make: Callable[[float], nn.Module], base: nn.Module, share: float, lo: float, hi: float, *,
                    increasing: bool, how: Check, shape: tuple[int, ...], steps: int = 7) -> tuple[float, float]:  # fmt: skip
    """The knob in [lo, hi] whose network measures closest under ``share`` of ``base`` (back to back on the
    target); ``increasing``: a larger knob is a slower network. Returns (knob, measured ratio)."""
    best: tuple[float, float] | None = None
    for _ in range(steps):
        mid = (lo + hi) / 2
        ratio = compare_latency(base, make(mid), shape, backend=how.backend, threads=1, rounds=how.rounds).ratio
        print(f"    knob {mid:.4f}: measured {ratio:.3f} of the baseline (budget {share:.2f})", flush=True)
        if ratio <= share:
            best = (mid, ratio)
            lo, hi = (mid, hi) if increasing else (lo, mid)
        else:
            lo, hi = (lo, mid) if increasing else (mid, hi)
    if best is None:  # nothing met it: the closest end of the range
        edge = lo if increasing else hi
        best = (edge, compare_latency(base, make(edge), shape, backend=how.backend, threads=1,
                                      rounds=how.rounds).ratio)  # fmt: skip
    return best


TP_RATIOS = tuple(i / 20 for i in range(20))  # the aligned Torch-Pruning's grid of ratios, 0 to 0.95


def first_within(make: Callable[[float], nn.Module], knobs: Iterable[float], base: nn.Module, share: float, r: Run,
                 label: Callable[[float], str]) -> tuple[float | None, list[tuple[float, str, float]]]:  # fmt: skip
    """The first of ``knobs`` whose network measures within ``share`` of ``base`` (back to back on the target; each
    distinct network timed once), or None when none does; and every (knob, arch, measured share) tried, in order.
    For knobs whose latency jumps and is not monotone (a bisection would assume it is)."""
    tried: list[tuple[float, str, float]] = []
    seen: dict[str, float] = {}
    for x in knobs:
        net = make(x)
        arch = getattr(net, "arch", str(x))
        if arch not in seen:
            seen[arch] = compare_latency(base, net.eval(), r.shape, backend=r.how.backend, threads=1,
                                         rounds=r.how.rounds).ratio  # fmt: skip
            print(f"    {label(x)}: measured {seen[arch]:.3f} of the baseline (budget {share:.2f})", flush=True)
        tried.append((x, arch, seen[arch]))
        if seen[arch] <= share:
            return x, tried
    return None, tried


# ---------------------------------------------------------------- one measuring machine, choices made once


def check_machine(r: Run, what: str) -> None:
    """Raise :class:`OtherMachine` unless this machine is the run's measuring machine (recorded here if none is;
    for a run begun before it was recorded, its latency table's); the trainings of choices already made continue
    on any machine."""
    r.work.check_machine(fingerprint(backend=r.how.backend, threads=1).to_dict(), what, r.work.path / TABLE)


CHOICE_KEYS = ("feasible", "ratio", "round_to", "width", "measured_at_choice", "measured_grid", "measured_family")


def choice(r: Run, key: str, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The network a peer trains at a budget (``key``: method-budget), chosen once by timing on the measuring
    machine and recorded (``choices`` in ``stages.json``) before any training: every seed trains the same choice
    (Torch-Pruning's L1 pruning and the uniform family do not depend on the seed), a resumed stage continues the
    network it started, and the choice is never re-measured on another machine. A run begun before choices were
    recorded takes them from a finished stage of that method and budget."""
    with r.work.lock(f"choice-{key}"):
        got = r.work.refresh().get("choices", {}).get(key)
        if got is None:
            done = sorted(k for k, v in r.work.stages.items() if k.startswith(f"{key}-s") and isinstance(v, dict))
            if done:
                v = r.work.stages[done[0]]
                got = {**{c: v[c] for c in CHOICE_KEYS if c in v}, "from": done[0]}
            else:
                check_machine(r, f"choosing {key}")
                got = make()
            r.work.add("choices", key, got)
    return dict(got)


# ---------------------------------------------------------------- stages


@dataclass
class Run:
    """What every stage reads: the data, the scale, the recipes, the target and the work folder."""

    a: argparse.Namespace
    scale: Scale
    work: Work
    ref: DataRef
    data: DataSet
    how: Check

    @property
    def per_epoch(self) -> int:
        return max(1, len(self.data.train) // self.scale.batch_size)

    @property
    def long_steps(self) -> int:
        return max(1, round(self.scale.long_epochs * self.per_epoch))

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (1, self.data.in_chans, self.data.image_size, self.data.image_size)

    def recipe(self, seed: int, **changes: Any) -> TrainConfig:
        """The from-scratch recipe (the baseline's), with this seed."""
        return TrainConfig(epochs=self.scale.base_epochs, batch_size=self.scale.batch_size, lr=0.1,
                           threads=self.a.threads, device=self.a.device, progress=False, log_epochs=True,
                           eval_every=5, seed=seed, compile=self.a.compile, precision=self.a.precision,
                           **changes)  # fmt: skip

    def finetune_recipe(self, seed: int) -> TrainConfig:
        return replace(FINETUNE, batch_size=self.scale.batch_size, lr=0.01, threads=self.a.threads,
                       device=self.a.device, seed=seed,
                       precision=self.a.precision)  # fmt: skip (no compile: NetAdapt's 50-step fine-tunes)

    def stop(self, name: str) -> None:
        if self.a.stop_after == name:
            write_results(self)
            raise SystemExit(f"stopped after stage {name} (--stop-after)")


def taken(r: Run, name: str, needs: str | None = None) -> bool:
    """Whether this process should skip stage ``name``: finished, waiting for ``needs``, or claimed by another
    live process sharing the work folder (start the same command once per free core: each takes the next stage
    no one holds). Else the stage is claimed for this process."""
    if name in r.work.refresh():
        return True
    if needs is not None and needs not in r.work.stages:
        print(f"  {name}: waits for {needs} (another process runs it)", flush=True)
        return True
    owner = r.work.claim(name)
    if owner is not None:
        print(f"  {name}: run by process {owner}; skipped here", flush=True)
    return owner is not None


_NOT_RECIPE = _RESUMABLE - {"epochs", "steps"}  # how a run ran (device, threads, precision, ...), not what


def adopt_cycle(r: Run, cfg: TrainConfig, src: Path) -> tuple[EdgeNet, float]:
    """The model of ``src`` as the baseline's first cycle, after checking it was trained with ``cfg``'s recipe
    (every option but where and how verbosely it ran); its test top-1 measured here."""
    ck = load_checkpoint(src)
    mine = {k: v for k, v in asdict(cfg).items() if k not in _NOT_RECIPE}
    diff = [f"{k}: {ck.config.get(k)!r} there, {v!r} here" for k, v in mine.items() if ck.config.get(k) != v]
    if ck.arch != r.scale.base_arch or diff:
        raise SystemExit(f"--baseline-from {src}: not this scale's first cycle ({'; '.join(diff) or ck.arch}); "
                         "drop --baseline-from to train it")  # fmt: skip
    model, _ = load_model(src)
    assert isinstance(model, EdgeNet)
    return model, evaluate(model, r.data).top1


def baseline_stage(r: Run) -> EdgeNet:
    """The baseline: ``base_cycles`` cosine cycles of the from-scratch recipe, each from the last one's weights with
    lr 0.1 again and its own seed (warm restarts: Loshchilov & Hutter 2017, SGDR), every cycle recorded
    (``baseline-c<k>``) and its checkpoint kept as it finishes."""
    path = r.work.ckpt("baseline")
    if not taken(r, "baseline"):
        t0 = time.perf_counter()
        torch.manual_seed(0)
        base = build(r.scale.base_arch, num_classes=10)
        cycles = r.scale.base_cycles
        for k in range(cycles):
            cfg, stage = r.recipe(k), f"baseline-c{k + 1}"
            if cycles > 1 and stage in r.work.stages:  # this cycle finished earlier
                base, _ = load_model(r.work.ckpt(stage))  # type: ignore[assignment]
                top1 = r.work.stages[stage]["top1"]
                continue
            if k == 0 and r.a.baseline_from:
                base, top1 = adopt_cycle(r, cfg, Path(r.a.baseline_from))
                record = {"from": str(r.a.baseline_from)}
            else:
                top1, record = resumable_fit(base, r.data, cfg, base_run_dir(r, k)), {}
            if cycles > 1:
                save_checkpoint(checkpoint_of(base.cpu(), data={"name": CIFAR, "image_size": 32}, config=asdict(cfg)),
                                r.work.ckpt(stage))  # fmt: skip
                r.work.done(stage, {**record, "epochs": cfg.epochs, "seed": k, "top1": top1,
                                    "seconds": time.perf_counter() - t0})  # fmt: skip
            print(f"baseline cycle {k + 1}/{cycles}: test top-1 {top1:.4f}", flush=True)
        save_checkpoint(checkpoint_of(base.cpu(), data={"name": CIFAR, "image_size": 32}, config=asdict(cfg)), path)
        epochs = cycles * r.scale.base_epochs
        r.work.done("baseline", {"epochs": epochs, "cycles": cycles, "steps": epochs * r.per_epoch,
                                 "top1": top1,
                                 "seconds": time.perf_counter() - t0, "train_device": _train_device(r),
                                 "precision": epochs_by_precision(*map(functools.partial(base_run_dir, r),
                                                                       range(cycles)))})  # fmt: skip
    while "baseline" not in r.work.stages:  # another process trains it: wait for it, as for any stage it holds
        owner = r.work.live_claims().get("baseline")
        if owner is None:  # that process stopped: train it here (its last.pt resumes)
            return baseline_stage(r)
        if r.a.no_wait:
            raise SystemExit(f"process {owner} is training the baseline; start this one again when it has finished")
        print(f"waiting: process {owner} trains the baseline", flush=True)
        r.work.wait_for_change(set(r.work.stages), POLL_S)
    r.stop("baseline")
    model, _ = load_model(path)
    assert isinstance(model, EdgeNet)
    return model


def base_run_dir(r: Run, cycle: int) -> Path:
    """The run folder of the baseline's cycle ``cycle`` (0-based)."""
    return r.work.path / ("baseline_run" if cycle == 0 else f"baseline_run{cycle + 1}")


def netadapt_round_to(backend: str, aligned: bool) -> int:
    """NetAdapt's channel grid: 2 (the table's finest), or for the aligned method (``na8``) the target's channel
    multiple on this CPU (``Target.channel_multiple``: 8 on AVX2, 16 on AVX-512F for ONNX Runtime), so every kept
    width runs on the NCHWc kernels instead of across the cliff the table interpolates over (docs/compress.md)."""
    multiple = get_target(backend).channel_multiple() if aligned else None
    return multiple if multiple and multiple > 2 else 2


def netadapt_stage(r: Run, base: EdgeNet, pct: int, seed: int, *, aligned: bool = False) -> None:
    """NetAdapt at the budget through the compression run of ``edgecnn compress``; ``aligned`` (method ``na8``): on
    the target's channel multiple (:func:`netadapt_round_to`), the same table, search and fine-tune budget."""
    method = "na8" if aligned else "na"
    name = f"{method}-{pct}-s{seed}"
    if taken(r, name):
        return
    check_machine(r, name)  # its table and its measured verdicts
    t0 = time.perf_counter()
    budget = parse_budget(f"{pct}%latency")
    with r.work.lock("latency_table"):  # one process builds the grid; the others wait for it, then open it
        meter = table_meter(base.arch, r.data, r.how, r.work.path / TABLE, fractions=GRID,
                            divisor=2)  # fmt: skip
    round_to = netadapt_round_to(r.how.backend, aligned)
    cfg = NetAdaptConfig(initial_step=0.04, decay=0.98, short_steps=r.scale.short_steps, top_k=2, round_to=round_to,
                         recal_batches=10, drop_blocks=True, train=r.finetune_recipe(seed))  # fmt: skip
    run = run_measured(base, r.ref, r.data, budget, r.how, method="netadapt", meter=meter,
                       out=r.work.path / name, resume=True, netadapt_config=cfg,
                       on_iteration=lambda it: print(f"  {name} iter {it.iteration}: {it.resource:.4f} ms by the "
                                                     f"table, hold-out top-1 {it.top1:.3f}", flush=True))  # fmt: skip
    spent = cfg.top_k * cfg.short_steps * len(run.history)
    model = run.model
    top1 = resumable_fit(model, r.data, replace(r.finetune_recipe(seed), steps=r.long_steps, log_epochs=True,
                                                progress=False, compile=r.a.compile), r.work.path / f"{name}_long")  # fmt: skip
    save_checkpoint(checkpoint_of(model.cpu()), r.work.ckpt(name))
    r.work.done(name, {"arch": model.arch, "met": run.met, "tolerance": r.how.tolerance, "stopped": run.stopped,
                       "short_steps_spent": spent, "round_to": round_to,
                       "long_steps": r.long_steps, "iterations": len(run.history), "top1": top1,
                       "precision": epochs_by_precision(r.work.path / f"{name}_long"),
                       "seconds": time.perf_counter() - t0, "run": run.document()})  # fmt: skip
    r.stop(name)


def tp_choice(r: Run, base: EdgeNet, pct: int, aligned: bool) -> dict[str, Any]:
    """Torch-Pruning's ratio at ``pct`` % of the baseline's latency, timed on this machine: bisected for the plain
    pruner; for the aligned one (``round_to`` = this CPU's channel multiple) the first of ``TP_RATIOS`` within the
    budget, or ``feasible: False`` with the grid when none is."""
    example = torch.randn(r.shape)
    round_to = get_target(r.how.backend).channel_multiple() if aligned else None
    round_to = round_to if round_to and round_to > 1 else None
    if round_to is None:
        ratio, measured = bisect_measured(lambda x: tp_prune(base, x, example), base, pct / 100, 0.0, 0.97,
                                          increasing=False, how=r.how, shape=r.shape)  # fmt: skip
        return {"ratio": ratio, "round_to": None, "measured_at_choice": measured}
    # on the round_to grid the latency jumps and is not monotone in the ratio: every ratio of a grid
    ratio, tried = first_within(lambda x: tp_prune(base, x, example, round_to), TP_RATIOS, base, pct / 100, r,
                                lambda x: f"ratio {x:.2f}")  # fmt: skip
    grid = {f"{x:.2f}": {"arch": arch, "measured": m} for x, arch, m in tried}
    if ratio is None:  # no ratio meets the budget: nothing to train, the measurements are the result
        return {"feasible": False, "round_to": round_to, "measured_grid": grid}
    return {"ratio": ratio, "round_to": round_to, "measured_at_choice": tried[-1][2], "measured_grid": grid}


def torch_pruning_stage(r: Run, base: EdgeNet, pct: int, seed: int, *, aligned: bool = False) -> None:
    """Torch-Pruning at the budget; ``aligned`` (method ``tp8``): with ``round_to`` = the target's channel multiple
    on the measuring machine (``Target.channel_multiple``), so its kept widths run on ONNX Runtime's NCHWc kernels."""
    method = "tp8" if aligned else "tp"
    name = f"{method}-{pct}-s{seed}"
    if taken(r, name, needs=f"na-{pct}-s{seed}"):
        return
    t0 = time.perf_counter()
    chosen = choice(r, f"{method}-{pct}", lambda: tp_choice(r, base, pct, aligned))
    if not chosen.get("feasible", True):
        r.work.done(name, {**chosen, "seconds": time.perf_counter() - t0})
        r.stop(name)
        return
    net = tp_prune(base, chosen["ratio"], torch.randn(r.shape), chosen.get("round_to"))  # none: chosen before tp8
    loader = BatchLoader(r.data.train, batch_size=r.scale.batch_size, mean=r.data.mean, std=r.data.std, train=True)
    recalibrate_bn_(net, loader, num_batches=10)
    steps = r.work.stages[f"na-{pct}-s{seed}"]["short_steps_spent"] + r.long_steps
    top1 = resumable_fit(net, r.data, replace(r.finetune_recipe(seed), steps=steps, log_epochs=True, progress=False,
                                                   compile=r.a.compile),
                         r.work.path / f"{name}_run")  # fmt: skip
    save_checkpoint(checkpoint_of(net.cpu()), r.work.ckpt(name))
    r.work.done(name, {"arch": net.arch, **chosen, "steps": steps, "top1": top1,
                       "precision": epochs_by_precision(r.work.path / f"{name}_run"),
                       "seconds": time.perf_counter() - t0})  # fmt: skip
    r.stop(name)


METHODS = ("na", "tp", "tp8", "uni", "na8")  # stage name prefixes: NetAdapt, Torch-Pruning, aligned Torch-Pruning,
# uniform, aligned NetAdapt (last: a work folder begun before it runs its stages after the others)
UNIFORM_DIVISOR = 1  # the uniform networks' channel rounding: the pruned networks' granularity (module docstring)


def uniform_stems(scale: Scale) -> range:
    """The uniform family, widest first: c/2c/4c channels (width c/16) for every c from the baseline's stem to 8."""
    return range(round(16 * scale.base_width), 7, -1)


def uniform(width: float) -> EdgeNet:
    return zoo.create(BASE, num_classes=10, width=width, divisor=UNIFORM_DIVISOR)


def widest_uniform(r: Run, base: EdgeNet, share: float) -> tuple[float, float, dict[str, float]]:
    """The widest of the uniform family whose measured share of ``base`` (back to back on the target) is within
    ``share`` (the narrowest when none is): (width, its measured share, every measured share by width)."""
    width, tried = first_within(uniform, (c / 16 for c in uniform_stems(r.scale)), base, share, r,
                                lambda w: f"uniform {round(16 * w)}/{round(32 * w)}/{round(64 * w)}")  # fmt: skip
    return tried[-1][0] if width is None else width, tried[-1][2], {f"{x:g}": m for x, _, m in tried}


def uniform_stage(r: Run, base: EdgeNet, pct: int, seed: int) -> None:
    name = f"uni-{pct}-s{seed}"
    if taken(r, name, needs=f"na-{pct}-s{seed}"):
        return
    t0 = time.perf_counter()

    def widest() -> dict[str, Any]:
        width, measured, family = widest_uniform(r, base, pct / 100)
        return {"width": width, "measured_at_choice": measured, "measured_family": family}

    chosen = choice(r, f"uni-{pct}", widest)
    torch.manual_seed(seed)
    net = uniform(chosen["width"])
    steps = r.work.stages["baseline"]["steps"] + r.work.stages[f"na-{pct}-s{seed}"]["short_steps_spent"] + r.long_steps
    top1 = resumable_fit(net, r.data, r.recipe(seed, steps=steps), r.work.path / f"{name}_run")
    save_checkpoint(checkpoint_of(net.cpu()), r.work.ckpt(name))
    r.work.done(name, {"arch": net.arch, **chosen, "divisor": UNIFORM_DIVISOR, "steps": steps, "top1": top1,
                       "precision": epochs_by_precision(r.work.path / f"{name}_run"),
                       "seconds": time.perf_counter() - t0})  # fmt: skip
    r.stop(name)


BEFORE = "__baseline__"  # the baseline's name among the networks of one sitting


def sittings(names: Iterable[str]) -> dict[str, list[str]]:
    """The finished networks by budget and seed (``na-50-s0`` → ``50-s0``): each group is timed in one sitting."""
    out: dict[str, list[str]] = {}
    for name in names:
        out.setdefault(name.split("-", 1)[1], []).append(name)
    return out


def finished_networks(r: Run) -> list[str]:
    """The stages that trained a network (a stage with nothing within its budget trains none), sorted."""
    return sorted(k for k in method_stages(r.work.refresh()) if r.work.stages[k].get("feasible", True))


def measure_stage(r: Run, base: EdgeNet, *, anywhere: bool = False) -> dict[str, Any]:
    """Every finished network against the baseline on the target; top-1, MACs, params. On the run's measuring
    machine unless ``anywhere`` (``--measure-here``).

    The networks of one budget and seed are timed in **one sitting**, interleaved with the baseline (every round
    times each of them once, the order reversed each round): each one's share of the baseline is the median of its
    per-round ratios to it, and NetAdapt's latency against Torch-Pruning's (``over_tp``, ``over_tp8``) is read from
    the same rounds — a direct comparison, not two ratios taken minutes apart (the ``full`` run's 50.9% against
    49.3% were two separate sittings). The baseline's own row times its checkpoint against the network in memory:
    the noise of a ratio that should be 1."""
    if not anywhere:
        check_machine(r, "the closing measurement")
    finished = finished_networks(r)

    def row(net: nn.Module, cmp: Comparison) -> dict[str, Any]:
        s = model_stats(net, r.data, measure_latency=False)
        return {**asdict(s), "latency_ms": cmp.after, "ratio": cmp.ratio, "ratio_band": list(cmp.band),
                "baseline_ms": cmp.before}  # fmt: skip

    net, _ = load_model(r.work.ckpt("baseline"))
    rows = {"baseline": row(net, compare_latency(base, net, r.shape, backend=r.how.backend, threads=1,
                                                 rounds=r.how.rounds))}  # fmt: skip
    for key, names in sittings(finished).items():
        nets = {name: load_model(r.work.ckpt(name))[0] for name in names}
        clock, runs = fastest_runs({BEFORE: base, **nets}, r.shape, backend=r.how.backend, threads=1,
                                   rounds=r.how.rounds)  # fmt: skip
        pair = functools.partial(Comparison.of, runs, target=r.how.backend, threads=1, device="cpu", clock=clock)
        for name in names:
            rows[name] = row(nets[name], pair(BEFORE, name))
            print(f"  {name:12} top-1 {rows[name]['top1']:.4f}  {rows[name]['ratio']:.3f} of the baseline on "
                  f"{r.how.backend}", flush=True)  # fmt: skip
        for na, peer in ((na, peer) for na in ("na", "na8") for peer in ("tp", "tp8")):
            if f"{na}-{key}" in nets and f"{peer}-{key}" in nets:
                cmp = pair(f"{peer}-{key}", f"{na}-{key}")
                rows[f"{na}-{key}"][f"over_{peer}"] = {"ratio": cmp.ratio, "band": list(cmp.band)}
                print(f"  {na}-{key} / {peer}-{key}: {cmp.ratio:.3f} (rounds {cmp.band[0]:.3f}-{cmp.band[1]:.3f})",
                      flush=True)  # fmt: skip
    return rows


NOT_SLOWER_PP = 0.01  # "at no more measured latency": within 1 point of the baseline's latency


def summary(rows: dict[str, Any], budgets: list[int]) -> dict[str, Any]:
    """Per budget and method: mean and spread over seeds of top-1 and the measured ratio; NetAdapt's targets.

    NetAdapt is not slower than a peer when its latency is within :data:`NOT_SLOWER_PP` of the baseline's above
    the peer's: read from the direct per-seed comparisons of one sitting (``over_tp``: NetAdapt's median per-round
    ratio to the peer's network, averaged over seeds) where every seed has one, else from the two shares."""
    out: dict[str, Any] = {}
    for pct in budgets:
        per: dict[str, Any] = {}
        got_by: dict[str, list[dict[str, Any]]] = {}
        for method in METHODS:
            got = got_by[method] = [v for k, v in rows.items() if k.startswith(f"{method}-{pct}-")]
            if not got:
                continue
            t, q = [g["top1"] for g in got], [g["ratio"] for g in got]
            per[method] = {"seeds": len(got), "top1_mean": statistics.fmean(t), "top1_spread": max(t) - min(t),
                           "ratio_mean": statistics.fmean(q), "ratio_max": max(q)}  # fmt: skip
        for na, key in (("na", "netadapt"), ("na8", "netadapt_aligned")):
            if na not in per:
                continue
            share = pct / 100
            per[f"{key}_within_5pct_of_budget"] = abs(per[na]["ratio_mean"] / share - 1) <= 0.05
            for peer in ("tp", "tp8"):
                if peer not in per:
                    continue
                per[f"{key}_minus_{peer}_pp"] = 100 * (per[na]["top1_mean"] - per[peer]["top1_mean"])
                direct = [g[f"over_{peer}"]["ratio"] for g in got_by[na] if f"over_{peer}" in g]
                if direct and len(direct) == len(got_by[na]):
                    per[f"{key}_over_{peer}_ratio"] = statistics.fmean(direct)
                    not_slower = per[f"{key}_over_{peer}_ratio"] - 1 <= NOT_SLOWER_PP / per[peer]["ratio_mean"]
                else:
                    not_slower = per[na]["ratio_mean"] <= per[peer]["ratio_mean"] + NOT_SLOWER_PP
                per[f"{key}_not_slower_than_{peer}"] = not_slower
        out[str(pct)] = per
    return out


def _train_device(r: Run) -> str:
    return torch.cuda.get_device_name() if r.a.device != "cpu" and torch.cuda.is_available() else "cpu"


def results_path(r: Run) -> Path:
    return RESULTS / f"netadapt_cifar-{r.a.scale}-{r.how.backend}{'-' + r.a.tag if r.a.tag else ''}.json"


def write_results(r: Run, rows: dict[str, Any] | None = None, *, elsewhere: bool = False) -> Path:
    """The results document: what is finished so far (stages, and the measured table once it exists).
    ``elsewhere``: ``rows`` were timed on this machine, not the run's measuring machine (``--measure-here``): its
    own file, named after this machine's ISA, beside the run's."""
    budgets = [int(b) for b in r.a.budgets.split(",")]
    cpu_s = sum(v.get("seconds", 0.0) for v in r.work.stages.values() if isinstance(v, dict))
    here = fingerprint(backend=r.how.backend, threads=1).to_dict()
    chosen_on = r.work.recorded_machine(r.work.path / TABLE)
    doc = {"kind": "compress-benchmark", "scale": r.a.scale, "scale_settings": asdict(r.scale),
           "target": r.how.backend, "latency_threads": 1, "budgets": budgets, "data": r.data.summary(),
           "stages": r.work.stages, "rows": rows, "summary": summary(rows, budgets) if rows else None,
           "stage_hours": cpu_s / 3600, "load_average": os.getloadavg(),
           "machine": here if elsewhere else chosen_on,  # where the latencies were measured
           "chosen_on": chosen_on,  # where NetAdapt's table and the peers' choices were timed
           "written_on": {**here, "cores": os.cpu_count(),
                          "platform": platform.platform(), "torch": torch.__version__},
           "note": ("QUICK smoke run: the accuracies prove the pipeline runs, not which method is better"
                    if r.a.scale == "quick" else
                    f"the run's networks timed on this machine ({here['cpu']}, {here['isa']}), not on the run's "
                    "measuring machine (chosen_on), where NetAdapt's table and the peers' choices were timed"
                    if elsewhere else "")}  # fmt: skip
    out = results_path(r)
    out = out.with_name(f"{out.stem}-on-{here['isa']}.json") if elsewhere else out
    atomic_write_text(out, json.dumps(doc, indent=1, default=str) + "\n")
    return out


STAGES: dict[str, Callable[[Run, EdgeNet, int, int], None]] = {
    "na": netadapt_stage, "tp": torch_pruning_stage, "tp8": functools.partial(torch_pruning_stage, aligned=True),
    "uni": uniform_stage, "na8": functools.partial(netadapt_stage, aligned=True),
}  # fmt: skip
assert tuple(STAGES) == METHODS


def selected_methods(text: str) -> tuple[str, ...]:
    """``--methods``: comma-separated stage prefixes of :data:`METHODS` (SystemExit naming the valid ones)."""
    got = tuple(m.strip() for m in text.split(",") if m.strip())
    bad = [m for m in got if m not in METHODS]
    if bad or not got:
        raise SystemExit(f"--methods {text!r}: unknown {', '.join(bad) or 'empty'}; valid: {', '.join(METHODS)}")
    return got


def plan(a: argparse.Namespace) -> list[tuple[int, int]]:
    """(budget %, seed) pairs in the order they run: every budget's first seed before any second seed."""
    budgets = [int(b) for b in a.budgets.split(",")]
    seeds = {b: tuple(int(s) for s in a.seeds.split(",")) if a.seeds else DEFAULT_SEEDS.get(b, (0,)) for b in budgets}
    order = sorted({(i, b, s) for b in budgets for i, s in enumerate(seeds[b])})
    return [(b, s) for _, b, s in order]


def run_pass(r: Run, base: EdgeNet, methods: tuple[str, ...]) -> None:
    """One pass over the plan: every stage of ``methods`` that this process may run now, in plan order (stages
    finished, held by another live process, or waiting for one are skipped); the results file after each round."""
    for pct, seed in plan(r.a):
        print(f"budget {pct}%, seed {seed}", flush=True)
        before = method_stages(r.work.refresh())
        for method, stage in STAGES.items():
            if method not in methods:
                continue
            try:
                stage(r, base, pct, seed)
            except OtherMachine as exc:  # training-only stages go on; this one waits for its machine
                r.work.release(f"{method}-{pct}-s{seed}")
                print(f"  {method}-{pct}-s{seed} not run here: {exc}", flush=True)
        if method_stages(r.work.refresh()) != before:  # else the file stands (with its measured table, if any)
            write_results(r)


def method_stages(stages: dict[str, Any]) -> set[str]:
    """The names of the comparison's stages in ``stages`` (``na-50-s0``, ...; not baseline, choices, ...)."""
    return {k for k in stages if k.split("-")[0] in METHODS}


def missing_stages(r: Run, methods: tuple[str, ...]) -> list[str]:
    """The stages of the plan not finished yet, as on disk now."""
    done = r.work.refresh()
    return [f"{m}-{pct}-s{seed}" for pct, seed in plan(r.a) for m in METHODS
            if m in methods and f"{m}-{pct}-s{seed}" not in done]  # fmt: skip


def run_stages(r: Run, base: EdgeNet, methods: tuple[str, ...], *, wait: bool = True,
               poll_s: float | None = None) -> None:
    """Passes over the plan until every stage of ``methods`` is finished. When a pass could run none of the stages
    left and other live processes hold some, wait (``wait``) for one of them to finish and pass again, or exit
    (SystemExit naming the stages); exit too when nothing runs anywhere and none can run here."""
    while True:
        seen = set(r.work.refresh())
        run_pass(r, base, methods)
        missing = missing_stages(r, methods)
        if not missing:
            return
        if set(r.work.stages) != seen:  # (missing_stages has just read them)
            continue  # a stage finished meanwhile: a stage that waited for it may be free now
        held = r.work.live_claims()
        if not held:  # nothing runs anywhere, and this pass could run none of them
            raise SystemExit(f"stages {', '.join(missing)} are not finished and none can run here (see above)")
        if not wait:
            raise SystemExit(f"stages {', '.join(missing)} are not finished ({', '.join(sorted(held))} run in other "
                             "processes); the last process to finish measures the results")  # fmt: skip
        print(f"waiting: {', '.join(f'{k} (process {v})' for k, v in sorted(held.items()))} run in other processes; "
              "the next stage that frees is taken when one of them finishes", flush=True)  # fmt: skip
        r.work.wait_for_change(seen, poll_s or POLL_S)


def closing_measurement(r: Run, base: EdgeNet, *, again: bool = False) -> dict[str, Any] | None:
    """Once every stage is finished: the closing measurement (:func:`measure_stage`) into the results file, made
    by one process (the first to claim it; a sibling exits) and once (recorded as ``measured`` with the networks it
    timed: None when those were measured already, unless ``again``)."""
    owner = r.work.claim("measure")
    if owner is not None:
        raise SystemExit(f"every stage is finished; process {owner} measures the results")
    try:
        networks = finished_networks(r)
        if not again and r.work.stages.get("measured", {}).get("networks") == networks:
            print(f"every stage is finished and measured: {results_path(r)} (--remeasure times them again)")
            return None
        rows = measure_stage(r, base)
        print(f"wrote {write_results(r, rows)}")
        r.work.done("measured", {"networks": networks, "at": time.strftime("%Y-%m-%d %H:%M:%S")})
        return rows
    except OtherMachine as exc:
        raise SystemExit(f"every stage is finished; {exc}") from None
    finally:
        r.work.release("measure")


def main() -> None:
    a = args_()
    if a.quick:
        a.scale = "quick"
    scale = SCALES[a.scale]
    work = Work(Path(a.work) if a.work else STATE / f"netadapt_cifar-{a.scale}", a.fresh)
    torch.set_num_threads(a.threads)
    ref = DataRef(CIFAR, limit=scale.limit)
    data = worker_data(ref)
    how = Check(backend=a.target, threads=1, rounds=scale.compare_rounds, measured_rounds=2, tolerance=a.tolerance)
    r = Run(a, scale, work, ref, data, how)
    methods = selected_methods(a.methods)
    print(f"{data.summary()}; work {work.path}; target {a.target}", flush=True)
    base = baseline_stage(r)
    if a.measure_here:
        rows = measure_stage(r, base, anywhere=True)
        print(f"wrote {write_results(r, rows, elsewhere=True)}")
        print(json.dumps(summary(rows, [int(b) for b in a.budgets.split(",")]), indent=1))
        return
    run_stages(r, base, methods, wait=not a.no_wait)
    rows = closing_measurement(r, base, again=a.remeasure)
    if rows is None:
        return
    print(json.dumps(summary(rows, [int(b) for b in a.budgets.split(",")]), indent=1))


if __name__ == "__main__":
    main()
