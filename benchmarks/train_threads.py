"""Training speed on a shared CPU: PyTorch's default thread count against ``threads="auto"`` and 1 thread.

Run: ``python benchmarks/train_threads.py [--rounds 3] [--epochs 3]``. The demo's network
(``mobilenet_v3_small_cifar`` ×0.5 on digits at 32×32, batch 64, AdamW: :class:`edgecnn.demo.DemoConfig`) is
trained by :func:`edgecnn.train.fit` in this process with each thread setting — 1, every core (PyTorch's default,
the peer), and ``"auto"`` (:mod:`edgecnn.train.threads`) — in two situations: the machine as it is, and the
machine as it is **plus one busy process** (a Python loop this script starts, one core's worth, what a user's
other job looks like). The settings are interleaved round-robin within each situation; each figure is the median
over rounds of the images/s of a fit's epochs after its first.

Writes ``benchmarks/results/train_threads.json`` with the machine (CPU, instruction set, cores) and, before each
situation, the cores other processes kept busy over one second (``/proc/stat``, as ``auto`` reads it; the load
average is kept too, but it trails by a minute) — on a shared machine the "as is" situation is whatever else
runs, and says so.
No thread setting is "right" in the abstract: the claim measured is that ``auto`` is never far below the better
fixed setting of the moment, where the default falls far below it once any core is taken.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from edgecnn import zoo
from edgecnn.atomic import atomic_write_text
from edgecnn.build import build
from edgecnn.data import load_digits
from edgecnn.demo.config import DemoConfig
from edgecnn.latency.fingerprint import fingerprint
from edgecnn.train import TrainConfig, fit
from edgecnn.train.threads import available_cpus, others_busy, sample_cpu

OUT = Path(__file__).parent / "results" / "train_threads.json"


def speed(net: torch.nn.Module, data: Any, threads: int | str, epochs: int, batch: int) -> tuple[float, list[int]]:
    """Median images/s over the epochs after the first, and the thread counts the epochs ended with."""
    cfg = TrainConfig(epochs=epochs, batch_size=batch, optimizer="adamw", lr=4e-3, threads=threads, progress=False,
                      eval_every=0, seed=0)  # fmt: skip
    res = fit(copy.deepcopy(net), data, cfg)
    return statistics.median(h.images_per_s for h in res.history[1:]), [h.threads or 0 for h in res.history]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3, help="epochs per fit (the first is not counted)")
    a = p.parse_args()
    d = DemoConfig()
    cores = len(available_cpus())
    data = load_digits(image_size=d.image_size)
    torch.manual_seed(0)
    net = build(zoo.model_arg(d.model, width=d.width).arch, num_classes=data.num_classes, in_chans=data.in_chans)
    settings: list[int | str] = [1, cores, "auto"] if cores > 1 else [1, "auto"]
    rows = []
    for situation in ("as is", "plus one busy process"):
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if situation != "as is" else None
        try:
            time.sleep(1.0 if busy else 0.0)
            load, before = os.getloadavg(), sample_cpu(available_cpus())
            time.sleep(1.0)
            after = sample_cpu(available_cpus())
            others = others_busy(before, after) if before and after else None  # now, not the lagging load average
            got: dict[str, list[float]] = {str(s): [] for s in settings}
            chose: list[int] = []
            for _ in range(a.rounds):
                for s in settings:
                    ips, used = speed(net, data, s, a.epochs, d.batch_size)
                    got[str(s)].append(ips)
                    if s == "auto":
                        chose += used
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
        med = {s: statistics.median(v) for s, v in got.items()}
        best_fixed = max(v for s, v in med.items() if s != "auto")
        rows.append({"situation": situation, "load_average_before": load, "other_cores_busy_before": others, "images_per_s": med, "runs": got,
                     "auto_chose_threads": sorted(set(chose)), "auto_vs_best_fixed": med["auto"] / best_fixed,
                     "auto_vs_default": med["auto"] / med[str(cores)] if cores > 1 else 1.0})  # fmt: skip
    fp = fingerprint(backend="eager", threads=1).to_dict()
    doc = {"benchmark": "train_threads", "network": f"{d.model} x{d.width}", "data": "digits 32x32",
           "batch_size": d.batch_size, "epochs_per_fit": a.epochs, "rounds": a.rounds, "cores": cores, "rows": rows,
           "machine": {"cpu": fp.get("cpu"), "isa": fp.get("isa"), "cores": os.cpu_count(),
                       "platform": platform.platform(), "torch": torch.__version__}}  # fmt: skip
    OUT.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT, json.dumps(doc, indent=1) + "\n")
    print(f"{doc['network']} on {doc['data']}, batch {d.batch_size}; {fp.get('cpu')} ({fp.get('isa')}), {cores} cores")
    head = f"{'situation':<24}{'cores busy':>11}" + "".join(f"{'threads ' + str(s):>14}" for s in settings)
    print(head + f"{'auto chose':>12}{'auto/default':>14}")
    for r in rows:
        cells = "".join(f"{r['images_per_s'][str(s)]:>14,.0f}" for s in settings)
        chose = "/".join(map(str, r["auto_chose_threads"]))
        busy = r["other_cores_busy_before"]
        print(f"{r['situation']:<24}{busy if busy is None else f'{busy:.2f}':>11}{cells}{chose:>12}"
              f"{r['auto_vs_default']:>14.2f}")  # fmt: skip
    print(f"(images/s, median of {a.rounds} rounds) wrote {OUT}")


if __name__ == "__main__":
    main()
