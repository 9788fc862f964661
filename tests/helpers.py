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


def trained_digits_net() -> tuple[nn.Module, object]:
    """The small net the int8 and deployment tests share: 60 steps on 8×8 digits (about 81% test top-1), and its data."""
    from dataclasses import replace

    from edgecnn.build import build
    from edgecnn.train.config import FINETUNE
    from edgecnn.train.loop import finetune
    from edgecnn.train.task import DataRef, worker_data

    data = worker_data(DataRef("digits", image_size=8))
    torch.manual_seed(0)
    model = build("conv_k3_c16 ir_s2_e3_c16 ir_c16 gap fc", num_classes=10, in_chans=1)
    finetune(model, data, steps=60, config=replace(FINETUNE, lr=0.05, batch_size=64))
    return model.eval(), data
