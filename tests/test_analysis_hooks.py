"""The forward-hooks fallback against FlopCounterMode on module layouts found in timm (issue 8, coverage benchmark)."""

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
