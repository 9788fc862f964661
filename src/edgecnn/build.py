"""Build an ``nn.Module`` from an arch spec, each block by its kind's record (:mod:`edgecnn.kinds`).

The built :class:`EdgeNet` keeps its canonical arch string, class count and
input channels, so a checkpoint of weights plus these three rebuilds the
network without user code. That holds only while the arch is true: a
transform whose result no arch string describes returns a :class:`PlainNet`
(the same modules, no ``arch``), and :func:`arch_mismatch` is the check.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from edgecnn.arch import ArchSpec, as_spec
from edgecnn.kinds import BLOCK_KINDS
from edgecnn.plan import LayerPlan, resolve

BUILDERS: dict[str, Callable[[LayerPlan], nn.Module]] = {name: k.build for name, k in BLOCK_KINDS.items()}
"""Block kind -> constructor from a resolved layer (each kind's ``build`` in :mod:`edgecnn.kinds`)."""


class EdgeNet(nn.Module):
    """A network built from an arch string: ``blocks`` is an ``nn.Sequential``, one entry per expanded block."""

    def __init__(self, arch: str | ArchSpec, *, num_classes: int = 1000, in_chans: int = 3) -> None:
        super().__init__()
        spec = as_spec(arch)
        self.arch: str = spec.format()
        self.num_classes = num_classes
        self.in_chans = in_chans
        plans = resolve(spec, num_classes=num_classes, in_chans=in_chans)
        self.blocks = nn.Sequential(*(BUILDERS[p.spec.kind](p) for p in plans))

    @property
    def spec(self) -> ArchSpec:
        return as_spec(self.arch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, num_classes={self.num_classes}, in_chans={self.in_chans}"


class PlainNet(nn.Module):
    """An EdgeNet's modules without an arch string: what a transform returns when no arch describes its result.

    Low-rank factors, or BN folded inside an ``ir`` block, have no token in the
    arch format; keeping the EdgeNet's arch would make it false (a checkpoint
    of it would not load). ``blocks`` and the state-dict keys stay those of the
    EdgeNet; ``source_arch`` records where it came from, for people, not for
    rebuilding. A checkpoint of it has ``arch=None``: load it into the same
    transform of ``build(source_arch)``.
    """

    def __init__(self, blocks: nn.Sequential, *, num_classes: int, in_chans: int, source_arch: str, note: str) -> None:
        super().__init__()
        self.blocks = blocks
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.source_arch = source_arch  # the arch string of the EdgeNet it was made from
        self.note = note  # what was done to it, e.g. "low-rank factorised (energy=0.9)"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)

    def extra_repr(self) -> str:
        return f"from {self.source_arch!r} ({self.note}), num_classes={self.num_classes}, in_chans={self.in_chans}"


def plain(model: EdgeNet, *, note: str) -> PlainNet:
    """``model``'s modules (shared, not copied) as a :class:`PlainNet`; its mode is kept."""
    if not isinstance(model, EdgeNet):
        raise ValueError(f"plain() takes an EdgeNet, got {type(model).__name__}")
    out = PlainNet(model.blocks, num_classes=model.num_classes, in_chans=model.in_chans, source_arch=model.arch,
                   note=note)  # fmt: skip
    return out.train(model.training)


def arch_mismatch(model: nn.Module, arch: str, *, num_classes: int, in_chans: int) -> str | None:
    """Why ``build(arch)`` does not hold exactly ``model``'s weights (first differing key), or None when it does.

    Builds on the meta device: no memory, no initialisation.
    """
    with torch.device("meta"):
        ref = build(arch, num_classes=num_classes, in_chans=in_chans)
    want = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if want == have:
        return None
    extra, missing = sorted(set(have) - set(want)), sorted(set(want) - set(have))
    if extra:
        return f"the arch has no {extra[0]!r}" + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
    if missing:
        return f"the model lacks {missing[0]!r}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
    key = next(k for k in want if want[k] != have[k])
    return f"{key} is {have[key]} in the model, {want[key]} in the arch"


def build(arch: str | ArchSpec, *, num_classes: int = 1000, in_chans: int = 3) -> EdgeNet:
    """Build the network described by ``arch`` (an arch string or :class:`ArchSpec`)."""
    return EdgeNet(arch, num_classes=num_classes, in_chans=in_chans)


def count_params(model: nn.Module, *, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
