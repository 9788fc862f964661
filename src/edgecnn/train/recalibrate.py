"""Re-estimate BatchNorm running statistics on a few batches (docs/design.md §5, BN recalibration).

A BN's running mean and variance are an estimate of its input distribution
on the training data. They go stale when the network changes under them
(pruned channels, low-rank or separable replacements: the inputs of later
BNs move) or when the data shifts — Ioffe & Szegedy's covariate-shift
argument for BN cuts both ways. Re-estimating them on a few hundred images,
without touching a weight, recovers much of the lost accuracy, and is the
cheap way to score pruning candidates (Li et al. 2020, "EagleEye", §3.2;
NetAdapt's short fine-tune can start from it).

How: every BN with running statistics is reset and put in train mode while
the rest of the network stays in eval mode (dropout off), then the batches run
forward under ``no_grad``. Each batch's statistics — the mean over
``N×H×W`` and the **unbiased** variance, as ``nn.BatchNorm`` records them —
enter a cumulative average weighted by batch size: batch ``k`` of ``n_k``
images gets momentum ``n_k / (n_1 + … + n_k)``. With equal batches this is
exactly PyTorch's ``momentum=None`` cumulative average (what
``torch.optim.swa_utils.update_bn`` uses); a short last batch counts for its
images, not as a full batch. The running mean is then the mean over all
images seen; the running variance is the size-weighted mean of the per-batch
variances, which misses the spread of the batch means between batches (a
``1/(N·H·W)`` relative effect, tiny for conv layers).

Modes, momenta and gradients are left as they were; BNs the forward never
reached keep their old statistics. The batch dimension of every BN's input
must be the model input's dim 0 (true for CNNs).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable
from typing import Union

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from edgecnn.data.loader import BatchLoader

__all__ = ["Batches", "has_running_bn", "recalibrate_bn", "recalibrate_bn_", "recalibrate_bn_if_any_"]

Batches = Union[BatchLoader, Iterable[torch.Tensor], Iterable[tuple[torch.Tensor, torch.Tensor]]]
"""Anything that yields input tensors, or ``(x, y)`` pairs whose ``x`` is the input."""


def _input_of(batch: object) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise ValueError(
        f"batches must yield input tensors or (x, y) pairs, got a {type(batch).__name__}; "
        "pass e.g. a BatchLoader or (x for x, _ in loader)"
    )


def _device_of(model: nn.Module) -> torch.device | None:
    for t in itertools.chain(model.parameters(), model.buffers()):
        return t.device
    return None


def has_running_bn(model: nn.Module) -> bool:
    """Whether ``model`` has a BN with running statistics (what :func:`recalibrate_bn_` re-estimates)."""
    return any(isinstance(m, _BatchNorm) and m.track_running_stats for m in model.modules())


def recalibrate_bn_if_any_(model: nn.Module, batches: Batches, *, num_batches: int = 20) -> nn.Module:
    """:func:`recalibrate_bn_` where ``model`` has BN statistics; a network without BN (LayerNorm, none) is left
    as it is — what the compression steps (NetAdapt's proposals, a pruned or factorised result) need."""
    return recalibrate_bn_(model, batches, num_batches=num_batches) if has_running_bn(model) else model


def recalibrate_bn_(model: nn.Module, batches: Batches, *, num_batches: int = 20) -> nn.Module:
    """Re-estimate the running statistics of every BN of ``model`` in place on ``num_batches`` batches.

    ``batches``: an :class:`~edgecnn.data.BatchLoader` (its first epoch), or
    any iterable of input tensors or ``(x, y)`` pairs; only the first
    ``num_batches`` are drawn. Returns ``model``.
    """
    if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
        raise ValueError(f"num_batches must be a positive integer, got {num_batches!r}")
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not bns:
        raise ValueError(
            f"{type(model).__name__} has no BatchNorm with running statistics; there is nothing to "
            "recalibrate — skip this step for this model"
        )
    modes = [(m, m.training) for m in model.modules()]
    momenta = [bn.momentum for bn in bns]
    saved = [
        (bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone())  # type: ignore[union-attr]
        for bn in bns
    ]
    device = _device_of(model)
    ok = False
    try:
        model.eval()
        for bn in bns:
            bn.reset_running_stats()
            bn.train()
        seen = drawn = 0
        with torch.no_grad():
            for batch in itertools.islice(iter(batches), num_batches):
                x = _input_of(batch)
                if device is not None:
                    x = x.to(device)
                seen += x.shape[0]
                for bn in bns:  # size-weighted cumulative average, see the module docstring
                    bn.momentum = x.shape[0] / seen
                model(x)
                drawn += 1
        if drawn == 0:
            raise ValueError("batches yielded no batch; pass a non-empty loader or iterable")
        ok = True
    finally:
        for bn, m, (mean, var, count) in zip(bns, momenta, saved):
            bn.momentum = m
            if not ok or int(bn.num_batches_tracked) == 0:  # type: ignore[arg-type]
                # failed run, or a BN the forward never reached: keep what it had
                bn.running_mean.copy_(mean)  # type: ignore[union-attr]
                bn.running_var.copy_(var)  # type: ignore[union-attr]
                bn.num_batches_tracked.copy_(count)  # type: ignore[union-attr]
        for m, training in modes:
            m.training = training
    return model


def recalibrate_bn(model: nn.Module, batches: Batches, *, num_batches: int = 20) -> nn.Module:
    """A copy of ``model`` whose BN running statistics are re-estimated on ``batches``; see :func:`recalibrate_bn_`."""
    return recalibrate_bn_(copy.deepcopy(model), batches, num_batches=num_batches)
