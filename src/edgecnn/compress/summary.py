"""The results document of a compression run (``kind: "compress"``), shared by every method and the benchmark.

A results document (:mod:`edgecnn.run_document`, ``run_dir/results.json``) the
report renderer can show without knowing the method:
the network before and after (top-1, measured latency, MACs, params, arch),
the budget, and a per-iteration ``history`` (NetAdapt) — schema in
``docs/compress.md``. :func:`model_stats` measures one network for it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.table import Table
from torch import nn

from edgecnn.analysis import analyze
from edgecnn.analysis.spec_cost import cost_from_spec
from edgecnn.data import DataSet
from edgecnn.latency.measure import TimingConfig, measure
from edgecnn.run_document import write_results
from edgecnn.train.evaluation import evaluate

KIND = "compress"
QUICK_TIMING = TimingConfig(warmup=5, min_repeats=10, max_repeats=200, max_seconds=3.0, retries=1, retry_wait_s=0.5)


@dataclass(frozen=True)
class ModelStats:
    """One network, as the closing table shows it."""

    arch: str | None
    top1: float  # test top-1
    latency_ms: float | None  # measured median, batch 1 (None: not measured)
    macs: int  # per image
    params: int


def model_stats(model: nn.Module, data: DataSet, *, backend: str = "eager", threads: int | None = None,
                timing: TimingConfig | None = QUICK_TIMING, measure_latency: bool = True,
                device: str = "cpu") -> ModelStats:  # fmt: skip
    """Test top-1, measured latency (batch 1), MACs and params of a network on ``data``.

    An EdgeNet's MACs and params come from its arch string (closed form); any
    other module's (a low-rank or separable result, a PlainNet) from
    :func:`edgecnn.analysis.analyze` on one traced pass — the same numbers for an EdgeNet.
    """
    arch = getattr(model, "arch", None)
    if isinstance(arch, str):
        cost = cost_from_spec(arch, data.image_size, data.num_classes, data.in_chans)
    else:
        arch = None
        cost = analyze(model, (data.in_chans, data.image_size, data.image_size), receptive_fields=False)
    top1 = evaluate(model, data, channels_last=False).top1
    ms = None
    if measure_latency:
        shape = (1, data.in_chans, data.image_size, data.image_size)
        ms = measure(model.eval(), shape, backend=backend, threads=threads, config=timing,
                     device=device).stats.median_ms  # fmt: skip
    return ModelStats(arch, top1, ms, cost.macs, cost.params)


def history_step(h: dict[str, Any]) -> str:
    """One NetAdapt iteration as the console says it: ``group 12: 64→8`` or ``blocks.3 dropped``."""
    desc = str(h.get("description", ""))
    if h.get("group", 0) == -1 or "dropped" in desc:
        return desc.split(" (")[0]
    return f"{desc.split(':')[0].split(',')[0]}: {h.get('width_before')}→{h.get('width_after')}"


def compress_document(method: str, budget: dict[str, Any], before: ModelStats, after: ModelStats, *,
                      met: bool, history: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:  # fmt: skip
    """The body of the ``kind: "compress"`` results document (see docs/compress.md, "The results document").

    Besides the compression fields it carries the summary scalars the report
    draws for any kind (``arch``, ``params``, ``macs``, ``top1``) for the result, and
    for a latency budget the ``netadapt`` section of the report contract
    (docs/report.md: ``budget_ms`` and per iteration ``latency_ms``, ``top1``,
    ``block``; iteration 0 is the network before).
    """
    body = {"method": method, "budget": budget, "met": met, "before": asdict(before), "after": asdict(after),
            "history": history or [], "arch": after.arch, "params": after.params, "macs": after.macs,
            "top1": after.top1, **extra}  # fmt: skip
    if history and budget.get("resource") == "latency":
        first = {"iteration": 0, "latency_ms": budget.get("start"), "top1": before.top1, "block": "before"}
        body["netadapt"] = {"budget_ms": budget.get("target"), "history": [first, *history_rows(history)]}
    return body


def history_rows(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """NetAdapt iterations as the report's ``netadapt.history`` rows (docs/report.md), iteration 0 left to the
    caller: ``{iteration, latency_ms, top1, block}``."""
    return [{"iteration": h["iteration"], "latency_ms": h["resource"], "top1": h["top1"], "block": history_step(h)}
            for h in history]  # fmt: skip


def write_document(body: dict[str, Any], run_dir: str | os.PathLike[str]) -> Path:
    """Write ``run_dir/results.json`` (``kind: "compress"``) atomically through :func:`edgecnn.run_document.write_results`."""
    return write_results(run_dir, KIND, body)


def closing_table(doc: dict[str, Any]) -> Table:
    """The console's closing table, drawn from the results document itself, so it says what the report says:
    before and after on the target (the back-to-back measurement), their ratio with its noise band, int8 beside
    fp32 where it was deployed, and the stop reason."""
    before, after, m = doc["before"], doc["after"], doc.get("measured") or {}
    where = f"{doc.get('backend', '?')}, {doc.get('threads', '?')} thread(s)"
    t = Table(title=f"{doc.get('method')} to {(doc.get('budget') or {}).get('text', '?')}: "
                    f"{'met' if doc.get('met') else 'NOT met'} — {doc.get('stopped', '')}")  # fmt: skip
    for c in ("", "top-1", f"latency, ms ({where})", "MACs", "params"):
        t.add_column(c, justify="right" if c else "left")

    def ms(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, (int, float)) else "-"

    for name, s in (("before", before), ("after", after)):
        t.add_row(name, f"{s['top1']:.2%}", ms(s.get("latency_ms")), f"{s['macs']:,}", f"{s['params']:,}")
    band = m.get("band")
    ratio = (f"{m['ratio']:.2f}× (rounds {band[0]:.2f}–{band[1]:.2f}×)" if m.get("ratio") and band else "-")
    t.add_row("after / before", f"{after['top1'] - before['top1']:+.2%}", ratio,
              f"{after['macs'] / before['macs']:.2f}×", f"{after['params'] / before['params']:.2f}×")  # fmt: skip
    i8 = doc.get("int8")
    if i8:
        t.add_row(f"after, {i8['target']} fp32", f"{i8['top1_fp32']:.2%}", ms(i8.get("latency_fp32_ms")), "", "")
        t.add_row(f"after, {i8['target']} int8", f"{i8['top1_int8']:.2%}", ms(i8.get("latency_int8_ms")), "", "")
        t.add_row("kept", i8["kept"], "", "", "")
    return t
