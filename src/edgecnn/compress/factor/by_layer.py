"""``edgecnn compress --method lowrank|separable``: replace layers to a budget, then fine-tune, and rebuild the result.

The two methods that swap layers for cheaper structures — truncated-SVD
factorisation (:mod:`edgecnn.compress.factor.lowrank_method`) and depthwise
separable replacement (:mod:`edgecnn.compress.factor.separable`) — share one run:
choose the layers and ranks against per-layer times measured on the
command's backend (:mod:`edgecnn.compress.factor.layer_timing`), recalibrate BN,
fine-tune for ``long_epochs`` (:func:`edgecnn.train.finetune`; for
``separable`` with the original network as the teacher, Hinton et al. 2015,
:mod:`edgecnn.train.distill`), and report. This file owns that run
(:func:`compress_layers`) and the record that makes the result's checkpoint
loadable without code: :func:`transform_record` stores which layer became
what in the checkpoint's ``config["compress"]``, and :func:`load_compressed`
rebuilds ``build(source_arch)`` with the same replacements before loading
the weights strictly.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from torch import nn

from edgecnn.build import build, plain
from edgecnn.checkpoint import Checkpoint, load_checkpoint
from edgecnn.compress.budget import Budget
from edgecnn.compress.summary import QUICK_TIMING, ModelStats
from edgecnn.compress.factor.lowrank import factorize_conv, factorize_linear
from edgecnn.compress.factor.lowrank_method import MeasuredLowRank, lowrank_to_budget
from edgecnn.compress.factor.layer_timing import LayerLatency, measured_layer_latency
from edgecnn.train.recalibrate import recalibrate_bn_if_any_
from edgecnn.compress.factor.separable import MeasuredSeparable, separable_pair, separable_to_budget
from edgecnn.data import BatchLoader, DataSet
from edgecnn.latency.measure import measure
from edgecnn.train.config import TrainConfig
from edgecnn.train.loop import finetune

__all__ = ["LayerMethodResult", "compress_layers", "load_compressed", "transform_record"]

LAYER_METHODS = ("lowrank", "separable")


@dataclass(frozen=True)
class LayerMethodResult:
    """The fine-tuned network and what the method chose."""

    model: nn.Module
    chosen: MeasuredLowRank | MeasuredSeparable  # the selection, before fine-tuning
    start: float  # the budget's resource before (latency: measured whole network)
    target: float
    value: float  # after the selection (latency: measured whole network; the CLI puts its final measurement here)

    @property
    def met(self) -> bool:
        return self.value <= self.target

    @property
    def stopped(self) -> str:
        if self.met:
            return "met"
        n = len(self.chosen.plan.layers)
        return (f"over budget: {self.value:.4g} > {self.target:.4g} with {n} layer(s) replaced (the others are in "
                "plan.skipped, with reasons)")  # fmt: skip

    def document(self) -> dict[str, Any]:
        """The method's part of the results document: the plan per layer, skips with reasons, networks valued."""
        p = self.chosen.plan
        body: dict[str, Any] = {"layers": [asdict(e) for e in p.layers],
                                "skipped": [{"name": s.name, "reason": s.reason} for s in p.skipped],
                                "evaluated": self.chosen.evaluated, "summary": self.chosen.summary()}  # fmt: skip
        if isinstance(self.chosen, MeasuredLowRank):
            body["slower"] = [{**asdict(s), "reason": s.reason} for s in self.chosen.slower]
            body["candidates"] = [asdict(c) for c in self.chosen.candidates]
        return {"plan": body}


def compress_layers(method: str, model: nn.Module, data: DataSet, budget: Budget, before: ModelStats, *,
                    backend: str = "eager", threads: int | None = None, device: str = "cpu", train: TrainConfig,
                    long_epochs: float,
                    batch_size: int, round_to: int = 8, layer_latency: LayerLatency | None = None,
                    log: Callable[[str], object] = print) -> LayerMethodResult:  # fmt: skip
    """Run ``method`` (``lowrank`` or ``separable``) on ``model`` (not changed) to ``budget``; see the module docstring.

    ``before`` gives the start (its measured latency, MACs or params).
    ``layer_latency`` defaults to timing layers on ``backend`` with ``threads``.
    """
    if method not in LAYER_METHODS:
        raise ValueError(f"method must be one of {LAYER_METHODS}, got {method!r}")
    size = (data.in_chans, data.image_size, data.image_size)
    start = {"latency": before.latency_ms, "macs": before.macs, "params": before.params}[budget.resource]
    if start is None:
        raise ValueError("a latency budget needs the measured latency of the network before")
    target = budget.target(float(start))

    def model_latency(m: nn.Module) -> float:
        return measure(m.eval(), (1, *size), backend=backend, threads=threads, config=QUICK_TIMING,
                       device=device).stats.median_ms  # fmt: skip

    per_layer = layer_latency or measured_layer_latency(backend=backend, threads=threads, device=device)
    loader = BatchLoader(data.train, batch_size=batch_size, mean=data.mean, std=data.std, train=True)
    log(f"{method}: timing every candidate layer alone on {backend} (a replacement that is not faster is skipped)")
    chosen: MeasuredLowRank | MeasuredSeparable
    if method == "lowrank":
        chosen = lowrank_to_budget(model, budget.resource, target, size, layer_latency=per_layer,
                                   model_latency=model_latency, round_to=round_to, start=float(start))  # fmt: skip
    else:
        calib = [x for _, (x, _y) in zip(range(4), loader.epoch(0))]  # a few hundred training images
        chosen = separable_to_budget(model, budget.resource, target, size, layer_latency=per_layer,
                                     model_latency=model_latency, calibration=calib, start=float(start))  # fmt: skip
    log(chosen.summary())
    result = chosen.model
    if not chosen.plan.layers:  # nothing replaced: the network stays exactly the one measured before
        return LayerMethodResult(result, chosen, float(start), float(target), chosen.value)
    recalibrate_bn_if_any_(result, loader, num_batches=20)
    if long_epochs > 0:
        steps = max(1, round(long_epochs * max(1, len(data.train) // batch_size)))
        teacher = model if method == "separable" else None
        log(f"fine-tuning {steps} steps" + (" distilled from the original (Hinton et al. 2015)" if teacher else ""))
        finetune(result, data, steps=steps, config=replace(train, batch_size=batch_size), teacher=teacher)
    return LayerMethodResult(result, chosen, float(start), float(target), chosen.value)


# ---------------------------------------------------------------- a checkpoint that rebuilds


def transform_record(method: str, source: nn.Module, chosen: MeasuredLowRank | MeasuredSeparable) -> dict[str, Any]:
    """What :func:`load_compressed` needs to rebuild the result: ``{"compress": {method, source_arch, layers}}``."""
    arch = getattr(source, "arch", None)
    if method == "lowrank":
        layers = [{"name": e.name, "form": e.form, "rank": e.rank} for e in chosen.plan.layers]  # type: ignore[union-attr]
    else:
        layers = [{"name": e.name} for e in chosen.plan.layers]
    return {"compress": {"method": method, "source_arch": arch if isinstance(arch, str) else None, "layers": layers}}


def rebuild(ckpt: Checkpoint) -> nn.Module:
    """The network a :func:`transform_record` describes, with untrained weights (the checkpoint's are loaded next)."""
    rec: Any = ckpt.config.get("compress") if isinstance(ckpt.config, dict) else None
    ok = isinstance(rec, dict) and rec.get("method") in LAYER_METHODS and isinstance(rec.get("source_arch"), str)
    if not ok:
        raise ValueError("this checkpoint records no low-rank / separable replacement of an EdgeNet; "
                         "load it with edgecnn.checkpoint.load_model(path, model=...)")  # fmt: skip
    net = build(rec["source_arch"], num_classes=ckpt.num_classes, in_chans=ckpt.in_chans)
    out = plain(net, note=f"{rec['method']} ({len(rec['layers'])} layers)") if rec["layers"] else net
    try:
        for e in rec["layers"]:
            m = out.get_submodule(e["name"])
            if rec["method"] == "separable":
                new = separable_pair(m)[0]  # type: ignore[arg-type]
            elif isinstance(m, nn.Linear):
                new = factorize_linear(m, int(e["rank"]))
            else:
                new = factorize_conv(m, int(e["rank"]), form=e["form"])  # type: ignore[arg-type]
            parent, _, attr = e["name"].rpartition(".")
            setattr(out.get_submodule(parent), attr, new)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"the checkpoint's config['compress'] does not describe a replacement of "
                         f"{rec['source_arch']!r} ({type(exc).__name__}: {str(exc)[:100]}); it is damaged") from None
    return out


def load_compressed(path: str | os.PathLike[str]) -> tuple[nn.Module, Checkpoint]:
    """Load a ``--method lowrank|separable`` result (or any EdgeNet checkpoint) without code; weights strictly."""
    ckpt = load_checkpoint(path)
    if ckpt.arch is not None:
        model: nn.Module = build(ckpt.arch, num_classes=ckpt.num_classes, in_chans=ckpt.in_chans)
    else:
        model = rebuild(ckpt)
    try:
        model.load_state_dict(ckpt.state_dict)
    except RuntimeError as exc:
        raise ValueError(f"{path}: the weights do not fit the recorded network ({str(exc).splitlines()[0]})") from None
    return model, ckpt
