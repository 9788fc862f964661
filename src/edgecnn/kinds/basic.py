"""``basic``: the ResNet basic block, two k×k convs (He et al. 2016, Table 1: ResNet-18/34 and the CIFAR nets).

Cost: ``hw·k²·(c_in·m + m·c_out)`` + SE on the output + a 1×1 projection
``hw·c_in·c_out`` when the shape changes (option B; ``padskip``: option A, free).
"""

from __future__ import annotations

from edgecnn.blocks import BasicBlock
from edgecnn.kinds import _resnet
from edgecnn.kinds.base import BlockKind, Cost, KindInfo, Resolved, add, area, conv_cost, se_cost


def _cost(p: Resolved) -> Cost:
    assert p.mid is not None
    hw, k, m, pre = area(p.out_size), p.spec.k or 1, p.mid, bool(p.spec.pre)
    # BN(m) between the convs; BN(c_out) after (post) or BN(c_in) before (pre)
    body = add(conv_cost(p.cin, m, k, hw, bn=False), conv_cost(m, p.cout, k, hw, bn=False),
               (2 * m + 2 * (p.cin if pre else p.cout), 0))  # fmt: skip
    return add(body, se_cost(p.cout, p.squeeze), _resnet.shortcut_cost(p, pre))


KIND = BlockKind(
    "basic",
    KindInfo(_resnet.KEYS, dict(_resnet.DEFAULTS, e=1.0), ("c",),
             "ResNet basic block, two k×k convs (inner width m or e·c)", skips=_resnet.SKIPS),  # fmt: skip
    _resnet.builder(BasicBlock), _cost, rank=50, filter_fields=(("body.0", "m"),),
    **_resnet.COMMON,
)  # fmt: skip
