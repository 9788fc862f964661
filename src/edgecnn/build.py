"""Build an ``nn.Module`` from an arch spec, each block by its kind's record (:mod:`edgecnn.kinds`).

The built :class:`EdgeNet` keeps its canonical arch string, class count and
input channels, so a checkpoint of weights plus these three rebuilds the
network without user code.
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


def build(arch: str | ArchSpec, *, num_classes: int = 1000, in_chans: int = 3) -> EdgeNet:
    """Build the network described by ``arch`` (an arch string or :class:`ArchSpec`)."""
    return EdgeNet(arch, num_classes=num_classes, in_chans=in_chans)


def count_params(model: nn.Module, *, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
