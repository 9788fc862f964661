"""How well does the lookup-table predictor predict measured latency on this CPU?

For each backend (PyTorch eager, ONNX Runtime), 1 thread:

1. calibration: ``--n-cal`` networks sampled from the MobileNetV3-style space
   with seed ``--cal-seed`` fill the table and fit its per-group scales;
2. validation: ``--n`` *other* networks (seed ``--seed``) are predicted and
   measured twice; we report the predictor's MAPE, share within ±5/10/20% and
   signed bias (nn-Meter, Zhang et al. 2021, reports 99.0% within ±10% on a
   mobile CPU), the uncalibrated sum's, and the noise floor (second
   measurement against the first), drift-normalised and not;
3. our mobilenet_v3_large and mobilenet_v2 at 224²: measured vs predicted.

All timings are normalised by the table's reference workload run around every
sample (``docs/latency.md``). One thread, because this 2-core VM is shared:
with 2 threads a process on the other core stalls every parallel region, which
no normalisation undoes. The machine's load (loadavg, the share of the CPUs
other processes used, the reference's slowdown) is recorded next to the numbers.

ONNX Runtime entries are timed in context (``edgecnn.latency.context``:
``T(pre → block → post) − T(pre → post)``); ``--ort-method profile`` builds the
older kind of table (blocks exported alone, profiled) for comparison.
``--no-reference`` builds new eager / ExecuTorch tables back to back, without the drift reference (for
ExecuTorch the reference workload between two XNNPACK programs ran 1.24–1.77× slow, so normalising by it added
error). ``--device HOST:PORT`` measures everything on an ``edgecnn agent`` (a loopback agent shows what the agent adds).
``--sweeps N`` times every new table entry N times, a sweep apart, and ``--rounds N`` measures every network
(and its retest) in N passes over all of them, each block and network exported once (on ExecuTorch the export is
seconds, the timing a fraction of one): a slow moment of the shared machine that covers one of three no longer
decides an entry or a measurement.
``--busy`` runs a competing busy-loop process (pinned to the last CPU where
the OS allows) for the whole benchmark, to see whether the predictor holds
with another process on the second core. ``--quick``: 10 + 10 networks, no zoo.
Tables are reused from ``--table-dir``: pass a fresh directory for a fresh build.

    .venv/bin/python benchmarks/latency_predictor.py [--n 50] [--n-cal 30] [--input-size 128] [--busy] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgecnn import zoo
from edgecnn.atomic import atomic_write_text
from edgecnn.latency.fingerprint import fingerprint
from edgecnn.latency.measure import CLOCKS, TimingConfig, device_fingerprint
from edgecnn.latency.predict import predict
from edgecnn.latency.table import BLOCK_METHODS, LatencyTable
from edgecnn.latency.targets import get_target
from edgecnn.latency.validate import calibrate, loadavg, measure_arch, sample_archs, validate
from edgecnn.search.space import MOBILENET_V3_SPACE

RESULTS = Path(__file__).parent / "results" / "latency_predictor.json"
ZOO = ("mobilenet_v3_large", "mobilenet_v2")


def _fmt(summary: dict) -> list[str]:
    if "within" not in summary:  # e.g. the unnormalised noise floor of a table timed without the reference
        return ["–"] * 5
    w = summary["within"]
    return [f"{summary['mape']:.1%}", f"{w['0.05']:.0%}", f"{w['0.10']:.0%}", f"{w['0.20']:.0%}",
            f"{summary['mean_error']:+.1%}"]  # fmt: skip


@contextmanager
def busy_process(enabled: bool) -> Iterator[dict]:
    """A competing busy loop on the last CPU (where affinity can be set) while the block runs; what it was."""
    if not enabled:
        yield {"busy": False}
        return
    cpu = (os.cpu_count() or 1) - 1

    def pin() -> None:  # runs in the child before the loop starts
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {cpu})

    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=pin)
    try:
        yield {"busy": True, "pid": proc.pid, "cpu": cpu if hasattr(os, "sched_setaffinity") else None}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50, help="validation networks per backend")
    ap.add_argument("--n-cal", type=int, default=30, help="calibration networks per backend")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--input-size", type=int, default=128, help="resolution of the random networks")
    ap.add_argument("--seed", type=int, default=0, help="validation seed")
    ap.add_argument("--cal-seed", type=int, default=1000, help="calibration seed (must differ from --seed)")
    ap.add_argument("--backends", nargs="+", default=["eager", "onnxruntime"])
    ap.add_argument("--table-dir", default="/tmp/edgecnn-latency-tables", help="where the lookup tables are kept")
    ap.add_argument("--max-seconds", type=float, default=3.0, help="cap per timing loop")
    ap.add_argument("--no-zoo", action="store_true", help="skip the zoo models at 224²")
    ap.add_argument("--ort-method", choices=BLOCK_METHODS, default="context",
                    help="how a new ONNX Runtime table times its blocks (context: in a graph; profile: older, alone)")
    ap.add_argument("--clock", choices=CLOCKS, default=None,
                    help="what a run is timed by (default: cpu, the thread's CPU time, with 1 thread; else wall)")
    ap.add_argument("--max-drift", type=float, default=None,
                    help="drop the runs around which the reference ran more than this many times slower than its "
                         "baseline; re-measure (after a pause, up to --retries times) when too few calm runs remain, "
                         "keeping the least drifted attempt")
    ap.add_argument("--retries", type=int, default=None, help="retries of a drifted measurement (default 3 with "
                    "--max-drift, else 0)")
    ap.add_argument("--no-reference", action="store_true", help="new tables time blocks back to back, without the "
                    "drift reference (eager and executorch; the reference is then not run around any timing)")
    ap.add_argument("--device", default="cpu", help="where to measure: cpu, or HOST:PORT of an `edgecnn agent` (its "
                    "token in $EDGECNN_AGENT_TOKEN); tables are keyed by that device")
    ap.add_argument("--sweeps", type=int, default=1, help="time every new table entry this many times, a sweep "
                    "over all new entries apart (each block exported once), and keep the median of its sweeps")
    ap.add_argument("--rounds", type=int, default=1, help="measure every calibration and validation network "
                    "(and its retest) in this many passes over all of them (each exported once), merged per network")
    ap.add_argument("--busy", action="store_true", help="run a competing busy process on the last CPU throughout")
    ap.add_argument("--quick", action="store_true", help="10 validation + 10 calibration networks, no zoo")
    ap.add_argument("--out", default=None, help=f"results JSON (default {RESULTS} with -busy/-quick suffixes)")
    args = ap.parse_args()
    args.clock = args.clock or ("cpu" if args.threads == 1 else "wall")
    if args.quick:
        args.n, args.n_cal, args.no_zoo = min(args.n, 10), min(args.n_cal, 10), True
    if args.out is None:
        args.out = str(RESULTS.with_name(RESULTS.stem + "-busy" * args.busy + "-quick" * args.quick + RESULTS.suffix))
    console = Console()
    with busy_process(args.busy) as busy:
        run(args, console, busy)


def run(args: argparse.Namespace, console: Console, busy: dict) -> None:
    """The benchmark body (see the module doc), with ``busy`` describing the competing process."""
    # by default no retries: other engineers' jobs come and go on this VM; normalisation, not waiting, handles them.
    # --max-drift retries on the reference's slowdown only (another process's CPU share never goes away here)
    retries = args.retries if args.retries is not None else (3 if args.max_drift else 0)
    cfg = TimingConfig(max_seconds=args.max_seconds, retries=retries, clock=args.clock, max_drift=args.max_drift,
                       max_foreign=None if args.max_drift else 0.2)  # fmt: skip
    archs = sample_archs(args.n, MOBILENET_V3_SPACE.sample, seed=args.seed)
    cal_archs = sample_archs(args.n_cal, MOBILENET_V3_SPACE.sample, seed=args.cal_seed)
    result: dict = {
        "machine": {
            "cpu": fingerprint(threads=args.threads).cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "loadavg_start": loadavg(),
        },
        "settings": {
            "n": args.n, "n_cal": args.n_cal, "threads": args.threads, "input_size": args.input_size,
            "seed": args.seed, "cal_seed": args.cal_seed, "ort_method": args.ort_method, "competing_process": busy,
            "quick": args.quick, "no_reference": args.no_reference, "device": args.device, "sweeps": args.sweeps,
            "rounds": args.rounds,
            "timing": {k: getattr(cfg, k) for k in ("warmup", "min_repeats", "max_repeats", "rel_tol", "max_seconds",
                                                     "max_foreign", "max_drift", "retries", "clock")},
        },
        "validation": {},
        "zoo": {},
    }  # fmt: skip
    tables: dict[str, LatencyTable] = {}
    summary = Table(title=f"predictor vs measured, {args.n} held-out networks, {args.threads} thread(s), "
                    f"{args.input_size}², competing process: {'yes' if busy['busy'] else 'no'}")
    for col in ("backend", "what", "MAPE", "±5%", "±10%", "±20%", "bias"):
        summary.add_column(col, justify="left" if col in ("backend", "what") else "right")
    for backend in args.backends:
        where = "" if args.device == "cpu" else "_" + args.device.replace(":", "_")
        path = Path(args.table_dir) / f"{backend}_t{args.threads}{where}.json"
        table = LatencyTable.open_or_new(path, device_fingerprint(backend=backend, threads=args.threads,
                                                                  device=args.device))  # fmt: skip
        if not table.entries:  # a new table; a loaded one keeps the method its entries were measured with
            table.block_method = args.ort_method
            table.drift_reference = not (args.no_reference and not get_target(backend).always_normalised)
        elif table.config.clock != cfg.clock:
            raise SystemExit(f"{path} was timed with the {table.config.clock!r} clock, not {cfg.clock!r}: "
                             "pass another --table-dir or --clock")  # fmt: skip
        table.config = cfg
        tables[backend] = table
        t0 = time.monotonic()
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
            tasks: dict = {}

            def on_stage(stage: str, done: int, total: int, backend: str = backend) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(f"{backend}: {stage}", total=total)
                bar.update(tasks[stage], completed=done, total=total)

            cal = calibrate(
                table, cal_archs, input_size=args.input_size, table_path=str(path), on_stage=on_stage,
                info={"seed": args.cal_seed, "n": args.n_cal}, rounds=args.rounds, sweeps=args.sweeps,
            )  # fmt: skip
            report = validate(
                table, archs, input_size=args.input_size, seed=args.seed, table_path=str(path), on_stage=on_stage,
                sampler=MOBILENET_V3_SPACE.sample, rounds=args.rounds, sweeps=args.sweeps,
            )
        rep = report.to_dict()
        rep["seconds"] = time.monotonic() - t0
        rep["table_entries"] = len(table.entries)
        rep["reference_ms"] = table.reference_ms
        rep["block_method"] = table.block_method if backend == "onnxruntime" else "isolated"
        rep["drift_reference"] = table.drift_reference
        rep["calibration"] = cal.to_dict()
        result["validation"][backend] = rep
        atomic_write_text(args.out, json.dumps(result, indent=1))  # each backend's figures kept as they finish
        for what, key in (("predictor (calibrated)", "predictor"), ("plain sum of entries", "predictor_uncalibrated"),
                          ("noise floor (retest)", "noise_floor"), ("noise floor, unnormalised", "noise_floor_unnormalized")):  # fmt: skip
            summary.add_row(backend, what, *_fmt(rep[key]))
        console.print(summary)
        console.print(f"{backend}: scales {cal.scales}, load {rep['load']}, {rep['seconds']:.0f} s")

    if not args.no_zoo:
        for name in ZOO:
            entry = zoo.get(name)
            arch = entry.arch()
            row: dict = {}
            for backend, table in tables.items():
                path = Path(args.table_dir) / f"{backend}_t{args.threads}.json"
                table.ensure([arch], input_size=entry.input_size, path=path)
                pred = predict(table, arch, input_size=entry.input_size)
                m = measure_arch(table, arch, input_size=entry.input_size)
                row[backend] = {
                    "measured_ms": m.median_ms, "iqr_ms": m.iqr_ms, "raw_median_ms": m.raw_median_ms, "drift": m.drift,
                    "foreign_cpu": m.foreign_cpu, "predicted_ms": pred.total_ms, "raw_predicted_ms": pred.raw_ms,
                    "error": pred.total_ms / m.median_ms - 1,
                }  # fmt: skip
                console.print(
                    f"{name} {entry.input_size}² {backend}: measured {m.median_ms:.2f} ms, predicted {pred.total_ms:.2f}"
                    f" ({row[backend]['error']:+.1%}; calibrated at {args.input_size}²)"
                )
            if len(row) == 2:
                row["eager_over_onnxruntime"] = row["eager"]["measured_ms"] / row["onnxruntime"]["measured_ms"]
            result["zoo"][name] = row
    result["machine"]["loadavg_end"] = loadavg()
    atomic_write_text(args.out, json.dumps(result, indent=1))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
