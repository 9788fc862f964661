"""Patterns from torchvision/timm that benchmarks/analysis_coverage.py found miscounted or not traced (issue 8).

Each net is hand-written (CI has no torchvision/timm) and checked against FlopCounterMode and hand-derived counts.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from edgecnn.analysis import analyze


class Branches(nn.Module):
    """Two convs held in a ModuleList that is never called itself (timm's SelectiveKernel, MobileOne)."""

    def __init__(self) -> None:
        super().__init__()
        self.paths = nn.ModuleList([nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 8, 5, padding=2)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.paths[0](x) + self.paths[1](x)


class Gated(nn.Module):
    """Data-dependent control flow around the branches: fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.block = Branches()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > -1:
            x = self.block(x)
        return x


def test_hooks_macs_with_a_module_list_between_block_and_convs() -> None:
    model, x = Gated(), torch.zeros(1, 3, 8, 8)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    a = analyze(model, inputs=x)
    assert a.mode == "hooks"
    # 3×3 and 5×5 convs, 3 -> 8 channels on 8×8: 64·8·27 + 64·8·75; the block has no functional MACs of its own
    assert a.macs == counter.get_total_flops() // 2 == 64 * 8 * 27 + 64 * 8 * 75
    assert not [r for r in a if r.op == "functional"]


class DataDependentAttention(nn.Module):
    """nn.MultiheadAttention and F.scaled_dot_product_attention behind data-dependent control flow."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > -1:
            x = self.mha(x, x, x, need_weights=False)[0]
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v)


def test_hooks_count_attention_matmuls() -> None:
    # under no_grad, MHA's fused fast path and CPU flash SDPA have no FlopCounterMode formula: the fallback
    # must not take them. Tokens n=10, dim d=16: MHA in/out projections 10·16·48 + 10·16·16, its attention
    # 2·n²·d (QKᵀ and AV over both heads), the qkv linear 10·16·48, the SDPA again 2·n²·d
    n, d = 10, 16
    model, x = DataDependentAttention(d).eval(), torch.zeros(1, n, d)
    a = analyze(model, inputs=x)
    assert a.mode == "hooks"
    assert a.macs == n * d * 3 * d + n * d * d + 2 * n * n * d + n * d * 3 * d + 2 * n * n * d


class OptionalArgs(nn.Module):
    """``forward(x, mask=None, causal=False)`` with control flow on the defaults (timm's VisionTransformer)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        y = self.conv(x)
        if causal:
            y = y.tril()
        if mask is not None:
            y = y * mask
        return y


def test_forward_defaults_are_traced_as_constants() -> None:
    model, x = OptionalArgs(), torch.zeros(1, 3, 8, 8)
    a = analyze(model, inputs=x, mode="fx")
    assert a.macs == 36 * 4 * 27 and a.layers[-1].out_shape == (1, 4, 6, 6)
    assert a.layers[-1].rf_size == (3, 3)


class Conv2dSame(nn.Conv2d):
    """A Conv2d whose forward pads to TF "same" first (timm's tf_* models): the nn.Conv2d rule does not apply."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(torch.nn.functional.pad(x, [1, 1, 1, 1]), self.weight, self.bias)


class SameNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = Conv2dSame(3, 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > -1:  # the hooks fallback, where every childless module is a leaf
            x = self.conv(x)
        return x


def test_subclass_with_its_own_forward_is_measured_not_costed_as_its_parent() -> None:
    model, x = SameNet(), torch.zeros(1, 3, 8, 8)
    a = analyze(model, inputs=x)
    assert a.mode == "hooks"
    assert a.macs == 64 * 8 * 27  # 8×8 output (padded), not the 6×6 the nn.Conv2d rule gives on the raw input


def test_channel_groups_with_forward_defaults() -> None:
    # the defaulted arguments are placeholders holding their constant, without a shape: the group walk keeps them
    from edgecnn.compress import channel_groups, plan_prune, prune

    model, x = OptionalArgs().eval(), torch.randn(1, 3, 8, 8)
    plan = plan_prune(model, keep=0.5, graph=channel_groups(model, inputs=x))
    assert prune(model, plan).model(x).shape == model(x).shape
