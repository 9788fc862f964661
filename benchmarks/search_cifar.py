"""Platform-aware search on CIFAR-10 against this CPU: searched network vs a width-scaled MobileNetV3-Small.

What it measures (issue 11's benchmark), all on the machine it runs on:

1. the supernet of the ``mbv3-32`` space, trained with the sandwich rule or
   OFA's progressive shrinking (``--supernet-schedule``;
   :mod:`edgecnn.search.supernet_train`), and its estimate's **Kendall τ** against
   short stand-alone training on ``tau_n`` random subnets;
2. **regularized evolution vs random search** at the same budget, both scored
   by the same supernet and the same latency table — calibrated first on
   ``calibrate`` networks of the space measured end to end, so that its
   latency is on the measured target's scale — under ``--constraint hard``
   (the default: the best accuracy with ``LAT <= TAR``, the question the
   benchmark asks) or ``soft`` (``ACC·(LAT/TAR)^w``, ``--w`` default −0.07);
3. the best evolved network **measured** end to end (exclusive lane), and
   ``mobilenet_v3_small_cifar`` **width-scaled to the same measured latency**
   (the widest of ``widths`` not slower than the searched one);
4. both networks **trained with the same recipe and budget**
   (:func:`edgecnn.train.fit`, ``epochs``) and their test top-1;
5. the zoo's **reference points** of the setting (``--references``, default
   ``auto``: ``mobilenet_v3_small_cifar`` at width 0.35, 0.5, 0.75, 1.0;
   :mod:`edgecnn.search.references`): latency by the same table and measured
   like the finalists, each trained with the same recipe and budget (a width
   equal to the matched baseline reuses its training). ``--references none``
   skips them; otherwise they add up to four more final trainings (about
   +0.7 CPU-h on the full preset, not in its projection).

The target (``--target``, default: the measured latency of
``mobilenet_v3_small_cifar`` at width 0.75) is in ms with ``--threads`` threads,
eager PyTorch. Every stage is cached in ``--out`` (supernet checkpoint, search
states, the τ trainings done, the final trainings' ``last.pt``,
``stages.json``): ``--resume`` after a kill loses at most the supernet steps
since the last checkpoint, the candidates in flight, one τ batch or the current
training epoch.

Presets (``--preset``): ``full`` is sized to fit **2 CPU-hours** (process and
worker CPU time, supernet training and both final trainings included) on
this 2-core machine, from per-stage rates measured by a ``medium`` run;
``medium`` (about 20 minutes on a quiet machine) runs every stage on all
50 000 images with the full preset's batch sizes and few steps, to measure
those rates; ``quick`` (``--quick``) proves the pipeline on 600 images. Every
run writes ``benchmarks/results/search_cifar[-PRESET].json`` with the wall and
CPU seconds of each stage, the load average around it, the per-unit CPU rates
and the CPU time the full preset is projected to take at those rates. Only the
full preset's accuracies say anything about the method; on a machine shared
with other jobs wall times and latencies are noisy (CPU seconds less so).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from edgecnn import zoo
from edgecnn.atomic import atomic_write_text
from edgecnn.build import build
from edgecnn.executor import Executor
from edgecnn.latency.measure import TimingConfig, measure
from edgecnn.run_document import write_results
from edgecnn.search.estimate import EstimateSettings, SupernetEstimator, TrainEstimator, rank_agreement, search_split
from edgecnn.search.evolution import SearchConfig, run_search
from edgecnn.search.objective import MNASNET_W, Objective
from edgecnn.search.job import (
    SearchJob,
    calibrate_table,
    latency_model,
    measure_finalists,
    prepare_supernet,
    train_final,
)
from edgecnn.search.references import measure_references, resolve_references, to_rows, train_references
from edgecnn.search.space import MBV3_32_SPACE
from edgecnn.search.supernet_train import SCHEDULES, SupernetConfig
from edgecnn.train import TrainConfig
from edgecnn.train.task import DataRef, worker_data

CIFAR = "/work/shared/data/cifar10-jpeg.tar.xz"
RESULTS = Path(__file__).parent / "results"
BASELINE = "mobilenet_v3_small_cifar"

# sized from the CPU rates a medium run measured (docs/search.md) to about 1.8 CPU-hours in all, final
# trainings included, on this 2-core machine; --epochs trains the two final networks longer (more CPU)
FULL = dict(per_class=None, val_fraction=0.04, supernet_steps=500, batch_size=64, num_random=2, budget=80,
            population=20, sample_size=5, batch=4, recal_batches=5, recal_batch_size=64, tau_n=8, train_steps=100,
            epochs=2, final_steps=None, final_batch_size=128,
            widths=(0.35, 0.5, 0.6, 0.75, 0.85, 1.0, 1.25), calibrate=12)  # fmt: skip
# the full preset's data, batch sizes, validation split and recalibration, with few steps: measures the rates
MEDIUM = {**FULL, "supernet_steps": 12, "budget": 6, "population": 3, "sample_size": 2, "tau_n": 2,
          "train_steps": 20, "epochs": 1, "final_steps": 30, "widths": (0.5, 0.75, 1.0), "calibrate": 6}  # fmt: skip
QUICK = dict(per_class=60, val_fraction=0.1, supernet_steps=24, batch_size=16, num_random=1, budget=12,
             population=6, sample_size=3, batch=2, recal_batches=4, recal_batch_size=32, tau_n=4, train_steps=20,
             epochs=1, final_steps=None, final_batch_size=16, widths=(0.5, 0.75, 1.0), calibrate=4)  # fmt: skip
PRESETS = {"full": FULL, "medium": MEDIUM, "quick": QUICK}
NOTES = {
    "full": "full preset: sized to 2 CPU-hours on this 2-core machine",
    "medium": "MEDIUM PRESET: the full data, few steps; measures per-stage rates, the accuracies mean nothing",
    "quick": "QUICK PRESET: 600 training images and tiny budgets; proves the pipeline runs, the numbers mean nothing",
}


def cpu_seconds() -> float:
    """User + system CPU seconds of this process, its reaped children and its live descendants (Linux ``/proc``)."""
    own, reaped = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent, CPU s of it and its reaped children)
    tick = os.sysconf("SC_CLK_TCK")
    for d in Path("/proc").glob("[0-9]*"):
        try:
            f = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended meanwhile
        stats[int(d.name)] = (int(f[1]), sum(int(v) for v in f[11:15]) / tick)  # utime stime cutime cstime
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in stats.items():
        children.setdefault(parent, []).append(pid)
    todo = list(children.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        total += stats[pid][1]
        todo += children.get(pid, [])
    return total


class Stages:
    """Results of finished stages in ``out/stages.json``, so ``--resume`` skips them; wall, CPU and load of each."""

    def __init__(self, path: Path, resume: bool) -> None:
        self.path = path
        self.done: dict[str, Any] = json.loads(path.read_text()) if resume and path.is_file() else {}

    def run(self, name: str, fn: Callable[[], Any], console: Console) -> Any:
        if name in self.done:
            console.print(f"[dim]{name}: done before (resumed)[/dim]")
            return self.done[name]
        console.print(f"{name} ...")
        t, c, load = time.perf_counter(), cpu_seconds(), os.getloadavg()[0]
        value = fn()
        self.done[name] = value
        self.done.setdefault("seconds", {})[name] = time.perf_counter() - t
        self.done.setdefault("cpu_seconds", {})[name] = cpu_seconds() - c
        self.done.setdefault("load", {})[name] = [load, os.getloadavg()[0]]
        atomic_write_text(self.path, json.dumps(self.done, indent=1))
        return value


class SavedEstimates:
    """An estimator whose results are saved after every ``chunk`` archs, so a killed τ stage resumes."""

    def __init__(self, estimator: Callable[[list[str]], list[float]], path: Path, chunk: int) -> None:
        self.estimator, self.path, self.chunk = estimator, path, max(1, chunk)

    def __call__(self, archs: list[str]) -> list[float]:
        done: dict[str, float] = json.loads(self.path.read_text()) if self.path.is_file() else {}
        todo = [a for a in archs if a not in done]
        for i in range(0, len(todo), self.chunk):
            part = todo[i : i + self.chunk]
            done.update(zip(part, self.estimator(part)))
            atomic_write_text(self.path, json.dumps(done, indent=1))
        return [done[a] for a in archs]


def projection(p: dict[str, Any], cpu: dict[str, float], train_images: int, setup_cpu: float) -> dict[str, Any]:
    """CPU rates per unit of work from this run's stages, and the CPU seconds the full preset takes at them.

    * supernet: per step (same batch and schedule as the full preset's);
    * search: per candidate, both algorithms together (the workers' data decoding and the latency table's new
      entries included: both grow less than linearly, so the projection errs high);
    * τ: every subnet costs one cheap estimate and one validation pass (each taken as a search candidate's
      cost) plus its short-training steps, whose rate is what remains;
    * final trainings: per image trained, their test evaluations included (a run of few steps evaluates
      10 000 test images once and so overstates it); ``train_images`` is this run's training split.
    """
    full_images = 50_000  # CIFAR-10's training split (the final trainings use all of it)
    if p["final_steps"]:
        train_images = p["final_steps"] * p["final_batch_size"]  # per training, over all its steps
    epochs = 1 if p["final_steps"] else p["epochs"]
    candidate = (cpu["search_evolution"] + cpu["search_random"]) / (2 * p["budget"])
    rates = {
        "supernet_cpu_s_per_step": cpu["supernet"] / p["supernet_steps"],
        "search_cpu_s_per_candidate": candidate,
        "tau_cpu_s_per_training_step": max(0.0, cpu["kendall_tau"] - 2 * p["tau_n"] * candidate)
        / (p["tau_n"] * p["train_steps"]),
        "final_cpu_s_per_1k_images": 1000 * (cpu["train_searched"] + cpu["train_baseline"])
        / (2 * epochs * train_images),
    }  # fmt: skip
    widths = len(FULL["widths"]) / len(p["widths"])
    parts = {
        "setup_and_latency": setup_cpu + cpu["target"] + cpu["finalists"] + cpu["baseline_widths"] * widths,
        "supernet": rates["supernet_cpu_s_per_step"] * FULL["supernet_steps"],
        "search": candidate * 2 * FULL["budget"],
        "kendall_tau": FULL["tau_n"] * (2 * candidate + FULL["train_steps"] * rates["tau_cpu_s_per_training_step"]),
        "final_trainings": rates["final_cpu_s_per_1k_images"] * 2 * FULL["epochs"] * full_images / 1000,
    }
    return {"rates": rates, "full_preset_cpu_s": parts, "full_preset_cpu_h": sum(parts.values()) / 3600,
            "full_preset_cpu_h_without_final_trainings": (sum(parts.values()) - parts["final_trainings"]) / 3600}


def _summary(res: Any) -> dict[str, Any]:
    return {"best": res.best[0].to_dict(), "curve": res.best_score_curve(), "front": [c.to_dict() for c in res.front]}


def measured_ms(arch: str, job: SearchJob, ex: Executor, reference: Any) -> dict[str, float]:
    net = build(arch, num_classes=10, in_chans=3)
    with ex.exclusive():
        s = measure(net, (1, 3, 32, 32), threads=job.threads, config=job.timing, reference=reference).stats
    return {"median_ms": s.median_ms, "iqr_ms": s.iqr_ms}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=PRESETS, default="full", help="full (2 CPU-hours), medium (rates), quick")
    ap.add_argument("--quick", action="store_true", help="the same as --preset quick")
    ap.add_argument("--supernet-schedule", choices=SCHEDULES, default="sandwich",
                    help="sandwich rule or OFA's progressive shrinking")  # fmt: skip
    ap.add_argument("--epochs", type=int, help="epochs of both final trainings instead of the preset's (costs CPU)")
    ap.add_argument("--target", type=float, help=f"latency target in ms (default: {BASELINE}@0.75 measured)")
    ap.add_argument("--constraint", choices=("hard", "soft"), default="hard",
                    help="hard: max ACC s.t. LAT <= target (the benchmark's question: more accuracy at no more "
                         "latency); soft: ACC*(LAT/TAR)^w, MnasNet")  # fmt: skip
    ap.add_argument("--w", type=float, default=MNASNET_W, help="exponent of the soft objective")
    ap.add_argument("--threads", type=int, default=1, help="threads latency is measured with")
    ap.add_argument("--workers", type=int, default=2, help="local worker processes scoring candidates")
    ap.add_argument("--train-threads", type=int, default=1,
                    help="torch threads of this process (supernet, final trainings); on a shared CPU 1 is fastest")
    ap.add_argument("--out", help="run folder (default benchmarks/results/search_cifar[-PRESET]-run)")
    ap.add_argument("--resume", action="store_true", help="skip the stages a previous run finished")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--references", nargs="+", default=["auto"], metavar="auto|none|ZOO[@WIDTH]",
                    help="zoo networks measured and trained with the same recipe (default auto)")
    args = ap.parse_args()
    refs = resolve_references(args.references, 32)
    preset = "quick" if args.quick else args.preset
    p = dict(PRESETS[preset])
    if args.epochs:
        p.update(epochs=args.epochs, final_steps=None)
    torch.set_num_threads(args.train_threads)
    tag = "search_cifar" if preset == "full" else f"search_cifar-{preset}"
    if args.supernet_schedule != "sandwich":
        tag += f"-{args.supernet_schedule}"
    out = Path(args.out) if args.out else RESULTS / f"{tag}-run"
    out.mkdir(parents=True, exist_ok=True)
    console = Console()
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    stages = Stages(out / "stages.json", args.resume)

    ref = DataRef(CIFAR, limit=p["per_class"])
    full = worker_data(ref)
    settings = EstimateSettings(image_size=32, val_fraction=p["val_fraction"], recal_batches=p["recal_batches"],
                                recal_batch_size=p["recal_batch_size"], train_steps=p["train_steps"],
                                train_batch_size=p["batch_size"])  # fmt: skip
    data = search_split(full, val_fraction=settings.val_fraction, seed=settings.split_seed)
    console.print(f"{full.summary()}; search split {len(data.train)} train / {len(data.test)} validation")
    setup_cpu = stages.done.setdefault("setup_cpu_seconds", cpu_seconds())  # data decoding of this process
    timing = TimingConfig(warmup=5, min_repeats=20, max_seconds=3.0, retries=1, retry_wait_s=1.0)
    if preset == "quick":
        timing = TimingConfig(warmup=3, min_repeats=10, max_seconds=1.0, retries=0)
    search_cfg = SearchConfig("evolution", budget=p["budget"], population=p["population"],
                              sample_size=p["sample_size"], batch=p["batch"], seed=args.seed)  # fmt: skip
    recipe = TrainConfig(epochs=p["epochs"], steps=p["final_steps"], batch_size=p["final_batch_size"], seed=args.seed)
    with Executor("local", workers=args.workers) as ex:
        job = SearchJob(MBV3_32_SPACE, ref, Objective(1.0), search_cfg,
                        SupernetConfig(steps=p["supernet_steps"], batch_size=p["batch_size"],
                                       num_random=p["num_random"], seed=args.seed, schedule=args.supernet_schedule),
                        settings, threads=args.threads, timing=timing, finalists=3, final_epochs=p["epochs"],
                        final_config=recipe, calibrate=p["calibrate"], calibrate_seed=1000 + args.seed)  # fmt: skip
        model, table_path = latency_model(job, out, ex)
        reference = model.table.reference()
        target = args.target or stages.run(
            "target", lambda: measured_ms(zoo.arch_of(BASELINE, width=0.75), job, ex, reference)["median_ms"], console
        )
        job = replace(job, objective=Objective(target, w=args.w, hard=args.constraint == "hard"))
        console.print(f"target {target:.3f} ms ({args.threads} thread(s), eager): {job.objective.describe()}")
        # the table's sum of isolated blocks runs ~20% above a measured network: calibrate it on networks of the
        # space measured end to end, so that LAT and the measured target are on one scale
        calibration = stages.run("calibrate", lambda: calibrate_table(
            job, model, ex, num_classes=10, in_chans=3, table_path=table_path), console)  # fmt: skip

        def latency(arch: str) -> float:
            return model.predict(arch, input_size=32, num_classes=10, in_chans=3).total_ms

        held: dict[str, Any] = {}

        def supernet() -> Any:  # trained (or loaded from its checkpoint) only when a stage needs it
            if "net" not in held:
                held["net"], held["info"] = prepare_supernet(job, data, out, resume=True, progress=True)
            return held["net"]

        sn_info = stages.run("supernet", lambda: (supernet(), held["info"])[1], console)

        def cheap(archs: list[str]) -> list[float]:
            return SupernetEstimator(supernet(), ref, settings, ex)(archs)

        def search(alg: str) -> Any:
            state = out / f"state-{alg}.json"
            return run_search(MBV3_32_SPACE, cheap, latency, job.objective, replace(search_cfg, algorithm=alg),
                              state_path=state, resume=state.is_file())  # fmt: skip

        searches = {alg: stages.run(f"search_{alg}", lambda: _summary(search(alg)), console)
                    for alg in ("evolution", "random")}  # fmt: skip
        trained = SavedEstimates(TrainEstimator(ref, settings, ex), out / "tau-trained.json", max(1, args.workers))
        tau = stages.run("kendall_tau", lambda: rank_agreement(
            MBV3_32_SPACE, cheap, trained, n=p["tau_n"], seed=args.seed + 1).to_dict(), console)  # fmt: skip
        finalists = stages.run("finalists", lambda: [  # the finished evolution state is read back, not re-run
            asdict(f) for f in measure_finalists(job, search("evolution"), data, ex)], console)  # fmt: skip
        pick = job.objective.choose([(f["acc"], f["measured_ms"]) for f in finalists])  # the search's own rule
        chosen = {**finalists[pick.index], "chosen_because": pick.reason}

        def baseline_widths() -> list[dict[str, Any]]:
            archs = {w: zoo.arch_of(BASELINE, width=w) for w in p["widths"]}
            return [{"width": w, "arch": a, **measured_ms(a, job, ex, reference)} for w, a in archs.items()]

        widths = stages.run("baseline_widths", baseline_widths, console)
        fits = [w for w in widths if w["median_ms"] <= chosen["measured_ms"]]
        base = max(fits, key=lambda w: w["width"]) if fits else min(widths, key=lambda w: w["median_ms"])
        searched = stages.run("train_searched", lambda: train_final(job, chosen["arch"], full, out / "final-searched",
                                                                    resume=True, progress=True), console)  # fmt: skip
        baseline = stages.run("train_baseline", lambda: train_final(job, base["arch"], full, out / "final-baseline",
                                                                    resume=True, progress=True), console)  # fmt: skip

        def references() -> list[dict[str, Any]]:
            points = measure_references(refs, model, ex, input_size=32, num_classes=10, in_chans=3,
                                        backend=job.backend, threads=job.threads)  # fmt: skip

            def recipe(arch: str, folder: Path) -> dict[str, Any]:  # the matched baseline is trained already
                return baseline if arch == base["arch"] else train_final(job, arch, full, folder, resume=True,
                                                                         progress=True)  # fmt: skip

            return to_rows(train_references(points, recipe, out / "references"))

        reference_rows = stages.run("references", references, console) if refs else []
    cpu = stages.done.get("cpu_seconds", {})
    doc = {
        "preset": preset,
        "quick": preset == "quick",
        "note": NOTES[preset],
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "load_before": load_before, "load_after": os.getloadavg(), "torch": torch.__version__},
        "params": {k: list(v) if isinstance(v, tuple) else v for k, v in p.items()},
        "supernet_schedule": args.supernet_schedule,
        "target_ms": target, "objective": {"w": job.objective.w, "hard": job.objective.hard,
                                           "formula": job.objective.describe()},
        "calibration": calibration, "threads": args.threads, "train_threads": args.train_threads,
        "supernet": sn_info,
        "kendall_tau": tau,
        "search": searches,
        "searched": {**chosen, "train": searched},
        "baseline": {"name": BASELINE, **base, "train": baseline, "widths": widths},
        "delta_top1_pp": 100 * (searched["top1"] - baseline["top1"]),
        "references": reference_rows,
        "latency_table": {"entries": len(model.table.entries), "sources": dict(model.counts)},
        "wall_s_this_call": time.perf_counter() - t_start,
        "stage_seconds": stages.done.get("seconds", {}),  # as first run (a --resume keeps them)
        "stage_cpu_seconds": cpu,
        "stage_load": stages.done.get("load", {}),  # 1-minute load average at each stage's start and end
        "wall_s_stages": sum(stages.done.get("seconds", {}).values()),
        "cpu_s_total": setup_cpu + sum(cpu.values()),
        "projection": projection(p, cpu, len(full.train), setup_cpu),
    }  # fmt: skip
    written = write_results(out, "search-benchmark", doc)  # strict JSON (a tied tau is null, not NaN)
    path = atomic_write_text(RESULTS / f"{tag}.json", written.read_text(encoding="utf-8"))
    t = Table(title=f"search_cifar ({preset}{'' if preset == 'full' else ': the accuracies mean nothing'})")
    for col in ("network", "measured ms", "test top-1"):
        t.add_column(col)
    t.add_row(f"searched ({chosen['arch'][:60]}…)", f"{chosen['measured_ms']:.3f}", f"{searched['top1']:.2%}")
    t.add_row(f"{BASELINE} @{base['width']}", f"{base['median_ms']:.3f}", f"{baseline['top1']:.2%}")
    for r in reference_rows:
        t.add_row(f"reference {r['label']}", f"{r['measured_ms']:.3f}", f"{r['top1']:.2%}")
    console.print(t)
    ev, rd = searches["evolution"]["best"], searches["random"]["best"]
    tau_s = "undefined (an estimate ties every subnet)"
    if tau["tau"] is not None and not math.isnan(tau["tau"]):
        tau_s = f"{tau['tau']:.3f} (p {tau['p_value']:.2f})"
    proj = doc["projection"]
    console.print(f"evolution best score {ev['score']:.4f} vs random {rd['score']:.4f} at {p['budget']} candidates; "
                  f"Kendall tau {tau_s}, n {tau['n']}; CPU {doc['cpu_s_total'] / 3600:.2f} h this run, "
                  f"full preset projected {proj['full_preset_cpu_h']:.2f} CPU-h; wrote {path}")  # fmt: skip


if __name__ == "__main__":
    main()
