"""What the ResNet kinds (``basic``, ``bottleneck``; He et al. 2016) share: widths, shortcut, builder, BN layout."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from edgecnn.blocks import BasicBlock, Bottleneck
from edgecnn.kinds.base import (
    Cost, InnerChannels, Resolved, Shortcut, Spec, area, conv_cost, conv_size, odd_kernel, order,
)  # fmt: skip

KEYS = ("r", "k", "s", "d", "e", "m", "c", "se", "gate", "act", "pre", "skip")
DEFAULTS: dict[str, Any] = dict(r=1, k=3, s=1, d=1, se=0.0, gate="sigmoid", act="relu", pre=False, skip="auto")
SKIPS = ("auto", "none", "pad", "id")
# the first conv makes the inner channels; pre-activation: the BN after a conv is the first layer of the next one
INNER = {False: InnerChannels(("body.0.conv", "body.0.bn")), True: InnerChannels(("body.0", "body.1.bn"))}


def mid_of_output(b: Spec, cin: int) -> int:
    """Inner width ``m``, or ``e`` × the output width ``c``."""
    assert b.c is not None
    return b.m if b.m is not None else max(1, int(round(b.c * (b.e or 1.0))))


def shortcut(b: Spec, cin: int, cout: int) -> Shortcut | None:
    """Identity where shapes match, else a 1×1 projection (option B) or zero padding (option A, ``padskip``)."""
    if b.skip == "none":
        return None
    if (b.s or 1) == 1 and cin == cout:
        return "identity"
    return "pad" if b.skip == "pad" else "conv"


def shortcut_cost(p: Resolved, pre: bool) -> Cost:
    """A projection shortcut is a strided 1×1 conv (+ BN in post order); identity and "pad" cost nothing."""
    if shortcut(p.spec, p.cin, p.cout) != "conv":
        return (0, 0)
    return conv_cost(p.cin, p.cout, 1, area(p.out_size), bn=not pre)


def builder(cls: type[BasicBlock] | type[Bottleneck]) -> Callable[[Resolved], nn.Module]:
    """The builder of a ResNet block class from a resolved layer."""

    def make(p: Resolved) -> nn.Module:
        b = p.spec
        assert p.mid is not None
        kind = {"none": "none", "pad": "pad"}.get(b.skip or "auto", "conv")  # auto, id: identity or projection
        return cls(p.cin, p.mid, p.cout, kernel=b.k or 3, stride=b.s or 1, dilation=b.d or 1, act=b.act or "relu",
                   order=order(b), shortcut=kind, se_ratio=b.se or 0.0,  # type: ignore[arg-type]
                   gate=b.gate or "sigmoid")  # fmt: skip

    return make


COMMON: dict[str, Any] = dict(out_size=conv_size, mid=mid_of_output, se_on="out", shortcut=shortcut,
                              check=odd_kernel, inner=INNER)  # fmt: skip
