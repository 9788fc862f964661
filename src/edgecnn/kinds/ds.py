"""``ds``: depthwise separable conv (MobileNetV1, Howard et al. 2017, §3.1): dw k×k → [SE] → pw 1×1.

Cost: depthwise ``hw·c_in·k²`` + SE ``2·c_in·q`` + pointwise ``hw·c_in·c_out``.
"""

from __future__ import annotations

from torch import nn

from edgecnn.blocks import DepthwiseSeparable
from edgecnn.kinds.base import BlockKind, Cost, KindInfo, Resolved, add, area, conv_cost, conv_size, order, se_cost


def _build(p: Resolved) -> nn.Module:
    b = p.spec
    return DepthwiseSeparable(p.cin, p.cout, kernel=b.k or 3, stride=b.s or 1, dilation=b.d or 1,
                              act=b.act or "relu", se_ratio=b.se or 0.0, gate=b.gate or "sigmoid",
                              order=order(b))  # fmt: skip


def _cost(p: Resolved) -> Cost:
    # pre-activation puts each BN on the conv's input: same width for dw, c_in for pw
    hw, k = area(p.out_size), p.spec.k or 1
    pw_bn = 2 * (p.cin if p.spec.pre else p.cout)
    dw = conv_cost(p.cin, p.cin, k, hw, p.cin)
    pw = conv_cost(p.cin, p.cout, 1, hw, bn=False)
    return add(dw, se_cost(p.cin, p.squeeze), pw, (pw_bn, 0))


KIND = BlockKind(
    "ds",
    KindInfo(("r", "k", "s", "d", "c", "se", "gate", "act", "pre"),
             dict(r=1, k=3, s=1, d=1, se=0.0, gate="sigmoid", act="relu", pre=False), ("c",),
             "depthwise separable (MobileNetV1): dw k×k → [SE] → pw 1×1"),  # fmt: skip
    _build, _cost, conv_size, rank=30, se_on="in", filter_fields=(("dw.", None),),
)  # fmt: skip
