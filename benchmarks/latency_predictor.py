"""How well does the lookup-table predictor predict measured latency on this CPU?

1. For each backend (PyTorch eager, ONNX Runtime): sample N networks from the
   MobileNetV3-style space, fill a lookup table with their blocks, measure each
   network end to end, and report MAPE and the share within ±10% (nn-Meter,
   Zhang et al. 2021, reports 99.0% within ±10% on a mobile CPU).
2. Our mobilenet_v3_large and mobilenet_v2 on both backends, side by side:
   end-to-end latency, table prediction, and the per-block breakdown.

Writes ``benchmarks/results/latency_predictor.json``. Affordable on a 2-core
CPU: the random networks run at ``--input-size`` (default 128²) with a time cap
per timing loop; the zoo models at 224².

    .venv/bin/python benchmarks/latency_predictor.py [--n 50] [--threads 2] [--input-size 128]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgecnn import zoo
from edgecnn.latency.fingerprint import fingerprint
from edgecnn.latency.measure import TimingConfig
from edgecnn.latency.per_layer import per_layer
from edgecnn.latency.predict import predict
from edgecnn.latency.table import LatencyTable
from edgecnn.latency.validate import sample_archs, validate

RESULTS = Path(__file__).parent / "results" / "latency_predictor.json"
ZOO = ("mobilenet_v3_large", "mobilenet_v2")


def loadavg() -> list[float] | None:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50, help="random networks per backend")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--input-size", type=int, default=128, help="resolution of the random networks")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backends", nargs="+", default=["eager", "onnxruntime"])
    ap.add_argument("--table-dir", default="/tmp/edgecnn-latency-tables", help="where the lookup tables are kept")
    ap.add_argument("--max-seconds", type=float, default=3.0, help="cap per timing loop")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    console = Console()
    cfg = TimingConfig(max_seconds=args.max_seconds, retries=2, retry_wait_s=1.0)
    archs = sample_archs(args.n, seed=args.seed)
    result: dict = {
        "machine": {
            "cpu": fingerprint(threads=args.threads).cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "loadavg_start": loadavg(),
        },
        "settings": {
            "n": args.n, "threads": args.threads, "input_size": args.input_size, "seed": args.seed,
            "timing": {k: getattr(cfg, k) for k in ("warmup", "min_repeats", "max_repeats", "rel_tol", "max_seconds",
                                                     "max_foreign", "retries")},
        },
        "validation": {},
        "zoo": {},
    }  # fmt: skip
    tables: dict[str, LatencyTable] = {}
    for backend in args.backends:
        path = Path(args.table_dir) / f"{backend}_t{args.threads}.json"
        table = LatencyTable.open_or_new(path, fingerprint(backend=backend, threads=args.threads))
        table.config = cfg
        tables[backend] = table
        t0 = time.monotonic()
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
            tasks: dict = {}

            def on_stage(stage: str, done: int, total: int, backend: str = backend) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(f"{backend}: {stage}", total=total)
                bar.update(tasks[stage], completed=done, total=total)

            report = validate(
                table, archs, input_size=args.input_size, seed=args.seed, table_path=str(path), on_stage=on_stage
            )
        rep = report.to_dict()
        rep["seconds"] = time.monotonic() - t0
        rep["table_entries"] = len(table.entries)
        result["validation"][backend] = rep
        console.print(
            f"[bold]{backend}[/] ({args.threads} threads, {args.input_size}², {len(report.rows)} networks): "
            f"MAPE {rep['median']['mape']:.1%}, within ±10% {rep['median']['within']:.0%} "
            f"(min-statistic: MAPE {rep['min']['mape']:.1%}, within {rep['min']['within']:.0%})"
        )

    for name in ZOO:
        entry = zoo.get(name)
        arch = entry.arch()
        net = zoo.create(name)
        row: dict = {}
        for backend, table in tables.items():
            table.ensure([arch], input_size=entry.input_size, path=Path(args.table_dir) / f"{backend}_t{args.threads}.json")
            pred = predict(table, arch, input_size=entry.input_size)
            b = per_layer(net, (1, 3, entry.input_size, entry.input_size), backend=backend, threads=args.threads,
                          config=cfg, label=name)  # fmt: skip
            row[backend] = {
                "measured_ms": b.total.stats.median_ms, "iqr_ms": b.total.stats.iqr_ms, "min_ms": b.total.stats.min_ms,
                "foreign_cpu": b.total.stats.foreign_cpu, "predicted_ms": pred.total_ms,
                "error": pred.total_ms / b.total.stats.median_ms - 1, "per_layer": b.to_dict(),
                "predicted_blocks_ms": [v for _, v in pred.blocks],
            }  # fmt: skip
        result["zoo"][name] = row
        t = Table(title=f"{name} at {entry.input_size}², {args.threads} threads: per-block ms")
        t.add_column("block")
        backends = list(row)
        for be in backends:
            t.add_column(f"{be} measured", justify="right")
            t.add_column(f"{be} table", justify="right")
        layers = {be: row[be]["per_layer"]["layers"] for be in backends}
        for i, layer in enumerate(layers[backends[0]]):
            cells = [f"{layer['name']} {layer['kind']}"]
            for be in backends:
                got = layers[be][i]["median_ms"] if i < len(layers[be]) else float("nan")
                cells += [f"{got:.3f}", f"{row[be]['predicted_blocks_ms'][i]:.3f}"]
            t.add_row(*cells)
        t.add_row("end to end / predicted", *sum(([f"{row[be]['measured_ms']:.3f}", f"{row[be]['predicted_ms']:.3f}"]
                                                  for be in backends), []))  # fmt: skip
        console.print(t)
        if len(backends) == 2:
            row["eager_over_onnxruntime"] = row["eager"]["measured_ms"] / row["onnxruntime"]["measured_ms"]
    result["machine"]["loadavg_end"] = loadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1), encoding="utf-8")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
