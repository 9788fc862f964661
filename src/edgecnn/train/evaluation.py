"""Evaluation of a classifier on one split of a :class:`DataSet`: top-1, top-5, loss, per-class accuracy."""

from __future__ import annotations

import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from edgecnn.data import BatchLoader, DataSet
from edgecnn.train.config import EvalResult
from edgecnn.train.runtime import _autocast, _Dist


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
