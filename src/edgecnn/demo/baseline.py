"""The demo's baseline stages: the data, the model and its exact costs, training, and the trained network's
dynamics (effective receptive field, gradient flow)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from edgecnn import zoo
from edgecnn.analysis import LayerCost, analyze
from edgecnn.analysis.dynamics import erf_section, gradflow_section
from edgecnn.analysis.spec_cost import cost_from_spec
from edgecnn.build import build, count_params
from edgecnn.checkpoint import checkpoint_of, save_checkpoint
from edgecnn.data import DataSet
from edgecnn.data.loader import BatchLoader
from edgecnn.demo.config import DemoConfig, Network
from edgecnn.latency.per_layer import units
from edgecnn.analysis.memory import check_memory
from edgecnn.demo.stage_log import StageLog
from edgecnn.train import TrainConfig, fit
from edgecnn.train.config import TrainResult
from edgecnn.train.task import DataRef, worker_data

GRADFLOW_BATCH = 32  # test images in the gradient-flow pass


@dataclass
class Baseline:
    """The demo's network as built and analysed (the analyse stage's result, which the later stages read)."""

    model: torch.nn.Module
    arch: str | None  # canonical arch string; None for a network of the user's own code
    record: dict[str, Any]  # the checkpoint config that rebuilds a network of the user's code ({} for an arch)
    shape: tuple[int, int, int]  # (C, H, W) of one input
    macs: int  # multiply-adds per image
    receptive_field: str  # the output's receptive field, said ("whole input" with SE / global pooling)
    per_block: dict[str, LayerCost]  # per block: the conv-path field and whether global context reaches it
    costs: list[tuple[str, int, int]]  # (name, params, MACs) per block


def model_arch(cfg: DemoConfig) -> str:
    """The arch string of ``cfg.model`` (a bad model is refused here, before anything is created)."""
    # the demo's default width is for zoo models; an arch string already says its widths
    return zoo.model_arg(cfg.model, width=cfg.width if cfg.model in zoo.REGISTRY else 1.0).arch


def data_stage(log: StageLog, cfg: DemoConfig) -> tuple[DataRef, DataSet]:
    """The data set, loaded once per process (NetAdapt reads the same :class:`DataRef`)."""
    with log.stage("data", "data"):
        ref = DataRef(cfg.data, image_size=cfg.image_size, seed=cfg.seed)
        data = worker_data(ref)  # loaded once per process: NetAdapt reads the same DataRef
        side = cfg.image_size
        log.console.print(f"{data.name}: {len(data.train)} train / {len(data.test)} test images, "
                          f"{len(data.classes)} classes, {data.in_chans}×{side}×{side}")  # fmt: skip
    return ref, data


def analyze_stage(log: StageLog, cfg: DemoConfig, arch: str | None, data: DataSet,
                  network: Network | None) -> Baseline:  # fmt: skip
    """The network built (from ``arch``, or ``network`` where it is the user's code) and its exact costs."""
    with log.stage("analyze", "model and exact costs"):
        torch.manual_seed(cfg.seed)
        record: dict[str, Any] = {}
        if arch is not None:
            check_memory(arch, input_size=cfg.image_size, num_classes=len(data.classes), in_chans=data.in_chans,
                         batch=cfg.batch_size, training=True, what=f"the demo's {cfg.model!r}")  # fmt: skip
            model = build(arch, num_classes=len(data.classes), in_chans=data.in_chans)
        else:
            model, record = network(data)  # type: ignore[misc]
        shape = (data.in_chans, cfg.image_size, cfg.image_size)
        report = analyze(model, shape)
        totals = report.total()
        rf_row = report.output_rf()
        rf = "whole input" if rf_row is None or rf_row.rf_whole else "×".join(str(r) for r in rf_row.rf_size or ())
        # per block: the conv-path field (SE gates do not widen it) and whether global context reaches it
        per_block = report.last_by_module(2 if arch is not None else 1)
        costs = _block_costs(model, arch, report, cfg.image_size, len(data.classes), data.in_chans)
        log.console.print(f"arch: {arch}" if arch is not None else f"network: {cfg.model} (your code)")
        log.console.print(f"{count_params(model):,} parameters, {totals.macs / 1e6:.2f} M MACs per image "
                          f"(FLOPs = 2·MACs), output receptive field: {rf}")  # fmt: skip
    return Baseline(model, arch, record, shape, totals.macs, rf, per_block, costs)


def _block_costs(model: torch.nn.Module, arch: str | None, report: Any, size: int, num_classes: int,
                 in_chans: int) -> list[tuple[str, int, int]]:  # fmt: skip
    """(name, params, MACs) per block: an EdgeNet's from its arch string (closed form), another network's per
    top-level module from the traced analysis (the units the per-layer timing reports)."""
    if arch is not None:
        return [(c.name, c.params, c.macs) for c in cost_from_spec(arch, size, num_classes, in_chans).layers]
    out = []
    for name, _ in units(model):
        rows = [r for r in report.layers if r.module == name or r.module.startswith(name + ".")]
        out.append((name, sum(r.params for r in rows), sum(r.macs for r in rows)))
    return out


def train_stage(log: StageLog, cfg: DemoConfig, base: Baseline, data: DataSet,
                out: Path) -> tuple[TrainResult, dict[str, Any]]:  # fmt: skip
    """The baseline trained and saved as ``out/model.pt``; the training result and the data's checkpoint record."""
    with log.stage("train", "training") as info:
        # threads="auto": the cores other work leaves free (2 threads beside a busy process train 2x slower than 1)
        recipe = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed, optimizer="adamw", lr=4e-3,
                             warmup_epochs=1.0, threads="auto")  # fmt: skip
        result = fit(base.model, data, recipe)
        used = sorted({h.threads for h in result.history if h.threads})
        info["note"] = f"top-1 {result.final.top1:.2%} after {cfg.epochs} epochs"
        log.console.print(f"test top-1 {result.final.top1:.2%}, top-5 {result.final.top5:.2%} after {cfg.epochs} "
                          f"epochs ({result.seconds:.1f} s, {result.images_per_s:,.0f} img/s, "
                          f"{'–'.join(map(str, used)) or '?'} thread(s))")  # fmt: skip
        meta = {"name": data.name, "classes": list(data.classes), "mean": list(data.mean), "std": list(data.std),
                "image_size": cfg.image_size, "in_chans": data.in_chans}  # fmt: skip
        save_checkpoint(checkpoint_of(base.model, data=meta, epoch=cfg.epochs, step=result.steps, config=base.record),
                        out / "model.pt")  # fmt: skip
    return result, meta


def dynamics_stage(log: StageLog, base: Baseline, data: DataSet,
                   seed: int) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:  # fmt: skip
    """The baseline's effective receptive field and gradient flow, said in one line; skipped (None, None) for a
    network of the user's code without a ``blocks`` sequence."""
    model = base.model
    if base.arch is None and not isinstance(getattr(model, "blocks", None), torch.nn.Sequential):
        log.skip("dynamics", "effective receptive field and gradient flow of the baseline",
                 "your own network has no `blocks` sequence to read them at (edgecnn.analysis.dynamics takes its "
                 "spatial part from Python)")  # fmt: skip
        return None, None
    with log.stage("dynamics", "effective receptive field and gradient flow of the baseline") as info:
        erf, gradflow = _dynamics(model, data, base.shape, seed=seed)
        runs = gradflow["runs"]
        info["note"] = (f"ERF of {erf['layer']}: 50% of the mass within {erf['radius50']:.1f} px, 95% within "
                        f"{erf['radius95']:.1f} px; first-layer gradient norm " + ", ".join(
                            f"{k} {v['layers'][0]['output_grad_norm']:.3g}" for k, v in runs.items()))  # fmt: skip
        log.console.print(info["note"])
    return erf, gradflow


def _dynamics(model: torch.nn.Module, data: Any, shape: tuple[int, int, int], *,
              seed: int) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """The ``erf`` and ``gradflow`` sections of the trained baseline (on copies; the model is left as it is)."""
    erf = {**erf_section(model, shape, samples=16, seed=seed), "weights": "the trained baseline"}
    batch = data.test.subset(list(range(min(GRADFLOW_BATCH, len(data.test)))))
    loader = BatchLoader(batch, batch_size=len(batch), mean=data.mean, std=data.std, image_size=shape[-1])
    x, y = next(iter(loader))  # normalised as in training, no augmentation
    flow = {**gradflow_section(model, x, y, seed=seed), "weights": "the trained baseline", "inputs": "test images"}
    return erf, flow
