"""Platform-aware search on CIFAR-10 against this CPU: searched network vs a width-scaled MobileNetV3-Small.

What it measures (issue 11's benchmark), all on the machine it runs on:

1. the supernet of the ``mbv3-32`` space trained with the sandwich rule
   (:mod:`edgecnn.search.supernet`), and its estimate's **Kendall τ** against
   short stand-alone training on ``--tau-n`` random subnets;
2. **regularized evolution vs random search** at the same budget, both scored
   by the same supernet and the same latency table, objective
   ``ACC·(LAT/TAR)^-0.07``;
3. the best evolved network **measured** end to end (exclusive lane), and
   ``mobilenet_v3_small_cifar`` **width-scaled to the same measured latency**
   (the widest of ``--widths`` not slower than the searched one);
4. both networks **trained with the same recipe** (:func:`edgecnn.train.fit`,
   ``--epochs``) and their test top-1;
5. the zoo's **reference points** of the setting (``--references``, default
   ``auto``: ``mobilenet_v3_small_cifar`` at width 0.35, 0.5, 0.75, 1.0;
   :mod:`edgecnn.search.references`): latency by the same table and measured
   like the finalists, each trained with the same recipe (a width equal to the
   matched baseline reuses its training). ``--references none`` skips them; in
   the full run they add up to four more trainings.

The target (``--target``, default: the measured latency of
``mobilenet_v3_small_cifar`` at width 0.75) is in ms with ``--threads`` threads,
eager PyTorch. Every stage is cached in ``--out`` (supernet checkpoint, search
states, the final trainings' ``last.pt``, ``stages.json``): ``--resume`` after
an interruption skips what is done.

``--quick`` (a few minutes on a quiet 2-core CPU) proves the pipeline works on
600 training images with tiny budgets; its numbers are not evidence of
anything and the result file says so (``"quick": true``). The full run
(``python benchmarks/search_cifar.py``) is about 2 CPU-hours for the search
plus the two final trainings. Writes ``benchmarks/results/search_cifar[-quick].json``
with the load average before and after: on a machine shared with other jobs
latencies are noisy and runs slow.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
from edgecnn.results import write_results
from edgecnn.search.estimate import EstimateSettings, SupernetEstimator, TrainEstimator, rank_agreement, search_split
from edgecnn.search.evolution import SearchConfig, run_search
from edgecnn.search.objective import Objective
from edgecnn.search.pipeline import (
    SearchJob,
    latency_model,
    measure_finalists,
    prepare_supernet,
    train_final,
)
from edgecnn.search.references import measure_references, resolve_references, to_rows, train_references
from edgecnn.search.space import MBV3_32_SPACE
from edgecnn.search.supernet import SupernetConfig
from edgecnn.train import TrainConfig
from edgecnn.train.task import DataRef, worker_data

CIFAR = "/work/shared/data/cifar10-jpeg.tar.xz"
RESULTS = Path(__file__).parent / "results"
BASELINE = "mobilenet_v3_small_cifar"

FULL = dict(per_class=None, supernet_steps=3000, budget=200, population=50, sample_size=10, batch=4, tau_n=12,
            train_steps=300, epochs=30, widths=(0.35, 0.5, 0.6, 0.75, 0.85, 1.0, 1.25), recal_batches=10,
            recal_batch_size=64, num_random=2, batch_size=64)  # fmt: skip
QUICK = dict(per_class=60, supernet_steps=24, budget=12, population=6, sample_size=3, batch=2, tau_n=4,
             train_steps=20, epochs=1, widths=(0.5, 0.75, 1.0), recal_batches=4, recal_batch_size=32,
             num_random=1, batch_size=16)  # fmt: skip


class Stages:
    """Results of finished stages in ``out/stages.json``, so ``--resume`` skips them."""

    def __init__(self, path: Path, resume: bool) -> None:
        self.path = path
        self.done: dict[str, Any] = json.loads(path.read_text()) if resume and path.is_file() else {}

    def run(self, name: str, fn: Callable[[], Any], console: Console) -> Any:
        if name in self.done:
            console.print(f"[dim]{name}: done before (resumed)[/dim]")
            return self.done[name]
        console.print(f"{name} ...")
        t = time.perf_counter()
        value = fn()
        self.done[name] = value
        self.done.setdefault("seconds", {})[name] = time.perf_counter() - t
        atomic_write_text(self.path, json.dumps(self.done, indent=1))
        return value


def _summary(res: Any) -> dict[str, Any]:
    return {"best": res.best[0].to_dict(), "curve": res.best_score_curve(), "front": [c.to_dict() for c in res.front]}


def measured_ms(arch: str, job: SearchJob, ex: Executor, reference: Any) -> dict[str, float]:
    net = build(arch, num_classes=10, in_chans=3)
    with ex.exclusive():
        s = measure(net, (1, 3, 32, 32), threads=job.threads, config=job.timing, reference=reference).stats
    return {"median_ms": s.median_ms, "iqr_ms": s.iqr_ms}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny budgets: proves the pipeline, measures nothing")
    ap.add_argument("--target", type=float, help=f"latency target in ms (default: {BASELINE}@0.75 measured)")
    ap.add_argument("--threads", type=int, default=1, help="threads latency is measured with")
    ap.add_argument("--workers", type=int, default=2, help="local worker processes scoring candidates")
    ap.add_argument("--train-threads", type=int, default=1,
                    help="torch threads of this process (supernet, final trainings); on a shared CPU 1 is fastest")
    ap.add_argument("--out", help="run folder (default benchmarks/results/search_cifar[-quick]-run)")
    ap.add_argument("--resume", action="store_true", help="skip the stages a previous run finished")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--references", nargs="+", default=["auto"], metavar="auto|none|ZOO[@WIDTH]",
                    help="zoo networks measured and trained with the same recipe (default auto)")
    args = ap.parse_args()
    refs = resolve_references(args.references, 32)
    p = QUICK if args.quick else FULL
    torch.set_num_threads(args.train_threads)
    tag = "search_cifar-quick" if args.quick else "search_cifar"
    out = Path(args.out) if args.out else RESULTS / f"{tag}-run"
    out.mkdir(parents=True, exist_ok=True)
    console = Console()
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    stages = Stages(out / "stages.json", args.resume)

    ref = DataRef(CIFAR, limit=p["per_class"])
    full = worker_data(ref)
    settings = EstimateSettings(image_size=32, recal_batches=p["recal_batches"], recal_batch_size=p["recal_batch_size"],
                                train_steps=p["train_steps"], train_batch_size=p["batch_size"])  # fmt: skip
    data = search_split(full, val_fraction=settings.val_fraction, seed=settings.split_seed)
    console.print(f"{full.summary()}; search split {len(data.train)} train / {len(data.test)} validation")
    timing = TimingConfig(warmup=5, min_repeats=20, max_seconds=3.0, retries=1, retry_wait_s=1.0)
    if args.quick:
        timing = TimingConfig(warmup=3, min_repeats=10, max_seconds=1.0, retries=0)
    search_cfg = SearchConfig("evolution", budget=p["budget"], population=p["population"],
                              sample_size=p["sample_size"], batch=p["batch"], seed=args.seed)  # fmt: skip
    recipe = TrainConfig(epochs=p["epochs"], batch_size=p["batch_size"] if args.quick else 128, seed=args.seed)
    with Executor("local", workers=args.workers) as ex:
        job = SearchJob(MBV3_32_SPACE, ref, Objective(1.0), search_cfg,
                        SupernetConfig(steps=p["supernet_steps"], batch_size=p["batch_size"],
                                       num_random=p["num_random"], seed=args.seed),
                        settings, threads=args.threads, timing=timing, finalists=3, final_epochs=p["epochs"],
                        final_config=recipe)  # fmt: skip
        model, _ = latency_model(job, out, ex)
        reference = model.table.reference()
        target = args.target or stages.run(
            "target", lambda: measured_ms(zoo.arch_of(BASELINE, width=0.75), job, ex, reference)["median_ms"], console
        )
        job = replace(job, objective=Objective(target))
        console.print(f"target {target:.3f} ms ({args.threads} thread(s), eager)")

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
        tau = stages.run("kendall_tau", lambda: rank_agreement(
            MBV3_32_SPACE, cheap, TrainEstimator(ref, settings, ex), n=p["tau_n"], seed=args.seed + 1).to_dict(),
            console)  # fmt: skip
        finalists = stages.run("finalists", lambda: [  # the finished evolution state is read back, not re-run
            asdict(f) for f in measure_finalists(job, search("evolution"), data, ex, model)], console)  # fmt: skip
        chosen = finalists[0]

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
                                        backend=job.backend, threads=job.threads, timing=job.timing)  # fmt: skip

            def recipe(arch: str, folder: Path) -> dict[str, Any]:  # the matched baseline is trained already
                return baseline if arch == base["arch"] else train_final(job, arch, full, folder, resume=True,
                                                                         progress=True)  # fmt: skip

            return to_rows(train_references(points, recipe, out / "references"))

        reference_rows = stages.run("references", references, console) if refs else []
    doc = {
        "quick": bool(args.quick),
        "note": ("QUICK MODE: 600 training images and tiny budgets; proves the pipeline runs, the numbers mean "
                 "nothing" if args.quick else "full run"),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "load_before": load_before, "load_after": os.getloadavg(), "torch": torch.__version__},
        "params": {k: list(v) if isinstance(v, tuple) else v for k, v in p.items()},
        "target_ms": target, "threads": args.threads, "train_threads": args.train_threads,
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
        "wall_s_stages": sum(stages.done.get("seconds", {}).values()),
    }  # fmt: skip
    written = write_results(out, "search-benchmark", doc)  # strict JSON (a tied tau is null, not NaN)
    path = atomic_write_text(RESULTS / f"{tag}.json", written.read_text(encoding="utf-8"))
    t = Table(title=f"search_cifar{' (QUICK: numbers mean nothing)' if args.quick else ''}")
    for col in ("network", "measured ms", "test top-1"):
        t.add_column(col)
    t.add_row(f"searched ({chosen['arch'][:60]}…)", f"{chosen['measured_ms']:.3f}", f"{searched['top1']:.2%}")
    t.add_row(f"{BASELINE} @{base['width']}", f"{base['median_ms']:.3f}", f"{baseline['top1']:.2%}")
    for r in reference_rows:
        t.add_row(f"reference {r['label']}", f"{r['measured_ms']:.3f}", f"{r['top1']:.2%}")
    console.print(t)
    ev, rd = searches["evolution"]["best"], searches["random"]["best"]
    console.print(f"evolution best score {ev['score']:.4f} vs random {rd['score']:.4f} at {p['budget']} candidates; "
                  f"Kendall tau {tau['tau']:.3f} (p {tau['p_value']:.2f}, n {tau['n']}; "
                  "nan: one estimate ties every subnet); "
                  f"wrote {path}")  # fmt: skip


if __name__ == "__main__":
    main()
