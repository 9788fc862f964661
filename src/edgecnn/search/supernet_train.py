"""Training a :class:`~edgecnn.search.supernet.Supernet`: the sandwich rule or OFA's progressive shrinking.

:func:`train_supernet` follows one of two schedules (``SupernetConfig.schedule``):

* ``sandwich`` — the **sandwich rule** of slimmable networks (Yu & Huang 2019,
  "Universally slimmable networks", §3.3; BigNAS, Yu et al. 2020): every step
  sums the gradients of the largest subnet, the smallest and ``num_random``
  random ones, and the smaller subnets learn from the largest one's outputs
  (in-place distillation) as well as from the labels;
* ``progressive`` — OFA's **progressive shrinking** (Cai et al. 2020, §3.2): the
  full network first, then elastic kernel (with the kernel transformation
  matrices), depth, and expansion and width, in the phases of
  :mod:`edgecnn.search.progressive`. At the end of the full phase the full
  network is frozen as the teacher every later subnet distils from (OFA's
  knowledge distillation); before the first width phase the channels are sorted
  by importance; every phase starts a fresh optimiser and learning-rate schedule
  (in OFA each phase is a separate run).

Checkpoints (:func:`save_supernet`, :func:`load_supernet`) are plain data,
loaded with ``weights_only=True``; a run resumes from the last one when its
recipe is the same (:func:`same_recipe`).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from edgecnn.atomic import atomic_write
from edgecnn.build import EdgeNet, build
from edgecnn.data import BatchLoader, DataSet
from edgecnn.data.loader import mix_seed
from edgecnn.train.distill import distillation_loss
from edgecnn.limits import MAX_BATCH, MAX_CHANNELS, MAX_MEMORY_GB, MAX_STEPS
from edgecnn.schema import Fields
from edgecnn.search.progressive import WIDTH_GENES, PhaseSpan, phase_space, phase_spans, span_at
from edgecnn.search.space import Genome, SearchSpace, space_from_dict
from edgecnn.search.supernet import FORMAT, Supernet, supernet_params
from edgecnn.train.optim import lr_at, param_groups

SCHEDULES: tuple[str, ...] = ("sandwich", "progressive")


@dataclass(frozen=True)
class SupernetConfig:
    """How to train a supernet. Plain values: it is stored in the checkpoint and compared on resume."""

    steps: int = 2000  # optimiser steps; a sandwich step trains 2 + num_random subnets on one batch
    batch_size: int = 64  # images per step
    lr: float = 0.05  # peak learning rate (SGD, Nesterov momentum 0.9, cosine decay)
    weight_decay: float = 3e-5  # on conv/linear weights only (OFA's value)
    warmup_steps: int = 100  # linear warm-up
    label_smoothing: float = 0.1  # of the largest subnet's labels
    num_random: int = 2  # random subnets per step besides the largest and smallest
    inplace_distill: bool = True  # smaller subnets also learn the largest one's outputs
    seed: int = 0  # subnets, shuffling and augmentation are a function of (seed, step)
    checkpoint_every: int = 100  # steps between checkpoints (and at the end)
    schedule: str = "sandwich"  # "sandwich" or "progressive" (OFA's progressive shrinking; see the module doc)

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown supernet schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        if self.schedule == "progressive":
            phase_spans(self.steps)  # ValueError when the steps cannot give every phase one
        for name in ("steps", "batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"supernet {name} must be positive, got {getattr(self, name)}")
        MAX_STEPS.check(self.steps, "supernet training")
        MAX_BATCH.check(self.batch_size, "supernet batch")
        if not self.lr > 0 or self.num_random < 0 or self.warmup_steps < 0:
            raise ValueError("supernet lr must be positive, num_random and warmup_steps >= 0")


@dataclass(frozen=True)
class SupernetResult:
    """Outcome of :func:`train_supernet`."""

    steps: int  # steps done in all (including those before a resume)
    seconds: float  # wall time of this call
    final_loss: float  # the largest subnet's loss, mean over the last 20 steps
    resumed_from: int  # the step the checkpoint held (0 for a fresh run)
    phase_seconds: dict[str, float] = field(default_factory=dict)  # progressive: wall time per phase, this call


def same_recipe(saved: dict[str, Any] | None, cfg: SupernetConfig) -> bool:
    """Whether a checkpoint's stored config is ``cfg`` (one saved before a field existed has its default)."""
    return saved is not None and {**asdict(SupernetConfig()), **saved} == asdict(cfg)


def step_subnets(space: SearchSpace, seed: int, step: int, num_random: int) -> list[Genome]:
    """The subnets trained at ``step``: largest, smallest, then ``num_random`` random ones (a function of the step)."""
    rng = random.Random(mix_seed(seed, step, 7))
    return [space.extreme(True), space.extreme(False), *(space.sample_genome(rng) for _ in range(num_random))]


def phase_subnets(space: SearchSpace, span: PhaseSpan, seed: int, step: int) -> list[Genome]:
    """The subnets progressive shrinking trains at ``step``: the largest in the full phase, else random ones
    drawn from the choices the phase opens (a function of the step)."""
    if not span.phase.open:
        return [space.extreme(True)]
    rng = random.Random(mix_seed(seed, step, 7))
    sub = phase_space(space, span.phase)
    return [sub.sample_genome(rng) for _ in range(span.phase.subnets)]


def save_supernet(net: Supernet, path: str | Path, *, step: int = 0, optimizer: dict[str, Any] | None = None,
                  config: SupernetConfig | None = None,
                  teacher: dict[str, torch.Tensor] | None = None) -> Path:  # fmt: skip
    """Write the supernet (and its training position, and progressive shrinking's teacher) atomically;
    loads with ``weights_only=True``."""
    doc = {
        "format": FORMAT, "space": net.space.to_dict(), "num_classes": net.num_classes, "in_chans": net.in_chans,
        "kernel_transform": net.kernel_transform, "step": step, "state_dict": net.state_dict(),
        "optimizer": optimizer, "config": asdict(config) if config else None, "teacher": teacher,
    }  # fmt: skip
    return atomic_write(path, lambda f: torch.save(doc, f))


def load_supernet(path: str | Path, *, space: SearchSpace | None = None, num_classes: int | None = None,
                  in_chans: int | None = None) -> tuple[Supernet, dict[str, Any]]:  # fmt: skip
    """The supernet saved at ``path`` and the whole document (step, optimizer, config).

    The document is checked field by field before anything is built from it (its space is validated and
    resolved under :mod:`edgecnn.limits` like a space file); with ``space``, ``num_classes`` or ``in_chans`` it
    must be the supernet of that space for that data, checked before the network is allocated.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"supernet checkpoint {str(p)!r} not found")
    try:
        doc = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise ValueError(f"{p} is not a readable supernet checkpoint: {str(exc).splitlines()[0]}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{p} is not an edgecnn supernet checkpoint")
    f = Fields(str(p), _SUPERNET_FIX)
    max_ch = int(MAX_CHANNELS.value())
    saved = space_from_dict(f.mapping("space", doc.get("space")), source=f"{p}: space")
    doc_classes = f.integer("num_classes", doc.get("num_classes"), 1, max_ch)
    doc_chans = f.integer("in_chans", doc.get("in_chans"), 1, max_ch)
    if not isinstance(doc.get("kernel_transform"), bool):
        raise f.fail("kernel_transform", "true or false", doc.get("kernel_transform"))
    f.integer("step", doc.get("step"), 0, MAX_STEPS.value())
    f.tensors("state_dict", doc.get("state_dict"))
    for name in ("optimizer", "config", "teacher"):
        f.mapping(name, doc.get(name), optional=True)
    if space is not None and saved != space:
        differ = "its stem, stages or head differ" if saved.name == space.name else f"space {saved.name!r}"
        raise ValueError(f"{p} is the supernet of another search space than this run's {space.name!r} ({differ}); "
                         "resume with the same space, or pass --overwrite")  # fmt: skip
    for name, want, got in (("num_classes", num_classes, doc_classes), ("in_chans", in_chans, doc_chans)):
        if want is not None and want != got:
            raise ValueError(f"{p} was trained on other data ({name} {got}, this data has {want}); resume on the "
                             "same data, or pass --overwrite")  # fmt: skip
    params = supernet_params(saved, num_classes=doc_classes, in_chans=doc_chans,
                             kernel_transform=doc["kernel_transform"])  # fmt: skip
    gb, limit = 4 * params / 1e9, MAX_MEMORY_GB.value()
    if gb > limit:  # the file may declare a space far larger than the weights it holds
        raise ValueError(f"{p}: its space's supernet has {params:,} weights ({gb:,.3g} GB), above the limit of "
                         f"{limit:g} GB; {_SUPERNET_FIX}, or raise {MAX_MEMORY_GB.env}=N")  # fmt: skip
    net = Supernet(saved, num_classes=doc_classes, in_chans=doc_chans, kernel_transform=doc["kernel_transform"])
    try:
        net.load_state_dict(doc["state_dict"])
    except RuntimeError as exc:
        raise ValueError(f"{p}: field 'state_dict' does not fit the supernet of its space "
                         f"({str(exc).splitlines()[0][:120]}); {_SUPERNET_FIX}") from None  # fmt: skip
    return net, doc


_SUPERNET_FIX = "the file is damaged or was not written by edgecnn; pass --overwrite to train the supernet afresh"


def train_supernet(
    net: Supernet,
    data: DataSet,
    config: SupernetConfig | None = None,
    *,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    progress: bool = False,
) -> SupernetResult:
    """Train ``net`` in place with ``config.schedule`` on ``data.train`` (see the module doc).

    With ``checkpoint``, the supernet and its optimiser (and, progressive, the
    teacher) are saved there every ``config.checkpoint_every`` steps;
    ``resume=True`` continues from it — the subnets, batches and augmentation of
    a step depend only on ``(seed, step)``, so a resumed run trains on what an
    uninterrupted one would.
    """
    cfg = config or SupernetConfig()
    spans = phase_spans(cfg.steps) if cfg.schedule == "progressive" else None
    if spans and not net.kernel_transform:
        raise ValueError("progressive shrinking derives smaller kernels with OFA's transformation matrices; "
                         "build the supernet with Supernet(..., kernel_transform=True)")  # fmt: skip
    opt = _optimizer(net, cfg)
    start, teacher = 0, None
    if resume and checkpoint is not None and Path(checkpoint).is_file():
        saved, doc = load_supernet(checkpoint, space=net.space, num_classes=net.num_classes, in_chans=net.in_chans)
        if not same_recipe(doc.get("config"), cfg):
            raise ValueError(f"{checkpoint} was trained with another supernet recipe; resume with the same one "
                             "or use a new --out")  # fmt: skip
        net.load_state_dict(saved.state_dict())
        if doc.get("optimizer"):
            opt.load_state_dict(doc["optimizer"])
        if doc.get("teacher"):
            teacher = _teacher(net, doc["teacher"])
        start = int(doc["step"])
    loader = BatchLoader(data.train, batch_size=cfg.batch_size, mean=data.mean, std=data.std, train=True,
                         augment=data.augment, image_size=net.space.input_size, seed=cfg.seed)  # fmt: skip
    per_epoch = len(loader)
    if per_epoch == 0:
        raise ValueError(f"the training split has {len(data.train)} images, fewer than one batch of {cfg.batch_size}")
    t0, losses, phase_s = time.perf_counter(), [], {}
    net.train()
    with _StepBar(progress, cfg.steps, start) as advance:
        step = start
        while step < cfg.steps:
            epoch, first = divmod(step, per_epoch)
            for x, y in loader.epoch(epoch, start=first):
                t = time.perf_counter()
                if spans is None:
                    losses.append(_sandwich_step(net, opt, cfg, x, y, step))
                else:
                    span = span_at(spans, step)
                    if step == span.start:  # a phase begins
                        teacher, opt = _begin_phase(net, cfg, spans, span, teacher)
                    losses.append(_progressive_step(net, opt, cfg, span, teacher, x, y, step))
                    phase_s[span.phase.name] = phase_s.get(span.phase.name, 0.0) + time.perf_counter() - t
                step += 1
                advance()
                if checkpoint is not None and (step % cfg.checkpoint_every == 0 or step == cfg.steps):
                    save_supernet(net, checkpoint, step=step, optimizer=opt.state_dict(), config=cfg,
                                  teacher=None if teacher is None else teacher.state_dict())  # fmt: skip
                if step >= cfg.steps:
                    break
    tail = losses[-20:]
    return SupernetResult(step, time.perf_counter() - t0, sum(tail) / len(tail) if tail else math.nan, start,
                          phase_s)  # fmt: skip


def _sandwich_step(net: Supernet, opt: torch.optim.Optimizer, cfg: SupernetConfig, x: torch.Tensor,
                   y: torch.Tensor, step: int) -> float:  # fmt: skip
    lr = lr_at(step, total=cfg.steps, warmup=min(cfg.warmup_steps, cfg.steps // 2), peak=cfg.lr)
    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad(set_to_none=True)
    largest, *others = step_subnets(net.space, cfg.seed, step, cfg.num_random)
    logits = net(x, largest)
    loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
    if not torch.isfinite(loss):
        raise ValueError(f"the supernet loss became {loss.item()} at step {step + 1}; lower the supernet lr")
    loss.backward()
    soft = logits.detach()
    for genome in others:
        out = net(x, genome)
        if cfg.inplace_distill:
            sub = distillation_loss(out, soft, y, alpha=0.5, temperature=1.0, label_smoothing=cfg.label_smoothing)
        else:
            sub = F.cross_entropy(out, y, label_smoothing=cfg.label_smoothing)
        sub.backward()
    opt.step()
    return float(loss.item())


def _optimizer(net: Supernet, cfg: SupernetConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(param_groups(net, cfg.weight_decay), lr=cfg.lr, momentum=0.9, nesterov=True)


def _teacher(net: Supernet, state: dict[str, torch.Tensor] | None = None) -> EdgeNet:
    """The full network, frozen: extracted from ``net`` or rebuilt from a saved ``state``."""
    largest = net.space.extreme(True)
    if state is None:
        teacher = net.extract(largest)
    else:
        teacher = build(net.arch(largest), num_classes=net.num_classes, in_chans=net.in_chans)
        teacher.load_state_dict(state)
    return teacher.eval().requires_grad_(False)


def _begin_phase(net: Supernet, cfg: SupernetConfig, spans: list[PhaseSpan], span: PhaseSpan,
                 teacher: EdgeNet | None) -> tuple[EdgeNet | None, torch.optim.Optimizer]:  # fmt: skip
    """Progressive shrinking's phase change: freeze the teacher after the full phase, sort the channels before
    the first width phase, and start a fresh optimiser (each OFA phase is a separate run)."""
    if span.phase.open and teacher is None:
        teacher = _teacher(net)
    i = spans.index(span)
    widens = any(span.phase.opens(g) for g in WIDTH_GENES)
    if widens and not any(p.phase.opens(g) for p in spans[:i] for g in WIDTH_GENES):
        net.sort_channels_()
    return teacher, _optimizer(net, cfg)


def _progressive_step(net: Supernet, opt: torch.optim.Optimizer, cfg: SupernetConfig, span: PhaseSpan,
                      teacher: EdgeNet | None, x: torch.Tensor, y: torch.Tensor, step: int) -> float:  # fmt: skip
    p = span.phase
    warmup = min(cfg.warmup_steps, span.steps // 2) if not p.open else round(p.warmup * span.steps)
    lr = lr_at(step - span.start, total=span.steps, warmup=warmup, peak=cfg.lr * p.lr_scale)
    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad(set_to_none=True)
    soft = None
    if teacher is not None and cfg.inplace_distill:
        with torch.no_grad():
            soft = teacher(x)
    total = 0.0
    for genome in phase_subnets(net.space, span, cfg.seed, step):
        out = net(x, genome)
        if soft is None:
            loss = F.cross_entropy(out, y, label_smoothing=cfg.label_smoothing)
        else:  # OFA adds the distillation loss to the labels' (kd_ratio 1); here their mean, as the sandwich's
            loss = distillation_loss(out, soft, y, alpha=0.5, temperature=1.0, label_smoothing=cfg.label_smoothing)
        if not torch.isfinite(loss):
            raise ValueError(f"the supernet loss became {loss.item()} at step {step + 1} ({p.name} phase); "
                             "lower the supernet lr")  # fmt: skip
        loss.backward()
        total += float(loss.item())
    opt.step()
    return total / p.subnets if p.open else total


class _StepBar:
    """A rich progress bar over the supernet's steps (silent when off)."""

    def __init__(self, show: bool, total: int, done: int) -> None:
        self.show, self.total, self.done = show, total, done
        self._p: Any = None

    def __enter__(self) -> Callable[[], None]:
        if not self.show:
            return lambda: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._p = Progress(TextColumn("supernet"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                           transient=True)  # fmt: skip
        self._p.__enter__()
        task = self._p.add_task("supernet", total=self.total, completed=self.done)
        return lambda: self._p.advance(task)

    def __exit__(self, *exc: object) -> None:
        if self._p is not None:
            self._p.__exit__(*exc)
