"""Dropping identity-residual blocks: which blocks qualify, the arch string, strict weight transfer, exactness."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgecnn import zoo
from edgecnn.build import EdgeNet, build
from edgecnn.compress.netadapt.drop_block import drop_block, droppable_blocks, plan_drop

NET = "conv_c8 ir_m16_c8 ir_s2_m24_c16 ir_r2_m32_c16_se0.25 ir_m32_c24 ir_m24_c24_noskip gap fc"


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN affine and running statistics, so that no BN is the identity and every branch matters."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.randn(n, generator=g)
            m.bias.data = torch.randn(n, generator=g)
            m.running_mean = torch.randn(n, generator=g)
            m.running_var = torch.rand(n, generator=g) + 0.5
    return model.eval()


def _branch_zeroed(model: EdgeNet, position: int) -> nn.Module:
    """The residual branch of ``blocks.<position>`` made to output zeros (a forward hook on its last module)."""
    block = model.blocks[position]
    last = block.project if hasattr(block, "project") else block.body  # ir: the linear 1×1; ResNet: the conv body
    last.register_forward_hook(lambda mod, inp, out: torch.zeros_like(out))
    return model


def test_droppable_blocks_are_the_identity_skips() -> None:
    model = build(NET, num_classes=10, in_chans=1)
    # blocks.1: 8 → 8 at s1; blocks.2: s2; blocks.3, 4: the two repeats 16 → 16; blocks.5: 16 → 24; blocks.6: noskip
    assert droppable_blocks(model) == (1, 3, 4)


def test_arch_strings_by_hand() -> None:
    model = build(NET, num_classes=10, in_chans=1)
    assert plan_drop(model, 1).arch == "conv_c8 ir_s2_m24_c16 ir_r2_m32_c16_se0.25 ir_m32_c24 ir_m24_c24_noskip gap fc"
    rest = "conv_c8 ir_m16_c8 ir_s2_m24_c16 ir_m32_c16_se0.25 ir_m32_c24 ir_m24_c24_noskip gap fc"
    assert plan_drop(model, 3).arch == plan_drop(model, 4).arch == rest  # either repeat: one repeat fewer
    d = plan_drop(model, 4)
    assert (d.position, d.block, d.width) == (4, "ir_m32_c16_se0.25", 16)
    assert d.description == "blocks.4 dropped (ir_m32_c16_se0.25)"
    # a repeat carrying a stride keeps it when a later repeat goes
    strided = build("conv_c8 ir_r3_s2_m16_c16 gap fc", num_classes=10, in_chans=1)
    assert droppable_blocks(strided) == (2, 3)
    assert plan_drop(strided, 3).arch == "conv_c8 ir_r2_s2_m16_c16 gap fc"


CASES = {
    # arch, and the block to drop; post-activation ResNet blocks follow a ReLU, so their input is >= 0
    "ir": ("conv_c8 ir_m32_c8_hswish ir_s2_m24_c16 gap fc", 1),
    "ir_se_repeat": ("conv_c16_hswish ir_r3_m48_c16_se0.25_hsgate_hswish gap fc", 2),
    "basic": ("conv_c8 basic_c8 basic_r2_c8_se0.25 gap fc", 2),
    "basic_pre": ("conv_c8 basic_c8_pre basic_s2_c16_pre gap fc", 1),
    "bottleneck": ("conv_c16 bottleneck_m8_c16 bottleneck_s2_c32 gap fc", 1),
    "bottleneck_pre": ("conv_c16 bottleneck_r2_m8_c16_pre gap fc", 2),
}


@pytest.mark.parametrize("case", list(CASES))
def test_dropped_block_equals_its_branch_zeroed(case: str) -> None:
    arch, pos = CASES[case]
    torch.manual_seed(0)
    model = _randomize(build(arch, num_classes=10, in_chans=3))
    small = drop_block(model, pos)
    assert isinstance(small, EdgeNet) and small.arch == plan_drop(model, pos).arch
    assert len(small.blocks) == len(model.blocks) - 1 and not small.training
    # the result builds from its arch string alone and takes its own state dict strictly
    again = build(small.arch, num_classes=10, in_chans=3)
    again.load_state_dict(small.state_dict(), strict=True)
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        before = model(x)
        want = _branch_zeroed(model, pos)(x)
        got = again.eval()(x)
    assert not torch.allclose(before, want, atol=1e-3)  # the branch did something
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_a_block_without_identity_skip_is_refused() -> None:
    model = build(NET, num_classes=10, in_chans=1)
    with pytest.raises(ValueError, match=r"blocks.2 \(ir_s2_m24_c16\) has no identity skip.*droppable blocks: \[1, 3, 4\]"):
        plan_drop(model, 2)
    with pytest.raises(ValueError, match="no identity skip"):
        drop_block(model, 6)  # noskip
    with pytest.raises(ValueError, match="out of range"):
        plan_drop(model, 99)


def test_zoo_resnet20_drops_its_seven_identity_blocks() -> None:
    # He et al. 2016 §4.2: 3 stages of 3 basic blocks; the first block of stages 2 and 3 changes shape
    model = build(zoo.REGISTRY["resnet20_cifar"].arch(), num_classes=10, in_chans=3)
    assert droppable_blocks(model) == (1, 2, 3, 5, 6, 8, 9)
    small = drop_block(model, 9)
    assert small.arch.startswith("conv_c16 basic_r3_c16_padskip basic_r3_s2_c32_padskip basic_r2_s2_c64_padskip")
