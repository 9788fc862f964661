"""Checkpoints: weights plus the arch string, written atomically and loaded without running code.

A checkpoint is a ``torch.save`` of a plain dict (:meth:`Checkpoint.to_dict`)
holding tensors, numbers, strings, lists and dicts only, so it loads with
``torch.load(..., weights_only=True)``: PyTorch's restricted unpickler, which
refuses any other global (``os.system``, a class ``__reduce__``) before it is
called. A file that is not ours, a truncated one and a malicious pickle each
give a ``ValueError`` saying which, and nothing in them is executed.

Because an :class:`edgecnn.build.EdgeNet` knows its canonical arch string,
class count and input channels, :func:`load_model` rebuilds the network from
the checkpoint alone. Any other ``nn.Module`` can be saved too (``arch`` is
then ``None``) and restored into a module the caller builds.

Writes go to a temporary file in the same folder, are flushed to disk, and
replace the target with ``os.replace`` — a crash leaves the old checkpoint or
the new one, never half of one.
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgecnn.atomic import atomic_write
from edgecnn.build import arch_mismatch, build
from edgecnn.schema import check_checkpoint

FORMAT = "edgecnn-checkpoint"
VERSION = 1


@dataclass
class Checkpoint:
    """Everything needed to rebuild a model and to resume its training."""

    arch: str | None  # canonical arch string (None: a model that is no EdgeNet; rebuild it in code)
    num_classes: int  # classifier outputs
    in_chans: int  # input channels
    state_dict: dict[str, torch.Tensor]  # the trained weights and buffers
    ema_state_dict: dict[str, torch.Tensor] | None = None  # exponential moving average of the weights, if kept
    optimizer: dict[str, Any] | None = None  # optimiser state (momentum buffers, Adam moments)
    epoch: int = 0  # epochs completed (the epoch to resume in)
    batch: int = 0  # batches of `epoch` already done (non-zero after an interrupt mid-epoch)
    step: int = 0  # optimiser steps done in total
    rng: dict[str, Any] = field(default_factory=dict)  # torch RNG states ("cpu", "cuda": list), for dropout etc.
    config: dict[str, Any] = field(default_factory=dict)  # the TrainConfig, as a dict
    data: dict[str, Any] = field(default_factory=dict)  # name, classes, mean, std, image_size of the training data
    history: list[dict[str, Any]] = field(default_factory=list)  # per-epoch statistics (EpochStats as dicts)
    partial: dict[str, float] = field(default_factory=dict)  # running sums of an interrupted epoch

    def to_dict(self) -> dict[str, Any]:
        out = {"format": FORMAT, "version": VERSION}
        out.update({f.name: getattr(self, f.name) for f in fields(self)})
        return out

    @classmethod
    def from_dict(cls, d: Any, *, source: str = "checkpoint") -> Checkpoint:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            hint = (
                " (it looks like a bare state_dict: load it with model.load_state_dict)"
                if isinstance(d, dict) and d and all(isinstance(v, torch.Tensor) for v in d.values())
                else ""
            )
            raise ValueError(f"{source} is not an edgecnn checkpoint{hint}; train one with `edgecnn train`")
        if not isinstance(d.get("version"), int) or d["version"] > VERSION:
            raise ValueError(f"{source} has checkpoint version {d.get('version')!r}; this edgecnn reads up to "
                             f"{VERSION}: upgrade edgecnn")  # fmt: skip
        names = {f.name for f in fields(cls)}
        missing = {"arch", "num_classes", "in_chans", "state_dict"} - set(d)
        if missing:
            raise ValueError(f"{source} lacks {sorted(missing)}: it is damaged; use another checkpoint")
        check_checkpoint(d, source)  # every field typed and bounded before anything uses it
        check_finite(d, source)  # NaN/Inf weights would evaluate (10% top-1) or resume without a word
        return cls(**{k: v for k, v in d.items() if k in names})


def _tensors(v: Any, name: str) -> Iterator[tuple[str, torch.Tensor]]:
    """(path, tensor) of every tensor in ``v``, nested dicts and lists included (an optimiser's state)."""
    if isinstance(v, torch.Tensor):
        yield name, v
    elif isinstance(v, dict):
        for k, x in v.items():
            yield from _tensors(x, f"{name}[{k!r}]")
    elif isinstance(v, (list, tuple)):
        for i, x in enumerate(v):
            yield from _tensors(x, f"{name}[{i}]")


def first_nonfinite(tensors: Any, name: str) -> tuple[str, int, int] | None:
    """(path, non-finite count, size) of the first floating tensor in ``tensors`` holding NaN or Inf; else None.

    Integer and boolean tensors (``num_batches_tracked``) cannot hold either
    and are skipped. Fast path: one sum per tensor, stacked and tested at
    once (NaN and Inf propagate through a sum) — about 1 ms for MobileNetV2's
    3.5 M weights, where ``isfinite`` per tensor takes 30–200 ms on a busy
    CPU. Only where a sum is not finite are the tensors tested element by
    element, so a sum that merely overflowed (float16 weights) refuses nothing.
    """
    floats = [(path, torch.view_as_real(t) if t.is_complex() else t) for path, t in _tensors(tensors, name)
              if t.layout == torch.strided and (t.is_floating_point() or t.is_complex()) and t.numel()]  # fmt: skip
    if not floats:
        return None
    sums = torch.stack([t.sum().to(torch.float64) for _, t in floats])
    if bool(torch.isfinite(sums).all()):
        return None
    for path, t in floats:
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            return path, int(finite.numel() - finite.sum()), t.numel()
    return None  # a sum overflowed on finite values: nothing is damaged


def check_finite(d: dict[str, Any], source: str) -> None:
    """``ValueError`` naming the first weight, buffer or optimiser tensor of checkpoint ``d`` with NaN or Inf."""
    for field_name in ("state_dict", "ema_state_dict", "optimizer"):
        bad = first_nonfinite(d.get(field_name), field_name)
        if bad is not None:
            path, n, size = bad
            raise ValueError(f"{source}: tensor {path} holds {n:,} NaN/Inf of {size:,} values: the weights are "
                             "damaged (a diverged run or a corrupted file); use another checkpoint, e.g. an "
                             "earlier run's, or train again with a lower --lr")  # fmt: skip


def save_checkpoint(ckpt: Checkpoint, path: str | os.PathLike[str]) -> Path:
    """Write ``ckpt`` to ``path`` atomically (temporary file, fsync, ``os.replace``)."""
    return atomic_write(path, lambda f: torch.save(ckpt.to_dict(), f))


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Load a checkpoint safely (``weights_only=True``); ``ValueError`` for foreign, truncated or malicious files."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"checkpoint {path} is a folder; pass the .pt file in it (e.g. {path / 'last.pt'})")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; pass the .pt file `edgecnn train` wrote")
    try:
        with warnings.catch_warnings():  # a plain pickle's protocol warning adds nothing to our error
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            d = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        culprit = next((line for line in lines if "GLOBAL" in line or "global" in line), None)
        if culprit is not None:
            raise ValueError(f"refusing to load {path}: it asks to import or call code ({culprit}); "
                             "nothing was executed — load only checkpoints written by edgecnn") from None  # fmt: skip
        detail = next((line for line in lines if "nsupported" in line), lines[0] if lines else "")
        raise ValueError(f"{path} is not a PyTorch checkpoint that loads safely ({detail[:120]}); "
                         "nothing was executed — use a checkpoint written by edgecnn") from None  # fmt: skip
    except Exception as exc:  # zip reader errors on truncation, KeyError/EOFError on foreign bytes
        first = (str(exc).splitlines() or [""])[0][:120]
        raise ValueError(f"{path} is truncated or not a PyTorch file ({type(exc).__name__}: {first}); "
                         "use another checkpoint") from None  # fmt: skip
    return Checkpoint.from_dict(d, source=str(path))


def checkpoint_of(model: nn.Module, **extra: Any) -> Checkpoint:
    """A :class:`Checkpoint` of ``model``'s weights (and its arch, if it is an EdgeNet) plus ``extra`` fields.

    ValueError when the model's arch string does not build exactly its weights
    (a transform changed it in place): such a checkpoint could not be loaded.
    """
    arch = getattr(model, "arch", None)
    num_classes = getattr(model, "num_classes", None)
    in_chans = getattr(model, "in_chans", None)
    if num_classes is None or in_chans is None:
        num_classes, in_chans = _infer_io(model)
    if isinstance(arch, str) and (why := arch_mismatch(model, arch, num_classes=num_classes, in_chans=in_chans)):
        raise ValueError(f"model.arch does not describe this model ({why}), so its checkpoint would not load; "
                         "save edgecnn.build.plain(model, note=...) instead (arch=None)")  # fmt: skip
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return Checkpoint(arch if isinstance(arch, str) else None, int(num_classes), int(in_chans), state, **extra)


def _infer_io(model: nn.Module) -> tuple[int, int]:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return (linears[-1].out_features if linears else 0), (convs[0].in_channels if convs else 0)


def build_model(arch: str, *, num_classes: int, in_chans: int) -> nn.Module:
    """Build an EdgeNet from its arch string (``edgecnn.build.build``)."""
    return build(arch, num_classes=num_classes, in_chans=in_chans)


def load_model(
    source: str | os.PathLike[str] | Checkpoint, *, ema: bool = False, model: nn.Module | None = None
) -> tuple[nn.Module, Checkpoint]:
    """Rebuild the model of a checkpoint (from its arch string) and load its weights; returns (model, checkpoint).

    ``ema=True`` loads the moving-average weights instead. Pass ``model`` for a
    checkpoint of a module that is no EdgeNet (``arch`` is None); this function
    never runs code named in the file (:func:`edgecnn.cli.user_model.load_any`
    rebuilds such a network from the constructor the checkpoint records).
    """
    ckpt = source if isinstance(source, Checkpoint) else load_checkpoint(source)
    state = ckpt.state_dict
    if ema:
        if ckpt.ema_state_dict is None:
            raise ValueError("this checkpoint holds no EMA weights; drop --ema or train with --ema DECAY")
        state = ckpt.ema_state_dict
    if model is None:
        if ckpt.arch is None:
            raise ValueError("the checkpoint's model is no EdgeNet (no arch string): build it in code and pass model= "
                             "(edgecnn.cli.user_model.load_any rebuilds it from a recorded constructor)")  # fmt: skip
        model = build_model(ckpt.arch, num_classes=ckpt.num_classes, in_chans=ckpt.in_chans)
    load_weights(model, state, what="the checkpoint's weights", network="the model")
    return model, ckpt


SHOWN_KEYS = 3  # keys of each kind a mismatch message names before "..."


@dataclass(frozen=True)
class Mismatch:
    """How a state_dict differs from a network's: the keys each side lacks and the keys whose shapes differ."""

    missing: tuple[str, ...]  # in the network, not in the weights
    unexpected: tuple[str, ...]  # in the weights, not in the network
    misshaped: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]  # (key, weights' shape, network's shape)
    classes: int | None  # the weights' class count where only the classifier's outputs differ (the usual mistake)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.misshaped)

    def text(self) -> str:
        """``2 missing (a, b), 0 unexpected, 1 mis-shaped (fc.weight: checkpoint (1000, 512) vs network (10, 512))``."""

        def few(items: list[str]) -> str:
            more = f", ... {len(items) - SHOWN_KEYS} more" if len(items) > SHOWN_KEYS else ""
            return f" ({', '.join(items[:SHOWN_KEYS])}{more})" if items else ""

        shaped = [f"{k}: checkpoint {tuple(a)} vs network {tuple(b)}" for k, a, b in self.misshaped]
        return (f"{len(self.missing)} missing{few(list(self.missing))}, {len(self.unexpected)} unexpected"
                f"{few(list(self.unexpected))}, {len(self.misshaped)} mis-shaped{few(shaped)}")  # fmt: skip


def weights_mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> Mismatch:
    """The keys of ``state`` that ``model.load_state_dict`` would refuse, each side named; empty when they fit.

    A missing BatchNorm ``num_batches_tracked`` counter is not counted (PyTorch
    fills it in). ``classes`` is set when the network's last ``nn.Linear`` is
    mis-shaped in its outputs only: the weights were trained for that many classes.
    """
    own = model.state_dict()
    missing = tuple(k for k in own if k not in state and not k.endswith("num_batches_tracked"))
    unexpected = tuple(k for k in state if k not in own)
    misshaped = tuple((k, tuple(state[k].shape), tuple(own[k].shape)) for k in own
                      if k in state and tuple(state[k].shape) != tuple(own[k].shape))  # fmt: skip
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    classes = None
    for key, theirs, mine in misshaped:
        if linears and key == f"{linears[-1]}.weight" and theirs[1:] == mine[1:]:
            classes = theirs[0]
    return Mismatch(missing, unexpected, misshaped, classes)


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], *, what: str = "the weights",
                 network: str = "the network", hint: Callable[[int], str] | None = None) -> nn.Module:  # fmt: skip
    """Load ``state`` into ``model`` strictly; a ``ValueError`` naming the missing, unexpected and mis-shaped keys.

    ``what`` / ``network`` name the two sides in the message; ``hint(n)``
    replaces the default advice when the classifier differs in its class count
    (``n``: the weights'). Never a truncated PyTorch message.
    """
    try:
        model.load_state_dict(state)
        return model
    except RuntimeError as exc:
        bad = weights_mismatch(model, state)
        if not bad:  # something else (a dtype, a custom loader): its first line
            raise ValueError(f"{what} do not fit {network}: {str(exc).strip().splitlines()[0][:200]}") from None
    advice = ""
    if bad.classes is not None:
        advice = "; " + (hint(bad.classes) if hint else f"build it with the checkpoint's num_classes ({bad.classes})")
    raise ValueError(f"{what} do not fit {network}: {bad.text()}{advice}")
