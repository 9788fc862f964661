"""``run_demo``: the demo's stages in order (one function per stage, in the modules of :mod:`edgecnn.demo`), the
results document and the report."""

from __future__ import annotations

import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from edgecnn.atomic import atomic_write_text
from edgecnn.build import count_params
from edgecnn.data import DataSet
from edgecnn.demo.baseline import Baseline, analyze_stage, data_stage, dynamics_stage, model_arch, train_stage
from edgecnn.demo.cam import cam_stage
from edgecnn.demo.compress import compress_stages
from edgecnn.demo.config import DemoConfig, DemoResult, EpochRow, Network
from edgecnn.demo.latency import Timed, latency_stage, table_stage
from edgecnn.demo.render import closing_table, to_markdown
from edgecnn.run_folder import claim_run_dir
from edgecnn.demo.stage_log import StageLog
from edgecnn.report import render_html
from edgecnn.run_document import read_results, write_results
from edgecnn.train.task import DataRef


def run_demo(cfg: DemoConfig = DemoConfig(), *, console: Console | None = None,
             network: Network | None = None) -> DemoResult:  # fmt: skip
    """Train ``cfg.model`` on ``cfg.data``, analyse it, time it, explain it, and write the report.

    ``network``: a network of your own code instead of a zoo name or arch string (``edgecnn demo --model
    MODULE:FN[:key=value,...]``; ``cfg.model`` is then its label). It has no arch string, so its per-block rows are
    its top-level modules, NetAdapt prunes it in module space and measures every proposal end to end on the target
    (no latency table), and the result's checkpoint records the pruning steps and the constructor.
    """
    console = console or Console()
    arch = model_arch(cfg) if network is None else None  # a bad model is refused before anything is created
    out = claim_run_dir(cfg.out_dir, overwrite=cfg.overwrite, resumable=False)  # writable, no previous results replaced
    log = StageLog(console)
    ref, data = data_stage(log, cfg)
    base = analyze_stage(log, cfg, arch, data, network)
    trained, meta = train_stage(log, cfg, base, data, out)
    erf, gradflow = dynamics_stage(log, base, data, cfg.seed)
    timed = latency_stage(log, cfg, base)
    explained, netadapt, compressed = _compress(log, cfg, base, ref, data, timed, out, meta)
    cam = cam_stage(log, cfg, explained, data, out, "the result" if compressed else "the baseline")
    demo = DemoResult(
        arch=arch or cfg.model, data=data.name, params=count_params(base.model), macs=base.macs,
        top1=trained.final.top1, top5=trained.final.top5, train_seconds=trained.seconds,
        images_per_s=trained.images_per_s, receptive_field=base.receptive_field, eager_ms=timed.eager_ms,
        onnx_ms=timed.targets_ms.get("onnxruntime"), blocks=timed.rows,
        machine={"platform": platform.platform(), "cpu": timed.cpu, "torch": torch.__version__,
                 "threads": cfg.threads},
        out_dir=str(out), history=tuple(EpochRow.of(e) for e in trained.history), input_size=cfg.image_size,
        cam=cam, stages=tuple(log.to_list()), netadapt=netadapt, result=compressed, erf=erf, gradflow=gradflow,
        pareto=_pareto(trained.final.top1, timed.targets_ms[timed.target], timed.target, compressed),
        target=timed.target, targets_ms=timed.targets_ms,
    )  # fmt: skip
    report_stage(demo, cfg, out, console)
    return demo


def _compress(log: StageLog, cfg: DemoConfig, base: Baseline, ref: DataRef, data: DataSet, timed: Timed,
              out: Path, meta: dict[str, Any]
              ) -> tuple[torch.nn.Module, dict[str, Any] | None, dict[str, Any] | None]:  # fmt: skip
    """The compression half (:mod:`edgecnn.demo.compress`) on the target's latency table: (the network to explain,
    the NetAdapt section, the result document); the baseline and (None, None) with compression turned off."""
    if cfg.compress is None:
        log.skip("netadapt", "NetAdapt, fold BN, ONNX and int8", "compression turned off (--no-compress)")
        return base.model, None, None
    latency = table_stage(log, cfg, base.arch, timed.target, out, data, timed.targets_ms)
    return compress_stages(
        base.model, ref, data, latency, target=timed.target, device=cfg.device, settings=cfg.compress, log=log,
        out=out, meta=meta, record=base.record, threads=cfg.threads, timing=timed.timing, batch_size=cfg.batch_size,
        seed=cfg.seed)  # fmt: skip


def _pareto(top1: float, baseline_ms: float, target: str, compressed: dict[str, Any] | None) -> dict[str, Any]:
    """The report's accuracy-vs-latency points: the baseline and, when compressed, the NetAdapt result, both as
    timed back to back on the target (the baseline alone when not compressed)."""
    points = [{"name": "baseline", "latency_ms": baseline_ms, "top1": top1}]
    if compressed:
        points = [{"name": "baseline", "latency_ms": compressed["baseline_target_ms"], "top1": top1},
                  {"name": "NetAdapt result", "latency_ms": compressed["target_ms"], "top1": compressed["top1"]}]
    return {"points": points, "reference": [], "latency": f"measured, {target}, batch 1", "top1": "test"}


def report_stage(demo: DemoResult, cfg: DemoConfig, out: Path, console: Console) -> None:
    """``results.json``, ``report.md`` and ``report.html`` (drawn from the document as written), and the closing
    table on the console."""
    write_results(out, "demo", {"config": asdict(cfg), **asdict(demo)})
    atomic_write_text(out / "report.md", to_markdown(demo))
    # the page is drawn from the document as written, exactly as `edgecnn report` would draw it later
    atomic_write_text(out / "report.html", render_html(read_results(out), run_dir=out))
    console.rule("[bold]done")
    console.print(closing_table(demo, out / "report.html"))
    console.print(f"report: {out / 'report.html'}  {out / 'report.md'}  results: {out / 'results.json'}  "
                  f"checkpoint: {out / 'model.pt'}")  # fmt: skip
