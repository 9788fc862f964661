"""The training loop of :mod:`edgecnn.train`: :func:`fit`, :func:`finetune` and the run state behind them.

:class:`_Run` holds one call of :func:`fit` — the model with its optimiser,
EMA, teacher and data loader, and where the run stands (epoch, batch, step,
history) — and owns its checkpoint (``last.pt``, saved after every epoch and
on Ctrl-C, restored bit-for-bit on ``resume=True``).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, replace
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from edgecnn.checkpoint import checkpoint_of, first_nonfinite, load_checkpoint, load_weights, save_checkpoint
from edgecnn.data import BatchLoader, DataSet
from edgecnn.train.distill import distillation_loss, load_teacher
from edgecnn.run_folder import claim_run_dir
from edgecnn.train.config import FINETUNE, EpochStats, EvalResult, NonFiniteLossError, TrainConfig, TrainResult
from edgecnn.train.evaluation import evaluate
from edgecnn.train.optim import ModelEma, lr_at, make_optimizer
from edgecnn.train.resume import LAST, _check_same_recipe, _data_meta, _fresh, _stats_from_dict
from edgecnn.train.runtime import (_all_sum, _amp_dtype, _autocast, _Bar, _Dist, _Interrupt, _precision_name, _setup,
                                   _warn_slow_autocast)  # fmt: skip
from edgecnn.train.threads import ThreadGovernor


def fit(
    model: nn.Module,
    data: DataSet,
    config: TrainConfig | None = None,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    teacher: nn.Module | str | os.PathLike[str] | None = None,
    record: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``data`` and return its accuracy; see the module docstring for the recipe.

    Args:
        model: any classification ``nn.Module`` (an EdgeNet's checkpoints also rebuild without code).
        data: the in-memory data set (:func:`edgecnn.data.load_data`).
        config: the recipe (:class:`TrainConfig`); default ``TrainConfig()``.
        out_dir: folder for ``last.pt``, written after every epoch and on Ctrl-C; None = no checkpoints.
        resume: continue from ``out_dir/last.pt`` (model, optimiser, EMA, RNG and position in the epoch).
        overwrite: replace a previous run in ``out_dir``; without it (or ``resume``) such a folder is
            refused (:func:`edgecnn.run_folder.claim_run_dir`), so a re-run never silently replaces results.
        teacher: a model or checkpoint path to distil from (Hinton et al. 2015).
        record: plain data added to the checkpoint's ``config`` next to the recipe, e.g.
            ``{"constructor": {"ref": "my_net.py:build", "kwargs": {}}}`` (:mod:`edgecnn.train.foreign`).

    Raises:
        NonFiniteLossError: the loss became NaN/inf (``last.pt`` holds the last good epoch).
        KeyboardInterrupt: after Ctrl-C, once the step finished and ``last.pt`` was saved.
    """
    cfg = config or TrainConfig()
    cfg.check_limits()  # `epochs=10**9` is years of work: refused before anything starts
    out = Path(out_dir) if out_dir is not None else None
    if resume and out is None:
        raise ValueError("resume needs the run folder (out_dir / --out) that holds last.pt")
    if out is not None:
        claim_run_dir(out, resume=resume, overwrite=overwrite)
    threads = torch.get_num_threads()
    governor = ThreadGovernor() if cfg.threads == "auto" else None
    if governor is not None:
        governor.start()
    elif cfg.threads:
        torch.set_num_threads(cfg.threads)
    d = _setup(cfg)
    try:
        run = _Run(model, data, cfg, d, out, teacher, record, governor)
        if resume:
            run.restore()
        else:
            torch.manual_seed(cfg.seed)
        return run.train()
    finally:
        if d.owns_group:
            dist.destroy_process_group()
        torch.set_num_threads(threads)  # leave the process as it was


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


class _Run:
    """One call of :func:`fit`: the model with its optimiser, EMA and data, and where the run stands."""

    def __init__(self, model: nn.Module, data: DataSet, cfg: TrainConfig, d: _Dist, out: Path | None,
                 teacher: nn.Module | str | os.PathLike[str] | None,
                 record: Mapping[str, Any] | None = None, governor: ThreadGovernor | None = None) -> None:  # fmt: skip
        self.model, self.data, self.cfg, self.d, self.out = model, data, cfg, d, out
        self.governor = governor  # threads="auto": keeps the thread count at the free cores
        self.record = dict(record or {})  # saved into the checkpoint's config beside the recipe
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
        amp = _amp_dtype(d.device, cfg.precision)
        _warn_slow_autocast(d.device, amp)
        self.arithmetic = _precision_name(amp)  # what every epoch of this call runs in (EpochStats.precision)
        fp16 = amp == torch.float16
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
            load_weights(self.model, ck.state_dict, what=f"the weights in {path}", network="this model")
        except ValueError as exc:
            raise ValueError(f"{exc}; resume with the same model or a new --out") from None
        part = "optimizer state"
        try:  # the schema checked the types; what they hold must still fit this optimiser and RNG
            if ck.optimizer is not None:
                self.opt.load_state_dict(ck.optimizer)
            part = "EMA weights"
            if self.ema is not None and ck.ema_state_dict is not None:
                self.ema.module.load_state_dict(ck.ema_state_dict)
            part = "RNG state"
            if "cpu" in ck.rng:
                torch.set_rng_state(ck.rng["cpu"])
            if "cuda" in ck.rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(ck.rng["cuda"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
            raise ValueError(f"{path} has a damaged {part} ({str(exc).splitlines()[0][:100]}); "
                             "start afresh with --overwrite or use another --out") from None  # fmt: skip
        self.epoch, self.batch, self.step = ck.epoch, ck.batch, ck.step
        self.history = [_stats_from_dict(h) for h in ck.history]
        self.partial.update(ck.partial)
        self.saved = str(path)

    def save(self) -> None:
        """Write ``out/last.pt`` (first process only) for the current position; nothing without ``out``."""
        if self.out is None:
            return
        self._check_weights()  # every process: DDP keeps the weights identical, so all stop together
        if self.d.rank == 0:
            rng: dict[str, Any] = {"cpu": torch.get_rng_state()}
            if torch.cuda.is_available():
                rng["cuda"] = torch.cuda.get_rng_state_all()
            ema = {k: v.detach().cpu() for k, v in self.ema.module.state_dict().items()} if self.ema else None
            ck = checkpoint_of(
                self.model, ema_state_dict=ema, optimizer=self.opt.state_dict(), epoch=self.epoch, batch=self.batch,
                step=self.step, rng=rng, config={**asdict(self.cfg), **self.record},
                data=_data_meta(self.data, self.image_size),
                history=[asdict(h) for h in self.history], partial=dict(self.partial),
            )  # fmt: skip
            self.saved = str(save_checkpoint(ck, self.out / LAST))
        if self.d.world > 1:
            dist.barrier()

    def _check_weights(self) -> None:
        """:class:`NonFiniteLossError` rather than a ``last.pt`` with NaN/Inf weights (which no loader accepts).

        The loss is checked before each step (every 16th on CUDA), but a step
        can still overflow the weights while its loss was finite. The check
        (:func:`edgecnn.checkpoint.first_nonfinite`) costs about a millisecond.
        """
        bad = first_nonfinite(self.model.state_dict(), "state_dict")
        if bad is None and self.ema is not None:
            bad = first_nonfinite(self.ema.module.state_dict(), "ema_state_dict")
        if bad is not None:
            path, n, size = bad
            kept = f"the last good checkpoint is {self.saved}" if self.saved else "no checkpoint was written yet"
            raise NonFiniteLossError(
                f"the weights became NaN/Inf ({path}: {n:,} of {size:,} values) by step {self.step} "
                f"(lr {self.lr:.3g}); training stopped and {kept}; lower the learning rate (--lr) or lengthen "
                "the warm-up (--warmup)"
            )

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
            if self.governor is not None:
                self.governor.tick(self.step)
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
                           n / max(1e-9, seconds), seconds, self.evaluate(self.model) if due else None,
                           self.governor.threads if self.governor is not None else None,
                           self.arithmetic)  # fmt: skip
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
        lead = self.d.rank == 0
        bar_ = _Bar(self.cfg.progress and lead, self.epochs, self.per_epoch, self.cfg.log_epochs and lead)
        with _Interrupt(self.d.world == 1) as interrupt, bar_ as bar:
            while self.epoch < self.epochs and self.step < self.total:
                stats = self.train_epoch(interrupt, bar)
                self.history.append(stats)
                bar.end_epoch(stats)
                self.save()
        last = self.history[-1].test if self.history else None
        final = last if last is not None else self.evaluate(self.model)
        ema = self.evaluate(self.ema.module) if self.ema is not None else None
        return TrainResult(final, ema, tuple(self.history), self.step, time.perf_counter() - t_start, self.saved)


def _nan_message(loss: torch.Tensor, epoch: int, step: int, lr: float, saved: str | None) -> str:
    kept = f"the last good checkpoint is {saved}" if saved else "no checkpoint was written yet"
    return (f"the loss became {loss.item()} at epoch {epoch + 1}, step {step + 1} (lr {lr:.3g}); training "
            f"stopped and {kept}; lower the learning rate (--lr) or lengthen the warm-up (--warmup)")  # fmt: skip
