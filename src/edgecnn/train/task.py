"""A short fine-tune as a picklable task for :class:`edgecnn.executor.Executor`: arch string + weights + recipe.

NetAdapt (Yang et al. 2018) fine-tunes every proposal for a few steps and keeps
the best; architecture search trains every candidate briefly. Both send the
same job to a worker: :class:`FinetuneTask` names the network by its arch
string and ``state_dict`` (not a module: plain tensors and strings pickle
cheaply and safely) and the data by :class:`DataRef` — *where* to load it, not
the images, which each worker process loads once and keeps
(:func:`worker_data`), instead of receiving a copy with every task.
:func:`run_finetune` is the function to map.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from functools import lru_cache

import torch
from torch import nn

from edgecnn.build import build
from edgecnn.data import DataSet, load_data
from edgecnn.data.sets import stratified_split
from edgecnn.train.config import FINETUNE, TrainConfig
from edgecnn.train.loop import finetune


@dataclass(frozen=True)
class DataRef:
    """Where a worker loads its data from (the arguments of :func:`edgecnn.data.load_data`)."""

    source: str = "digits"  # "digits", a folder or an archive
    image_size: int | None = None  # stored image side (None: the source's default)
    limit: int | None = None  # at most this many images per class and split
    seed: int = 0  # split seed where the source has no test split
    cache: str | None = None  # folder of decoded archives (None: the default cache)
    holdout: float = 0.0  # > 0: this share of the training split becomes the test split (choose without the test set)
    holdout_seed: int = 0  # seed of that stratified split


@lru_cache(maxsize=2)
def worker_data(ref: DataRef) -> DataSet:
    """The data set of ``ref``, loaded once per process (a worker runs many tasks on the same data)."""
    data = load_data(ref.source, image_size=ref.image_size, limit=ref.limit, seed=ref.seed, cache=ref.cache)
    return holdout(data, ref.holdout, ref.holdout_seed) if ref.holdout > 0 else data


def holdout(data: DataSet, fraction: float, seed: int = 0) -> DataSet:
    """``data`` with a stratified ``fraction`` of its training split as the test split (and the rest to train on).

    NetAdapt and search choose between candidates by accuracy; choosing on the
    test split would report a selected, optimistic number (Yang et al. 2018
    hold out 10k training images for the same reason).
    """
    if not 0 < fraction < 1:
        raise ValueError(f"the hold-out is a share of the training split in (0, 1), got {fraction}")
    train_idx, val_idx = stratified_split(data.train.labels.numpy(), fraction, seed)
    return replace(data, name=f"{data.name} (hold-out {fraction:g})", train=data.train.subset(train_idx),
                   test=data.train.subset(val_idx))  # fmt: skip


@dataclass(frozen=True)
class FinetuneTask:
    """One fine-tune: the network (arch + weights), the data and the recipe."""

    name: str  # how progress and errors name the task (e.g. "iter 3, group stage2.c")
    arch: str  # arch string of the network
    state_dict: dict[str, torch.Tensor]  # its starting weights (CPU tensors); {} with ``module``: the module's own
    data: DataRef = field(default_factory=DataRef)  # where the worker loads the data
    steps: int = 100  # optimiser steps
    config: TrainConfig = FINETUNE  # the recipe (lr, batch size, threads, ...); steps above override its own
    return_weights: bool = True  # send the fine-tuned state_dict back (NetAdapt keeps the winner's)
    # a network that is not an EdgeNet travels whole, with its weights (its classes must be importable in the
    # worker); arch is unused, and an empty state_dict keeps the weights from being sent twice
    module: nn.Module | None = None


@dataclass(frozen=True)
class FinetuneOutcome:
    """What a fine-tune task returns."""

    name: str  # the task's name
    top1: float  # test top-1 after fine-tuning
    loss: float  # test cross-entropy after fine-tuning
    steps: int  # optimiser steps done
    seconds: float  # wall time of the fine-tune in the worker
    state_dict: dict[str, torch.Tensor] | None  # fine-tuned weights (None unless return_weights)


def run_finetune(task: FinetuneTask) -> FinetuneOutcome:
    """Build the network, load its weights, fine-tune it for ``task.steps`` and evaluate it once."""
    data = worker_data(task.data)
    if task.module is not None:
        model = copy.deepcopy(task.module)
    else:
        model = build(task.arch, num_classes=data.num_classes, in_chans=data.in_chans)
    try:
        if task.module is None or task.state_dict:
            model.load_state_dict(task.state_dict)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ValueError(f"task {task.name}: the weights do not fit {task.arch!r}: {first}") from None
    result = finetune(model, data, steps=task.steps, config=task.config)
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()} if task.return_weights else None
    return FinetuneOutcome(task.name, result.top1, result.final.loss, result.steps, result.seconds, weights)
