"""NetAdapt against Torch-Pruning's magnitude pruner and uniform width scaling, on CIFAR-10 at 70% latency.

From one ``resnet20_cifar`` baseline (trained here, checkpointed with its
recipe), three networks at the same latency budget (``--budget``, default 70%
of the baseline's latency; eager, batch 1, 1 thread):

(a) **ours**: :func:`edgecnn.compress.netadapt.netadapt` (one group per
    iteration, BN recalibration, short fine-tunes), then a long fine-tune;
(b) **Torch-Pruning** 1.6 ``MagnitudePruner`` (L1, uniform ratio), pruning the
    same channels ours can (the blocks' inner widths: the CIFAR ResNets'
    zero-padding shortcuts tie the stage widths), its ratio bisected to the
    same predicted latency, then fine-tuned;
(c) **uniform width**: ``resnet20_cifar`` at the width multiplier that meets the
    same latency, trained from scratch.

**Latency** is predicted by a :class:`~edgecnn.latency.model.LatencyModel` that
tracks the *measured* latency of this family: a table of every block's width
grid down to 2 channels (``GRID``; NetAdapt's widths in between are
interpolated), each block timed alone back to back with no drift reference
(``new_table(drift_reference=False)``), the statistic the **fastest run**
(``min``; ``SWEEPS`` sweeps of 500 runs), and the plain sum calibrated
(``latency ≈ s_fixed·Σ fixed + s_body·Σ body``) on the baseline and 6 (quick) /
10 pruned variants at random uneven widths measured end to end
(:func:`edgecnn.compress.variants.random_variants`, seed 1000). Why the fastest
run: on this shared 2-core VM at load 10–20, medians move 2–5× between two
measurements of one network; the fastest of 500 runs stays within a few
percent (``docs/latency.md``, "Pruned variants").

**Why 70%, not 50%**: the zero-padding shortcuts leave only the inner widths
prunable, and with every inner width at 2 channels resnet20 still runs at 55%
of its measured latency (per-operator overhead of eager PyTorch at batch 1; a
0.5× uniform width runs at 56%). 50% needs whole blocks removed; near the 55%
floor NetAdapt's step is halved to 1/16 and it crawls (docs/compress.md).
``--drop-blocks`` lets NetAdapt also remove identity-residual blocks
(:mod:`edgecnn.compress.drop_block`), the way to 50%; its results file gets a
``-drop`` suffix. Torch-Pruning's magnitude pruner has no such move: at a
budget under its floor its row records the closest it gets and misses.

Fine-tuning budget: (a) spends ``S`` short-term steps inside the search plus
``L`` long-term steps; (b) gets ``S + L`` fine-tune steps; (c) trains for the
baseline's ``B`` steps plus ``S + L``. All four networks are then measured side
by side in one process (``SWEEPS`` round-robin rounds, fastest run; median
kept too), with test top-1, MACs and params, the budget converted to measured
ms (its share of the measured baseline) and whether each network meets it.
Every stage is saved to the work folder as it finishes; ``--resume`` skips
finished stages, NetAdapt resumes after its last iteration and the three
trainings (baseline, Torch-Pruning fine-tune, uniform) from their last epoch.

Measured (docs/compress.md). Full run, ``--drop-blocks --budget 50%latency``
(``benchmarks/results/netadapt_cifar-drop.json``, another benchmark on the
second core): baseline 77.8% at 3.24 ms; NetAdapt 73.7% at 1.18 ms (36%, meets),
Torch-Pruning 61.6% at 2.31 ms (71%, its floor: misses), uniform width from
scratch 66.1% at 1.33 ms (41%). At 90% (``--tag 90``, Torch-Pruning's reach):
NetAdapt 77.25%, Torch-Pruning 77.22%, uniform 77.45% at 1.89-1.99 ms (baseline
2.23 ms). Quick runs: at a 70% budget without block
dropping NetAdapt lands at 76% of the measured baseline, Torch-Pruning at
72-73%, uniform width at 59-60%.

``--quick`` (100 images per class, short schedules) proves the pipeline; its
accuracies say nothing about the methods. Full run (1000 images per class:
10 000 training images, the full 10 000-image test set; baseline 40 epochs,
NetAdapt step 4% with 2 × 50 short steps per iteration, 10 epochs long-term;
see docs/compress.md for the time estimate):

    PYTHONPATH=src python benchmarks/netadapt_cifar.py --work runs/netadapt_cifar --budget 70%latency [--resume]
    PYTHONPATH=src python benchmarks/netadapt_cifar.py --quick [--resume] [--work runs/netadapt_cifar_quick]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import statistics
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch import nn

from edgecnn import zoo
from edgecnn.arch import as_spec
from edgecnn.atomic import atomic_write_text
from edgecnn.build import EdgeNet, build
from edgecnn.checkpoint import checkpoint_of, load_model, save_checkpoint
from edgecnn.compress.budget import parse_budget
from edgecnn.compress.document import model_stats
from edgecnn.compress.netadapt import NetAdaptConfig, ResourceMeter, netadapt
from edgecnn.compress.quantize import compare_int8, quantize_int8
from edgecnn.train.recalibrate import recalibrate_bn_
from edgecnn.data import BatchLoader, DataSet
from edgecnn.compress.variants import random_variants
from edgecnn.latency.measure import TimingConfig, measure
from edgecnn.latency.model import LatencyModel
from edgecnn.latency.table import LatencyTable, new_table
from edgecnn.latency.validate import calibrate
from edgecnn.train.config import FINETUNE, TrainConfig
from edgecnn.train.loop import finetune, fit
from edgecnn.train.resume import LAST
from edgecnn.train.task import DataRef, worker_data

CIFAR = "/work/shared/data/cifar10-jpeg.tar.xz"
RESULTS = Path(__file__).parent / "results"
BASE = "resnet20_cifar"
STAT = "min"  # latency = the fastest undisturbed run (steady under load; docs/latency.md)
GRID = (1 / 32, 0.25, 0.5, 1.0)  # width grid of every block, down to 2 channels (NetAdapt's round_to) for widths <= 64
SWEEPS = 3  # the grid is measured 3 times, networks 3 times round-robin: the fastest run of all counts


def args_() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="100 images per class, short schedules (a smoke run)")
    p.add_argument("--resume", action="store_true", help="skip the stages the work folder holds")
    p.add_argument("--work", default="runs/netadapt_cifar", help="work folder (checkpoints, tables, state)")
    p.add_argument("--budget", default="70%latency", help="inner-width pruning floors at ~55%% (see the doc)")
    p.add_argument("--limit", type=int, default=None, help="images per class and split (quick: 100)")
    p.add_argument("--base-steps", type=int, default=None, help="baseline training steps (full: 30 epochs)")
    p.add_argument("--short-steps", type=int, default=None)
    p.add_argument("--long-steps", type=int, default=None)
    p.add_argument("--tp-measured", action="store_true",
                   help="bisect Torch-Pruning's ratio against measured latency (fastest runs), not the predictor")
    p.add_argument("--tag", default="", help="appended to the results file name (e.g. the budget of a second run)")
    p.add_argument("--drop-blocks", action="store_true",
                   help="NetAdapt may also drop identity-residual blocks (the way below the ~55%% channel floor)")
    return p.parse_args()


def inner_arch(model: nn.Module, arch: str) -> str:
    """The arch of a resnet whose basic blocks' inner widths are those of ``model``'s ``body.0.conv``."""
    spec = as_spec(arch).expand()
    blocks = [b.with_(m=model.get_submodule(f"blocks.{i}.body.0.conv").out_channels) if b.kind == "basic" else b
              for i, b in enumerate(spec.blocks)]  # fmt: skip
    return dataclasses.replace(spec, blocks=tuple(blocks)).format()


def tp_prune(model: EdgeNet, ratio: float, example: torch.Tensor) -> EdgeNet:
    """Torch-Pruning's L1 magnitude pruner at a uniform ``ratio`` on the basic blocks' inner widths."""
    import torch_pruning as tp  # bench only

    m = copy.deepcopy(model).eval()
    ignored = [mod for name, mod in m.named_modules()
               if isinstance(mod, (nn.Conv2d, nn.Linear)) and not (name.endswith("body.0.conv"))]  # fmt: skip
    pruner = tp.pruner.MagnitudePruner(m, example, importance=tp.importance.MagnitudeImportance(p=1),
                                       pruning_ratio=ratio, ignored_layers=ignored)  # fmt: skip
    pruner.step()
    out = build(inner_arch(m, model.arch), num_classes=model.num_classes, in_chans=model.in_chans)
    out.load_state_dict(m.state_dict())
    return out


def resumable_fit(model: nn.Module, data: DataSet, cfg: TrainConfig, run_dir: Path, resume: bool) -> None:
    """``fit`` with ``last.pt`` in ``run_dir`` after every epoch; with ``resume``, continue from it if it is there."""
    again = resume and (run_dir / LAST).is_file()
    fit(model, data, cfg, out_dir=run_dir, resume=again, overwrite=not again)


def main() -> None:
    a = args_()
    quick = a.quick
    limit = a.limit or (100 if quick else 1000)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    load = {"before": os.getloadavg()}
    stages_file = work / "stages.json"
    stages = json.loads(stages_file.read_text()) if a.resume and stages_file.is_file() else {}

    def done(name: str, value: dict) -> None:
        stages[name] = value
        atomic_write_text(stages_file, json.dumps(stages, indent=1))

    torch.set_num_threads(1)
    ref = DataRef(CIFAR, limit=limit)
    data = worker_data(ref)
    per_epoch = max(1, len(data.train) // 128)
    base_steps = a.base_steps or (150 if quick else 40 * per_epoch)
    short = a.short_steps if a.short_steps is not None else (5 if quick else 50)
    long = a.long_steps or (30 if quick else 10 * per_epoch)
    train = replace(FINETUNE, batch_size=64 if quick else 128, lr=0.01, threads=1)
    print(f"{data.summary()}; baseline {base_steps} steps, short {short}, long {long}")

    # baseline
    base_path = work / "baseline.pt"
    if not (a.resume and base_path.is_file()):
        t0 = time.perf_counter()
        torch.manual_seed(0)
        base = zoo.create(BASE, num_classes=10)
        cfg = TrainConfig(steps=base_steps, batch_size=train.batch_size, lr=0.1, threads=1, progress=not quick,
                          eval_every=0)  # fmt: skip
        resumable_fit(base, data, cfg, work / "baseline_run", a.resume)
        save_checkpoint(checkpoint_of(base, data={"name": CIFAR, "image_size": 32}, config=asdict(cfg)), base_path)
        done("baseline", {"steps": base_steps, "seconds": time.perf_counter() - t0})
    base, _ = load_model(base_path)

    # latency model (eager, 1 thread, fastest run of each block timed back to back: see the module doc):
    # a width grid of every block, then calibrated on measured pruned variants of the baseline
    table_path = work / "latency_table.json"
    timing = TimingConfig(warmup=10, min_repeats=500, max_repeats=500, round_size=50, max_seconds=3.0,
                          max_foreign=None)  # fmt: skip
    table = (LatencyTable.load(table_path) if table_path.is_file() else
             new_table(backend="eager", threads=1, config=timing, drift_reference=False))  # fmt: skip
    table.config = timing
    lat = LatencyModel(table, measure=True, path=table_path, stat=STAT)  # a block off the grid is measured
    if table.calibration is None:
        t0 = time.perf_counter()
        lat.ensure_grid(base.arch, input_size=32, num_classes=10, fractions=GRID, divisor=2, sweeps=SWEEPS)
        grid_s = time.perf_counter() - t0
        # down to 1/16 of a width: NetAdapt's results reach 2 of 32 channels, the fit must have seen such networks
        calib = random_variants(base, 6 if quick else 10, input_size=32, seed=1000, min_keep=1 / 16)
        cal = calibrate(table, [base.arch, *calib], input_size=32, num_classes=10, model=lat, stat=STAT,
                        rounds=SWEEPS, table_path=str(table_path), info={"family": base.arch, "seed": 1000})  # fmt: skip
        done("latency", {"grid_seconds": grid_s, "calibration_seconds": time.perf_counter() - t0 - grid_s,
                         "entries": len(table.entries), "calibration": cal.to_dict()})  # fmt: skip
    meter = ResourceMeter("latency", input_size=32, num_classes=10, in_chans=3, latency=lat)
    budget = parse_budget(a.budget)
    target = budget.target(meter(base.arch))

    # (a) NetAdapt
    if "netadapt" not in stages:
        cfg = NetAdaptConfig(initial_step=0.04, decay=0.98, short_steps=short, top_k=2, long_epochs=0.0, round_to=2,
                             recal_batches=3 if quick else 10, train=train, drop_blocks=a.drop_blocks)  # fmt: skip
        t0 = time.perf_counter()
        r = netadapt(base, ref, budget, meter=meter, config=cfg, out=work / "netadapt", resume=a.resume,
                     on_iteration=lambda it: print(f"  iter {it.iteration}: {it.resource:.3f} ms, top-1 {it.top1:.3f}, "
                                                   f"{it.arch}"))  # fmt: skip
        spent = cfg.top_k * short * len(r.history)
        finetune(r.model, data, steps=long, config=train)
        save_checkpoint(checkpoint_of(r.model), work / "netadapt.pt")
        done("netadapt", {"arch": r.arch, "met": r.met, "stopped": r.stopped, "short_steps_spent": spent, "iterations": len(r.history),
                          "seconds": time.perf_counter() - t0, "history": [asdict(h) for h in r.history]})  # fmt: skip
    spent = stages["netadapt"]["short_steps_spent"]

    # (b) Torch-Pruning magnitude pruner to the same latency: predicted, or measured (--tp-measured: the issue's
    # wording; the predictor is weakest for the 1-3-channel inner widths near Torch-Pruning's floor)
    if "torch_pruning" not in stages:
        t0 = time.perf_counter()
        example = torch.randn(1, 3, 32, 32)

        def fastest(net: nn.Module) -> float:
            return measure(net.eval(), (1, 3, 32, 32), threads=1, config=timing).stats.min_ms

        def tp_meets(net: EdgeNet) -> bool:
            if not a.tp_measured:
                return meter(net.arch) <= target
            runs = [(fastest(base), fastest(net)) for _ in range(SWEEPS)]  # back to back: drift hits both
            return min(r[1] for r in runs) <= budget.target(min(r[0] for r in runs))

        lo, hi, best = 0.0, 0.95, None
        for _ in range(8):  # the largest ratio is not wanted: the smallest ratio that meets the budget
            mid = (lo + hi) / 2
            cand = tp_prune(base, mid, example)
            if tp_meets(cand):
                hi, best = mid, cand
            else:
                lo = mid
        if best is None:
            best = tp_prune(base, hi, example)
        loader = BatchLoader(data.train, batch_size=train.batch_size, mean=data.mean, std=data.std, train=True)
        recalibrate_bn_(best, loader, num_batches=10)
        resumable_fit(best, data, replace(train, steps=spent + long, eval_every=0, progress=False),
                      work / "torch_pruning_run", a.resume)  # fmt: skip
        save_checkpoint(checkpoint_of(best), work / "torch_pruning.pt")
        done("torch_pruning", {"arch": best.arch, "ratio": hi, "steps": spent + long, "measured": a.tp_measured,
                               "seconds": time.perf_counter() - t0})  # fmt: skip

    # (c) uniform width from scratch
    if "uniform" not in stages:
        t0 = time.perf_counter()
        lo, hi = 0.1, 1.0
        for _ in range(10):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if meter(zoo.arch_of(BASE, width=mid)) <= target else (lo, mid)
        torch.manual_seed(0)
        uni = zoo.create(BASE, num_classes=10, width=lo)
        steps = base_steps + spent + long
        resumable_fit(uni, data, TrainConfig(steps=steps, batch_size=train.batch_size, lr=0.1, threads=1,
                                             progress=not quick, eval_every=0), work / "uniform_run", a.resume)  # fmt: skip
        save_checkpoint(checkpoint_of(uni), work / "uniform.pt")
        done("uniform", {"arch": uni.arch, "width": lo, "steps": steps, "seconds": time.perf_counter() - t0})

    # one table, measured side by side: round-robin rounds (load hits all alike), fastest run and median
    t0 = time.perf_counter()
    nets = {name: load_model(path)[0].eval() for name, path in (
        ("baseline", base_path), ("netadapt", work / "netadapt.pt"), ("torch_pruning", work / "torch_pruning.pt"),
        ("uniform", work / "uniform.pt"))}  # fmt: skip
    runs: dict[str, list] = {name: [] for name in nets}
    for _ in range(SWEEPS):
        for name, net in nets.items():
            runs[name].append(measure(net, (1, 3, 32, 32), threads=1, config=timing).stats)
    ratio = target / meter(base.arch)  # the budget as a share of the baseline (50%latency: 0.5)
    rows = {}
    for name, net in nets.items():
        s = model_stats(net, data, measure_latency=False)
        fastest = min(r.min_ms for r in runs[name])
        rows[name] = {**asdict(s), "latency_ms": fastest, "latency_median_ms": statistics.median(r.median_ms
                      for r in runs[name]), "predicted_ms": meter(s.arch)}  # fmt: skip
    budget_measured = ratio * rows["baseline"]["latency_ms"]
    for r in rows.values():
        r["meets_budget_measured"] = r["latency_ms"] <= budget_measured
        r["prediction_error"] = r["predicted_ms"] / r["latency_ms"] - 1
    stages["measure_seconds"] = time.perf_counter() - t0
    # int8 (ONNX Runtime static PTQ, 300 calibration images) of our NetAdapt result, next to its fp32 ONNX
    na, _ = load_model(work / "netadapt.pt")
    q = quantize_int8(na, data, calibration_images=300)  # settings chosen for this CPU (q.record())
    c = compare_int8(q.fp32, q.int8, data, threads=1, timing=timing)
    rows["netadapt_ort_fp32"] = {"arch": na.arch, "top1": c.top1_fp32, "latency_ms": c.latency_fp32_ms,
                                 "macs": rows["netadapt"]["macs"], "params": rows["netadapt"]["params"],
                                 "predicted_ms": float("nan")}  # fmt: skip
    rows["netadapt_ort_int8"] = {**rows["netadapt_ort_fp32"], "top1": c.top1_int8, "latency_ms": c.latency_int8_ms,
                                 "agreement_with_fp32": c.agreement, **q.record()}  # fmt: skip
    load["after"] = os.getloadavg()
    doc = {"kind": "compress-benchmark", "quick": quick, "budget": budget.text, "target_ms": target,
           "latency_stat": STAT, "budget_measured_ms": budget_measured,
           "data": data.summary(), "base_steps": base_steps, "short_steps": short, "long_steps": long,
           "netadapt_short_steps_spent": spent, "rows": rows, "stages": stages, "load_average": load,
           "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                       "torch": torch.__version__},
           "note": ("QUICK smoke run: 100 images per class, short schedules, machine shared with other jobs; "
                    "the accuracies prove the pipeline runs, not which method is better") if quick else ""}  # fmt: skip
    tag = f"-{a.tag}" if a.tag else ""
    out = RESULTS / f"netadapt_cifar{'-quick' if quick else ''}{'-drop' if a.drop_blocks else ''}{tag}.json"
    atomic_write_text(out, json.dumps(doc, indent=1) + "\n")
    print(f"budget {budget.text}: {target:.3f} ms predicted, {budget_measured:.3f} ms measured (fastest runs)")
    print(f"{'':18}{'top-1':>8}{'meas. ms':>10}{'median':>8}{'pred. ms':>10}{'MACs':>12}{'params':>10}")
    for name, r in rows.items():
        print(f"{name:18}{r['top1']:8.3f}{r['latency_ms']:10.3f}{r.get('latency_median_ms', float('nan')):8.3f}"
              f"{r['predicted_ms']:10.3f}{r['macs']:12,}{r['params']:10,}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
