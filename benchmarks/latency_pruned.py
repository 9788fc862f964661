"""Does the latency model track the *measured* latency of the networks NetAdapt proposes?

NetAdapt (``edgecnn.compress.netadapt.loop``) prices its proposals with a
:class:`~edgecnn.latency.model.LatencyModel`: table entries of blocks timed alone,
interpolated across widths. Per family (``resnet20_cifar``; ``mobilenet_v2_cifar``
×0.5; CIFAR 32², 10 classes, eager, batch 1, 1 thread):

1. the width grid of every block (``LatencyModel.ensure_grid``) is measured;
2. ``--calib`` pruned variants at random uneven widths
   (:func:`edgecnn.compress.netadapt.variants.random_variants`, seed 1000) are measured end to end and the table's
   calibration ``latency ≈ s_fixed·Σ fixed + s_body·Σ body`` (an offset plus a scale, :mod:`edgecnn.latency.calibrate`)
   is fitted on them;
3. ``--valid`` *other* variants (seed 0), never seen by the fit, are measured twice (the retest gives the noise
   floor) and compared with the plain sum and the calibrated prediction: MAPE, share within ±5/10/20%.

Every measurement is drift-normalised against the table's reference (``docs/latency.md``), so predicted and
measured milliseconds are in the same unit. The load average before and after is stored with the numbers.

    PYTHONPATH=src python benchmarks/latency_pruned.py [--families resnet20 mbv2] [--calib 8] [--valid 15]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from torch import nn

from edgecnn import zoo
from edgecnn.atomic import atomic_write_text
from edgecnn.compress.netadapt.variants import random_variants
from edgecnn.latency.measure import TimingConfig
from edgecnn.latency.model import LatencyModel
from edgecnn.latency.table import LatencyTable, new_table
from edgecnn.latency.validate import calibrate, error_summary, measure_arch

RESULTS = Path(__file__).parent / "results" / "latency_pruned.json"
FAMILIES = {"resnet20": ("resnet20_cifar", 1.0), "mbv2": ("mobilenet_v2_cifar", 0.5)}
TIMING = TimingConfig(warmup=10, min_repeats=500, max_repeats=500, round_size=50, max_seconds=3.0, max_foreign=None)
GRID = (1 / 32, 0.25, 0.5, 1.0)  # width grid of every block, down to 2 channels for widths <= 64
SWEEPS = 3  # grid sweeps and measuring rounds: the fastest run of all counts
STAT = "min"  # the fastest undisturbed run: steady under load where medians are not (docs/latency.md)


def args_() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    p.add_argument("--calib", type=int, default=8, help="calibration variants per family")
    p.add_argument("--valid", type=int, default=15, help="held-out validation variants per family")
    p.add_argument("--work", default="runs/latency_pruned", help="folder of the tables (reused when present)")
    p.add_argument("--out", default=str(RESULTS))
    return p.parse_args()


def in_context(model: nn.Module, runs: int = 200) -> list[float]:
    """Fastest time of each block inside the network (blocks called one after another, timed around each)."""
    x = torch.randn(1, model.in_chans, 32, 32)
    best = [float("inf")] * len(model.blocks)
    with torch.inference_mode():
        for _ in range(runs):
            h = x
            for i, b in enumerate(model.blocks):
                t0 = time.perf_counter()
                h = b(h)
                best[i] = min(best[i], (time.perf_counter() - t0) * 1e3)
    return best


def why(model: nn.Module, table: LatencyTable, lat: LatencyModel) -> dict:
    """The baseline's blocks: isolated table entries against the same blocks timed inside the network."""
    pred = lat.predict(model.arch, input_size=32, num_classes=10, calibrated=False)
    ctx = in_context(model)
    e2e = measure_arch(table, model.arch, input_size=32, num_classes=10).min_ms
    blocks = [{"block": k.split("|in")[0], "table_ms": v, "in_network_ms": c} for (k, v), c in zip(pred.blocks, ctx)]
    return {"table_sum_ms": sum(v for _, v in pred.blocks), "in_network_sum_ms": sum(ctx),
            "overhead_entry_ms": pred.overhead_ms, "end_to_end_ms": e2e, "call_overhead_ms": table.call_overhead_ms,
            "blocks": blocks}  # fmt: skip


def family(name: str, args: argparse.Namespace, work: Path) -> dict:
    zoo_name, width = FAMILIES[name]
    torch.manual_seed(0)
    model = zoo.create(zoo_name, num_classes=10, width=width).eval()
    path = work / f"{name}_table.json"
    fresh = new_table(backend="eager", threads=1, config=TIMING, drift_reference=False)
    table = LatencyTable.load(path) if path.is_file() else fresh
    table.config = TIMING
    lat = LatencyModel(table, measure=True, path=path, stat=STAT)
    t0 = time.perf_counter()
    n_grid = lat.ensure_grid(model.arch, input_size=32, num_classes=10, fractions=GRID, divisor=2, sweeps=SWEEPS)
    grid_s = time.perf_counter() - t0
    calib = random_variants(model, args.calib, input_size=32, seed=1000)
    valid = [a for a in random_variants(model, args.valid + args.calib, input_size=32, seed=0) if a not in calib]
    valid = valid[: args.valid]
    t0 = time.perf_counter()
    table.calibration = None
    cal = calibrate(table, [model.arch, *calib], input_size=32, num_classes=10, model=lat, table_path=str(path),
                    stat=STAT, rounds=SWEEPS, info={"family": zoo_name, "width": width, "seed": 1000})  # fmt: skip
    cal_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = [{"arch": a, "predicted_ms": lat.predict(a, input_size=32, num_classes=10).total_ms,
             "plain_sum_ms": lat.predict(a, input_size=32, num_classes=10).raw_ms, "runs": []} for a in valid]  # fmt: skip
    for _ in range(2 * SWEEPS):  # round-robin; the first SWEEPS rounds are the measurement, the rest its retest
        for r in rows:
            r["runs"].append(measure_arch(table, r["arch"], input_size=32, num_classes=10).min_ms)
    for r in rows:
        r["measured"] = {"min_ms": min(r["runs"][:SWEEPS])}
        r["retest"] = {"min_ms": min(r["runs"][SWEEPS:])}
    val_s = time.perf_counter() - t0

    def err(key: str, against: str = "measured") -> list[float]:
        return [(r[key] if isinstance(r[key], float) else r[key][f"{STAT}_ms"]) / r[against][f"{STAT}_ms"] - 1
                for r in rows]  # fmt: skip

    summary = {"calibrated": error_summary(err("predicted_ms")), "plain_sum": error_summary(err("plain_sum_ms")),
               "noise_floor": error_summary(err("retest"))}  # fmt: skip
    print(f"{name}: grid {n_grid} entries in {grid_s:.0f} s; calibration {cal.scales} fit MAPE {cal.fit_mape:.1%} "
          f"(plain sum {cal.raw_mape:.1%}); held out: calibrated MAPE {summary['calibrated']['mape']:.1%}, "
          f"within ±10% {summary['calibrated']['within']['0.10']:.0%}; plain sum MAPE "
          f"{summary['plain_sum']['mape']:.1%}; noise floor MAPE {summary['noise_floor']['mape']:.1%} "
          f"(±10%: {summary['noise_floor']['within']['0.10']:.0%})")  # fmt: skip
    return {"model": zoo_name, "width": width, "stat": STAT, "grid_entries": n_grid, "grid_seconds": grid_s,
            "calibration": cal.to_dict(), "calibration_seconds": cal_s, "validation_seconds": val_s,
            "held_out": summary, "why": why(model, table, lat), "rows": rows, "model_counts": dict(lat.counts)}  # fmt: skip


def main() -> None:
    args = args_()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    load = {"before": os.getloadavg()}
    results = {name: family(name, args, work) for name in args.families}
    load["after"] = os.getloadavg()
    doc = {"kind": "latency-pruned-variants", "families": results, "load_average": load,
           "timing": TIMING.__dict__, "machine": {"cpu": platform.processor() or platform.machine(),
                                                   "cores": os.cpu_count(), "torch": torch.__version__}}  # fmt: skip
    atomic_write_text(args.out, json.dumps(doc, indent=1) + "\n")
    print(f"load {load}; wrote {args.out}")


if __name__ == "__main__":
    main()
