"""``bottleneck``: the ResNet bottleneck 1×1 → k×k (strided, "v1.5") → 1×1 (He et al. 2016, Table 1).

Cost: ``h₀w₀·c_in·m + hw·k²·m² + hw·m·c_out`` + SE on the output + projection
as :mod:`edgecnn.kinds.basic`. The middle conv keeps the inner width (its
filters are the arch width "m2": the same channels as the first conv's).
"""

from __future__ import annotations

from edgecnn.blocks import Bottleneck
from edgecnn.kinds import _resnet
from edgecnn.kinds.base import BlockKind, Cost, KindInfo, Resolved, add, area, conv_cost, se_cost


def _cost(p: Resolved) -> Cost:
    assert p.mid is not None
    hw_in, hw, k, m, pre = area(p.in_size), area(p.out_size), p.spec.k or 1, p.mid, bool(p.spec.pre)
    if pre:  # BN(c_in) → 1×1, BN(m) → k×k, BN(m) → 1×1
        body = add(conv_cost(p.cin, m, 1, hw_in, bn=False), conv_cost(m, m, k, hw, bn=False),
                   conv_cost(m, p.cout, 1, hw, bn=False), (2 * p.cin + 4 * m, 0))  # fmt: skip
    else:
        body = add(conv_cost(p.cin, m, 1, hw_in), conv_cost(m, m, k, hw), conv_cost(m, p.cout, 1, hw))
    return add(body, se_cost(p.cout, p.squeeze), _resnet.shortcut_cost(p, pre))


KIND = BlockKind(
    "bottleneck",
    KindInfo(_resnet.KEYS, dict(_resnet.DEFAULTS, e=0.25), ("c",),
             "ResNet bottleneck 1×1 → k×k → 1×1 (inner width m or e·c)", skips=_resnet.SKIPS),  # fmt: skip
    _resnet.builder(Bottleneck), _cost, rank=60, filter_fields=(("body.0", "m"), ("body.1", "m2")),
    **_resnet.COMMON,
)  # fmt: skip
