"""Coverage of the per-layer analysis on torchvision's and timm's classifiers, against fvcore, ptflops, thop, torchinfo.

Issue 8 item 3(b). For every classifier of
``torchvision.models.list_models(module=torchvision.models)`` and a broad
list of timm models (:data:`TIMM_MODELS`; ``pretrained=False``, batch 1,
224² for torchvision, the model's default input for timm), this records:

* **edgecnn** (:func:`edgecnn.analysis.analyze`, ``mode="auto"``): analysed
  in ``fx`` mode or fell back to forward hooks (and why), its MACs, whether
  receptive fields are present (rows carrying one, the output field), time;
* the **reference**: ``torch.utils.flop_counter.FlopCounterMode`` total / 2
  on a real forward pass (eval mode, autograd on and attention on its math
  path — see :func:`reference_macs` for why not ``no_grad``); the plain
  ``no_grad`` count is kept as ``ref_no_grad_macs``;
* the **peers** on the same model and input, each tool's MACs against the
  reference, failures and time: fvcore (``FlopCountAnalysis.total()``; its
  "flops" are one per multiply-accumulate, and by default it also counts
  batch norm, pooling, upsampling; ``fvcore (MAC ops)`` keeps only its
  conv/linear/matmul/bmm/einsum operators), ptflops (``backend="aten"`` —
  aten conv/mm/bmm — and ``backend="pytorch"`` — module hooks that also count
  bias, norms and activations; both report MACs), thop (``profile``, module
  hooks, MACs; functional ops such as attention matmuls are not seen),
  torchinfo (``total_mult_adds``, module hooks).

**Exactness** (one definition for every tool): ``rel_err = |MACs − ref| / ref``;
*exact* = ``rel_err ≤ 0.1%``; *identical* = ``MACs == ref`` (integers). The
issue's target for edgecnn is identical MACs and fx mode on every torchvision
classifier.

Run it only in the separate **benchmark venv** — large (a CUDA build of
torch, torchvision, timm and the four peers), never installed by CI nor in
the package's dependencies (torchvision's wheels on the package mirror do
not load against CI's CPU torch)::

    python3 -m venv /work/benchvenv
    /work/benchvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 timm fvcore ptflops thop \\
        torchinfo torch-pruning==1.6.1 numpy rich
    /work/benchvenv/bin/pip install -e . --no-deps
    nice -n 10 /work/benchvenv/bin/python benchmarks/analysis_coverage.py [--only torchvision|timm]
        [--models REGEX] [--tools edgecnn,fvcore,...] [--resume] [--timeout 300]

One thread (``torch.set_num_threads(1)``); the load average at start and end
is in the results. Progress is shown with rich; the results file is
rewritten after every model, and ``--resume`` skips the models it already
holds. Writes ``benchmarks/results/analysis_coverage.json`` (per-model rows
and a summary: share in fx mode, share exact, share with receptive fields,
per peer).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from edgecnn.analysis import analyze
from edgecnn.atomic import atomic_write_text

sys.path.insert(0, str(Path(__file__).parent))
from analysis_speed import machine  # noqa: E402  (a sibling script, not a package)

OUT = Path(__file__).parent / "results" / "analysis_coverage.json"
TOL = 1e-3  # "exact": within 0.1% of FlopCounterMode / 2
TV_SIZE = 224

# A broad timm list: each family at a small size (the point is coverage of the op patterns, not compute).
TIMM_MODELS = (
    # plain and residual CNNs
    "resnet18", "resnet50d", "resnext26ts", "seresnet18", "skresnet18", "res2net50_26w_4s", "resnest14d",
    "regnetx_002", "regnety_002", "regnetz_b16", "densenet121", "dla34", "cspresnet50", "cspdarknet53",
    "dpn68", "hrnet_w18_small", "selecsls42b", "ese_vovnet19b_dw", "gernet_s", "repvgg_a0", "mobileone_s0",
    "nf_resnet26", "inception_v3", "inception_v4", "xception41",
    # mobile / NAS families
    "mobilenetv2_100", "mobilenetv3_small_100", "mobilenetv3_large_100", "tf_mobilenetv3_large_100",
    "mobilenetv4_conv_small", "efficientnet_b0", "efficientnet_lite0", "tf_efficientnet_b0",
    "efficientnetv2_rw_t", "mnasnet_100", "fbnetc_100", "spnasnet_100", "mixnet_s", "ghostnet_100",
    "ghostnetv2_100", "rexnet_100", "lcnet_050", "tinynet_e", "hardcorenas_a", "semnasnet_100",
    # modern convnets and hybrids
    "convnext_atto", "convnextv2_atto", "edgenext_xx_small", "mobilevit_xxs", "mobilevitv2_050", "fastvit_t8",
    "efficientformer_l1", "efficientformerv2_s0", "efficientvit_b0", "efficientvit_m0", "levit_128s",
    "tiny_vit_5m_224", "repvit_m0_9", "poolformer_s12", "coatnet_nano_rw_224", "maxvit_nano_rw_256",
    "rdnet_tiny", "inception_next_atto", "starnet_s1",
    # transformers and MLPs
    "vit_tiny_patch16_224", "deit_tiny_patch16_224", "deit_tiny_distilled_patch16_224",
    "swin_tiny_patch4_window7_224", "swinv2_cr_tiny_224", "cait_xxs24_224", "xcit_nano_12_p16_224",
    "pvt_v2_b0", "twins_svt_small", "crossvit_tiny_240", "visformer_tiny", "mixer_s16_224", "resmlp_12_224",
    "gmlp_ti16_224", "convmixer_768_32", "beit_base_patch16_224", "eva02_tiny_patch14_224",
)  # fmt: skip

# The documented workaround for shape-dependent control flow (benchmarks/results/analysis_coverage_failures.md):
# keep the module that branches on a shape whole (leaf_modules); it is costed on meta tensors under FlopCounterMode.
LEAF_WORKAROUNDS = {
    "tf_mobilenetv3_large_100": "timm.layers.conv2d_same:Conv2dSame",
    "tf_efficientnet_b0": "timm.layers.conv2d_same:Conv2dSame",
    "mobilevit_xxs": "timm.models.mobilevit:MobileVitBlock",
    "mobilevitv2_050": "timm.models.mobilevit:MobileVitV2Block",
    "efficientvit_b0": "timm.models.efficientvit_mit:LiteMLA",
    "efficientvit_m0": "timm.models.efficientvit_msra:LocalWindowAttention",
    "tiny_vit_5m_224": "timm.models.tiny_vit:TinyVitBlock",
    "twins_svt_small": "timm.models.twins:LocallyGroupedAttn",
}

# fvcore operator names that are multiply-accumulates (the rest are its extra conventions: norms, pooling, ...)
FVCORE_MAC_OPS = ("conv", "linear", "matmul", "bmm", "einsum", "addmm", "mm", "baddbmm")

PEERS = ("fvcore", "ptflops (aten)", "ptflops (pytorch)", "thop", "torchinfo")
TOOLS = ("edgecnn", *PEERS)


class Timeout(Exception):
    """A tool ran past ``--timeout`` on one model."""


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Raise :class:`Timeout` in the main thread after ``seconds`` (checked between Python bytecodes)."""

    def fire(signum: int, frame: object) -> None:
        raise Timeout(f"over {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__


# ---------------------------------------------------------------- the model list


def model_list(only: str, pattern: str | None) -> list[tuple[str, str]]:
    """(source, name) pairs: torchvision's classifiers, then :data:`TIMM_MODELS` that this timm knows."""
    out: list[tuple[str, str]] = []
    if only in ("all", "torchvision"):
        import torchvision

        out += [("torchvision", n) for n in torchvision.models.list_models(module=torchvision.models)]
    if only in ("all", "timm"):
        import timm

        known = set(timm.list_models())
        out += [("timm", n) for n in TIMM_MODELS if n in known]
    if pattern:
        out = [(s, n) for s, n in out if re.search(pattern, n)]
    return out


def missing_timm() -> list[str]:
    """Names of :data:`TIMM_MODELS` this timm version does not have."""
    import timm

    known = set(timm.list_models())
    return [n for n in TIMM_MODELS if n not in known]


def build(source: str, name: str) -> tuple[nn.Module, tuple[int, int, int]]:
    """The model (random weights, eval mode) and its (C, H, W) input."""
    torch.manual_seed(0)
    if source == "torchvision":
        import torchvision

        model = torchvision.models.get_model(name, weights=None)
        size: tuple[int, int, int] = (3, TV_SIZE, TV_SIZE)
    else:
        import timm

        model = timm.create_model(name, pretrained=False)
        size = tuple(int(s) for s in model.pretrained_cfg.get("input_size", (3, 224, 224)))  # type: ignore[assignment]
    return model.eval(), size


# ---------------------------------------------------------------- the tools


def reference_macs(model: nn.Module, x: torch.Tensor, *, plain: bool = False) -> int:
    """FlopCounterMode total / 2 on a real forward pass: the number every tool is held to.

    With autograd on and attention forced onto its math path: under ``no_grad``
    ``nn.MultiheadAttention`` takes its fused fast path
    (``aten._native_multi_head_attention``) and on CPU
    ``F.scaled_dot_product_attention`` runs
    ``aten._scaled_dot_product_flash_attention_for_cpu``; FlopCounterMode has no
    formula for either (torch 2.14), so a plain ``no_grad`` forward misses the
    attention matmuls (torchvision's vit_b_32: 2.95 G instead of 4.41 G MACs).
    ``plain=True``: that plain ``no_grad`` forward, recorded to show the gap.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    mode = torch.no_grad() if plain else torch.enable_grad()
    kernel = contextlib.nullcontext() if plain else sdpa_kernel(SDPBackend.MATH)
    with mode, kernel, FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


def run_edgecnn(model: nn.Module, x: torch.Tensor) -> dict[str, Any]:
    a = analyze(model, tuple(x.shape[1:]))
    with_rf = [r for r in a.layers if r.rf_size is not None or r.rf_whole]
    out_rf = a.output_rf()
    local = [r for r in with_rf if not r.rf_whole]  # the last field before global pooling / flatten→linear
    info: dict[str, Any] = {
        "macs": a.macs,
        "mode": a.mode,
        "rows": len(a.layers),
        "rows_with_rf": len(with_rf),
        "rows_rf_whole": sum(1 for r in with_rf if r.rf_whole),
        "rows_rf_global": sum(1 for r in with_rf if getattr(r, "rf_global", False)),
        "rf": bool(with_rf),  # receptive fields present (fx mode only)
        "output_rf": out_rf.rf_label() if out_rf is not None else "",
        "last_local_rf": local[-1].rf_label() if local else "",
        "rule_free_rows": sum(1 for r in a.layers if r.note.startswith("no rule")),
    }
    if a.mode != "fx":
        info["fallback_reason"] = getattr(a, "fallback_reason", "") or (a.notes[0] if a.notes else "")
    return info


def run_fvcore(model: nn.Module, x: torch.Tensor) -> dict[str, Any]:
    from fvcore.nn import FlopCountAnalysis

    fa = FlopCountAnalysis(model, (x,))
    fa.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    by_op = fa.by_operator()
    unsupported = sorted(fa.unsupported_ops())
    return {
        "macs": int(fa.total()),  # fvcore's "flops" are MACs, plus its norm/pool/upsample counts
        "mac_ops_macs": int(sum(v for k, v in by_op.items() if k in FVCORE_MAC_OPS)),
        "by_operator": {k: int(v) for k, v in by_op.items()},
        "unsupported_ops": unsupported,
    }


def _ptflops(backend: str) -> Callable[[nn.Module, torch.Tensor], dict[str, Any]]:
    def run(model: nn.Module, x: torch.Tensor) -> dict[str, Any]:
        import ptflops

        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
            macs, _ = ptflops.get_model_complexity_info(model, tuple(x.shape[1:]), backend=backend,
                                                        as_strings=False, print_per_layer_stat=False,
                                                        verbose=False)  # fmt: skip
        if macs is None:  # ptflops reports its own failures by returning None
            raise RuntimeError("ptflops returned None (it caught an error)")
        return {"macs": int(macs)}

    return run


def run_thop(model: nn.Module, x: torch.Tensor) -> dict[str, Any]:
    import thop

    macs, _ = thop.profile(model, inputs=(x,), verbose=False)
    return {"macs": int(macs)}


def run_torchinfo(model: nn.Module, x: torch.Tensor) -> dict[str, Any]:
    import torchinfo

    stats = torchinfo.summary(model, input_data=x, verbose=0, device="cpu")
    return {"macs": int(stats.total_mult_adds)}


RUNNERS: dict[str, Callable[[nn.Module, torch.Tensor], dict[str, Any]]] = {
    "edgecnn": run_edgecnn,
    "fvcore": run_fvcore,
    "ptflops (aten)": _ptflops("aten"),
    "ptflops (pytorch)": _ptflops("pytorch"),
    "torchinfo": run_torchinfo,
    "thop": run_thop,  # last: it leaves buffers on every module
}


def compare(macs: int, ref: int) -> dict[str, Any]:
    rel = abs(macs - ref) / ref if ref else (0.0 if macs == 0 else float("inf"))
    return {"rel_err": round(rel, 6), "exact": rel <= TOL, "identical": macs == ref}


def measure(source: str, name: str, tools: tuple[str, ...], timeout: int) -> dict[str, Any]:
    """One model's row: the reference, then each tool (its failure is recorded, not raised)."""
    row: dict[str, Any] = {"source": source, "model": name}
    try:
        with time_limit(timeout):
            t0 = time.perf_counter()
            model, size = build(source, name)
            row["build_s"] = round(time.perf_counter() - t0, 2)
            x = torch.zeros(1, *size)
            row["input"] = list(x.shape)
            row["params"] = sum(p.numel() for p in model.parameters())
            t0 = time.perf_counter()
            ref = reference_macs(model, x)
            row["ref_ms"] = round((time.perf_counter() - t0) * 1e3, 1)
            row["ref_macs"] = ref
            try:  # what a plain no_grad forward counts
                row["ref_no_grad_macs"] = reference_macs(model, x, plain=True)
            except Exception as exc:  # FlopCounterMode's module tracker fails under no_grad on some models (cait)
                row["ref_no_grad_macs"] = None
                row["ref_no_grad_error"] = first_line(exc)
    except Exception as exc:  # the model itself does not build or run: no row to compare
        row["error"] = first_line(exc)
        return row
    for tool in tools:
        t0 = time.perf_counter()
        try:
            with time_limit(timeout), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                info = RUNNERS[tool](model, x)
            info = {"ok": True, **info, **compare(info["macs"], ref)}
        except Exception as exc:  # a tool that fails on a model is what this benchmark counts
            info = {"ok": False, "error": first_line(exc)}
        info["ms"] = round((time.perf_counter() - t0) * 1e3, 1)
        if tool == "fvcore" and info["ok"]:
            info["mac_ops"] = compare(info["mac_ops_macs"], ref)
        row[tool] = info
    if "edgecnn" in tools and source == "timm" and name in LEAF_WORKAROUNDS:
        row["edgecnn_leaf_modules"] = run_leaf_workaround(model, x, LEAF_WORKAROUNDS[name], ref)
    del model
    gc.collect()
    return row


def run_leaf_workaround(model: nn.Module, x: torch.Tensor, leaf: str, ref: int) -> dict[str, Any]:
    """edgecnn in fx mode with the module that branches on a shape kept whole (``leaf_modules``)."""
    import importlib

    module, _, cls = leaf.partition(":")
    t0 = time.perf_counter()
    try:
        a = analyze(model, tuple(x.shape[1:]), leaf_modules=(getattr(importlib.import_module(module), cls),))
        info = {"ok": True, "leaf_modules": [leaf], "macs": a.macs, "mode": a.mode,
                "rf": any(r.rf_size is not None or r.rf_whole for r in a.layers), **compare(a.macs, ref)}  # fmt: skip
    except Exception as exc:  # the workaround failing is a result too
        info = {"ok": False, "leaf_modules": [leaf], "error": first_line(exc)}
    info["ms"] = round((time.perf_counter() - t0) * 1e3, 1)
    return info


# ---------------------------------------------------------------- summary and table


def _share(n: int, d: int) -> dict[str, Any]:
    return {"n": n, "of": d, "share": round(n / d, 4) if d else None}


def summarize(rows: list[dict[str, Any]], tools: tuple[str, ...]) -> dict[str, Any]:
    """Per source (and all): shares per tool (ran, exact, identical; edgecnn also fx mode and receptive fields)."""
    out: dict[str, Any] = {}
    for source in ("torchvision", "timm", "all"):
        sel = [r for r in rows if source in ("all", r["source"]) and "ref_macs" in r]
        if not sel:
            continue
        s: dict[str, Any] = {"models": len(sel), "models_not_built": sum(
            1 for r in rows if source in ("all", r["source"]) and "ref_macs" not in r)}  # fmt: skip
        for tool in tools:
            got = [r[tool] for r in sel if tool in r]
            ok = [i for i in got if i["ok"]]
            t = {"ran": _share(len(ok), len(got)), "exact": _share(sum(i["exact"] for i in ok), len(got)),
                 "identical": _share(sum(i["identical"] for i in ok), len(got))}  # fmt: skip
            if tool == "edgecnn":
                t["fx_mode"] = _share(sum(i["mode"] == "fx" for i in ok), len(got))
                t["receptive_fields"] = _share(sum(i["rf"] for i in ok), len(got))
                t["fx_and_identical"] = _share(sum(i["mode"] == "fx" and i["identical"] for i in ok), len(got))
                leafy = [r["edgecnn_leaf_modules"] for r in sel if "edgecnn_leaf_modules" in r]
                t["fx_with_leaf_modules_workaround"] = _share(
                    sum(i["mode"] == "fx" for i in ok) + sum(i.get("mode") == "fx" and i["identical"] for i in leafy),
                    len(got))  # fmt: skip
            if tool == "fvcore":
                t["mac_ops_exact"] = _share(sum(i["mac_ops"]["exact"] for i in ok), len(got))
            t["median_ms"] = sorted(i["ms"] for i in got)[len(got) // 2] if got else None
            s[tool] = t
        out[source] = s
    return out


def print_table(rows: list[dict[str, Any]], summary: dict[str, Any], tools: tuple[str, ...]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    table = Table(title="MACs against FlopCounterMode/2 (✓ identical, ≈ within 0.1%, ✗ off, — failed)")
    for col in ("model", "ref MACs", "edgecnn mode", "last local RF", *tools):
        table.add_column(col, justify="right" if col == "ref MACs" else "left")
    for r in rows:
        if "ref_macs" not in r:
            table.add_row(f"{r['source'][:2]}/{r['model']}", "—", r.get("error", "")[:60], *[""] * (len(tools) + 1))
            continue
        cells = []
        for tool in tools:
            i = r.get(tool)
            if i is None:
                cells.append("")
            elif not i["ok"]:
                cells.append("[red]— fail[/red]")
            else:
                mark = "[green]✓[/green]" if i["identical"] else "≈" if i["exact"] else "[red]✗[/red]"
                cells.append(f"{mark} {i['rel_err'] * 100:.2f}%")
        e = r.get("edgecnn", {})
        mode = e.get("mode", "—") if e.get("ok") else "fail"
        if e.get("fallback_reason"):
            mode += f" ({e['fallback_reason'][:40]})"
        table.add_row(f"{r['source'][:2]}/{r['model']}", f"{r['ref_macs']:,}", mode,
                      e.get("last_local_rf", "") if e.get("ok") else "", *cells)  # fmt: skip
    console.print(table)
    for source, s in summary.items():
        parts = []
        for tool in tools:
            t = s.get(tool)
            if t is None:
                continue
            extra = ""
            if tool == "edgecnn":
                extra = f", fx {t['fx_mode']['n']}, RF {t['receptive_fields']['n']}"
            parts.append(f"{tool}: ran {t['ran']['n']}, exact {t['exact']['n']}, identical {t['identical']['n']}{extra}")
        console.print(f"[bold]{source}[/bold] ({s['models']} models): " + "; ".join(parts))


# ---------------------------------------------------------------- main


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for pkg in ("torch", "torchvision", "timm", "fvcore", "ptflops", "thop", "torchinfo", "torch-pruning"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def write(path: Path, doc: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=("all", "torchvision", "timm"), default="all", help="which model list")
    p.add_argument("--models", help="regex: only the models whose name matches")
    p.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated subset of {', '.join(TOOLS)}")
    p.add_argument("--timeout", type=int, default=300, help="seconds per tool per model (default 300)")
    p.add_argument("--resume", action="store_true", help="keep the results already in --out, run the others")
    p.add_argument("--rerun", default="", help="with --resume: tools to run again even where --out has them "
                   "(e.g. edgecnn after a change to the analysis; the peers are kept)")
    p.add_argument("--out", type=Path, default=OUT, help=f"JSON result (default {OUT})")
    args = p.parse_args(argv)
    tools = tuple(t.strip() for t in args.tools.split(",") if t.strip())
    rerun = {t.strip() for t in args.rerun.split(",") if t.strip()}
    bad = [t for t in (*tools, *rerun) if t not in RUNNERS]
    if bad:
        raise SystemExit(f"unknown tool(s) {bad}; choose from {', '.join(TOOLS)}")
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    from rich.progress import Progress

    models = model_list(args.only, args.models)
    done: dict[tuple[str, str], dict[str, Any]] = {}
    if args.resume and args.out.exists():
        done = {(r["source"], r["model"]): r for r in json.loads(args.out.read_text()).get("rows", [])}
    doc: dict[str, Any] = {
        "benchmark": "analysis_coverage",
        "edgecnn_commit": _commit(),
        "versions": _versions(),
        "machine_at_start": machine(),
        "load_note": "2 cores shared with up to 6 other processes' work; run under nice -n 10, 1 thread",
        "exactness": f"rel_err = |MACs - ref| / ref with ref = FlopCounterMode total / 2 on a real forward (eval, "
                     "autograd on, sdpa math backend: FlopCounterMode counts no fused/CPU-flash attention); "
                     f"exact = rel_err <= {TOL:.1%}; identical = MACs == ref",
        "timm_missing": missing_timm() if args.only in ("all", "timm") else [],
        "tools": list(tools),
        "rerun_on_resume": sorted(rerun) if args.resume else None,  # the other tools' results come from an earlier run
    }
    rows: list[dict[str, Any]] = []
    doc["rows"] = list(done.values())
    doc["summary"] = summarize(doc["rows"], tools)
    with Progress() as progress:
        task = progress.add_task("models", total=len(models))
        for source, name in models:
            progress.update(task, description=f"{source}/{name}")
            prev = done.get((source, name), {})
            run = tuple(t for t in tools if t in rerun or t not in prev)
            row = measure(source, name, run, args.timeout) if run else prev
            if run:
                row["measured_at"] = {"commit": doc["edgecnn_commit"], "tools": list(run)}
            for tool in tools:  # kept from --out: compared again against this run's reference
                if tool not in run and tool in prev and "ref_macs" in row:
                    kept = prev[tool]
                    row[tool] = {**kept, **(compare(kept["macs"], row["ref_macs"]) if kept["ok"] else {})}
            rows.append(row)
            done.pop((source, name), None)
            doc["rows"] = rows + list(done.values())  # rows not run (yet, or filtered out) are kept
            doc["summary"] = summarize(doc["rows"], tools)
            write(args.out, doc)
            progress.advance(task)
    doc["machine_at_end"] = machine()
    write(args.out, doc)
    print_table(doc["rows"], doc["summary"], tools)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
