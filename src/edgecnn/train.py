"""Training, fine-tuning and evaluation of classification networks on an in-memory :class:`DataSet`.

One loop serves the CLI (``edgecnn train``), long runs and the thousands of
short fine-tunes NetAdapt and architecture search make (:func:`finetune`;
plain arguments that pickle to a worker process, no global state beyond the
torch RNG the run seeds). Its parts, with the papers they follow:

- SGD with Nesterov momentum or AdamW (Loshchilov & Hutter 2019), no weight
  decay on BN parameters and biases (weight decay before BN only changes the
  effective learning rate; decaying BN's own scale and shift hurts);
- linear warm-up (Goyal et al. 2017) then cosine decay ("SGDR", Loshchilov &
  Hutter 2017), computed from the step number, so a resume needs no scheduler state;
- label smoothing (Szegedy et al. 2016, "Rethinking the Inception architecture", §7);
- an exponential moving average of the weights (Polyak averaging, as in the
  MnasNet/EfficientNet/MobileNetV3 recipes), with the TensorFlow warm-up of the decay;
- knowledge distillation from a teacher (Hinton et al. 2015, :mod:`edgecnn.distill`);
- mixed precision (bf16 autocast, or fp16 with loss scaling) — by default on
  CUDA; on a CPU with AMX ``precision="bf16"`` speeds ResNet-20 steps up 1.8×
  but MobileNetV2 (depthwise convolutions, BN) only 1.1×, so it is opt-in
  there; channels_last memory format by default: oneDNN's convolutions,
  depthwise ones most, run faster in NHWC. ``benchmarks/train_cifar.py``:
  against a plain NCHW loop with per-sample PIL augmentation, 1.2× for
  ResNet-20 and 1.5× for MobileNetV2-0.5 on this project's 2-core Xeon;
- DDP through ``torchrun`` on the same code path: each process takes its share
  of every global batch (:class:`edgecnn.data.BatchLoader`);
- a checkpoint after every epoch, written atomically; Ctrl-C finishes the step
  and saves one; ``resume=True`` continues bit-for-bit where it stopped;
- a non-finite loss stops the run with :class:`NonFiniteLossError`, keeping the
  last good checkpoint.
"""

from __future__ import annotations

import copy
import math
import os
import signal
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from edgecnn.checkpoint import Checkpoint, checkpoint_of, load_checkpoint, save_checkpoint
from edgecnn.data import BatchLoader, DataSet
from edgecnn.distill import distillation_loss, load_teacher

LAST = "last.pt"  # the checkpoint file in a run's folder
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
    threads: int | None = None  # torch.set_num_threads for this process; None = leave as is
    progress: bool = True  # show a progress bar and one line per epoch (rank 0 only)

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
        if self.warmup_epochs < 0:
            raise ValueError(f"warm-up must be >= 0 epochs, got {self.warmup_epochs}")

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


# --------------------------------------------------------------------------------------- schedule, EMA, optimiser
def lr_at(step: int, *, total: int, warmup: int, peak: float, floor: float = 0.0) -> float:
    """Learning rate at ``step`` (0-based): linear warm-up to ``peak``, then cosine down to ``floor``.

    Warm-up gives ``peak·(step+1)/warmup``; then ``floor + (peak−floor)·½(1+cos(π·t))``
    with ``t`` going from 0 to 1 over the remaining steps (Loshchilov & Hutter 2017, one cycle).
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


class ModelEma:
    """Exponential moving average of a model's weights and float buffers.

    ``ema ← d·ema + (1−d)·w`` after each step, with ``d = min(decay, (1+n)/(10+n))``
    at step ``n`` (TensorFlow's ``ExponentialMovingAverage(num_updates=...)``),
    so short runs are not dominated by the initial weights.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        ema_f: list[torch.Tensor] = []
        cur_f: list[torch.Tensor] = []
        ours, theirs = self.module.state_dict(), model.state_dict()
        for k, e in ours.items():
            if e.is_floating_point():
                ema_f.append(e)
                cur_f.append(theirs[k])
            else:  # integer buffers (BN's num_batches_tracked) are counts, not averages
                e.copy_(theirs[k])
        if ema_f:
            torch._foreach_lerp_(ema_f, cur_f, 1.0 - d)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: weights with decay; BN parameters and biases (every ≤1-D tensor) without."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.peak_lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.peak_lr)


# ------------------------------------------------------------------------------------------- devices, processes
@dataclass(frozen=True)
class _Dist:
    rank: int
    world: int
    device: torch.device
    owns_group: bool  # this run initialised the process group, so it also tears it down


def _setup(cfg: TrainConfig) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cfg.device == "auto":
        cuda = torch.cuda.is_available()
        device = torch.device(("cuda:" + str(local) if world > 1 else "cuda") if cuda else "cpu")
    else:
        device = torch.device(cfg.device)
    if device.type == "cuda" and device.index is not None:  # set_device refuses a bare "cuda"
        torch.cuda.set_device(device)
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owns = True
    if dist.is_initialized():
        return _Dist(dist.get_rank(), dist.get_world_size(), device, owns)
    return _Dist(0, 1, device, False)


def _amp_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device`` (None: plain fp32)."""
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("fp16 autocast needs CUDA; use --precision bf16 on the CPU")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _autocast(device: torch.device, precision: str) -> Any:
    dtype = _amp_dtype(device, precision)
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def _all_sum(values: list[float], d: _Dist) -> list[float]:
    if d.world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=d.device if d.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return t.tolist()


# -------------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: DataSet,
    *,
    split: str = "test",
    batch_size: int = 256,
    device: str | torch.device | None = None,
    image_size: int | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    channels_last: bool = True,
    precision: str = "auto",
) -> EvalResult:
    """Top-1, top-5, loss and per-class accuracy of ``model`` on ``data``'s ``split`` ("test" or "train").

    Normalisation defaults to the data's own statistics; pass the ones the
    model was trained with (a checkpoint's ``data``) to evaluate other data.
    Under DDP each process evaluates its share and the counts are summed.
    """
    if split not in ("test", "train"):
        raise ValueError(f"split must be 'test' or 'train', got {split!r}")
    d = _Dist(dist.get_rank(), dist.get_world_size(), torch.device("cpu"), False) if dist.is_initialized() else None
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    world, rank = (d.world, d.rank) if d else (1, 0)
    loader = BatchLoader(getattr(data, split), batch_size=batch_size, mean=mean or data.mean, std=std or data.std,
                         image_size=image_size, device=dev, channels_last=channels_last, rank=rank,
                         world_size=world)  # fmt: skip
    was_training = model.training
    model.eval()
    c = data.num_classes
    k = min(5, c)
    t0 = time.perf_counter()
    correct = torch.zeros(c, dtype=torch.float64, device=dev)
    count = torch.zeros(c, dtype=torch.float64, device=dev)
    top5 = torch.zeros((), dtype=torch.float64, device=dev)
    loss = torch.zeros((), dtype=torch.float64, device=dev)
    for x, y in loader.epoch(0):
        with _autocast(dev, precision):
            out = model(x)
        out = out.float()
        loss += F.cross_entropy(out, y, reduction="sum").double()
        hit = out.topk(k, dim=1).indices == y[:, None]
        top5 += hit.any(1).sum()
        correct += torch.bincount(y[hit[:, 0]], minlength=c).double()
        count += torch.bincount(y, minlength=c).double()
    model.train(was_training)
    sums = torch.cat([correct, count, top5.view(1), loss.view(1)])
    if d is not None:
        dist.all_reduce(sums)
    sums = sums.cpu()
    correct, count, top5_n, loss_s = sums[:c], sums[c : 2 * c], sums[2 * c].item(), sums[2 * c + 1].item()
    n = count.sum().item()
    per_class = tuple((correct / count).tolist())  # 0/0 = nan for an absent class
    return EvalResult(correct.sum().item() / n, top5_n / n, loss_s / n, per_class, int(n), time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------------- the loop
class _Interrupt:
    """While active, Ctrl-C sets a flag the loop checks after each step; a second Ctrl-C aborts at once."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.requested = False
        self._old: Any = None

    def __enter__(self) -> _Interrupt:
        import threading

        if self.enabled and threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _data_meta(data: DataSet, image_size: int) -> dict[str, Any]:
    return {"name": data.name, "classes": list(data.classes), "mean": list(data.mean), "std": list(data.std),
            "image_size": image_size, "in_chans": data.in_chans}  # fmt: skip


def _stats_from_dict(d: dict[str, Any]) -> EpochStats:
    test = d.get("test")
    return EpochStats(**{**d, "test": EvalResult(**{**test, "per_class": tuple(test["per_class"])}) if test else None})


def fit(
    model: nn.Module,
    data: DataSet,
    config: TrainConfig | None = None,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    teacher: nn.Module | str | os.PathLike[str] | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``data`` and return its accuracy; see the module docstring for the recipe.

    Args:
        model: any classification ``nn.Module`` (an EdgeNet's checkpoints also rebuild without code).
        data: the in-memory data set (:func:`edgecnn.data.load_data`).
        config: the recipe (:class:`TrainConfig`); default ``TrainConfig()``.
        out_dir: folder for ``last.pt``, written after every epoch and on Ctrl-C; None = no checkpoints.
        resume: continue from ``out_dir/last.pt`` (model, optimiser, EMA, RNG and position in the epoch).
        teacher: a model or checkpoint path to distil from (Hinton et al. 2015).

    Raises:
        NonFiniteLossError: the loss became NaN/inf (``last.pt`` holds the last good epoch).
        KeyboardInterrupt: after Ctrl-C, once the step finished and ``last.pt`` was saved.
    """
    cfg = config or TrainConfig()
    out = Path(out_dir) if out_dir is not None else None
    if resume and out is None:
        raise ValueError("resume needs the run folder (out_dir / --out) that holds last.pt")
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    d = _setup(cfg)
    try:
        run = _Run(model, data, cfg, d, out, teacher)
        if resume:
            run.restore()
        else:
            torch.manual_seed(cfg.seed)
        return run.train()
    finally:
        if d.owns_group:
            dist.destroy_process_group()
        torch.set_num_threads(threads)  # leave the process as it was


def _fresh() -> dict[str, float]:
    return {"loss": 0.0, "correct": 0.0, "n": 0.0, "seconds": 0.0}  # running sums of the current epoch


class _Run:
    """One call of :func:`fit`: the model with its optimiser, EMA and data, and where the run stands."""

    def __init__(self, model: nn.Module, data: DataSet, cfg: TrainConfig, d: _Dist, out: Path | None,
                 teacher: nn.Module | str | os.PathLike[str] | None) -> None:  # fmt: skip
        self.model, self.data, self.cfg, self.d, self.out = model, data, cfg, d, out
        self.image_size = cfg.image_size or data.image_size
        model.to(d.device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        self.loader = BatchLoader(data.train, batch_size=cfg.batch_size, mean=data.mean, std=data.std, train=True,
                                  augment=data.augment if cfg.augment else None, image_size=self.image_size,
                                  seed=cfg.seed, device=d.device, channels_last=cfg.channels_last, rank=d.rank,
                                  world_size=d.world)  # fmt: skip
        self.per_epoch = len(self.loader)
        if self.per_epoch == 0:
            raise ValueError(f"the training split has {len(data.train)} images, fewer than one batch of "
                             f"{cfg.batch_size}; lower --batch-size")  # fmt: skip
        self.total = cfg.steps if cfg.steps is not None else cfg.epochs * self.per_epoch
        self.epochs = math.ceil(self.total / self.per_epoch)
        self.warmup = min(round(cfg.warmup_epochs * self.per_epoch), self.total // 2)
        self.opt = make_optimizer(model, cfg)
        self.ema = ModelEma(model, cfg.ema_decay) if cfg.ema_decay else None
        self.teacher = None if teacher is None else load_teacher(teacher, num_classes=data.num_classes, device=d.device)
        fp16 = _amp_dtype(d.device, cfg.precision) == torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if fp16 else None  # bf16 needs no loss scaling
        self.net: nn.Module = model
        if d.world > 1:
            ids = [d.device.index] if d.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if cfg.compile:
            self.net = torch.compile(self.net)  # type: ignore[assignment]
        # where the run stands
        self.epoch, self.batch, self.step = 0, 0, 0
        self.lr = 0.0
        self.history: list[EpochStats] = []
        self.partial = _fresh()
        self.saved: str | None = None

    # ------------------------------------------------------------------------------------- checkpoints
    def restore(self) -> None:
        """Continue from ``out/last.pt``: weights, optimiser, EMA, RNG, position and history."""
        path = self.out / LAST  # type: ignore[operator]
        if not path.is_file():
            raise FileNotFoundError(f"nothing to resume: {path} does not exist; drop --resume to start afresh")
        ck = load_checkpoint(path)
        _check_same_recipe(ck.config, self.cfg)
        arch = getattr(self.model, "arch", None)
        if ck.arch is not None and arch is not None and ck.arch != arch:
            raise ValueError(f"{path} holds {ck.arch!r}, not {arch!r}; resume with the same model or a new --out")
        if ck.num_classes != self.data.num_classes:
            raise ValueError(f"the checkpoint has {ck.num_classes} classes, the data {self.data.num_classes}; "
                             "resume with the data it was trained on")  # fmt: skip
        try:
            self.model.load_state_dict(ck.state_dict)
        except RuntimeError as exc:
            raise ValueError(f"{path} does not fit this model ({str(exc).splitlines()[0]}); "
                             "resume with the same model or a new --out") from None  # fmt: skip
        if ck.optimizer is not None:
            self.opt.load_state_dict(ck.optimizer)
        if self.ema is not None and ck.ema_state_dict is not None:
            self.ema.module.load_state_dict(ck.ema_state_dict)
        self.epoch, self.batch, self.step = ck.epoch, ck.batch, ck.step
        self.history = [_stats_from_dict(h) for h in ck.history]
        self.partial.update(ck.partial)
        if "cpu" in ck.rng:
            torch.set_rng_state(ck.rng["cpu"])
        if "cuda" in ck.rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ck.rng["cuda"])
        self.saved = str(path)

    def save(self) -> None:
        """Write ``out/last.pt`` (first process only) for the current position; nothing without ``out``."""
        if self.out is None:
            return
        if self.d.rank == 0:
            rng: dict[str, Any] = {"cpu": torch.get_rng_state()}
            if torch.cuda.is_available():
                rng["cuda"] = torch.cuda.get_rng_state_all()
            ema = {k: v.detach().cpu() for k, v in self.ema.module.state_dict().items()} if self.ema else None
            ck = checkpoint_of(
                self.model, ema_state_dict=ema, optimizer=self.opt.state_dict(), epoch=self.epoch, batch=self.batch,
                step=self.step, rng=rng, config=asdict(self.cfg), data=_data_meta(self.data, self.image_size),
                history=[asdict(h) for h in self.history], partial=dict(self.partial),
            )  # fmt: skip
            self.saved = str(save_checkpoint(ck, self.out / LAST))
        if self.d.world > 1:
            dist.barrier()

    # ---------------------------------------------------------------------------------------- training
    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step on a batch; returns (loss, logits)."""
        cfg, dev = self.cfg, self.d.device
        self.lr = lr_at(self.step, total=self.total, warmup=self.warmup, peak=cfg.peak_lr, floor=cfg.min_lr)
        for g in self.opt.param_groups:
            g["lr"] = self.lr
        with _autocast(dev, cfg.precision):
            logits = self.net(x)
            if self.teacher is not None:
                with torch.no_grad():
                    soft = self.teacher(x)
                loss = distillation_loss(logits, soft, y, alpha=cfg.distill_alpha, temperature=cfg.distill_temperature,
                                         label_smoothing=cfg.label_smoothing)  # fmt: skip
            else:
                loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
        # a host sync per step costs nothing on the CPU; on CUDA check every 16 steps
        if (dev.type != "cuda" or self.step % 16 == 0) and not torch.isfinite(loss.detach()).item():
            raise NonFiniteLossError(_nan_message(loss, self.epoch, self.step, self.lr, self.saved))
        self.opt.zero_grad(set_to_none=True)
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        if cfg.grad_clip:
            if self.scaler:
                self.scaler.unscale_(self.opt)
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        if self.scaler:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        self.step += 1
        self.batch += 1
        if self.ema is not None:
            self.ema.update(self.model, self.step)
        return loss, logits

    def train_epoch(self, interrupt: _Interrupt, bar: _Bar) -> EpochStats:
        """The rest of the current epoch (or up to the step budget), then its evaluation."""
        d, p = self.d, self.partial
        self.net.train()
        t0 = time.perf_counter() - p["seconds"]
        loss_sum = torch.full((), p["loss"], dtype=torch.float64, device=d.device)
        correct = torch.full((), p["correct"], dtype=torch.float64, device=d.device)
        seen = p["n"]
        bar.start_epoch(self.epoch, self.batch)
        for x, y in self.loader.epoch(self.epoch, start=self.batch):
            loss, logits = self.train_step(x, y)
            with torch.no_grad():
                loss_sum += loss.detach().double() * len(y)
                correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
            bar.step(loss, correct, seen, seen * d.world / max(1e-9, time.perf_counter() - t0))
            if interrupt.requested:  # Ctrl-C: the step is complete, so the state is consistent
                self.partial = {"loss": loss_sum.item(), "correct": correct.item(), "n": seen,
                                "seconds": time.perf_counter() - t0}  # fmt: skip
                self.save()
                raise KeyboardInterrupt(f"interrupted at epoch {self.epoch + 1}, step {self.step}; "
                                        f"checkpoint: {self.saved}")  # fmt: skip
            if self.step >= self.total:
                break
        seconds = time.perf_counter() - t0
        loss_total, correct_total, n = _all_sum([loss_sum.item(), correct.item(), float(seen)], d)
        due = self.step >= self.total or (self.cfg.eval_every and (self.epoch + 1) % self.cfg.eval_every == 0)
        stats = EpochStats(self.epoch + 1, self.step, self.lr, loss_total / max(1.0, n), correct_total / max(1.0, n),
                           n / max(1e-9, seconds), seconds, self.evaluate(self.model) if due else None)  # fmt: skip
        if self.batch >= self.per_epoch:
            self.epoch, self.batch = self.epoch + 1, 0
        self.partial = _fresh()
        return stats

    def evaluate(self, model: nn.Module) -> EvalResult:
        cfg = self.cfg
        return evaluate(model, self.data, image_size=self.image_size, channels_last=cfg.channels_last,
                        precision=cfg.precision)  # fmt: skip

    def train(self) -> TrainResult:
        t_start = time.perf_counter()
        with _Interrupt(self.d.world == 1) as interrupt, _Bar(self.cfg.progress and self.d.rank == 0, self.epochs,
                                                              self.per_epoch) as bar:  # fmt: skip
            while self.epoch < self.epochs and self.step < self.total:
                stats = self.train_epoch(interrupt, bar)
                self.history.append(stats)
                bar.end_epoch(stats)
                self.save()
        last = self.history[-1].test if self.history else None
        final = last if last is not None else self.evaluate(self.model)
        ema = self.evaluate(self.ema.module) if self.ema is not None else None
        return TrainResult(final, ema, tuple(self.history), self.step, time.perf_counter() - t_start, self.saved)


# options that may change between a run and its resume
_RESUMABLE = frozenset({"epochs", "steps", "eval_every", "device", "threads", "progress", "compile"})


def _check_same_recipe(saved: dict[str, Any], cfg: TrainConfig) -> None:
    now = asdict(cfg)
    changed = [k for k in now if k in saved and k not in _RESUMABLE and saved[k] != now[k]]
    diff = [f"{k}: {saved[k]!r} -> {now[k]!r}" for k in changed]
    if diff:
        raise ValueError(f"cannot resume with a different recipe ({'; '.join(diff)}); "
                         "use the original options or a new --out folder")  # fmt: skip


def _nan_message(loss: torch.Tensor, epoch: int, step: int, lr: float, saved: str | None) -> str:
    kept = f"the last good checkpoint is {saved}" if saved else "no checkpoint was written yet"
    return (f"the loss became {loss.item()} at epoch {epoch + 1}, step {step + 1} (lr {lr:.3g}); training "
            f"stopped and {kept}; lower the learning rate (--lr) or lengthen the warm-up (--warmup)")  # fmt: skip


class _Bar:
    """A rich progress bar with loss, accuracy and images/s, and one line per epoch; silent when off."""

    def __init__(self, show: bool, epochs: int, per_epoch: int) -> None:
        self.show, self.epochs, self.per_epoch = show, epochs, per_epoch
        self._p: Any = None
        self._task: Any = None
        self._loss = 0.0
        self._k = 0

    def __enter__(self) -> _Bar:
        if self.show:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                               TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=True)  # fmt: skip
            self._p.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._p is not None:
            self._p.__exit__(*exc)

    def start_epoch(self, epoch: int, batch: int) -> None:
        if self._p is not None:
            if self._task is not None:
                self._p.remove_task(self._task)
            self._task = self._p.add_task(f"epoch {epoch + 1}/{self.epochs}", total=self.per_epoch,
                                          completed=batch, info="")  # fmt: skip
            self._k = 0

    def step(self, loss: torch.Tensor, correct: torch.Tensor, seen: float, images_per_s: float) -> None:
        if self._p is None:
            return
        self._k += 1
        if self._k % 5 == 0:  # .item() waits for the GPU: read the numbers every 5 steps only
            value = loss.item()
            self._loss = 0.7 * self._loss + 0.3 * value if self._k > 5 else value
            info = f"loss {self._loss:.3f}  train {correct.item() / max(1.0, seen):.1%}  {images_per_s:,.0f} img/s"
            self._p.update(self._task, advance=5, info=info)

    def end_epoch(self, s: EpochStats) -> None:
        if self._p is None:
            return
        self._p.update(self._task, completed=self.per_epoch)
        test = f"  test {s.test.top1:.1%} (top-5 {s.test.top5:.1%})" if s.test else ""
        self._p.console.print(f"epoch {s.epoch}/{self.epochs}  lr {s.lr:.3g}  loss {s.train_loss:.3f}  "
                              f"train {s.train_top1:.1%}{test}  {s.images_per_s:,.0f} img/s  {s.seconds:.1f} s",
                              soft_wrap=True, highlight=False)  # fmt: skip


def finetune(
    model: nn.Module,
    data: DataSet,
    *,
    steps: int,
    lr: float | None = None,
    config: TrainConfig | None = None,
    teacher: nn.Module | str | os.PathLike[str] | None = None,
) -> TrainResult:
    """Train ``model`` in place for ``steps`` optimiser steps and evaluate it once (no checkpoints, no output).

    The short fine-tune NetAdapt gives every proposal and architecture search
    every candidate; all arguments pickle, so it runs as well in a worker
    process. Defaults: :data:`FINETUNE` (SGD, lr 0.01, no warm-up).
    """
    base = config or FINETUNE
    cfg = replace(base, steps=steps, lr=lr if lr is not None else base.lr, eval_every=0, progress=False)
    return fit(model, data, cfg, teacher=teacher)


FINETUNE = TrainConfig(lr=0.01, warmup_epochs=0.0, eval_every=0, progress=False)
"""Defaults of :func:`finetune`: a short, gentle SGD run from trained weights."""

__all__ = [
    "FINETUNE",
    "EpochStats",
    "EvalResult",
    "ModelEma",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "finetune",
    "fit",
    "lr_at",
    "make_optimizer",
    "param_groups",
]
