"""Training speed and accuracy on CIFAR-10: edgecnn's loop against a plain PyTorch loop, same model, same process.

For each model (``mobilenet_v2_cifar`` at width 0.5, ``resnet20_cifar``):

1. **Throughput**, interleaved round-robin (background load hits both alike),
   one untimed warm-up each, then the median of ``--rounds`` timings of
   ``--steps`` optimiser steps, data pipeline included:

   - *plain*: what a torchvision user writes — a ``Dataset`` that turns each
     stored image into a PIL image, pads 4, random-crops 32×32, maybe flips,
     ``ToTensor`` + ``Normalize``; a ``DataLoader`` (``num_workers=0``, one
     process as the rest); NCHW fp32 model; SGD + cosine ``LRScheduler``;
   - *ours*: :func:`edgecnn.train.fit` with its defaults (uint8 tensors in
     memory, batched crop/flip, channels_last), and with ``precision="bf16"``.

2. **Where the time goes**: data / forward / backward / optimiser seconds per
   step of both loops, and the top operators of ours under ``torch.profiler``.

3. **Accuracy**: ``fit`` for ``--epochs`` epochs on ``--train-per-class``
   images of each class (default 500: 5 000 of the 50 000, so that both models
   finish in minutes on a 2-core CPU), top-1 on ``--test-per-class`` test
   images per class after every epoch, and images/s per epoch.

The same script runs on a GPU when one is present (``--device auto``); give it
the whole training set there (``--train-per-class 5000``). Writes
``benchmarks/results/train_cifar-<device>.json`` with the machine, the load
average before and after, the medians and the ratios.

    .venv/bin/python benchmarks/train_cifar.py [--epochs 3] [--threads 1] [--train-per-class 500]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.utils.data import DataLoader, Dataset

from edgecnn import zoo
from edgecnn.data import BatchLoader, DataSet, load_data
from edgecnn.train import TrainConfig, fit, make_optimizer

CIFAR = "/work/shared/data/cifar10-jpeg.tar.xz"
MODELS = (("mobilenet_v2_cifar", 0.5), ("resnet20_cifar", 1.0))
RESULTS = Path(__file__).parent / "results"


def loadavg() -> list[float] | None:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def machine(device: torch.device) -> dict:
    cpu = platform.processor()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                   if ln.startswith("model name"))  # fmt: skip
    except (OSError, StopIteration):
        pass
    return {
        "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
        "cpu": cpu, "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------- the plain loop
class PlainCIFAR(Dataset):
    """torchvision's CIFAR10 + RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize, per sample."""

    def __init__(self, data: DataSet, train: bool) -> None:
        split = data.train if train else data.test
        self.hwc = split.images.permute(0, 2, 3, 1).numpy()  # stored as torchvision stores CIFAR-10
        self.labels = split.labels.tolist()
        self.train = train
        self.mean = torch.tensor(data.mean).view(-1, 1, 1)
        self.std = torch.tensor(data.std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = Image.fromarray(self.hwc[i])
        if self.train:
            img = ImageOps.expand(img, border=4, fill=0)
            x0, y0 = random.randint(0, 8), random.randint(0, 8)
            img = img.crop((x0, y0, x0 + 32, y0 + 32))
            if random.random() < 0.5:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        t = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (t - self.mean) / self.std, self.labels[i]


class PlainLoop:
    """The textbook step: DataLoader batch, forward, cross-entropy, backward, SGD step, scheduler step."""

    def __init__(self, model: nn.Module, data: DataSet, device: torch.device, batch_size: int, total_steps: int):
        self.model, self.device = model.to(device), device
        self.loader = DataLoader(PlainCIFAR(data, True), batch_size=batch_size, shuffle=True, drop_last=True)
        self.opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=total_steps)
        self.it = iter(self.loader)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            x, y = next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            x, y = next(self.it)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def run(self, steps: int) -> float:
        """Images per second over ``steps`` steps."""
        self.model.train()
        t = time.perf_counter()
        for _ in range(steps):
            x, y = self.batch()
            loss = F.cross_entropy(self.model(x), y, label_smoothing=0.1)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            self.sched.step()
        _sync(self.device)
        return steps * self.loader.batch_size / (time.perf_counter() - t)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------- where the time goes
def breakdown(step_parts, steps: int, device: torch.device) -> dict[str, float]:
    """Median seconds per step of each phase; ``step_parts`` yields (data, forward, backward, optimiser) callables."""
    times: dict[str, list[float]] = {"data": [], "forward": [], "backward": [], "optimizer": []}
    for _ in range(steps):
        phases = step_parts()
        out = None
        for name, fn in zip(times, phases):
            t = time.perf_counter()
            out = fn(out)
            _sync(device)
            times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def plain_parts(loop: PlainLoop):
    def parts():
        def fwd(b):
            x, y = b
            return F.cross_entropy(loop.model(x), y, label_smoothing=0.1)

        def bwd(loss):
            loop.opt.zero_grad()
            loss.backward()

        def opt(_):
            loop.opt.step()
            loop.sched.step()

        return (lambda _: loop.batch(), fwd, bwd, opt)

    return parts


def ours_parts(model: nn.Module, data: DataSet, cfg: TrainConfig, device: torch.device):
    loader = BatchLoader(data.train, batch_size=cfg.batch_size, mean=data.mean, std=data.std, train=True,
                         augment=data.augment, seed=1, device=device, channels_last=cfg.channels_last)  # fmt: skip
    opt = make_optimizer(model, cfg)
    state = {"it": loader.epoch(0), "epoch": 0}

    def next_batch(_):
        try:
            return next(state["it"])
        except StopIteration:
            state["epoch"] += 1
            state["it"] = loader.epoch(state["epoch"])
            return next(state["it"])

    def parts():
        def fwd(b):
            x, y = b
            return F.cross_entropy(model(x), y, label_smoothing=cfg.label_smoothing)

        def bwd(loss):
            opt.zero_grad(set_to_none=True)
            loss.backward()

        return (next_batch, fwd, bwd, lambda _: opt.step())

    return parts


def top_ops(model: nn.Module, data: DataSet, cfg: TrainConfig, device: torch.device, n: int = 6) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    parts = ours_parts(model, data, cfg, device)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        breakdown(parts, 2, device)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0), reverse=True)
    total = sum(getattr(e, key, 0) for e in events) or 1
    return [{"op": e.key, "self_time_share": getattr(e, key, 0) / total, "calls": e.count} for e in events[:n]]


# ---------------------------------------------------------------------------------------------------- the run
def run_model(name: str, width: float, data: DataSet, args: argparse.Namespace, device: torch.device,
              console: Console) -> dict:  # fmt: skip
    torch.manual_seed(0)
    base = zoo.create(name, width=width, num_classes=data.num_classes)
    cfg = TrainConfig(batch_size=args.batch_size, lr=0.1, progress=False, eval_every=0, device=str(device),
                      warmup_epochs=0)  # fmt: skip
    # 1. throughput, round-robin
    plain_model = zoo.create(name, width=width, num_classes=data.num_classes)
    plain_model.load_state_dict(base.state_dict())
    loop = PlainLoop(plain_model, data, device, args.batch_size, total_steps=10_000)
    ours_model = zoo.create(name, width=width, num_classes=data.num_classes)
    ours_model.load_state_dict(base.state_dict())
    bf16_model = zoo.create(name, width=width, num_classes=data.num_classes)
    bf16_model.load_state_dict(base.state_dict())
    small = replace(data, test=data.test.subset(list(range(min(args.batch_size, len(data.test))))))  # cheap final eval
    contenders = {
        "plain": lambda k: loop.run(k),
        "ours": lambda k: fit(ours_model, small, replace(cfg, steps=k)).history[0].images_per_s,
        "ours_bf16": lambda k: fit(bf16_model, small, replace(cfg, steps=k, precision="bf16")).history[0].images_per_s,
    }
    for run in contenders.values():  # warm-up: oneDNN primitives, allocator
        run(2)
    speed: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(args.rounds):
        for k, run in contenders.items():
            speed[k].append(run(args.steps))
    med = {k: statistics.median(v) for k, v in speed.items()}
    # 2. where the time goes
    parts_plain = breakdown(plain_parts(loop), args.steps, device)
    parts_ours = breakdown(ours_parts(ours_model, data, cfg, device), args.steps, device)
    ops = top_ops(ours_model, data, cfg, device)
    # 3. accuracy per epoch
    torch.manual_seed(0)
    model = zoo.create(name, width=width, num_classes=data.num_classes)
    result = fit(model, data, replace(cfg, epochs=args.epochs, eval_every=1, warmup_epochs=min(1.0, args.epochs / 4),
                                      progress=args.progress))  # fmt: skip
    epochs = [{"epoch": e.epoch, "images_per_s": e.images_per_s, "seconds": e.seconds, "train_loss": e.train_loss,
               "train_top1": e.train_top1, "test_top1": e.test.top1 if e.test else None,
               "test_top5": e.test.top5 if e.test else None} for e in result.history]  # fmt: skip
    t = Table(title=f"{name} (width {width:g}): images/s, median of {args.rounds}×{args.steps} steps")
    for col in ("loop", "images/s", "× plain", "data", "forward", "backward", "optimizer"):
        t.add_column(col, justify="right" if col != "loop" else "left")
    for k in contenders:
        parts = {"plain": parts_plain, "ours": parts_ours}.get(k)
        phases = ("data", "forward", "backward", "optimizer")
        cells = [f"{parts[p] * 1e3:.0f} ms" for p in phases] if parts else [""] * 4
        t.add_row(k, f"{med[k]:,.0f}", f"{med[k] / med['plain']:.2f}", *cells)
    console.print(t)
    e = Table(title=f"{name}: {args.epochs} epochs on {len(data.train)} training images")
    for col in ("epoch", "images/s", "train loss", "train top-1", "test top-1", "test top-5"):
        e.add_column(col, justify="right")
    for row in epochs:
        e.add_row(str(row["epoch"]), f"{row['images_per_s']:,.0f}", f"{row['train_loss']:.3f}",
                  f"{row['train_top1']:.1%}", f"{row['test_top1']:.1%}", f"{row['test_top5']:.1%}")  # fmt: skip
    console.print(e)
    console.print("top operators of ours (self time): " +
                  ", ".join(f"{o['op']} {o['self_time_share']:.0%}" for o in ops))  # fmt: skip
    return {
        "model": name, "width": width, "params": sum(p.numel() for p in base.parameters()),
        "images_per_s": {k: {"runs": v, "median": med[k]} for k, v in speed.items()},
        "ratio_ours_to_plain": med["ours"] / med["plain"], "ratio_ours_bf16_to_plain": med["ours_bf16"] / med["plain"],
        "seconds_per_step": {"plain": parts_plain, "ours": parts_ours}, "top_ops_ours": ops,
        "epochs": epochs, "final_top1": result.final.top1, "train_seconds": result.seconds,
    }  # fmt: skip


def data_pipeline(data: DataSet, batch_size: int, batches: int, rounds: int = 3) -> dict[str, float]:
    """Images/s of the two data pipelines alone (no model): one warm-up batch, median of ``rounds``."""
    loader = BatchLoader(data.train, batch_size=batch_size, mean=data.mean, std=data.std, train=True,
                         augment=data.augment, channels_last=True)  # fmt: skip
    plain = DataLoader(PlainCIFAR(data, True), batch_size=batch_size, shuffle=True, drop_last=True)

    def ours_rate(epoch: int) -> float:
        it = loader.epoch(epoch)
        next(it)
        t = time.perf_counter()
        n = sum(1 for _ in zip(range(batches), it))
        return n * batch_size / (time.perf_counter() - t)

    def plain_rate() -> float:
        it = iter(plain)
        next(it)
        t = time.perf_counter()
        n = sum(1 for _ in zip(range(batches), it))
        return n * batch_size / (time.perf_counter() - t)

    rates: dict[str, list[float]] = {"ours": [], "plain": []}
    for r in range(rounds):
        rates["ours"].append(ours_rate(r))
        rates["plain"].append(plain_rate())
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {**med, "ratio": med["ours"] / max(1e-9, med["plain"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=CIFAR, help="CIFAR-10 archive or folder")
    ap.add_argument("--models", nargs="+", default=[f"{n}:{w:g}" for n, w in MODELS], help="name:width ...")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--train-per-class", type=int, default=500, help="training images per class (5000 = all)")
    ap.add_argument("--test-per-class", type=int, default=100, help="test images per class (1000 = all)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8, help="optimiser steps per throughput timing")
    ap.add_argument("--rounds", type=int, default=3, help="timings per loop (median reported)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--progress", action="store_true", help="progress bars during the accuracy runs")
    ap.add_argument("--out", default=None, help="JSON path (default results/train_cifar-<device>.json)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    console = Console()
    load_before = loadavg()
    t0 = time.perf_counter()
    full = load_data(args.data, progress=True)
    decode_s = time.perf_counter() - t0
    data = replace(full, train=full.train.per_class_limit(args.train_per_class),
                   test=full.test.per_class_limit(args.test_per_class))  # fmt: skip
    console.print(f"{data.summary()} (loaded in {decode_s:.1f} s), {torch.get_num_threads()} threads, {device}")
    pipe = data_pipeline(data, args.batch_size, batches=20)
    console.print(f"data pipeline alone: ours {pipe['ours']:,.0f} images/s, plain {pipe['plain']:,.0f} "
                  f"({pipe['ratio']:.0f}×)")  # fmt: skip
    models = []
    for spec in args.models:
        name, _, w = spec.partition(":")
        models.append(run_model(name, float(w or 1), data, args, device, console))
    out = Path(args.out) if args.out else RESULTS / f"train_cifar-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "train_cifar", "machine": machine(device), "load_avg_before": load_before,
        "load_avg_after": loadavg(), "args": vars(args), "data_load_seconds": decode_s,
        "train_images": len(data.train), "test_images": len(data.test), "data_pipeline_images_per_s": pipe,
        "models": models, "config_ours": asdict(TrainConfig()),
    }  # fmt: skip
    out.write_text(json.dumps(report, indent=1))
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
