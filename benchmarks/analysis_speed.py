"""How long it takes to analyse a network: edgecnn against fvcore, ptflops, thop and FlopCounterMode.

Run: ``python benchmarks/analysis_speed.py [--repeats 15]``. One thread, the
same process, the tools interleaved round-robin (so background load hits all
of them alike), one warm-up call each, then the median of ``--repeats``
calls. Every tool gets its own copy of the model (thop adds buffers to it).
Each tool's MAC count is recorded too: they disagree.

Also timed: :func:`edgecnn.analysis.cost_from_spec`, the closed-form cost of
a MobileNetV3-Large candidate without building it (target ≤ 2 ms), from an
``ArchSpec`` (what a search mutates), from a string whose parse is cached,
and from a never-seen string (parsing included, the parser's caches emptied first).

Writes ``benchmarks/results/analysis_speed.json`` (with the machine and its
load average, also printed: on a shared machine the absolute times scale with
the load, the ratios much less).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from edgecnn import zoo
from edgecnn.analysis import analyze, cost_from_spec
from edgecnn.arch import parse
from edgecnn.atomic import atomic_write_text

MODELS = ("mobilenet_v2", "mobilenet_v3_large")
SIZE = 224
TARGET_RATIO = 0.5
TARGET_SPEC_MS = 2.0
OUT = Path(__file__).parent / "results" / "analysis_speed.json"

Tool = Callable[[nn.Module, torch.Tensor], float]  # returns the MACs it counted


def _ours(model: nn.Module, x: torch.Tensor) -> float:
    return analyze(model, tuple(x.shape[1:])).macs


def _ours_no_rf(model: nn.Module, x: torch.Tensor) -> float:
    return analyze(model, tuple(x.shape[1:]), receptive_fields=False).macs


def _flop_counter(model: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 2


def _peers() -> tuple[dict[str, Tool], list[str]]:
    tools: dict[str, Tool] = {"FlopCounterMode": _flop_counter}
    missing = []
    try:
        from fvcore.nn import FlopCountAnalysis

        def fvcore(model: nn.Module, x: torch.Tensor) -> float:
            a = FlopCountAnalysis(model, (x,))
            a.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            return float(a.total())  # fvcore's "flops" are MACs

        tools["fvcore"] = fvcore
    except ImportError:
        missing.append("fvcore")
    try:
        import ptflops

        def ptflops_aten(model: nn.Module, x: torch.Tensor) -> float:
            macs, _ = ptflops.get_model_complexity_info(model, tuple(x.shape[1:]), backend="aten", as_strings=False,
                                                        print_per_layer_stat=False, verbose=False)  # fmt: skip
            return float(macs)

        tools["ptflops (aten)"] = ptflops_aten
    except ImportError:
        missing.append("ptflops")
    try:
        import thop

        def thop_profile(model: nn.Module, x: torch.Tensor) -> float:
            macs, _ = thop.profile(model, inputs=(x,), verbose=False)
            return float(macs)

        tools["thop"] = thop_profile
    except ImportError:
        missing.append("thop")
    return tools, missing


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1e3, 3)


def time_analysis(repeats: int) -> tuple[dict[str, object], list[str]]:
    peers, missing = _peers()
    tools: dict[str, Tool] = {"edgecnn": _ours, "edgecnn (no receptive fields)": _ours_no_rf, **peers}
    results: dict[str, object] = {}
    for name in MODELS:
        base = zoo.create(name).eval()
        x = torch.zeros(1, 3, SIZE, SIZE)
        models = {tool: copy.deepcopy(base) for tool in tools}
        macs = {tool: fn(models[tool], x) for tool, fn in tools.items()}  # warm-up, and what each one counts
        samples: dict[str, list[float]] = {tool: [] for tool in tools}
        for _ in range(repeats):
            for tool, fn in tools.items():  # round-robin: background load hits every tool alike
                t0 = time.perf_counter()
                fn(models[tool], x)
                samples[tool].append(time.perf_counter() - t0)
        med = {tool: _median_ms(s) for tool, s in samples.items()}
        fastest = min(peers, key=lambda t: med[t])
        results[name] = {
            "median_ms": med,
            "macs_reported": {tool: int(m) for tool, m in macs.items()},
            "fastest_peer": fastest,
            "ratio_vs_fastest_peer": round(med["edgecnn"] / med[fastest], 3),
            "ratio_no_rf_vs_fastest_peer": round(med["edgecnn (no receptive fields)"] / med[fastest], 3),
            "ratios": {tool: round(med["edgecnn"] / med[tool], 3) for tool in peers},
            "target_ratio": TARGET_RATIO,
            "target_met": med["edgecnn"] <= TARGET_RATIO * med[fastest],
        }
    return results, missing


def time_spec_cost(repeats: int = 300) -> dict[str, object]:
    text = zoo.arch_of("mobilenet_v3_large")
    spec = parse(text)

    def run(fn: Callable[[], object]) -> float:
        fn()
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
        return _median_ms(samples)

    from_spec = run(lambda: cost_from_spec(spec, SIZE))
    return {
        "model": "mobilenet_v3_large",
        "from_archspec_ms": from_spec,
        "from_string_cached_parse_ms": run(lambda: cost_from_spec(text, SIZE)),
        "from_fresh_string_ms": run(lambda: (_clear_parse_caches(), cost_from_spec(parse(text), SIZE))),
        "target_ms": TARGET_SPEC_MS,
        "target_met": from_spec <= TARGET_SPEC_MS,
        "macs": cost_from_spec(spec, SIZE).macs,
    }


def _clear_parse_caches() -> None:
    """A never-seen string: empty the arch parser's caches (by string and by block) before parsing."""
    from edgecnn import arch

    arch.parse.cache_clear()
    arch._parse_block_cached.cache_clear()


def machine() -> dict[str, object]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=15, help="timed calls per tool (default 15, at least 9)")
    p.add_argument("--out", type=Path, default=OUT, help=f"JSON result (default {OUT})")
    args = p.parse_args(argv)
    if args.repeats < 9:
        raise SystemExit("--repeats must be at least 9")
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    load_before = machine()["load_average"]
    results, missing = time_analysis(args.repeats)
    spec = time_spec_cost()
    print(f"load average before / after: {load_before} / {machine()['load_average']} on {os.cpu_count()} cores "
          "(absolute times scale with it; the ratios are measured side by side under the same load)")
    for name, r in results.items():
        print(f"\n{name} @ {SIZE}², 1 thread, median of {args.repeats}:")
        print(f"  {'tool':32s} {'ms':>9s} {'ours/it':>8s} {'MACs':>13s}")
        for tool, ms in r["median_ms"].items():  # type: ignore[index]
            ratio = r["ratios"].get(tool, "")  # type: ignore[index]
            print(f"  {tool:32s} {ms:9.2f} {ratio!s:>8s} {r['macs_reported'][tool]:13,}")  # type: ignore[index]
        print(f"  ours / fastest peer ({r['fastest_peer']}): {r['ratio_vs_fastest_peer']} "  # type: ignore[index]
              f"(target ≤ {TARGET_RATIO}; without receptive fields {r['ratio_no_rf_vs_fastest_peer']})")  # type: ignore[index]
    print(f"\ncost_from_spec(mobilenet_v3_large): {spec['from_archspec_ms']} ms from an ArchSpec, "
          f"{spec['from_string_cached_parse_ms']} ms from a cached string, {spec['from_fresh_string_ms']} ms "
          f"parsing a fresh string (target ≤ {TARGET_SPEC_MS} ms)")  # fmt: skip
    out = {"benchmark": "analysis_speed", "input": [1, 3, SIZE, SIZE], "repeats": args.repeats,
           "machine": machine(), "models": results, "spec_cost": spec, "missing_peers": missing}  # fmt: skip
    atomic_write_text(args.out, json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
