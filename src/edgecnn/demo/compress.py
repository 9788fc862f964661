"""The demo's compression half: NetAdapt to a share of the baseline's latency on the deployment target, fold BN,
ONNX, int8, evaluation.

``edgecnn demo`` (:mod:`edgecnn.demo`) trains a baseline, picks the deployment
target (the fastest runtime installed here, measured) and builds the target's
latency table; these stages then run the main job's pipeline on it (docs/design.md, "Data flow"):

1. **NetAdapt** (:func:`edgecnn.compress.netadapt.loop.netadapt`; Yang et al. 2018)
   to ``budget`` × the baseline's latency, through the one compression run
   (:func:`edgecnn.compress.job.run_measured`). The meter is the target's
   latency table plus interpolation across widths
   (:class:`edgecnn.latency.model.LatencyModel`, measuring only a block it cannot
   interpolate), so a proposal costs microseconds, not a timing loop; the baseline
   and the result are then timed **back to back on the target** and, where the
   measured result misses the budget, NetAdapt goes on toward a table bound
   refitted to those measurements (``measured_rounds``).
   Proposals narrow a channel group or, with ``drop_blocks`` (the default),
   remove a block with an identity skip (:mod:`edgecnn.compress.netadapt.drop_block`): at
   32×32 this network's latency is per-layer overhead more than width, and
   narrowing alone stalled at 93% of the baseline.
2. **Fold BN** (:func:`edgecnn.compress.fold_bn`; Jacob et al. 2018 §3.2), with
   the largest output difference against the unfolded result.
3. **ONNX export** of the folded network (:func:`edgecnn.export.export_onnx`) and
   **int8** as a measured choice on the target (:func:`edgecnn.deploy.deploy`; ONNX
   Runtime where the target has no int8), skipped with the reason where the
   runtime is missing.
4. **Evaluate** the result on the test split: top-1, MACs, params, and the
   latency of the back-to-back comparison (eager beside it, for reference).

What they produce goes into the demo's results document as ``netadapt`` (the
report's NetAdapt section, docs/report.md) and ``result`` (the closing table).
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from edgecnn.progress import progress_bar, run_callbacks
from edgecnn.analysis import analyze
from edgecnn.analysis.spec_cost import cost_from_spec
from edgecnn.build import EdgeNet
from edgecnn.checkpoint import checkpoint_of, save_checkpoint
from edgecnn.compress.budget import Budget
from edgecnn.compress.fold_bn import fold_bn, plan_fold_bn
from edgecnn.compress.summary import history_rows, history_step
from edgecnn.compress.job import Check, MeasuredRun, run_measured
from edgecnn.compress.netadapt.loop import Iteration, NetAdaptConfig, ResourceMeter
from edgecnn.compress.netadapt.state import prune_record
from edgecnn.data import DataSet
from edgecnn.demo.config import CompressSettings
from edgecnn.deploy import deploy_int8
from edgecnn.export import export_onnx
from edgecnn.latency.measure import TimingConfig, measure
from edgecnn.latency.model import LatencyModel
from edgecnn.demo.stage_log import StageLog
from edgecnn.train.config import FINETUNE
from edgecnn.train.evaluation import evaluate
from edgecnn.train.task import DataRef

__all__ = ["compress_stages"]


def _netadapt_section(run: MeasuredRun) -> dict[str, Any]:
    """The report's ``netadapt`` section (docs/report.md): iteration 0 is the baseline; latency by the meter.

    Later passes (the measured result missed the budget) continue the iteration count.
    """
    r, last = run.passes[0], run.passes[-1]
    first = {"iteration": 0, "latency_ms": r.start, "top1": r.start_top1, "block": "baseline"}
    its = run.history
    return {"budget_ms": r.target, "start_ms": r.start, "result_ms": last.resource, "met": r.resource <= r.target,
            "stopped": last.stopped, "round_budgets_ms": [x.target for x in run.passes],
            "meter": "latency table + interpolation across widths (edgecnn.latency.LatencyModel), "
                     "its target corrected by measuring the result back to back (rounds)",
            "measured": run.comparison.to_dict(), "verdict": run.verdict.to_dict() if run.verdict else None,
            "measured_met": run.met, "measured_stopped": run.stopped,
            "history": [first, *history_rows(its)], "iterations": its}  # fmt: skip


def compress_stages(
    model: EdgeNet,
    ref: DataRef,
    data: DataSet,
    latency: LatencyModel,
    *,
    target: str,
    device: str = "cpu",
    settings: CompressSettings,
    log: StageLog,
    out: Path,
    meta: dict[str, Any],
    record: dict[str, Any] | None = None,
    threads: int,
    timing: TimingConfig,
    batch_size: int,
    seed: int,
) -> tuple[EdgeNet, dict[str, Any], dict[str, Any]]:
    """Run NetAdapt → fold BN → ONNX (+ int8) → evaluate on the trained ``model``; returns (result, netadapt, result doc).

    ``model`` is not changed. ``target``: the deployment runtime the latency table was built on and the result
    is checked on (the baseline and the result timed back to back there, :mod:`edgecnn.compress.job`).
    ``record``: for a network of your own code (no arch string), the checkpoint config that rebuilds it (its
    constructor); the result's checkpoint adds the pruning steps (NetAdapt then prunes in module space, no
    block drops).
    """
    shape = (data.in_chans, data.image_size, data.image_size)
    how = Check(backend=target, threads=threads, device=device, rounds=3, tolerance=settings.tolerance,
                measured_rounds=settings.measured_rounds)  # fmt: skip
    run = _netadapt_stage(log, model, ref, data, latency, settings, how, out, meta, record,
                          replace(FINETUNE, batch_size=batch_size, seed=seed, threads="auto"))  # fmt: skip
    result = run.model
    folded, doc = _fold_stage(log, result, shape, seed, out)
    _onnx_stage(log, folded, result, data, settings, out, how, timing, doc)
    _evaluate_stage(log, result, data, run, target, threads, timing, doc)
    return result, _netadapt_section(run), doc


def _netadapt_stage(log: StageLog, model: EdgeNet, ref: DataRef, data: DataSet, latency: LatencyModel,
                    settings: CompressSettings, how: Check, out: Path, meta: dict[str, Any],
                    record: dict[str, Any] | None, train: Any) -> MeasuredRun:  # fmt: skip
    """NetAdapt to the budget, checked back to back on the target; its result (in eval mode) saved as
    ``out/model-netadapt.pt``, with the pruning steps and ``record`` for a network of the user's code."""
    shape, target = (data.in_chans, data.image_size, data.image_size), how.backend
    with log.stage("netadapt", f"NetAdapt to {settings.budget:.0%} of the baseline's latency on {target}") as info:
        run = _netadapt(model, ref, data, latency, settings, how, log.console, out, train)
        result = run.model.eval()
        config = {} if isinstance(model, EdgeNet) else {
            **prune_record("netadapt", run.prune_steps(), round_to=settings.round_to, input_shape=shape),
            **(record or {})}  # fmt: skip
        save_checkpoint(checkpoint_of(result, data=meta, config=config), out / "model-netadapt.pt")
        r, last = run.passes[0], run.passes[-1]
        info["note"] = (f"{r.start:.3f} → {last.resource:.3f} ms by the table (budget {r.target:.3f}"
                        + "".join(f", round {i + 2}: {x.target:.3f}" for i, x in enumerate(run.passes[1:]))
                        + f"), {sum(len(x.history) for x in run.passes)} iterations; measured on {target}: "
                        + run.stopped)  # fmt: skip
        log.console.print(info["note"])
    return run


def _netadapt(model: EdgeNet, ref: DataRef, data: DataSet, latency: LatencyModel, settings: CompressSettings,
              how: Check, console: Console, out: Path, train: Any) -> MeasuredRun:  # fmt: skip
    """NetAdapt by the table, checked back to back on the target and continued where it misses (compress.job)."""
    own = not isinstance(model, EdgeNet)
    meter = ResourceMeter("latency", input_size=data.image_size, num_classes=data.num_classes, in_chans=data.in_chans,
                          latency=latency)  # fmt: skip
    budget = Budget("latency", settings.budget, True, f"{settings.budget:.0%}latency")
    cfg = NetAdaptConfig(initial_step=settings.initial_step, decay=settings.decay, short_steps=settings.short_steps,
                         top_k=settings.top_k, long_epochs=settings.long_epochs, round_to=settings.round_to,
                         drop_blocks=settings.drop_blocks and not own, train=train)  # fmt: skip
    def line(it: Iteration) -> str:
        return (f"iteration {it.iteration}: {it.resource:.3f} ms by the table (step bound {it.target:.3f}), hold-out "
                f"top-1 {it.top1:.2%}, {history_step(asdict(it))}, {it.seconds:.1f} s")

    with progress_bar(console) as bar:
        callbacks = run_callbacks(bar, console.print, line, "timing baseline and result back to back")
        # the budget is on MEASURED latency: where the result misses it, NetAdapt goes on toward a table bound
        # refitted to the baseline and the result timed back to back on the target (compress.job)
        return run_measured(model, ref, data, budget, how, method="netadapt", meter=meter, out=out,
                            say=console.print, netadapt_config=cfg, **callbacks)  # fmt: skip


def _fold_stage(log: StageLog, result: torch.nn.Module, shape: tuple[int, int, int], seed: int,
                out: Path) -> tuple[torch.nn.Module, dict[str, Any]]:  # fmt: skip
    """BN folded into the convolutions, checked on random inputs; the result document's first fields."""
    with log.stage("fold_bn", "fold BatchNorm into the convolutions") as info:
        plan = plan_fold_bn(result)
        folded = fold_bn(result).eval()
        x = torch.randn(8, *shape, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            ref_out = result(x)
            diff = float((folded(x) - ref_out).abs().max() / ref_out.abs().max().clamp_min(1e-12))
        info["note"] = f"{plan.num_folded} BatchNorm(s) folded; largest output difference {diff:.1e} of the scale"
        log.console.print(info["note"])
    return folded, {"arch": getattr(result, "arch", None), "checkpoint": str(out / "model-netadapt.pt"),
                    "bn_folded": plan.num_folded, "fold_max_rel_diff": diff, "onnx": None, "int8": None}


def _onnx_stage(log: StageLog, folded: torch.nn.Module, result: torch.nn.Module, data: DataSet,
                settings: CompressSettings, out: Path, how: Check, timing: TimingConfig,
                doc: dict[str, Any]) -> None:  # fmt: skip
    """The folded network exported to ONNX, and int8 as a measured choice on the target; filled into ``doc``."""
    shape = (1, data.in_chans, data.image_size, data.image_size)
    try:
        with log.stage("onnx", "export ONNX (BN folded) and int8") as info:
            onnx_path = export_onnx(folded, out / "model.onnx", input_shape=shape)
            doc["onnx"] = str(onnx_path)
            info["note"] = onnx_path.name
            if settings.int8:
                try:
                    c = deploy_int8(result, data, out, target=how.backend, threads=how.threads, device=how.device,
                                    calibration_images=settings.calibration_images, timing=timing,
                                    progress=log.console.print)  # fmt: skip
                    doc["int8"] = c = {**c, "onnx": c["artifact"] if c["target"] == "onnxruntime" else None}
                    info["note"] += (f", {Path(c['artifact']).name}: top-1 fp32 {c['top1_fp32']:.2%} vs int8 "
                                     f"{c['top1_int8']:.2%}, {c['target']} {c['latency_fp32_ms']:.3f} vs "
                                     f"{c['latency_int8_ms']:.3f} ms; {c['reason']}")  # fmt: skip
                except ValueError as exc:  # onnxruntime missing: the export stands, int8 is skipped
                    info["note"] += f"; int8 skipped: {str(exc).splitlines()[0]}"
            log.console.print(info["note"])
    except ValueError as exc:  # the onnx package ([onnx] extra) is missing: the stage did not finish
        log.skip("onnx", "export ONNX (BN folded) and int8", str(exc).splitlines()[0])


def _evaluate_stage(log: StageLog, result: torch.nn.Module, data: DataSet, run: MeasuredRun, target: str,
                    threads: int, timing: TimingConfig, doc: dict[str, Any]) -> None:  # fmt: skip
    """Test top-1, exact costs, and the back-to-back comparison on the target (eager beside it); into ``doc``."""
    shape = (data.in_chans, data.image_size, data.image_size)
    with log.stage("evaluate", "evaluate the result") as info:
        cost = (cost_from_spec(result.arch, data.image_size, data.num_classes, data.in_chans)
                if isinstance(result, EdgeNet) else analyze(result, shape, receptive_fields=False))  # fmt: skip
        top1 = evaluate(result, data, channels_last=False).top1
        ms = measure(result, (1, *shape), backend="eager", threads=threads, config=timing).stats.median_ms
        cmp = run.comparison  # baseline and result back to back on the target: the one "before" and "after"
        doc.update(top1=top1, eager_ms=ms, macs=cost.macs, params=cost.params, target=target,
                   target_ms=cmp.after, baseline_target_ms=cmp.before, measured_ratio=cmp.ratio,
                   measured_band=list(cmp.band), met=run.met, stopped=run.stopped)  # fmt: skip
        info["note"] = (f"test top-1 {top1:.2%}; on {target} {cmp.text()}; {cost.macs / 1e6:.2f} M MACs, "
                        f"{cost.params:,} params")  # fmt: skip
        log.console.print(info["note"])
