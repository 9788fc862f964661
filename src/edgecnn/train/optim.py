"""Learning-rate schedule, weight EMA and optimiser of :mod:`edgecnn.train`.

- linear warm-up (Goyal et al. 2017, "Accurate, large minibatch SGD") then
  cosine decay (Loshchilov & Hutter 2017, "SGDR"), computed from the step
  number, so a resume needs no scheduler state;
- an exponential moving average of the weights (Polyak averaging, as in the
  MnasNet/EfficientNet/MobileNetV3 recipes), with the TensorFlow warm-up of the decay;
- SGD with Nesterov momentum or AdamW (Loshchilov & Hutter 2019, "Decoupled
  weight decay regularization"), no weight decay on BN parameters and biases.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from edgecnn.train.config import TrainConfig


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
