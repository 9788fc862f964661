"""Helpers shared by test files (the tests folder is on sys.path under pytest's default import mode)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def randomise_bn(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics and affine parameters, so a fold that ignores any of them fails."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                c = m.num_features
                m.running_mean.copy_(0.2 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=g))
                if m.affine:
                    m.weight.copy_(0.5 + torch.rand(c, generator=g))
                    m.bias.copy_(0.2 * torch.randn(c, generator=g))
