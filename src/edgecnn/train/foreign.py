"""Training or fine-tuning a network of your own code (not an EdgeNet) with edgecnn's trainer: :func:`finetune_model`.

:func:`edgecnn.train.fit` trains any ``nn.Module``; what it cannot know for a
network from elsewhere is how to rebuild it from a checkpoint (no arch string)
and whether its BatchNorm running statistics keep up. :func:`finetune_model`
adds both:

- the checkpoint (``last.pt``) records the constructor that builds the network,
  ``config["constructor"] = {"ref": "my_net.py:build", "kwargs": {...}}``
  (plain data; :func:`edgecnn.model_code.build_recorded` imports and calls it);
- after training it measures test top-1 with the running statistics (eval
  mode) and with each batch's own statistics (BN in train mode, on a copy).
  Where the first is far below the second, the running statistics lag behind
  the weights — torchvision's MobileNetV3 uses BN momentum 0.01, so after a
  short fine-tune they still hold mostly the pretrained data's statistics and
  eval top-1 can sit at chance — and they are re-estimated on training images
  (:func:`edgecnn.train.recalibrate.recalibrate_bn_`), the checkpoint
  rewritten with them, and the log says so with the top-1 before and after.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from edgecnn.data import BatchLoader, DataSet
from edgecnn.train.config import TrainConfig, TrainResult
from edgecnn.train.evaluation import evaluate
from edgecnn.train.loop import fit
from edgecnn.model_code import ModelRef, load_into, parse_model_ref
from edgecnn.train.recalibrate import recalibrate_bn_

BN_GAP = 0.05  # eval top-1 this far (or more) below batch-statistics top-1: the running statistics are stale
RECALIBRATION_IMAGES = 2048  # training images the statistics are re-estimated on (at most)


@dataclass(frozen=True)
class BnCheck:
    """What the BatchNorm check after training measured and did (test top-1 throughout)."""

    eval_top1: float  # with the running statistics, as training left them
    batch_top1: float  # with each test batch's own statistics (BN in train mode, on a copy)
    after_top1: float  # with the statistics kept: re-estimated, or the trained ones
    recalibrated: bool  # whether the re-estimated statistics were kept
    images: int  # training images the statistics were re-estimated on (0: not re-estimated)
    momenta: tuple[float | None, ...]  # the distinct BN momenta of the network (None: cumulative average)

    def message(self) -> str:
        """One line for the log: what was measured, what was done, top-1 before and after."""
        mom = ", ".join("cumulative" if m is None else f"{m:g}" for m in self.momenta)
        head = (f"BatchNorm: test top-1 {self.eval_top1:.1%} with the running statistics, {self.batch_top1:.1%} "
                f"with batch statistics (BN momentum {mom})")  # fmt: skip
        if self.images == 0:
            return f"{head}: the running statistics fit; kept them"
        if self.recalibrated:
            return (f"{head}: the running statistics lagged behind the weights, so they were re-estimated on "
                    f"{self.images} training images (recalibrate_bn_): test top-1 {self.eval_top1:.1%} → "
                    f"{self.after_top1:.1%}")  # fmt: skip
        return (f"{head}: re-estimating them on {self.images} training images gave {self.after_top1:.1%}, no "
                "better; kept the trained statistics")  # fmt: skip


@dataclass(frozen=True)
class OwnResult:
    """Outcome of :func:`finetune_model`: the training result (``final`` after the BN check) and the check."""

    train: TrainResult  # as :func:`fit` returns it, ``final`` replaced by the evaluation after the BN check
    bn: BnCheck | None  # None: the network has no BatchNorm with running statistics
    constructor: dict[str, Any] | None  # the record written into the checkpoint's config (None: none)

    @property
    def top1(self) -> float:
        return self.train.final.top1


class _BatchStats(nn.Module):
    """A copy of a network whose BatchNorms use each batch's statistics even in eval mode (dropout stays off)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner = copy.deepcopy(model)

    def train(self, mode: bool = True) -> _BatchStats:
        super().train(mode)
        for m in self.inner.modules():
            if isinstance(m, _BatchNorm):
                m.train(True)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def _bns(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def _even_batch(n: int, most: int = 256) -> int:
    """A batch size of at most ``most`` that splits ``n`` images into nearly equal batches (no batch of one)."""
    return max(1, math.ceil(n / max(1, math.ceil(n / most))))


def check_bn(model: nn.Module, data: DataSet, *, gap: float = BN_GAP, image_size: int | None = None,
             channels_last: bool = True, precision: str = "auto", seed: int = 0) -> BnCheck | None:  # fmt: skip
    """Compare test top-1 with running and with batch statistics; re-estimate the running ones where they lag.

    In place: ``model``'s BN buffers are re-estimated (on up to
    :data:`RECALIBRATION_IMAGES` training images, no augmentation) when eval
    top-1 is ``gap`` or more below batch-statistics top-1, and kept only if
    that raises eval top-1. None for a network without such BatchNorms.
    """
    bns = _bns(model)
    if not bns:
        return None
    momenta = tuple(dict.fromkeys(bn.momentum for bn in bns))
    kw: dict[str, Any] = {"image_size": image_size, "channels_last": channels_last, "precision": precision}
    before = evaluate(model, data, **kw).top1
    batch = evaluate(_BatchStats(model), data, batch_size=_even_batch(len(data.test)), **kw).top1
    if before >= batch - gap:
        return BnCheck(before, batch, before, False, 0, momenta)
    saved = copy.deepcopy([(bn.running_mean, bn.running_var, bn.num_batches_tracked) for bn in bns])
    size = min(128, len(data.train))
    device = next(iter(model.parameters())).device
    loader = BatchLoader(data.train, batch_size=size, mean=data.mean, std=data.std, train=True, seed=seed,
                         image_size=image_size, device=device, channels_last=channels_last)  # fmt: skip
    batches = max(1, min(len(loader), RECALIBRATION_IMAGES // size))
    recalibrate_bn_(model, loader, num_batches=batches)
    after = evaluate(model, data, **kw).top1
    if after <= before:  # no better: the trained statistics stay
        with torch.no_grad():
            for bn, (mean, var, count) in zip(bns, saved):
                bn.running_mean.copy_(mean)  # type: ignore[union-attr]
                bn.running_var.copy_(var)  # type: ignore[union-attr]
                bn.num_batches_tracked.copy_(count)  # type: ignore[union-attr]
        return BnCheck(before, batch, before, False, batches * size, momenta)
    return BnCheck(before, batch, after, True, batches * size, momenta)


def constructor_record(constructor: str | Mapping[str, Any] | Any | None) -> dict[str, Any] | None:
    """``config["constructor"]`` of a reference: ``"my_net.py:build:num_classes=10"``, a ``ModelRef`` or a record."""
    if constructor is None:
        return None
    if isinstance(constructor, str):
        return parse_model_ref(constructor).record()
    if isinstance(constructor, ModelRef):
        return constructor.record()
    return ModelRef.from_record(dict(constructor), "constructor=").record()


def _rewrite(path: str, model: nn.Module, bn: BnCheck) -> None:
    """Put the re-estimated BN statistics and the check's numbers into the run's checkpoint (atomically)."""
    from edgecnn.checkpoint import load_checkpoint, save_checkpoint

    ck = load_checkpoint(path)
    ck.state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    ck.config = {**ck.config, "bn_recalibration": asdict(bn)}
    save_checkpoint(ck, path)


def finetune_model(
    model: nn.Module,
    data: DataSet,
    config: TrainConfig | None = None,
    *,
    weights: str | os.PathLike[str] | Mapping[str, torch.Tensor] | None = None,
    constructor: str | Mapping[str, Any] | Any | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    teacher: nn.Module | str | os.PathLike[str] | None = None,
    bn_gap: float = BN_GAP,
    log: Callable[[str], None] | None = print,
) -> OwnResult:
    """Train or fine-tune a network of your own code with :func:`fit`, then check its BatchNorm statistics.

    Args:
        model: any classification ``nn.Module`` (e.g. ``torchvision.models.mobilenet_v3_small(num_classes=10)``).
        data: the data set (:func:`edgecnn.data.load_data`).
        config: the recipe; default ``TrainConfig()`` (for a pretrained network a lower ``lr`` suits better).
        weights: starting weights — a file (a state_dict, a dict holding one, an edgecnn checkpoint) or a
            state_dict — loaded strictly; a mismatch names the missing, unexpected and mis-shaped keys.
        constructor: how the network is built, ``"MODULE:FUNCTION[:key=value,...]"`` (or a ``ModelRef`` or its
            record): written into the checkpoint so that ``edgecnn explain/export/analyze/latency/train CKPT``
            rebuild it without ``--model``.
        out_dir, resume, overwrite, teacher: as for :func:`fit`.
        bn_gap: re-estimate the BN statistics when eval top-1 is this far below batch-statistics top-1.
        log: where the BN check's line goes (None: nowhere).
    """
    record = constructor_record(constructor)
    if weights is not None:
        load_into(model, dict(weights) if isinstance(weights, Mapping) else str(weights))
    cfg = config or TrainConfig()
    result = fit(model, data, cfg, out_dir=out_dir, resume=resume, overwrite=overwrite, teacher=teacher,
                 record={"constructor": record} if record else None)  # fmt: skip
    lead = os.environ.get("RANK", "0") == "0"
    bn = check_bn(model, data, gap=bn_gap, image_size=cfg.image_size, channels_last=cfg.channels_last,
                  precision=cfg.precision, seed=cfg.seed)  # fmt: skip
    if bn is not None and lead and log is not None:
        log(bn.message())
    if bn is not None and bn.recalibrated:
        final = evaluate(model, data, image_size=cfg.image_size, channels_last=cfg.channels_last,
                         precision=cfg.precision)  # fmt: skip
        result = replace(result, final=final)
        if lead and result.checkpoint and Path(result.checkpoint).is_file():
            _rewrite(result.checkpoint, model, bn)
    return OwnResult(result, bn, record)
