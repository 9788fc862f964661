"""``conv``: a k×k convolution (groups g) + BN + act; ``pre`` = BN → act → conv (He et al. 2016b)."""

from __future__ import annotations

from torch import nn

from edgecnn.blocks import ConvBNAct
from edgecnn.kinds.base import BlockKind, Changes, Cost, KindInfo, Resolved, Spec, area, conv_cost, conv_size, order


def _build(p: Resolved) -> nn.Module:
    b = p.spec
    return ConvBNAct(p.cin, p.cout, kernel=b.k or 3, stride=b.s or 1, dilation=b.d or 1, groups=b.g or 1,
                     act=b.act or "relu", order=order(b), bn=bool(b.bn), bias=bool(b.bias))  # fmt: skip


def _cost(p: Resolved) -> Cost:
    """``hw·k²·(c_in/g)·c_out`` + bias + BN on the output (post) or the input (pre)."""
    b = p.spec
    params, macs = conv_cost(p.cin, p.cout, b.k or 1, area(p.out_size), b.g or 1, bn=False, bias=bool(b.bias))
    return params + (2 * (p.cin if b.pre else p.cout) if b.bn else 0), macs


def _groups_divide(b: Spec, cin: int) -> str | None:
    g = b.g or 1
    return f"groups g{g} must divide in ({cin}) and out ({b.c}) channels" if cin % g or (b.c or 0) % g else None


def _folded(b: Spec) -> tuple[str, Changes] | None:
    # ConvBNAct without BN, with the conv's new bias; a pre-activation BN does not fold (it precedes the conv)
    return ("bn", {"bn": False, "bias": True}) if b.bn and not b.pre else None


KIND = BlockKind(
    "conv",
    KindInfo(
        ("r", "k", "s", "d", "g", "c", "act", "pre", "bn", "bias"),
        dict(r=1, k=3, s=1, d=1, g=1, act="relu", pre=False, bn=True, bias=False),
        ("c",),
        "conv k×k (groups g) + BN + act; `pre` = BN→act→conv; `nobn`, `bias`",
    ),
    _build, _cost, conv_size, rank=10, check=_groups_divide, latency_group="fixed", folded_bn=_folded,
)  # fmt: skip
