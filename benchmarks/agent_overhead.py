"""What the device agent adds to a latency measurement: the same networks timed here and through a loopback agent.

Issue 19 asks that a measurement through ``edgecnn agent`` add ≤ 2% to the
latency. The predictor benchmark run through an agent (``latency_predictor.py
--device``) mixes that question with the machine's drift between two runs
minutes apart; this benchmark asks it directly. It starts an agent on
127.0.0.1 (``agent/server.py``, the file ``edgecnn agent`` runs, as a separate process on a real socket),
then for each network — the zoo's CIFAR networks and random networks of the
``mbv3-32`` space — it times the same ONNX Runtime model (1 thread) **here**
(:func:`edgecnn.latency.measure.measure`) and **on the agent**
(``device=127.0.0.1:PORT``), interleaved over ``--rounds`` rounds, both on the
thread's CPU clock (``clock="cpu"``: what another process on the machine does
to the wall clock does not enter it). Per network: the median per-round ratio
agent / local, its band; over networks the median |ratio − 1| and the share
within 2%.

    PYTHONPATH=src python benchmarks/agent_overhead.py [--rounds 5] [--random 8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path

from edgecnn import zoo
from edgecnn.atomic import atomic_write_text
from edgecnn.build import build
from edgecnn.latency.compare import interleaved
from edgecnn.latency.fingerprint import fingerprint
from edgecnn.latency.measure import TimingConfig, measure
from edgecnn.latency.remote import AGENT_TOKEN_ENV
from edgecnn.search.space import get_space

RESULTS = Path(__file__).parent / "results"
ZOO = ("resnet20_cifar", "mobilenet_v2_cifar", "mobilenet_v3_small_cifar")
TIMING = TimingConfig(warmup=10, min_repeats=50, max_repeats=200, round_size=25, max_seconds=3.0, max_foreign=None,
                      retries=0, clock="cpu")  # fmt: skip


def start_agent(token: str) -> tuple[subprocess.Popen[bytes], str]:
    """The agent (its one stdlib file, as a device runs it) on 127.0.0.1, a free port; the process and HOST:PORT."""
    from edgecnn.agent import server

    proc = subprocess.Popen([sys.executable, server.__file__, "--host", "127.0.0.1", "--port", "0", "--token", token],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if not line.startswith("listening on "):
        proc.kill()
        raise SystemExit(f"the agent did not start: {line!r}")
    return proc, line.split()[-1]


def networks(n_random: int) -> dict[str, str]:
    rng, space = random.Random(7), get_space("mbv3-32")
    archs = {name: zoo.arch_of(name) for name in ZOO}
    archs.update({f"random-{i}": space.sample(rng).format() for i in range(n_random)})
    return archs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--random", type=int, default=8, help="random networks of mbv3-32 besides the zoo's")
    a = ap.parse_args()
    token = secrets.token_hex(16)
    os.environ[AGENT_TOKEN_ENV] = token
    proc, address = start_agent(token)
    load = {"before": os.getloadavg()}
    rows = {}
    try:
        for name, arch in networks(a.random).items():
            net = build(arch, num_classes=10, in_chans=3).eval()
            timers = {where: (lambda d=device: measure(net, (1, 3, 32, 32), backend="onnxruntime", threads=1,
                                                       config=TIMING, device=d).stats)
                      for where, device in (("local", "cpu"), ("agent", address))}  # fmt: skip
            t0 = time.perf_counter()
            runs = interleaved(timers, rounds=a.rounds)
            ratios = [g.median_ms / h.median_ms for g, h in zip(runs["agent"], runs["local"])]
            rows[name] = {"arch": arch, "local_ms": statistics.median(s.median_ms for s in runs["local"]),
                          "agent_ms": statistics.median(s.median_ms for s in runs["agent"]),
                          "ratio": statistics.median(ratios), "ratio_band": [min(ratios), max(ratios)],
                          "seconds": time.perf_counter() - t0}  # fmt: skip
            r = rows[name]
            print(f"{name:26} local {r['local_ms']:7.3f} ms  agent {r['agent_ms']:7.3f} ms  ratio {r['ratio']:.3f} "
                  f"[{r['ratio_band'][0]:.3f}, {r['ratio_band'][1]:.3f}]", flush=True)  # fmt: skip
    finally:
        proc.kill()
        proc.wait()
    load["after"] = os.getloadavg()
    dev = [abs(r["ratio"] - 1) for r in rows.values()]
    summary = {"networks": len(rows), "median_abs_deviation": statistics.median(dev),
               "max_abs_deviation": max(dev), "share_within_2pct": sum(d <= 0.02 for d in dev) / len(dev),
               "median_ratio": statistics.median(r["ratio"] for r in rows.values())}  # fmt: skip
    doc = {"benchmark": "agent_overhead", "runtime": "onnxruntime", "threads": 1, "clock": "cpu",
           "rounds": a.rounds, "timing": TIMING.__dict__, "rows": rows, "summary": summary,
           "target": "agent adds <= 2% (issue 19)", "met": summary["median_abs_deviation"] <= 0.02,
           "load_average": load, "machine": {**fingerprint(backend="onnxruntime", threads=1).to_dict(),
                                             "platform": platform.platform(), "cores": os.cpu_count()}}  # fmt: skip
    out = RESULTS / "agent_overhead.json"
    atomic_write_text(out, json.dumps(doc, indent=1, default=str) + "\n")
    print(json.dumps(summary, indent=1), f"\nwrote {out}")


if __name__ == "__main__":
    main()
