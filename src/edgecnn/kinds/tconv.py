"""``tconv``: a transposed conv + BN + act whose output is exactly stride × its input (Dumoulin & Visin 2016)."""

from __future__ import annotations

from torch import nn

from edgecnn.blocks import ConvTransposeBNAct
from edgecnn.kinds.base import BlockKind, Cost, KindInfo, Resolved, Size, Spec, area


def _build(p: Resolved) -> nn.Module:
    b = p.spec
    return ConvTransposeBNAct(p.cin, p.cout, kernel=b.k or 4, stride=b.s or 2, dilation=b.d or 1, act=b.act or "relu")


def _cost(p: Resolved) -> Cost:
    """MACs per *input* pixel: ``h₀w₀·c_in·c_out·k²``; + BN."""
    w = (p.spec.k or 1) ** 2 * p.cin * p.cout
    return w + 2 * p.cout, area(p.in_size) * w


def _up_size(b: Spec, size: Size) -> Size:
    return (size[0] * (b.s or 1), size[1] * (b.s or 1))


KIND = BlockKind(
    "tconv",
    KindInfo(("r", "k", "s", "d", "c", "act"), dict(r=1, k=4, s=2, d=1, act="relu"), ("c",),
             "transposed conv + BN + act, output = stride × input"),  # fmt: skip
    _build, _cost, _up_size, rank=20, upsamples=True,
)  # fmt: skip
