"""Build an ``nn.Module`` from an arch spec: one table from block kind to constructor.

The built :class:`EdgeNet` keeps its canonical arch string, class count and
input channels, so a checkpoint of weights plus these three rebuilds the
network without user code.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from edgecnn.arch import ArchSpec, as_spec
from edgecnn.blocks import (
    BasicBlock,
    Bottleneck,
    ConvBNAct,
    ConvTransposeBNAct,
    DepthwiseSeparable,
    GlobalAvgPool,
    InvertedResidual,
    LinearAct,
    same_padding,
)
from edgecnn.plan import LayerPlan, resolve


def _conv(p: LayerPlan) -> nn.Module:
    b = p.spec
    return ConvBNAct(
        p.cin, p.cout, kernel=b.k, stride=b.s, dilation=b.d, groups=b.g, act=b.act,
        order="pre" if b.pre else "post", bn=b.bn, bias=b.bias,
    )  # fmt: skip


def _tconv(p: LayerPlan) -> nn.Module:
    b = p.spec
    return ConvTransposeBNAct(p.cin, p.cout, kernel=b.k, stride=b.s, dilation=b.d, act=b.act)


def _ds(p: LayerPlan) -> nn.Module:
    b = p.spec
    return DepthwiseSeparable(
        p.cin, p.cout, kernel=b.k, stride=b.s, dilation=b.d, act=b.act, se_ratio=b.se,
        gate=b.gate, order="pre" if b.pre else "post",
    )  # fmt: skip


def _ir(p: LayerPlan) -> nn.Module:
    b = p.spec
    assert p.mid is not None
    return InvertedResidual(
        p.cin, p.mid, p.cout, kernel=b.k, stride=b.s, dilation=b.d, act=b.act, se_ratio=b.se,
        gate=b.gate, skip=b.skip != "none",
    )  # fmt: skip


def _residual(cls: type[BasicBlock] | type[Bottleneck]) -> Callable[[LayerPlan], nn.Module]:
    def make(p: LayerPlan) -> nn.Module:
        b = p.spec
        assert p.mid is not None
        shortcut = {"auto": "conv", "none": "none", "pad": "pad"}[b.skip or "auto"]
        return cls(
            p.cin, p.mid, p.cout, kernel=b.k, stride=b.s, dilation=b.d, act=b.act,
            order="pre" if b.pre else "post", shortcut=shortcut, se_ratio=b.se, gate=b.gate,  # type: ignore[arg-type]
        )  # fmt: skip

    return make


def _maxpool(p: LayerPlan) -> nn.Module:
    return nn.MaxPool2d(p.spec.k, p.spec.s, same_padding(p.spec.k or 1))


def _avgpool(p: LayerPlan) -> nn.Module:
    # count_include_pad=False: padded zeros do not dilute border averages
    return nn.AvgPool2d(p.spec.k, p.spec.s, same_padding(p.spec.k or 1), count_include_pad=False)


def _fc(p: LayerPlan) -> nn.Module:
    if p.classifier:
        return nn.Linear(p.cin, p.cout)
    return LinearAct(p.cin, p.cout, act=p.spec.act or "linear", bn=bool(p.spec.bn))


# block kind -> constructor from a resolved layer
BUILDERS: dict[str, Callable[[LayerPlan], nn.Module]] = {
    "conv": _conv,
    "tconv": _tconv,
    "ds": _ds,
    "ir": _ir,
    "basic": _residual(BasicBlock),
    "bottleneck": _residual(Bottleneck),
    "maxpool": _maxpool,
    "avgpool": _avgpool,
    "gap": lambda p: GlobalAvgPool(),
    "fc": _fc,
    "dropout": lambda p: nn.Dropout(p.spec.p or 0.0),
}


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
