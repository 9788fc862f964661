"""The recipe and the results of :mod:`edgecnn.train`: :class:`TrainConfig`, :data:`FINETUNE`,
:class:`EvalResult`, :class:`EpochStats`, :class:`TrainResult` and :class:`NonFiniteLossError`.

Plain frozen dataclasses of plain values, so a config pickles to a worker
process and saves into a checkpoint (``dataclasses.asdict``), and a result
reads back from one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Every field is a plain value, so a config pickles and saves into a checkpoint."""

    epochs: int = 30  # passes over the training split; the cosine schedule spans them
    steps: int | None = None  # total optimiser steps instead (fine-tuning); overrides epochs
    batch_size: int = 128  # global batch, shared among DDP processes
    optimizer: str = "sgd"  # "sgd" (Nesterov momentum) or "adamw"
    lr: float | None = None  # peak learning rate; None = 0.1 for SGD, 2e-3 for AdamW
    momentum: float = 0.9  # SGD momentum
    weight_decay: float | None = None  # None = 5e-4 for SGD, 0.05 for AdamW; never on BN parameters or biases
    warmup_epochs: float = 1.0  # linear warm-up from 0, in epochs; at most half the run
    min_lr: float = 0.0  # where the cosine ends
    label_smoothing: float = 0.1  # weight of the uniform distribution in the targets (Szegedy 2016)
    ema_decay: float | None = None  # e.g. 0.999 to keep an EMA of the weights; None = none
    grad_clip: float | None = None  # clip the global gradient norm to this; None = no clipping
    augment: bool = True  # apply the data set's random crop / flip
    image_size: int | None = None  # network input side; None = the data's stored size
    precision: str = "auto"  # "auto" (bf16, else fp16, autocast on CUDA; fp32 on the CPU), "fp32", "bf16", "fp16"
    channels_last: bool = True  # NHWC memory format for model and batches (faster convolutions on CPU and GPU)
    compile: bool = False  # torch.compile the model: ~1.3× faster CPU steps after minutes of compiling
    distill_alpha: float = 0.5  # weight of the teacher's soft targets (with a teacher)
    distill_temperature: float = 4.0  # softmax temperature for distillation
    eval_every: int = 1  # evaluate on the test split every N epochs; 0 = only at the end
    seed: int = 0  # seeds the initial torch RNG, the shuffle and the augmentation
    device: str = "auto"  # "auto" (CUDA if present, cuda:LOCAL_RANK under torchrun), "cpu", "cuda:1", ...
    threads: int | Literal["auto"] | None = None  # torch threads; "auto": the cores other work leaves free,
    # looked at every few seconds (edgecnn.train.threads); None = leave as is
    progress: bool = True  # show a progress bar and one line per epoch (rank 0 only)
    log_epochs: bool = False  # without the bar, still print one line per epoch (batch jobs; rank 0 only)

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"unknown optimizer {self.optimizer!r}; use 'sgd' or 'adamw'")
        if self.epochs < 1 or (self.steps is not None and self.steps < 1):
            raise ValueError(f"need at least one epoch / step, got epochs={self.epochs}, steps={self.steps}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"learning rate must be positive, got {self.lr}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), e.g. 0.999; got {self.ema_decay}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; valid: {', '.join(PRECISIONS)}")
        for name in ("threads", "image_size", "batch_size"):  # 0 is no "default": None is
            v = getattr(self, name)
            if name == "threads" and v == "auto":
                continue
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                also = ", 'auto' for the free cores" if name == "threads" else ""
                raise ValueError(f"{name} must be a positive integer (or None for the default{also}), got {v!r}")
        if self.warmup_epochs < 0:
            raise ValueError(f"warm-up must be >= 0 epochs, got {self.warmup_epochs}")

    def check_limits(self) -> None:
        """``ValueError`` when epochs, steps or the batch exceed ``EDGECNN_MAX_EPOCHS`` / ``_STEPS`` / ``_BATCH``.

        Checked by :func:`edgecnn.train.fit` (the CLI refuses them while
        parsing), not on construction: a config read back from a checkpoint
        must still load to be compared.
        """
        from edgecnn.limits import MAX_BATCH, MAX_EPOCHS, MAX_STEPS

        if self.steps is None:
            MAX_EPOCHS.check(self.epochs, "TrainConfig.epochs")
        else:
            MAX_STEPS.check(self.steps, "TrainConfig.steps")
        MAX_BATCH.check(self.batch_size, "TrainConfig.batch_size")

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else (0.1 if self.optimizer == "sgd" else 2e-3)

    @property
    def decay(self) -> float:
        if self.weight_decay is not None:
            return self.weight_decay
        return 5e-4 if self.optimizer == "sgd" else 0.05


@dataclass(frozen=True)
class EvalResult:
    """Accuracy of a model on one split."""

    top1: float  # share of images whose highest score is the label
    top5: float  # share whose label is among the 5 highest scores (all classes if fewer than 5)
    loss: float  # mean cross-entropy (no label smoothing)
    per_class: tuple[float, ...]  # top-1 accuracy of each class (nan for a class without images)
    num_images: int  # images evaluated
    seconds: float  # wall time of the evaluation


@dataclass(frozen=True)
class EpochStats:
    """What one epoch of training did."""

    epoch: int  # 1-based
    steps: int  # optimiser steps done after this epoch
    lr: float  # learning rate at the epoch's last step
    train_loss: float  # mean training loss (with smoothing / distillation) over the epoch
    train_top1: float  # top-1 on the augmented training batches, as they were seen
    images_per_s: float  # training images per second, all processes together
    seconds: float  # wall time of the epoch's training (evaluation excluded)
    test: EvalResult | None  # evaluation after the epoch (None where skipped)
    threads: int | None = None  # torch threads at the epoch's end, with threads="auto" (None otherwise)
    precision: str | None = None  # the arithmetic the epoch ran in: "fp32", "bf16" or "fp16" (None: not recorded)


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`fit` / :func:`finetune`."""

    final: EvalResult  # the trained weights on the test split
    ema: EvalResult | None  # the EMA weights on the test split (with ema_decay)
    history: tuple[EpochStats, ...]  # one entry per epoch (the last may be partial with `steps`)
    steps: int  # optimiser steps done
    seconds: float  # wall time of the whole run
    checkpoint: str | None  # path of the last checkpoint written, if any

    @property
    def top1(self) -> float:
        return self.final.top1

    @property
    def images_per_s(self) -> float:
        """Mean training throughput over the epochs."""
        t = sum(e.seconds for e in self.history)
        return sum(e.images_per_s * e.seconds for e in self.history) / t if t else 0.0


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped and the last good checkpoint was kept."""


FINETUNE = TrainConfig(lr=0.01, warmup_epochs=0.0, eval_every=0, progress=False)
"""Defaults of :func:`finetune`: a short, gentle SGD run from trained weights."""
