"""``ir``: inverted residual with linear bottleneck (MobileNetV2, Sandler et al. 2018; MobileNetV3, Howard et al. 2019).

1×1 expand to ``m = e·c_in`` (omitted when ``m = c_in``) → depthwise k×k →
[SE on m] → linear 1×1 projection. Cost (Sandler et al. 2018, Table 1):
expand ``h₀w₀·c_in·m`` (when ``m ≠ c_in``) + depthwise ``hw·m·k²`` + SE
``2·m·q`` + project ``hw·m·c_out``. The block adds its input only when stride 1
and ``c_in = c_out`` (§3.3), so a width change silently removes its skip;
``idskip`` makes it required.
"""

from __future__ import annotations

from torch import nn

from edgecnn.blocks import InvertedResidual
from edgecnn.kinds.base import (
    BlockKind, Cost, InnerChannels, KindInfo, Resolved, add, area, conv_cost, conv_size, identity_when_shapes_match,
    mid_of_input, odd_kernel, se_cost,
)  # fmt: skip


def _build(p: Resolved) -> nn.Module:
    b = p.spec
    assert p.mid is not None
    return InvertedResidual(p.cin, p.mid, p.cout, kernel=b.k or 3, stride=b.s or 1, dilation=b.d or 1,
                            act=b.act or "relu6", se_ratio=b.se or 0.0, gate=b.gate or "sigmoid",
                            skip=b.skip != "none")  # fmt: skip


def _cost(p: Resolved) -> Cost:
    assert p.mid is not None
    hw, k, m = area(p.out_size), p.spec.k or 1, p.mid
    expand = conv_cost(p.cin, m, 1, area(p.in_size)) if m != p.cin else (0, 0)
    return add(expand, conv_cost(m, m, k, hw, m), se_cost(m, p.squeeze), conv_cost(m, p.cout, 1, hw))


# the expand conv makes the inner channels; without it (m = c_in) they are the input's
_INNER = InnerChannels(("expand.conv", "expand.bn"), squeeze_inside=True, tied_to_input=True)

KIND = BlockKind(
    "ir",
    KindInfo(
        ("r", "k", "s", "d", "e", "m", "c", "se", "gate", "act", "skip"),
        dict(r=1, k=3, s=1, d=1, e=6.0, se=0.0, gate="sigmoid", act="relu6", skip="auto"),
        ("c",),
        "inverted residual (MobileNetV2/V3): 1×1 expand (e or inner width m) → dw k×k → [SE] → linear 1×1",
        skips=("auto", "none", "id"),
    ),
    _build, _cost, conv_size, rank=40, mid=mid_of_input, se_on="mid", shortcut=identity_when_shapes_match,
    check=odd_kernel, inner={False: _INNER}, filter_fields=(("expand", "m"), ("dw.", None)), searchable=True,
)  # fmt: skip
