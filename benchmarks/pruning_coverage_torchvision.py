"""Issue 9's torchvision (and timm) rows of ``benchmarks/pruning_coverage.py``: ours against Torch-Pruning 1.6.1.

Each model (random weights, random BN statistics, BN folded when
``fold_bn`` can fold it) is pruned by both tools to 50% of the channels of
every group they find, as ``pruning_coverage.py`` defines it (uniform,
``round_to=8``, L1, the classifier's outputs fixed), and the row records
per tool: a valid forward with the original's output shape, exactness
(the pruned output equals the original's with the removed channels'
producing parameters zeroed, max abs diff < 1e-5 · max(1, max |output|):
relative for large outputs, as float32 rounding is — see
``pruning_coverage.py``), channels kept, and the time to build the groups
and plan (wall and process CPU, one run per tool).

Runs one model at a time (built, measured, freed) with a time limit per
tool, and rewrites its results file after every model (``--resume`` skips
the models it holds). Only in the separate benchmark venv of
``benchmarks/analysis_coverage.py`` (torchvision and timm do not load
against CI's CPU torch; large, never in CI)::

    nice -n 10 /work/benchvenv/bin/python benchmarks/pruning_coverage_torchvision.py \\
        [--models REGEX] [--timm] [--max-gmacs 12] [--resume]

Torchvision's classifiers at 224², batch 1, cheapest first, up to ``--max-gmacs`` G MACs
(the larger ones are listed as skipped: the 2-core shared machine cannot
run them through both tools in the time). One thread; the load average at
start and end is in the results. Writes
``benchmarks/results/pruning_coverage_torchvision.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from analysis_coverage import Timeout, _versions, build, model_list, time_limit, write  # noqa: E402
from analysis_speed import machine  # noqa: E402
from pruning_coverage import _randomize, _safe, run_ours, run_torch_pruning, summary  # noqa: E402

OUT = Path(__file__).parent / "results" / "pruning_coverage_torchvision.json"
COVERAGE = Path(__file__).parent / "results" / "analysis_coverage.json"  # MACs per model, to skip the largest
TIMM_PRUNE = ("resnet18", "mobilenetv3_large_100", "efficientnet_b0", "convnext_atto", "regnetx_002", "ghostnet_100",
              "mobilevit_xxs", "deit_tiny_patch16_224", "densenet121", "repvgg_a0")  # fmt: skip


def prepare(model: nn.Module) -> tuple[nn.Module, str]:
    """Random BN statistics, then BN folded where ``fold_bn`` can (the exactness rule assumes folded BNs)."""
    from edgecnn.compress import fold_bn

    model = _randomize(model)
    try:
        return fold_bn(model).eval(), "folded"
    except Exception as exc:  # not foldable: measured with its BNs, and said so
        return model, f"not folded ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"


def measure(source: str, name: str, timeout: int) -> dict[str, Any]:
    row: dict[str, Any] = {"model": name, "source": source}
    try:
        model, size = build(source, name)
        model, row["bn"] = prepare(model)
    except Exception as exc:  # the model itself does not build
        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        return row
    torch.manual_seed(0)
    x = torch.randn(1, *size)
    row["input"] = list(x.shape)
    for tool, fn in (("ours", run_ours), ("torch_pruning", run_torch_pruning)):
        t0 = time.perf_counter()
        try:
            with time_limit(timeout), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                row[tool] = _safe(fn, model, x)
        except Timeout as exc:
            row[tool] = {"ok": False, "exact": False, "error": f"Timeout: {exc}"}
        row[tool]["wall_s"] = round(time.perf_counter() - t0, 2)
    del model
    gc.collect()
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", help="regex: only the models whose name matches")
    p.add_argument("--timm", action="store_true", help=f"also timm's {', '.join(TIMM_PRUNE)}")
    p.add_argument("--max-gmacs", type=float, default=5.0, help="skip models above this many G MACs (default 5)")
    p.add_argument("--timeout", type=int, default=400, help="seconds per tool per model (default 400)")
    p.add_argument("--resume", action="store_true", help="keep the rows already in --out")
    p.add_argument("--out", type=Path, default=OUT, help=f"JSON result (default {OUT})")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    macs = {(r["source"], r["model"]): r.get("ref_macs", 0) for r in json.loads(COVERAGE.read_text())["rows"]}
    models = model_list("torchvision", None) + ([("timm", n) for n in TIMM_PRUNE] if args.timm else [])
    skipped = [f"{s}/{n}" for s, n in models if macs.get((s, n), 0) > args.max_gmacs * 1e9]  # of the whole list
    models = [(s, n) for s, n in models if f"{s}/{n}" not in skipped and (not args.models or re.search(args.models, n))]
    models.sort(key=lambda k: macs.get(k, 0))  # cheapest first
    done = {}
    if args.resume and args.out.exists():
        done = {(r["source"], r["model"]): r for r in json.loads(args.out.read_text())["rows"]}
    import torch_pruning

    doc: dict[str, Any] = {
        "benchmark": "pruning_coverage (torchvision/timm rows)",
        "versions": {**_versions(), "torch_pruning": torch_pruning.__version__},
        "machine_at_start": machine(),
        "load_note": "2 cores shared with up to 6 other processes' work; run under nice -n 10, 1 thread",
        "target": "keep=0.5 uniform, round_to=8, L1, classifier outputs fixed (pruning_coverage.py)",
        "skipped_over_max_gmacs": skipped,
        "max_gmacs": args.max_gmacs,
    }
    rows = []
    for i, (source, name) in enumerate(models, 1):
        row = done.pop((source, name), None) or measure(source, name, args.timeout)
        rows.append(row)
        doc["rows"] = rows + list(done.values())
        doc["summary"] = summary([r for r in doc["rows"] if "ours" in r])
        write(args.out, doc)
        o, t = row.get("ours", {}), row.get("torch_pruning", {})
        print(f"[{i}/{len(models)}] {source}/{name}: ours ok={o.get('ok')} exact={o.get('exact')} "
              f"plan={o.get('plan_s')}s | TP ok={t.get('ok')} exact={t.get('exact')} plan={t.get('plan_s')}s "
              f"{row.get('error', '')}{o.get('error', '')} {t.get('error', '')}", flush=True)  # fmt: skip
    doc["machine_at_end"] = machine()
    write(args.out, doc)
    print(json.dumps(doc.get("summary"), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
