"""The demo's tables on the console (rich) and its Markdown report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from edgecnn.demo.config import BlockRow, DemoResult
from edgecnn.report import Md, markdown, md_code, md_link


def block_table(rows: tuple[BlockRow, ...]) -> Table:
    """Per block: cost against measured latency (eager)."""
    table = Table(title="per block: cost vs measured latency (eager)")
    for col in ("block", "arch", "params", "MACs", "ms", "µs/MMAC"):
        table.add_column(col, justify="left" if col in ("block", "arch") else "right")
    for r in rows:
        table.add_row(r.name, r.block, f"{r.params:,}", f"{r.macs / 1e6:.2f}M", f"{r.ms:.3f}",
                      f"{r.us_per_mmac:.0f}" if r.macs else "–")  # fmt: skip
    return table


def closing_table(d: DemoResult, report: Path) -> Table:
    """Baseline against the compressed result on the target (timed back to back), eager for reference, int8 beside
    fp32, the verdict; and where the report is."""
    r = d.result or {}
    table = Table(title=f"baseline vs result on {d.target}" + (f": {r['stopped']}" if r.get("stopped") else ""))
    for col in ("", "baseline", "result (NetAdapt)" if r else "result (compression off)"):
        table.add_column(col, justify="left" if not col else "right")

    def ms(v: Any) -> str:
        return f"{v:.3f} ms" if isinstance(v, (int, float)) else "–"

    i8 = r.get("int8") or {}
    base = r.get("baseline_target_ms", (d.targets_ms or {}).get(d.target))
    ratio = f" ({r['measured_ratio']:.0%})" if isinstance(r.get("measured_ratio"), float) else ""
    rows = [("test top-1", f"{d.top1:.2%}", f"{r['top1']:.2%}" if r else "–"),
            (f"latency, {d.target} (back to back)", ms(base), ms(r.get("target_ms")) + ratio),
            ("latency, eager (for reference)", ms(d.eager_ms), ms(r.get("eager_ms"))),
            ("MACs", f"{d.macs / 1e6:.2f} M", f"{r['macs'] / 1e6:.2f} M" if r else "–"),
            ("params", f"{d.params:,}", f"{r['params']:,}" if r else "–")]  # fmt: skip
    if i8:
        rows.append((f"{i8['target']} fp32 / int8: top-1, latency", "–",
                     f"{i8['top1_fp32']:.2%}, {ms(i8.get('latency_fp32_ms'))} / {i8['top1_int8']:.2%}, "
                     f"{ms(i8.get('latency_int8_ms'))}"))  # fmt: skip
        rows.append(("deployed form", "–", f"{i8['kept']}"))
    rows.append(("report", str(report), ""))
    for row in rows:
        table.add_row(*row)
    return table


def to_markdown(d: DemoResult) -> str:
    """The demo's report as Markdown; every value escaped (:func:`edgecnn.report.markdown`).

    Class names come from folder names and the data name from a path, so a
    value may hold ``<img onerror=…>`` or ``|``: :func:`~edgecnn.report.markdown`
    backslash-escapes HTML and Markdown syntax in every field, and
    :func:`~edgecnn.report.md_code` / :func:`~edgecnn.report.md_link` make the
    code spans and links.
    """
    lines = _summary_lines(d) + _dynamics_lines(d)
    if d.result:
        lines += _netadapt_lines(d)
    if d.cam:
        pairs = Md(", ").join(md_link(f"{r['label']} → {r['predicted']}", r["file"]) for r in d.cam["images"])
        lines += ["", markdown("{} at {} ({}, {} convention): {}", d.cam["method"], md_code(d.cam["layer"]),
                               d.cam["interp"], d.cam["convention"], pairs)]  # fmt: skip
    return "\n".join(lines) + "\n"


def _summary_lines(d: DemoResult) -> list[str]:
    """The baseline: data, arch, costs, accuracy, latency on every runtime, and its per-block table."""
    onnx = markdown("{:.2f} ms", d.onnx_ms) if d.onnx_ms is not None else Md(
        "not measured (install the `[onnx]` extra)")  # fmt: skip
    lines: list[str] = [
        "# edgecnn demo report",
        "",
        markdown("- data: {}", d.data),
        markdown("- arch: {}", md_code(d.arch)),
        markdown("- parameters: {:,}; multiply-adds: {:,} per image (FLOPs = 2·MACs)", d.params, d.macs),
        markdown("- output receptive field: {}", d.receptive_field),
        markdown("- test top-1 {:.2%}, top-5 {:.2%} (training {:.1f} s, {:,.0f} img/s)", d.top1, d.top5,
                 d.train_seconds, d.images_per_s),  # fmt: skip
        markdown("- latency, batch 1, {} thread(s) on {}: PyTorch eager {:.2f} ms, ONNX Runtime {}",
                 d.machine.get("threads"), d.machine.get("cpu"), d.eager_ms, onnx),  # fmt: skip
        markdown("- deployment target: {} (the baseline end to end: {})", d.target,
                 ", ".join(f"{k} {v:.3f} ms" for k, v in (d.targets_ms or {}).items())),  # fmt: skip
        "",
        "| block | arch | params | MACs | ms (eager, alone) | µs per M MACs |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in d.blocks:
        eff = markdown("{:.0f}", r.us_per_mmac) if r.macs else "–"
        lines.append(markdown("| {} | {} | {:,} | {:,} | {:.3f} | {} |", r.name, md_code(r.block), r.params, r.macs,
                              r.ms, eff))  # fmt: skip
    return lines


def _dynamics_lines(d: DemoResult) -> list[str]:
    """The baseline's effective receptive field and gradient flow, where measured."""
    lines: list[str] = []
    if d.erf:
        e = d.erf
        lines += ["", markdown("Effective receptive field of {} (centre unit, {} random inputs): 50% of the mass "
                               "within {:.1f} px, 95% within {:.1f} px.", md_code(e["layer"]), e["samples"],
                               e["radius50"], e["radius95"])]  # fmt: skip
    if d.gradflow:
        runs = d.gradflow["runs"]
        lines += ["", "Gradient flow (‖∂L/∂output‖, first layer / last layer): " + "; ".join(
            markdown("{} {:.3g} / {:.3g}", k, v["layers"][0]["output_grad_norm"], v["layers"][-1]["output_grad_norm"])
            for k, v in runs.items())]  # fmt: skip
    return lines


def _netadapt_lines(d: DemoResult) -> list[str]:
    """The compressed result against the baseline, int8, and NetAdapt's iterations."""
    r, na = d.result or {}, d.netadapt or {}
    lines = ["", markdown("## NetAdapt to {:.3f} ms (by the table)", na.get("budget_ms", float("nan"))), "",
             markdown("- result arch: {}", md_code(r["arch"])),
             markdown("- test top-1 {:.2%} (baseline {:.2%}); on {} (baseline and result back to back): "
                      "{:.3f} ms vs {:.3f} ms = {:.0%}; {}; eager {:.3f} ms (baseline {:.3f} ms); {:,} MACs; "
                      "{:,} params", r["top1"], d.top1, d.target, r.get("target_ms"), r.get("baseline_target_ms"),
                      r.get("measured_ratio"), r.get("stopped", ""), r["eager_ms"], d.eager_ms, r["macs"],
                      r["params"]),
             markdown("- {} BatchNorm(s) folded; ONNX: {}", r["bn_folded"],
                      r["onnx"] or "not exported")]  # fmt: skip
    if r.get("int8"):
        i8 = r["int8"]
        lines.append(markdown("- int8 ({}): top-1 {:.2%} vs fp32 {:.2%}, {:.3f} vs {:.3f} ms; {}",
                              i8.get("target", "onnxruntime"), i8["top1_int8"], i8["top1_fp32"],
                              i8["latency_int8_ms"], i8["latency_fp32_ms"], i8.get("reason", "")))  # fmt: skip
    lines += ["", "| iteration | step | ms (table) | hold-out top-1 |", "|---:|---|---:|---:|"]
    lines += [markdown("| {} | {} | {:.3f} | {:.2%} |", h["iteration"], h["block"], h["latency_ms"], h["top1"])
              for h in na.get("history", [])]  # fmt: skip
    return lines
