"""How well does interpolation across widths predict the latency of blocks whose widths were never measured?

NetAdapt proposes uneven widths the lookup table has not seen; :class:`edgecnn.latency.model.LatencyModel`
interpolates them multilinearly within a slice of the same block at other widths. Here, per slice:

1. a coarse grid of widths is measured (eager, 1 thread, drift-normalised like every table entry);
2. held-out widths between the grid points (uneven ones included) are measured too, but kept out of the grid;
3. every block is measured in ``--passes`` separate sweeps; its latency is the median over the sweeps;
4. the model interpolates each held-out block from the grid alone; we report MAPE and the share within
   ±5/10/20% of interpolated vs measured, against two yardsticks: the *noise floor* (one sweep's value
   of a held-out block against another sweep's) and the *nearest grid entry* (what a table without
   interpolation would answer).

Slices: an identity-residual inverted residual (axes c, mid) at 16², a dense 3×3 conv (cin, cout) at 16²,
a stride-2 inverted residual (cin, cout, mid) at 32².

Load: this 2-core VM is shared with other jobs; 1 thread, no retries on foreign load (it never goes away),
the drift reference normalises what it can. Load averages and the share of the CPUs other processes used
during the run are stored with the numbers.

    python benchmarks/latency_interpolation.py [--max-seconds 2] [--out benchmarks/results/latency_interpolation.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgecnn.atomic import atomic_write_text
from edgecnn.latency.fingerprint import fingerprint
from edgecnn.latency.drift import ForeignCpu
from edgecnn.latency.measure import TimingConfig
from edgecnn.latency.model import LatencyModel
from edgecnn.latency.widths import split_key, with_widths
from edgecnn.latency.table import LatencyTable, TableEntry, block_key
from edgecnn.latency.validate import loadavg
from edgecnn.plan import LayerPlan, resolve

RESULTS = Path(__file__).parent / "results" / "latency_interpolation.json"

# name -> (one block as a tiny network, input size, grid widths, held-out widths) — widths in the slice's axes
SLICES: dict[str, tuple[str, int, list[tuple[int, ...]], list[tuple[int, ...]]]] = {
    "ir_k3_s1 identity (c, mid) @16²": (
        "conv_k3_c32 ir_k3_m128_c32", 16,
        list(itertools.product((16, 32, 48, 64), (72, 128, 192, 256))),  # off the mid == c diagonal (no expansion)
        [*itertools.product((24, 37, 56), (96, 150, 230)), (32, 100), (40, 128)],
    ),
    "conv_k3 (cin, cout) @16²": (
        "conv_k3_c32 conv_k3_c32", 16,
        list(itertools.product((16, 32, 48, 64), (16, 32, 48, 64))),
        list(itertools.product((24, 40, 57), (20, 44, 60))),
    ),
    "ir_k3_s2 (cin, cout, mid) @32²": (
        "conv_k3_c32 ir_k3_s2_m128_c48", 32,
        list(itertools.product((16, 32, 48), (24, 48), (64, 128, 192))),
        [(24, 36, 96), (40, 30, 160), (20, 44, 100), (44, 40, 180), (37, 26, 77), (28, 46, 150)],
    ),
}


def variant(base: LayerPlan, widths: tuple[int, ...]) -> LayerPlan:
    if len(widths) == 2 and base.mid is not None:  # identity residual: (c, mid)
        return with_widths(base, cin=widths[0], cout=widths[0], mid=widths[1])
    if len(widths) == 2:
        return with_widths(base, cin=widths[0], cout=widths[1])
    return with_widths(base, cin=widths[0], cout=widths[1], mid=widths[2])


def summary(errors: list[float]) -> dict:
    a = [abs(e) for e in errors]
    return {
        "n": len(a), "mape": statistics.fmean(a), "max_abs_error": max(a), "mean_error": statistics.fmean(errors),
        "within": {f"{t:.2f}": sum(x <= t for x in a) / len(a) for t in (0.05, 0.10, 0.20)},
    }  # fmt: skip


def distance(key: str, coords: tuple[int, ...]) -> int:
    """Squared distance between a key's widths and ``coords`` (the nearest grid entry is the smallest)."""
    sk = split_key(key)
    assert sk is not None
    return sum((a - b) ** 2 for a, b in zip(sk.coords, coords))


def _row(table: Table, stat: str, name: str, what: str, s: dict) -> None:
    within = (f"{s['within'][t]:.0%}" for t in ("0.05", "0.10", "0.20"))
    table.add_row(stat, name, what, str(s["n"]), f"{s['mape']:.1%}", *within, f"{s['mean_error']:+.1%}")


def analyse(
    jobs: list[tuple[str, str, LayerPlan]], passes: list[dict[str, TableEntry]], stat: str, full: LatencyTable,
    table: Table,
) -> dict:
    """Interpolated, nearest-entry and retest errors of the held-out blocks, using each sweep's ``stat``."""
    # a block's latency: the median over the sweeps of the sweep's median (or fastest) run
    value = {k: statistics.median(p[k].value(stat) for p in passes) for k in passes[0]}
    out: dict = {"slices": {}}
    every: dict[str, list[float]] = {"interpolated": [], "nearest grid entry": [], "noise floor": []}
    for name in SLICES:
        grid_keys = [block_key(p) for s, k, p in jobs if s == name and k == "grid"]
        entries = {k: TableEntry(value[k], value[k], value[k], value[k], len(passes)) for k in grid_keys}
        model = LatencyModel(LatencyTable(full.fingerprint, entries, full.call_overhead_ms, full.reference_ms))
        rows, errs = [], {w: [] for w in every}
        for s, kind, plan in jobs:
            if s != name or kind != "held":
                continue
            key = block_key(plan)
            sk = split_key(key)
            assert sk is not None
            measured, interp = value[key], model.lookup(plan)[0].median_ms
            near = min(grid_keys, key=lambda k: distance(k, sk.coords))
            runs = [p[key].value(stat) for p in passes]
            rows.append({"widths": dict(zip(sk.axes, sk.coords)), "measured_ms": measured, "sweeps_ms": runs,
                         "interpolated_ms": interp, "nearest_grid_ms": value[near]})  # fmt: skip
            errs["interpolated"].append(interp / measured - 1)
            errs["nearest grid entry"].append(value[near] / measured - 1)
            # the noise floor: one sweep's value against another's (every ordered pair of sweeps)
            errs["noise floor"] += [a / b - 1 for a, b in itertools.permutations(runs, 2)]
        out["slices"][name] = {
            "grid": [dict(zip(split_key(k).axes, split_key(k).coords)) | {"ms": value[k]}  # type: ignore[union-attr]
                     for k in grid_keys],
            "held_out": rows,
            **{w: summary(e) for w, e in errs.items()},
        }  # fmt: skip
        for w, e in errs.items():
            every[w] += e
            _row(table, stat, name, w, summary(e))
    out["all"] = {w: summary(e) for w, e in every.items()}
    for w, e in every.items():
        _row(table, stat, "all", w, summary(e))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-seconds", type=float, default=2.0, help="cap per timing loop")
    ap.add_argument("--passes", type=int, default=3, help="sweeps over all blocks; a block's latency is their median")
    ap.add_argument("--table", default="/tmp/edgecnn-interp/eager_t1.json", help="grid + held-out table (resumes)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    console = Console()
    cfg = TimingConfig(max_seconds=args.max_seconds, retries=0, max_foreign=None)
    torch.set_num_threads(1)
    full = LatencyTable.open_or_new(args.table, fingerprint(backend="eager", threads=1))
    full.config = cfg
    jobs: list[tuple[str, str, LayerPlan]] = []  # (slice, "grid" | "held", plan)
    for name, (arch, size, grid, held) in SLICES.items():
        base = resolve(arch, num_classes=10, input_size=size)[1]
        jobs += [(name, "grid", variant(base, w)) for w in grid] + [(name, "held", variant(base, w)) for w in held]
    result: dict = {
        "machine": {"cpu": full.fingerprint.cpu, "cores": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "loadavg_start": loadavg()},
        "settings": {"backend": "eager", "threads": 1, "max_seconds": args.max_seconds, "retries": 0,
                     "max_foreign": None, "passes": args.passes},
    }  # fmt: skip
    passes: list[dict[str, TableEntry]] = []  # every block measured --passes times, in separate sweeps
    t0 = time.monotonic()
    with ForeignCpu() as foreign, Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task("measuring", total=len(jobs) * args.passes)
        for i in range(args.passes):
            sweep: dict[str, TableEntry] = {}
            for _, _, plan in jobs:
                key = block_key(plan)
                if i == 0 and key in full.entries:  # the first sweep resumes from the table file
                    sweep[key] = full.entries[key]
                else:
                    sweep[key] = full.measure_block(plan)
                    if i == 0:
                        full.entries[key] = sweep[key]
                        full.save(args.table)
                bar.advance(task)
            passes.append(sweep)
    table = Table(title="interpolated vs measured latency of held-out widths (eager, 1 thread)")
    for col in ("stat", "slice", "what", "n", "MAPE", "±5%", "±10%", "±20%", "bias"):
        table.add_column(col, justify="left" if col in ("stat", "slice", "what") else "right")
    for stat in ("median", "min"):
        result[stat] = analyse(jobs, passes, stat, full, table)
    result["machine"].update(loadavg_end=loadavg(), foreign_cpu_share=foreign.share, seconds=time.monotonic() - t0,
                             reference_ms=full.reference_ms)  # fmt: skip
    console.print(table)
    m = result["machine"]
    console.print(f"load: loadavg {m['loadavg_start']} → {m['loadavg_end']}, other processes used "
                  f"{foreign.share or 0:.0%} of the CPUs; {m['seconds']:.0f} s")  # fmt: skip
    atomic_write_text(args.out, json.dumps(result, indent=1))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
