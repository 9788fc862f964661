"""What a depthwise kernel size costs per MAC on each deployment target of this CPU.

MobileNetV3 (Howard et al. 2019, §5.2-5.3) chooses between 3×3, 5×5 and 7×7
depthwise kernels by *measured* latency, because their cost is not their MAC
count: runtimes ship hand-tuned kernels for some shapes and fall back to
generic code for others. This benchmark shows that cost structure on this
machine, for every target installed (eager PyTorch, ONNX Runtime, ExecuTorch
with XNNPACK): single layers at 32×32, batch 1, 1 thread, each exported once
per target, timed in interleaved rounds (every target once per round), the
fastest of ``--runs`` runs per round on the thread's CPU clock, the median over
rounds reported. MACs are counted by hand (depthwise ``C·k²·H·W``, 1×1
``Cin·Cout·H·W``, dense 3×3 ``Cin·Cout·9·H·W``).

Why it matters here: ``latency_predictor.py`` on the ExecuTorch target had
networks whose 7×7 blocks are most of their latency, so a table entry timed in
a slow moment moves the whole prediction. The latency table and the search
already price this per device; this file makes the cause visible.

    PYTHONPATH=src python benchmarks/kernel_costs.py [--rounds 5] [--runs 30]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from edgecnn.atomic import atomic_write_text
from edgecnn.latency.isa import detect_isa
from edgecnn.latency.targets import get_target, target_names

RESULTS = Path(__file__).parent / "results" / "kernel_costs.json"
SIZE = 32


def layers() -> dict[str, tuple[nn.Module, int, int]]:
    """name → (layer, input channels, MACs at SIZE×SIZE)."""
    hw = SIZE * SIZE
    out: dict[str, tuple[nn.Module, int, int]] = {}
    for c in (32, 64, 128):
        for k in (3, 5, 7):
            out[f"dw k{k} c{c}"] = (nn.Conv2d(c, c, k, padding=k // 2, groups=c), c, c * k * k * hw)
    out["1x1 64→256"] = (nn.Conv2d(64, 256, 1), 64, 64 * 256 * hw)
    out["3x3 64→64"] = (nn.Conv2d(64, 64, 3, padding=1), 64, 64 * 64 * 9 * hw)
    return out


def fastest_ms(fn: Any, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        t0 = time.thread_time()
        fn()
        best = min(best, time.thread_time() - t0)
    return 1000 * best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=30, help="runs per round (the fastest is kept)")
    ap.add_argument("--out", default=str(RESULTS))
    a = ap.parse_args()
    torch.set_num_threads(1)
    targets = [t for t in target_names() if get_target(t).version() is not None and t != "onnxruntime-int8"]
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    for name, (layer, cin, macs) in layers().items():
        torch.manual_seed(0)
        x = torch.randn(1, cin, SIZE, SIZE)
        fns = {t: get_target(t).runner(layer.eval(), x, threads=1)[0] for t in targets}
        for fn in fns.values():  # warm-up
            for _ in range(5):
                fn()
        rounds: dict[str, list[float]] = {t: [] for t in targets}
        for _ in range(a.rounds):
            for t, fn in fns.items():
                rounds[t].append(fastest_ms(fn, a.runs))
        for t in targets:
            ms = statistics.median(rounds[t])
            rows.append({"layer": name, "target": t, "macs": macs, "ms": ms, "round_ms": rounds[t],
                         "ns_per_kmac": 1e6 * ms / (macs / 1e3)})  # fmt: skip
        print(name, "  ".join(f"{t} {statistics.median(rounds[t]):.3f} ms" for t in targets), flush=True)
    by = {(r["layer"], r["target"]): r["ms"] for r in rows}
    ratios = {t: {f"k{k}/k3 c{c}": by[(f"dw k{k} c{c}", t)] / by[(f"dw k3 c{c}", t)] for c in (32, 64, 128)
                  for k in (5, 7)} for t in targets}  # fmt: skip
    mac_ratio = {"k5/k3": 25 / 9, "k7/k3": 49 / 9}
    table = Table(title=f"per-layer latency at {SIZE}², 1 thread, fastest run per round, median of {a.rounds} rounds")
    for col in ("layer", *targets):
        table.add_column(col, justify="left" if col == "layer" else "right")
    for name in layers():
        table.add_row(name, *(f"{by[(name, t)]:.3f} ms" for t in targets))
    Console().print(table)
    for t in targets:
        print(f"{t}: time ratios {', '.join(f'{k} {v:.2f}' for k, v in ratios[t].items())} "
              f"(MAC ratios k5/k3 {mac_ratio['k5/k3']:.2f}, k7/k3 {mac_ratio['k7/k3']:.2f})")  # fmt: skip
    isa = detect_isa()
    doc = {"benchmark": "kernel_costs", "date": time.strftime("%Y-%m-%d %H:%M:%S"), "size": SIZE, "threads": 1,
           "rounds": a.rounds, "runs_per_round": a.runs, "clock": "thread CPU time",
           "versions": {t: get_target(t).version() for t in targets}, "rows": rows, "time_ratios": ratios,
           "mac_ratios": mac_ratio,
           "machine": {"platform": platform.platform(), "processor": platform.processor(), "cores": os.cpu_count(),
                       "isa": isa.to_dict(), "load_before": load_before, "load_after": os.getloadavg()}}  # fmt: skip
    atomic_write_text(a.out, json.dumps(doc, indent=1) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
