"""``er``: fused-MBConv (EfficientNetV2, Tan & Le 2021, §3.2 and Fig. 2; timm's ``EdgeResidual``, token ``er``).

The depthwise k×k and the 1×1 expansion of an inverted residual fused into one
regular k×k conv, which is faster on accelerators in early stages (§3.2):
k×k conv ``c_in → m`` (``m = e·c_in`` or ``m`` given; BN, act) → [SE on m] →
1×1 projection ``m → c_out`` (BN, **no** act: the linear bottleneck of
MobileNetV2). An identity skip when stride 1 and ``c_in = c_out`` (``noskip``
removes it, ``idskip`` requires it), as for ``ir``. Defaults from the paper:
``e4``, SiLU (``swish``), no SE. The inner width ``m`` is prunable: the k×k
conv makes it. Unlike the paper's expansion-1 form (a single k×k conv), this
block always has both convs.

Cost, with ``hw`` the output pixels and ``q`` the SE width:
params ``k²·c_in·m + 2m + SE(2·m·q + q + m) + m·c_out + 2·c_out``,
MACs ``hw·k²·c_in·m + 2·m·q + hw·m·c_out``.
"""

from __future__ import annotations

import torch
from torch import nn

from edgecnn.blocks import ConvBNAct, SqueezeExcite
from edgecnn.kinds.base import (
    BlockKind, Cost, InnerChannels, KindInfo, Resolved, add, area, conv_cost, conv_size, identity_when_shapes_match,
    mid_of_input, odd_kernel, se_cost,
)  # fmt: skip


class FusedMBConv(nn.Module):
    """Fused-MBConv (Tan & Le 2021, Fig. 2): k×k conv → BN → act → [SE] → 1×1 → BN; identity skip if shapes match."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, *, kernel: int = 3, stride: int = 1, dilation: int = 1,
                 act: str = "swish", squeeze: int = 0, gate: str = "sigmoid", skip: bool = True) -> None:  # fmt: skip
        super().__init__()
        self.expand = ConvBNAct(in_ch, mid_ch, kernel=kernel, stride=stride, dilation=dilation, act=act)
        self.se = SqueezeExcite(mid_ch, squeeze, gate=gate) if squeeze else None
        self.project = ConvBNAct(mid_ch, out_ch, kernel=1, act="linear")
        self.use_skip = skip and stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.expand(x)
        if self.se is not None:
            out = self.se(out)
        out = self.project(out)
        return out + x if self.use_skip else out


def _build(p: Resolved) -> nn.Module:
    b = p.spec
    assert p.mid is not None
    return FusedMBConv(p.cin, p.mid, p.cout, kernel=b.k or 3, stride=b.s or 1, dilation=b.d or 1,
                       act=b.act or "swish", squeeze=p.squeeze, gate=b.gate or "sigmoid",
                       skip=b.skip != "none")  # fmt: skip


def _cost(p: Resolved) -> Cost:
    assert p.mid is not None
    hw, k, m = area(p.out_size), p.spec.k or 1, p.mid
    return add(conv_cost(p.cin, m, k, hw), se_cost(m, p.squeeze), conv_cost(m, p.cout, 1, hw))


KIND = BlockKind(
    "er",
    KindInfo(
        ("r", "k", "s", "d", "e", "m", "c", "se", "gate", "act", "skip"),
        dict(r=1, k=3, s=1, d=1, e=4.0, se=0.0, gate="sigmoid", act="swish", skip="auto"),
        ("c",),
        "fused-MBConv (EfficientNetV2): k×k conv (e or inner width m) → [SE] → linear 1×1",
        skips=("auto", "none", "id"),
    ),
    _build, _cost, conv_size, rank=45, mid=mid_of_input, se_on="mid", shortcut=identity_when_shapes_match,
    check=odd_kernel, inner={False: InnerChannels(("expand.conv", "expand.bn"), squeeze_inside=True)},
    filter_fields=(("expand", "m"),), searchable=True,
)  # fmt: skip
