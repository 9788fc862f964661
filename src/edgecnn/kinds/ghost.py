"""``ghost``: the Ghost module (GhostNet, Han et al. 2020, §3.1, Fig. 2b, Eq. 2–5).

A primary k×k conv (stride s) makes ``m`` intrinsic maps (BN, act); a cheap
depthwise d×d conv makes ``⌈c/m⌉ − 1`` "ghost" maps of each (BN, act); the
two are concatenated and the first ``c`` kept. ``m = ⌈c/e⌉`` where ``e`` is the
paper's ratio s (default 2), or ``m`` given (what pruning writes); the paper's
defaults are a 1×1 primary conv and ``d = 3`` (§3.1, Table 7). The cheap
operation makes ``(s−1)·m`` maps as in the paper whenever ``s`` divides ``c``;
otherwise it makes only as many as ``c`` needs. Tokens: ``k`` the primary
kernel, ``d`` the cheap kernel (the paper's d; no dilation here), ``e`` the
ratio; ``act`` both activations (``linear``: GhostNet's second module of a
bottleneck).

Cost, with ``hw`` the output pixels and ``g = m·(⌈c/m⌉ − 1)`` ghost maps:
params ``k²·c_in·m + 2m + d²·g + 2g``, MACs ``hw·(k²·c_in·m + d²·g)`` —
against ``hw·k²·c_in·c`` for a plain conv, about ``1/s`` (Eq. 4).

The intrinsic maps and their ghosts are one channel group: pruning an
intrinsic map removes its ghosts, so ``m`` is the prunable width and ``c``
follows it (``c = s·m``) when ``c`` is a multiple of ``m``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from edgecnn.blocks import ConvBNAct
from edgecnn.kinds.base import BlockKind, Changes, Cost, KindInfo, Resolved, Spec, add, area, conv_cost, pool_size


class GhostModule(nn.Module):
    """Han et al. 2020, Fig. 2b: primary conv → BN → act; cheap depthwise conv of its maps → BN → act; concat."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, *, kernel: int = 1, stride: int = 1,
                 cheap_kernel: int = 3, act: str = "relu") -> None:  # fmt: skip
        super().__init__()
        ghosts = mid_ch * (_ratio(out_ch, mid_ch) - 1)
        self.primary = ConvBNAct(in_ch, mid_ch, kernel=kernel, stride=stride, act=act)
        self.cheap = ConvBNAct(mid_ch, ghosts, kernel=cheap_kernel, groups=mid_ch, act=act)
        self.keep = None if mid_ch + ghosts == out_ch else out_ch  # the first c maps when m does not divide c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.primary(x)
        out = torch.cat([y, self.cheap(y)], dim=1)
        return out if self.keep is None else out[:, : self.keep]


def _ratio(cout: int, mid: int) -> int:
    """Maps per intrinsic map, the intrinsic one included: ``⌈c/m⌉``."""
    return -(-cout // mid)


def _mid(b: Spec, cin: int) -> int:
    assert b.c is not None
    return b.m if b.m is not None else max(1, math.ceil(b.c / (b.e or 2.0)))


def _check(b: Spec, cin: int) -> str | None:
    if (b.k or 1) % 2 == 0 or (b.d or 1) % 2 == 0:
        return "a ghost module needs odd kernels k (primary) and d (cheap), e.g. k1 d3"
    if _mid(b, cin) >= (b.c or 0):
        return f"a ghost module needs fewer intrinsic maps than outputs: m {_mid(b, cin)} ≥ c {b.c} (use e > 1)"
    return None


def _build(p: Resolved) -> nn.Module:
    b = p.spec
    assert p.mid is not None
    return GhostModule(p.cin, p.mid, p.cout, kernel=b.k or 1, stride=b.s or 1, cheap_kernel=b.d or 3,
                       act=b.act or "relu")  # fmt: skip


def _cost(p: Resolved) -> Cost:
    assert p.mid is not None
    hw, m = area(p.out_size), p.mid
    ghosts = m * (_ratio(p.cout, m) - 1)
    return add(conv_cost(p.cin, m, p.spec.k or 1, hw), conv_cost(m, ghosts, p.spec.d or 3, hw, groups=m))


def _cout_of_mid(p: Resolved, mid: int) -> int | None:
    """``c = s·m`` for a pruned ``m``, when ``m`` divides ``c`` (else the arch cannot write it)."""
    assert p.mid is not None
    ratio = _ratio(p.cout, p.mid)
    return ratio * mid if ratio * p.mid == p.cout else None


def _respec(p: Resolved, cin: int, cout: int, mid: int | None) -> Changes:
    """``c``, and ``m`` only where the block would not get it without the token; ``mid`` None keeps ``⌈c/m⌉``."""
    assert p.mid is not None
    want = -(-cout // _ratio(p.cout, p.mid)) if mid is None else mid
    kept = math.ceil(cout / (p.spec.e or 2.0)) if p.spec.m is None else p.mid  # m without an m token
    changes: Changes = {"c": cout} if cout != p.cout else {}
    if want != kept:
        changes["m"] = want
    return changes


def _slice(kind: BlockKind, cin: int, cout: int, mid: int, fixed: list[str]) -> tuple[list[str], list[str], dict]:
    """The ratio ``⌈c/m⌉`` is the structure; c_in and c_out the axes (``m`` follows ``c``)."""
    return [f"ratio={_ratio(cout, mid)}"], fixed, {"cin": cin, "cout": cout}


KIND = BlockKind(
    "ghost",
    KindInfo(("r", "k", "s", "d", "e", "m", "c", "act"), dict(r=1, k=1, s=1, d=3, e=2.0, act="relu"), ("c",),
             "Ghost module (GhostNet): primary k×k conv to m = c/e maps → cheap dw d×d → concat"),  # fmt: skip
    _build, _cost, pool_size, rank=48, mid=_mid, check=_check, filter_fields=(("primary", "m"), ("cheap", None)),
    cout_of_mid=_cout_of_mid, respec=_respec, slice_rule=_slice,
)  # fmt: skip
